import type { Logger } from 'pino';
import type { Db } from './db.ts';
import { shardDigestIn } from './digest.ts';
import type { NodeMetrics } from './metrics.ts';

/** One replica's state hash at a checkpoint (an index every replica of the shard applies). */
export interface CheckResult {
  shard: number;
  index: number;
  records: number;
  digest: string;
}

/** Checkpoints kept per shard for peers to compare against. */
const KEEP = 16;
/** Checkpoints that may wait to be hashed (each holds a LevelDB snapshot: old versions kept from compaction). */
const QUEUE = 64;

/**
 * Replica checks: catch a replica whose state diverged from the others' — damage inside LevelDB's
 * files (which LevelDB does not checksum on reads here), a lost or doubled write, an apply that is not
 * deterministic — while it serves, not at the next fault test. (TiKV's consistency check hashes a
 * region at an index given through its log; here the index is implied: every multiple of
 * --check-every, where the Raft core ends a Ready.)
 *
 * Each replica hashes its shard's data as it stands at the checkpoint, in a LevelDB snapshot taken
 * the moment that state landed (the batch holding it is the last written; no later round joined
 * it). One hash runs at a time per node (the shard's records are read through an iterator); the
 * checkpoints met meanwhile wait their turn in their snapshots (at most QUEUE; past it, skipped). Each node fetches its peers' results now and
 * then (GET /v1/debug/checks) and compares those of the shards they share: a mismatch is logged
 * (error) and counted per shard and peer. The replica that differs from every other is the damaged
 * one: the repair is to move its node's data directory aside and start it empty (it recovers its
 * replicas from their peers; docs/FAILURE-MODES.md).
 */
export class ReplicaChecks {
  /** Checkpoints whose state waits to be hashed (each in its LevelDB snapshot), oldest first. */
  private readonly queue: Array<{ db: Db; shard: number; index: number; snapshot: ReturnType<Db['snapshot']> }> = [];
  private hashing: Promise<void> | null = null;
  private closed = false;
  /** Per shard, oldest first; each with the peers it was compared with already (counted once per peer, forgotten with it). */
  private readonly results = new Map<number, Array<CheckResult & { comparedWith: Set<number> }>>();
  /** Per shard: the highest checkpoint compared with some peer. */
  private readonly comparedAt = new Map<number, number>();

  constructor(private readonly log: Logger, private readonly metrics: NodeMetrics) {}

  /**
   * The shard's state in `db` is exactly at `index` now: keep it (a LevelDB snapshot, taken now) and hash
   * it in the background, one at a time, so every replica hashes every checkpoint (had a node skipped
   * those met while a hash ran, which ones it hashed would depend on its batches, and its peers' would
   * seldom be the same). Past QUEUE waiting, a checkpoint is skipped, counted.
   */
  capture(db: Db, shard: number, index: number): void {
    if (this.closed || this.queue.length >= QUEUE) {
      this.metrics.replicaChecks.inc({ result: 'skipped' });
      return;
    }
    let snapshot: ReturnType<Db['snapshot']>;
    try {
      snapshot = db.snapshot();
    } catch (e) {
      this.log.warn({ err: e, shard, index }, 'replica check: no LevelDB snapshot (checkpoint skipped)');
      this.metrics.replicaChecks.inc({ result: 'skipped' });
      return;
    }
    this.queue.push({ db, shard, index, snapshot });
    this.hashing ??= this.drain().finally(() => { this.hashing = null; });
  }

  private async drain(): Promise<void> {
    for (let job = this.queue.shift(); job !== undefined; job = this.queue.shift()) {
      const { db, shard, index, snapshot } = job;
      try {
        if (this.closed) continue;
        const d = await shardDigestIn(db, shard, snapshot);
        if (d.applied !== index) {
          // The state landed is not the checkpoint's: hashing it would report a false divergence.
          this.log.error({ shard, index, applied: d.applied }, 'replica check: the state hashed is not at its checkpoint (a bug: no hash kept)');
          continue;
        }
        this.metrics.replicaChecks.inc({ result: 'hashed' });
        const list = this.results.get(shard) ?? [];
        list.push({ shard, index, records: d.records, digest: d.digest, comparedWith: new Set() });
        if (list.length > KEEP) list.shift();
        this.results.set(shard, list);
      } catch (e) {
        if (!this.closed) this.log.warn({ err: e, shard, index }, 'replica check: hashing failed');
      } finally {
        await snapshot.close().catch(() => undefined);
      }
    }
  }

  /** No more hashing: waits for the one running, releases the snapshots waiting (before LevelDB closes). */
  async close(): Promise<void> {
    this.closed = true;
    await this.hashing;
  }

  /** Every result kept, oldest first per shard. */
  list(): CheckResult[] {
    return [...this.results.values()].flat().map(({ shard, index, records, digest }) => ({ shard, index, records, digest }));
  }

  /** Compare a peer's results with ours: each checkpoint both hold, once. Returns the mismatches found now. */
  compare(peer: number, theirs: CheckResult[]): CheckResult[] {
    const bad: CheckResult[] = [];
    for (const t of theirs) {
      const mine = this.results.get(t.shard)?.find((m) => m.index === t.index);
      if (mine === undefined) continue;
      if (mine.comparedWith.has(peer)) continue;
      mine.comparedWith.add(peer);
      if (t.index > (this.comparedAt.get(t.shard) ?? 0)) {
        this.comparedAt.set(t.shard, t.index);
        this.metrics.replicaComparedIndex.set({ shard: String(t.shard) }, t.index);
      }
      if (mine.digest === t.digest && mine.records === t.records) {
        this.metrics.replicaChecks.inc({ result: 'match' });
        continue;
      }
      this.metrics.replicaChecks.inc({ result: 'mismatch' });
      this.metrics.replicaMismatches.inc({ shard: String(t.shard), peer: String(peer) });
      this.log.error({ shard: t.shard, index: t.index, peer, records: mine.records, peerRecords: t.records, digest: mine.digest, peerDigest: t.digest },
        'replica check: this replica and a peer\'s hold different data at the same applied index: one of them diverged (the one that differs from every other replica is damaged; see docs/FAILURE-MODES.md)');
      bad.push(t);
    }
    return bad;
  }
}
