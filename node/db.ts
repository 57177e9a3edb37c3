import { ClassicLevel } from 'classic-level';
import type { Entry, HardState, Persisted, Snapshot } from '../raft/index.ts';
import { unpack } from '../shard/codec.ts';
import type { KvStatePort } from '../shard/kv-machine.ts';
import { appliedKey, generationKey, hardStateKey, logIndexOf, logKey, logRange, snapMetaKey } from '../shard/layout.ts';
import { decodeEntry, decodeHardState, decodeSnapshot } from '../shard/raft-codec.ts';
import type { BatchOp, ReplicaBoot } from '../shard/store.ts';

export type Db = ClassicLevel<Uint8Array, Uint8Array>;

export async function openDb(dir: string): Promise<Db> {
  const db = new ClassicLevel<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
  await db.open({ createIfMissing: true });
  return db;
}

/** Write a batch; `sync` makes it durable before the promise resolves (the library's default is false). */
export async function writeBatch(db: Db, ops: BatchOp[], sync: boolean): Promise<void> {
  if (ops.length === 0) return;
  await db.batch(ops as Array<{ type: 'put'; key: Uint8Array; value: Uint8Array }>, { sync });
}

/** Load what a replica persisted: hard state, snapshot meta, log, applied state, generation. */
export async function loadReplica(db: Db, shard: number, founders: number[]): Promise<ReplicaBoot> {
  const [hsRaw, snapRaw, appliedRaw, genRaw] = await db.getMany([hardStateKey(shard), snapMetaKey(shard), appliedKey(shard), generationKey(shard)]);
  const snapshot: Snapshot | null = snapRaw === undefined ? null : decodeSnapshot(snapRaw);
  const [gte, lt] = logRange(shard);
  const entries: Entry[] = [];
  const it = db.iterator({ gte, lt });
  try {
    for (;;) {
      const chunk = await it.nextv(1000);
      if (chunk.length === 0) break;
      for (const [k, v] of chunk) {
        const e = decodeEntry(v);
        if (e.index !== logIndexOf(k)) throw new Error(`log key ${logIndexOf(k)} holds entry ${e.index} (shard ${shard})`);
        if (snapshot !== null && e.index <= snapshot.meta.index) continue; // left over from a compaction cut short
        entries.push(e);
      }
    }
  } finally {
    await it.close();
  }
  const base = snapshot?.meta.index ?? 0;
  entries.forEach((e, i) => {
    if (e.index !== base + 1 + i) throw new Error(`log of shard ${shard} has a gap before ${e.index}`);
  });
  const [applied, logTime] = appliedRaw === undefined ? [base, 0] : unpack<[number, number]>(appliedRaw);
  const gen = genRaw === undefined ? 0 : unpack<number>(genRaw);
  const hardState: HardState | null = hsRaw === undefined ? null : decodeHardState(hsRaw);
  const fresh = hardState === null && snapshot === null && entries.length === 0;
  const persisted: Persisted | null = fresh ? null : { hardState: hardState ?? { term: 0, vote: 0, commit: 0 }, snapshot, entries };
  return { shard, persisted, founders, applied: Math.max(applied, base), logTime, gen, persistedLast: base + entries.length };
}

/** Delete log entries of a shard below an index (after a snapshot or a compaction). */
export async function truncateLog(db: Db, shard: number, below: number): Promise<void> {
  await db.clear({ gte: logKey(shard, 0), lt: logKey(shard, below) });
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');

/**
 * The state port used while applying a round: synchronous reads (getSync)
 * through an overlay of the writes made earlier in the same round, so later
 * entries see earlier ones before the batch is written.
 */
export class ApplyBatch {
  readonly ops: BatchOp[] = [];
  private readonly overlay = new Map<string, Uint8Array | null>();

  constructor(private readonly db: Db) {}

  port(): KvStatePort {
    return {
      get: (key) => {
        const o = this.overlay.get(hex(key));
        if (o !== undefined) return o ?? undefined;
        return this.db.getSync(key);
      },
      put: (key, value) => {
        this.overlay.set(hex(key), value);
        this.ops.push({ type: 'put', key, value });
      },
      del: (key) => {
        this.overlay.set(hex(key), null);
        this.ops.push({ type: 'del', key });
      },
    };
  }
}
