import { open, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import type { Entry, HardState, Persisted, Snapshot } from '../raft/index.ts';
import { unpack } from '../shard/codec.ts';
import { appliedKey, generationKey, hardStateKey, logIndexOf, logKey, logRange, snapMetaKey } from '../shard/layout.ts';
import { decodeEntry, decodeHardState, decodeSnapshot } from '../shard/raft-codec.ts';
import type { BatchOp, ReplicaBoot, WalItem } from '../shard/store.ts';
import type { WalShard } from './wal-codec.ts';

export type Db = ClassicLevel<Uint8Array, Uint8Array>;

export async function openDb(dir: string): Promise<Db> {
  const db = new ClassicLevel<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
  await db.open({ createIfMissing: true });
  return db;
}

/** classic-level's implementation of batch(), below abstract-level's public wrapper. */
interface RawBatch {
  _batch(ops: BatchOp[], options: { sync: boolean }): Promise<void>;
}

/**
 * Write a batch; `sync` makes it durable before the promise resolves (the
 * library's default is false). Goes straight to classic-level's _batch():
 * abstract-level's public batch() clones every operation and runs it through
 * encodings and hooks we do not use, which made it cost about 3x the write
 * itself (measured: 16 puts, ~220-350 us vs ~75-110 us of CPU). Our keys and
 * values are always Uint8Arrays, which the binding takes as they are.
 */
/**
 * Write a batch; `sync`: durable on return, and so is every LevelDB write issued before it.
 *
 * LevelDB syncs only its current log file. When its memtable fills it starts a new log and does not
 * sync the old one, whose unsynced batches stay at the page cache's mercy until that memtable is
 * flushed to a (synced) table. A synced batch written after such a switch could outlive them in a
 * power cut, and the state would then miss a middle run of batches (not a suffix: the applied index,
 * written later, would overstate it). So a synced batch first syncs every log file (syncLevelDbLogs).
 */
export async function writeBatch(db: Db, ops: BatchOp[], sync: boolean): Promise<void> {
  if (ops.length === 0) return;
  if (db.status !== 'open') throw new Error(`LevelDB is ${db.status}, not open`);
  // The binding would turn anything else into an empty key or value, silently.
  for (const op of ops) {
    if (!(op.key instanceof Uint8Array) || (op.type === 'put' && !(op.value instanceof Uint8Array))) throw new Error('batch keys and values must be Uint8Arrays');
  }
  if (sync) await levelDbSync.logs(db.location);
  await (db as unknown as RawBatch)._batch(ops, { sync });
}

/** What a synced batch calls first (a test may wrap it to see it called). */
export const levelDbSync = { logs: (dir: string): Promise<string[]> => syncLevelDbLogs(dir) };

/**
 * fdatasync every log file of the LevelDB in `dir` (an old one waiting for its memtable's flush, and
 * the current one); returns their names. A log deleted meanwhile was flushed to a synced table
 * already. (A memtable flush would do too, but LevelDB only offers it inside compactRange, which
 * waits for the background compaction running: during a catch-up that slowed every install.)
 */
export async function syncLevelDbLogs(dir: string): Promise<string[]> {
  const synced: string[] = [];
  for (const name of await readdir(dir)) {
    if (!name.endsWith('.log')) continue;
    let fh: FileHandle;
    try {
      fh = await open(join(dir, name), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw e;
    }
    try {
      await fh.datasync();
      synced.push(name);
    } finally {
      await fh.close();
    }
  }
  return synced;
}

/**
 * Load what a replica persisted: snapshot meta, applied state and generation
 * from LevelDB; hard state and log from the WAL (folded by foldWal). Entries
 * at or below the snapshot are left over from a compaction whose segments
 * were not deleted yet. A snapshot install whose WAL marker is there but
 * whose LevelDB batch (written after it) did not land is undone: its
 * marker's dropped entries come back.
 */
export async function loadReplica(db: Db, shard: number, founders: number[], wal: WalShard | undefined): Promise<ReplicaBoot> {
  const [snapRaw, appliedRaw, genRaw] = await db.getMany([snapMetaKey(shard), appliedKey(shard), generationKey(shard)]);
  const snapshot: Snapshot | null = snapRaw === undefined ? null : decodeSnapshot(snapRaw);
  const base = snapshot?.meta.index ?? 0;
  let all: Entry[] = wal?.entries ?? [];
  const markers = [...(wal?.markers ?? [])];
  for (let m = markers.pop(); m !== undefined && m.index > base; m = markers.pop()) {
    if (all.length > 0) throw new Error(`WAL of shard ${shard}: entries after a snapshot install (${m.index}) that never landed in LevelDB (its snapshot is at ${base})`);
    all = m.before;
  }
  const entries = all.filter((e) => e.index > base);
  entries.forEach((e, i) => {
    if (e.index !== base + 1 + i) throw new Error(`log of shard ${shard} has a gap before ${e.index} (snapshot at ${base})`);
  });
  const [applied, logTime] = appliedRaw === undefined ? [base, 0] : unpack<[number, number]>(appliedRaw);
  const gen = genRaw === undefined ? 0 : unpack<number>(genRaw);
  const last = base + entries.length;
  // Applied entries were synced in the WAL before they were applied (committed entries are durable here).
  if (applied > last) throw new Error(`shard ${shard}: LevelDB's applied index ${applied} is beyond the last entry ${last} of the WAL (synced WAL data lost: a disk that does not keep what it synced?)`);
  const hs = wal?.hardState ?? null;
  // Commit is volatile (a restart recovers it from the leader); it cannot point past the log kept.
  const hardState: HardState | null = hs === null ? null : { ...hs, commit: Math.min(hs.commit, last) };
  const fresh = hardState === null && snapshot === null && entries.length === 0;
  const persisted: Persisted | null = fresh ? null : { hardState: hardState ?? { term: 0, vote: 0, commit: 0 }, snapshot, entries };
  return { shard, persisted, founders, applied: Math.max(applied, base), logTime, gen, persistedLast: last };
}

/**
 * A data directory of the earlier format kept the Raft log and hard state in
 * LevelDB. Returns them as WAL items to import (written to the WAL and synced
 * by the caller, then deleted from LevelDB with dropLegacyLog), or [] if
 * there are none.
 */
export async function readLegacyLog(db: Db, shard: number): Promise<WalItem[]> {
  const [hsRaw, snapRaw] = await db.getMany([hardStateKey(shard), snapMetaKey(shard)]);
  const snapIndex = snapRaw === undefined ? 0 : decodeSnapshot(snapRaw).meta.index;
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
        if (e.index <= snapIndex) continue;
        entries.push(e);
      }
    }
  } finally {
    await it.close();
  }
  if (hsRaw === undefined && entries.length === 0) return [];
  return [{ shard, hardState: hsRaw === undefined ? null : decodeHardState(hsRaw), entries, snapshot: null }];
}

/** After an import: delete a shard's earlier-format log and hard state from LevelDB (synced). */
export async function dropLegacyLog(db: Db, shard: number): Promise<void> {
  await db.clear({ gte: logKey(shard, 0), lt: logRange(shard)[1] });
  await writeBatch(db, [{ type: 'del', key: hardStateKey(shard) }], true);
}

/** The overlay's (and the read cache's) key for a LevelDB key: its bytes as a latin1 string. */
export const keyString = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');

/**
 * Applied state not yet in LevelDB. A round applies its committed entries as
 * soon as it begins (they are durable in the log already) and completes
 * their requests at once; their writes ride in the next persist batch, and
 * until that batch lands, reads — the state machine's own and the API's
 * point reads — see them here. Scans and snapshot streams read LevelDB
 * directly, so they first wait until the batch holding the latest applied
 * state has landed.
 */
export class Overlay {
  private readonly map = new Map<string, { value: Uint8Array | null; batch: number }>();

  /** undefined: not here (read LevelDB); null: deleted. */
  get(key: Uint8Array): Uint8Array | null | undefined {
    return this.map.get(keyString(key))?.value;
  }

  /** get() by the key's keyString. */
  getByString(k: string): Uint8Array | null | undefined {
    return this.map.get(k)?.value;
  }

  /** Record a write that goes out in batch `batch`; returns the key to release with it. */
  set(key: Uint8Array, value: Uint8Array | null, batch: number): string {
    const k = keyString(key);
    this.map.set(k, { value, batch });
    return k;
  }

  /** Batch `batch` landed: forget what it wrote, unless a later batch wrote the key again. */
  release(keys: Iterable<string>, batch: number): void {
    for (const k of keys) if (this.map.get(k)?.batch === batch) this.map.delete(k);
  }

  get size(): number {
    return this.map.size;
  }
}
