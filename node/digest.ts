import { createHash } from 'node:crypto';
import { unpack } from '../shard/codec.ts';
import { appliedKey, generationKey, shardStateRange } from '../shard/layout.ts';
import type { Db } from './db.ts';

export interface ShardDigest {
  shard: number;
  /** Raft index the state below reflects (read in the same LevelDB snapshot as the data). */
  applied: number;
  /** The shard's log time at `applied` (ms, leader clocks as recorded in the log). */
  logTime: number;
  /** Data records (keys with their value and version). */
  records: number;
  /** SHA-256 over every data key and record, in key order, hex. */
  digest: string;
}

/**
 * Digest of one replica's user data, for comparing replicas after a fault run:
 * replicas at the same `applied` index must have the same digest. Reads one
 * explicit LevelDB snapshot, so the applied index, the generation and the data
 * are one consistent cut (they are written by one batch). The idempotency
 * table is left out on purpose: its expired records are reclaimed locally, at
 * different times on different replicas, without changing any outcome.
 */
export async function shardDigest(db: Db, shard: number): Promise<ShardDigest> {
  const snapshot = db.snapshot();
  try {
    return await shardDigestIn(db, shard, snapshot);
  } finally {
    await snapshot.close();
  }
}

/** shardDigest in a LevelDB snapshot the caller took (and closes). */
export async function shardDigestIn(db: Db, shard: number, snapshot: ReturnType<Db['snapshot']>): Promise<ShardDigest> {
  const [appliedRaw, genRaw] = await db.getMany([appliedKey(shard), generationKey(shard)], { snapshot });
  const [applied, logTime] = appliedRaw === undefined ? [0, 0] : unpack<[number, number]>(appliedRaw);
  const gen = genRaw === undefined ? 0 : unpack<number>(genRaw);
  const [gte, lt] = shardStateRange(shard, gen, 'd');
  const h = createHash('sha256');
  let records = 0;
  const it = db.iterator({ gte, lt, snapshot });
  try {
    for (let chunk = await it.nextv(1000); chunk.length > 0; chunk = await it.nextv(1000)) {
      for (const [k, v] of chunk) {
        // the generation (bytes 5..9) is local to a replica: hash the key without it
        h.update(k.subarray(0, 5)).update(k.subarray(9)).update(Buffer.from([0])).update(v);
        records++;
      }
    }
  } finally {
    await it.close();
  }
  return { shard, applied, logTime, records, digest: h.digest('hex') };
}
