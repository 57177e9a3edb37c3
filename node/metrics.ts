import client from 'prom-client';
import { CheapHistogram, PendingCount, type HistogramSeries } from './cheap-metrics.ts';
import type { TransportMetrics } from './transport.ts';

export interface HttpChildren { count: PendingCount; duration: HistogramSeries }

/** One prom-client Registry per node, so tests can run several nodes in one process. */
export class NodeMetrics {
  readonly registry = new client.Registry();
  readonly httpRequests: client.Counter<'route' | 'method' | 'status' | 'consistency'>;
  readonly httpDuration: CheapHistogram;
  readonly raftTerm: client.Gauge<'shard'>;
  readonly raftCommit: client.Gauge<'shard'>;
  readonly raftApplied: client.Gauge<'shard'>;
  readonly raftIsLeader: client.Gauge<'shard'>;
  readonly raftQuiesced: client.Gauge<'shard'>;
  readonly raftRecovering: client.Gauge<'shard'>;
  readonly leaderChanges: client.Counter<'shard'>;
  readonly proposalsPending: client.Gauge;
  readonly roundDuration: client.Histogram<'phase'>;
  readonly roundEntries: client.Histogram;
  readonly snapshots: client.Counter<'direction' | 'result'>;
  readonly transportBytes: client.Counter<'direction' | 'peer'>;
  readonly transportReconnects: client.Counter<'peer'>;
  readonly transportDropped: client.Counter<'peer' | 'reason'>;
  readonly transportBadFrames: client.Counter;
  readonly eventLoopLag: client.Gauge;
  readonly maintenance: client.Histogram<'part'>;
  /** Its children, labelled once (a pass runs after every landed batch). */
  readonly maintenanceParts: Record<'snapshotSends' | 'compact' | 'idempotencyGc', client.Histogram.Internal<'part'>>;
  readonly idempotencyCollected: client.Counter;
  readonly slowPersists: client.Counter;
  readonly logCompactions: client.Counter<'reason'>;
  readonly replicaChecks: client.Counter<'result'>;
  readonly replicaMismatches: client.Counter<'shard' | 'peer'>;
  readonly replicaComparedIndex: client.Gauge<'shard'>;
  /** Read at each scrape: snapshot streams waiting for their turn (set by the runtime). */
  snapshotStreamsQueued: () => number = () => 0;
  /** Entries the shards' Raft logs hold in memory, and the bytes that takes (estimated: data + per-entry overhead). */
  raftLogMemory: () => { entries: number; bytes: number } = () => ({ entries: 0, bytes: 0 });
  /** Requests answered by the single-key paths ahead of fastify (node/fast-kv.ts): a plain count, read at each scrape. */
  fastRequests = 0;
  /** Read at each scrape: HTTP requests in flight (set by the HTTP layer; bounded by --max-in-flight). */
  httpInFlight: () => number = () => 0;
  /** Read at each scrape: the read cache's plain counts (set by the runtime; node/read-cache.ts). */
  readCache: () => { hits: number; misses: number; bytes: number } = () => ({ hits: 0, misses: 0, bytes: 0 });

  constructor(nodeId: number) {
    const r = this.registry;
    r.setDefaultLabels({ node: String(nodeId) });
    client.collectDefaultMetrics({ register: r });
    const flushHttp = (): void => {
      for (const c of this.httpCache.values()) c.count.flush();
    };
    this.httpRequests = new client.Counter({ name: 'kv_http_requests_total', help: 'HTTP requests by route, method, status and consistency', labelNames: ['route', 'method', 'status', 'consistency'], registers: [r], collect: flushHttp });
    this.httpDuration = new CheapHistogram('kv_http_request_duration_seconds', 'HTTP request duration', [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], r);
    this.raftTerm = new client.Gauge({ name: 'kv_raft_term', help: 'Raft term per shard', labelNames: ['shard'], registers: [r] });
    this.raftCommit = new client.Gauge({ name: 'kv_raft_commit_index', help: 'Commit index per shard', labelNames: ['shard'], registers: [r] });
    this.raftApplied = new client.Gauge({ name: 'kv_raft_applied_index', help: 'Applied index per shard', labelNames: ['shard'], registers: [r] });
    this.raftIsLeader = new client.Gauge({ name: 'kv_raft_is_leader', help: '1 if this node leads the shard', labelNames: ['shard'], registers: [r] });
    this.raftQuiesced = new client.Gauge({ name: 'kv_raft_quiesced', help: '1 if the shard\'s group is quiesced here (idle: no heartbeats)', labelNames: ['shard'], registers: [r] });
    this.raftRecovering = new client.Gauge({ name: 'kv_raft_recovering', help: '1 while the shard\'s replica here started without its state (a new cluster or a lost data directory) and does not vote yet: 1 = asking every voter its term, 2 = waiting to follow a leader of a newer term', labelNames: ['shard'], registers: [r] });
    this.leaderChanges = new client.Counter({ name: 'kv_raft_leader_changes_total', help: 'Leader changes seen per shard', labelNames: ['shard'], registers: [r] });
    this.proposalsPending = new client.Gauge({ name: 'kv_proposals_pending', help: 'Requests waiting for the next round', registers: [r] });
    this.roundDuration = new client.Histogram({ name: 'kv_round_phase_seconds', help: 'Duration of round phases: round = stepping and applying; wal = Raft WAL append (O_DSYNC); leveldb = the state batch (unsynced, or synced after the WAL for a snapshot install), from the batch start; persist = the whole batch landing (both)', labelNames: ['phase'], buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5], registers: [r] });
    this.roundEntries = new client.Histogram({ name: 'kv_round_persist_ops', help: 'LevelDB state operations per persist batch (group commit size; the Raft log goes to the WAL)', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096], registers: [r] });
    this.snapshots = new client.Counter({ name: 'kv_snapshots_total', help: 'Snapshots sent and received', labelNames: ['direction', 'result'], registers: [r] });
    const flushBytes = (): void => {
      for (const c of this.bytesChildren.values()) c.flush();
    };
    this.transportBytes = new client.Counter({ name: 'kv_transport_bytes_total', help: 'Peer transport bytes', labelNames: ['direction', 'peer'], registers: [r], collect: flushBytes });
    this.transportReconnects = new client.Counter({ name: 'kv_transport_reconnects_total', help: 'Peer reconnect attempts', labelNames: ['peer'], registers: [r] });
    this.transportDropped = new client.Counter({ name: 'kv_transport_dropped_messages_total', help: 'Raft messages dropped (peer down or backlogged)', labelNames: ['peer', 'reason'], registers: [r] });
    this.transportBadFrames = new client.Counter({ name: 'kv_transport_bad_frames_total', help: 'Malformed peer frames (connection closed)', registers: [r] });
    this.idempotencyCollected = new client.Counter({ name: 'kv_idempotency_collected_total', help: 'Expired idempotency records deleted', registers: [r] });
    this.maintenance = new client.Histogram({ name: 'kv_maintenance_seconds', help: 'Maintenance between batches, by part (no round runs meanwhile): snapshot stream starts, log compaction, idempotency collection', labelNames: ['part'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [r] });
    this.maintenanceParts = {
      snapshotSends: this.maintenance.labels({ part: 'snapshot_sends' }),
      compact: this.maintenance.labels({ part: 'compact' }),
      idempotencyGc: this.maintenance.labels({ part: 'idempotency_gc' }),
    };
    this.logCompactions = new client.Counter({ name: 'kv_raft_log_compactions_total', help: 'Raft log compactions: reason log (the per-shard count or the node-wide memory rule) or wal_segments (past --wal-max-segments)', labelNames: ['reason'], registers: [r] });
    this.replicaChecks = new client.Counter({ name: 'kv_replica_checks_total', help: 'Replica checks (state hashed at a checkpoint index, compared with the other replicas): result hashed, skipped (a hash still running), match or mismatch (one per peer and checkpoint)', labelNames: ['result'], registers: [r] });
    this.replicaMismatches = new client.Counter({ name: 'kv_replica_check_mismatches_total', help: 'Checkpoints at which this replica\'s state hash differed from a peer\'s: one of the two has diverged (the replica that differs from every other is the damaged one)', labelNames: ['shard', 'peer'], registers: [r] });
    this.replicaComparedIndex = new client.Gauge({ name: 'kv_replica_check_compared_index', help: 'The highest checkpoint (applied index) of each shard at which this replica\'s hash was compared with a peer\'s: alert when it stops moving on a shard that takes writes (checks not happening)', labelNames: ['shard'], registers: [r] });
    this.slowPersists = new client.Counter({ name: 'kv_slow_persists_total', help: 'Persist batches that took --slow-persist-ms or longer (each is also in the log, rate-limited, with its WAL and LevelDB parts)', registers: [r] });
    const queued = (): number => this.snapshotStreamsQueued();
    const logMem = (): { entries: number; bytes: number } => this.raftLogMemory();
    new client.Gauge({ name: 'kv_raft_log_memory_bytes', help: 'Bytes the Raft logs of all shards hold in memory (data plus an estimated per-entry overhead; bounded by --log-memory-mb)', registers: [r], collect() { this.set(logMem().bytes); } });
    new client.Gauge({ name: 'kv_raft_log_entries', help: 'Entries the Raft logs of all shards hold in memory', registers: [r], collect() { this.set(logMem().entries); } });
    new client.Gauge({ name: 'kv_snapshot_streams_queued', help: 'Snapshot streams this leader has cut and that wait for their turn (--snapshot-streams-per-peer run at a time per follower)', registers: [r], collect() { this.set(queued()); } });
    const inFlight = (): number => this.httpInFlight();
    new client.Gauge({ name: 'kv_http_in_flight', help: 'HTTP requests in flight on this node (beyond --max-in-flight: 503 overloaded)', registers: [r], collect() { this.set(inFlight()); } });
    const fast = (): number => this.fastRequests;
    new client.Counter({ name: 'kv_http_fast_requests_total', help: 'Single-key reads and writes answered ahead of fastify (node/fast-kv.ts); they are counted in kv_http_requests_total too', registers: [r], collect() { this.reset(); this.inc(fast()); } });
    const cache = (): { hits: number; misses: number; bytes: number } => this.readCache();
    new client.Counter({ name: 'kv_read_cache_hits_total', help: 'Single-key reads answered from the read cache (node/read-cache.ts) instead of LevelDB', registers: [r], collect() { this.reset(); this.inc(cache().hits); } });
    new client.Counter({ name: 'kv_read_cache_misses_total', help: 'Single-key reads that went to LevelDB (the value found there is then cached)', registers: [r], collect() { this.reset(); this.inc(cache().misses); } });
    new client.Gauge({ name: 'kv_read_cache_bytes', help: 'Bytes the read cache holds (values, keys and a per-entry overhead; bounded by --read-cache-mb)', registers: [r], collect() { this.set(cache().bytes); } });
    this.eventLoopLag = new client.Gauge({ name: 'kv_event_loop_lag_seconds', help: 'Event-loop lag (p99 over the last interval)', registers: [r] });
  }

  /**
   * The HTTP counter and histogram children for one label set, cached. Both
   * are plain numbers until a scrape (see cheap-metrics.ts): two calls per
   * request.
   */
  httpChildren(route: string, method: string, status: number, consistency: string): HttpChildren {
    const k = `${route}\u0000${method}\u0000${status}\u0000${consistency}`;
    let c = this.httpCache.get(k);
    if (c === undefined) {
      c = {
        count: new PendingCount(this.httpRequests.labels({ route, method, status: String(status), consistency })),
        duration: this.httpDuration.child({ route, method, consistency }),
      };
      this.httpCache.set(k, c);
    }
    return c;
  }

  private readonly httpCache = new Map<string, HttpChildren>();
  private readonly bytesChildren = new Map<string, PendingCount>();

  private bytes(direction: 'in' | 'out', peer: number): PendingCount {
    const k = `${direction}${peer}`;
    let c = this.bytesChildren.get(k);
    if (c === undefined) this.bytesChildren.set(k, (c = new PendingCount(this.transportBytes.labels({ direction, peer: String(peer) }))));
    return c;
  }

  transport(): TransportMetrics {
    return {
      bytesSent: (p, n) => this.bytes('out', p).inc(n),
      bytesReceived: (p, n) => this.bytes('in', p).inc(n),
      reconnect: (p) => this.transportReconnects.inc({ peer: String(p) }),
      dropped: (p, reason, n) => this.transportDropped.inc({ peer: String(p), reason }, n),
      badFrame: () => this.transportBadFrames.inc(),
    };
  }
}
