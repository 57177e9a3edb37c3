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

/**
 * Replica checks: catch a replica whose state diverged from the others' — damage inside LevelDB's
 * files (which LevelDB does not checksum on reads here), a lost or doubled write, an apply that is not
 * deterministic — while it serves, not at the next fault test. (TiKV's consistency check hashes a
 * region at an index given through its log; here the index is implied: every multiple of
 * --check-every, where the Raft core ends a Ready.)
 *
 * Each replica hashes its shard's data as it stands at the checkpoint, in a LevelDB snapshot taken
 * the moment that state landed (the batch holding it is the last written; no later round joined
 * it). One hash runs at a time per node (the shard's records are read through an iterator); a
 * checkpoint met while one runs is skipped, counted. Each node fetches its peers' results now and
 * then (GET /v1/debug/checks) and compares those of the shards they share: a mismatch is logged
 * (error) and counted per shard and peer. The replica that differs from every other is the damaged
 * one: the repair is to move its node's data directory aside and start it empty (it recovers its
 * replicas from their peers; docs/FAILURE-MODES.md).
 */
export class ReplicaChecks {
  private running = false;
  private readonly results = new Map<number, CheckResult[]>();
  /** `${peer}/${shard}/${index}` compared already (each checkpoint counted once per peer). */
  private readonly compared = new Set<string>();

  constructor(private readonly log: Logger, private readonly metrics: NodeMetrics) {}

  /** The shard's state in `db` is exactly at `index` now: hash it (in the background). */
  capture(db: Db, shard: number, index: number): void {
    if (this.running) {
      this.metrics.replicaChecks.inc({ result: 'skipped' });
      return;
    }
    this.running = true;
    const snapshot = db.snapshot();
    void shardDigestIn(db, shard, snapshot).then(
      (d) => {
        if (d.applied !== index) {
          // The state landed is not the checkpoint's: hashing it would report a false divergence.
          this.log.error({ shard, index, applied: d.applied }, 'replica check: the state hashed is not at its checkpoint (a bug: no hash kept)');
          return;
        }
        this.metrics.replicaChecks.inc({ result: 'hashed' });
        const list = this.results.get(shard) ?? [];
        list.push({ shard, index, records: d.records, digest: d.digest });
        if (list.length > KEEP) list.shift();
        this.results.set(shard, list);
      },
      (e: unknown) => this.log.warn({ err: e, shard, index }, 'replica check: hashing failed'),
    ).finally(() => {
      this.running = false;
      void snapshot.close().catch(() => undefined);
    });
  }

  /** Every result kept, oldest first per shard. */
  list(): CheckResult[] {
    return [...this.results.values()].flat();
  }

  /** Compare a peer's results with ours: each checkpoint both hold, once. Returns the mismatches found now. */
  compare(peer: number, theirs: CheckResult[]): CheckResult[] {
    const bad: CheckResult[] = [];
    for (const t of theirs) {
      const mine = this.results.get(t.shard)?.find((m) => m.index === t.index);
      if (mine === undefined) continue;
      const key = `${peer}/${t.shard}/${t.index}`;
      if (this.compared.has(key)) continue;
      this.compared.add(key);
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
    // Forget comparisons of checkpoints no longer kept (bounded memory).
    if (this.compared.size > 4 * KEEP * Math.max(1, this.results.size) * 8) {
      const live = new Set(this.list().map((r) => `${r.shard}/${r.index}`));
      for (const k of this.compared) if (!live.has(k.slice(k.indexOf('/') + 1))) this.compared.delete(k);
    }
    return bad;
  }
}
