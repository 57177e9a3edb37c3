import { defaultRaftConfig, type RaftConfig } from '../raft/index.ts';
import type { ClusterSpec, NodeInfo } from '../shard/cluster-map.ts';
import { PEER_PROTOCOL } from '../shard/raft-codec.ts';

/** Everything a node needs, from flags and environment (see README, "Running a node"). */
export interface NodeConfig {
  id: number;
  dataDir: string;
  clusterId: string;
  /** host:port of the HTTP API. */
  listen: string;
  /** host:port of the peer (Raft) listener. */
  peerListen: string;
  cluster: ClusterSpec;
  tickMs: number;
  raft: RaftConfig;
  idempotencyRetentionMs: number;
  idempotencyGcIntervalMs: number;
  maxQueuedPerShard: number;
  maxInbox: number;
  /** Ticks without a quorum-acked heartbeat after which a leader fails requests fast. */
  noQuorumTicks: number;
  /** Idle ticks before a leader quiesces its group (0: never). */
  quiesceAfterTicks: number;
  /** How often the node fetches its peers' replica-check hashes and compares them with its own (ms). */
  checkCompareMs: number;
  /** Log entries on disk before compaction, and how many to keep after it. */
  compactEveryEntries: number;
  compactKeepEntries: number;
  /** All shards' in-memory Raft logs together; past it the largest are compacted (node/log-budget.ts). */
  logMemoryBytes: number;
  /** V8's heap growing factor after a full GC, as 1 + N/100 (0: V8's own heuristic). */
  heapGrowingPercent: number;
  /** Size of a WAL segment file (preallocated, zeroed). */
  walSegmentBytes: number;
  /** Past this many WAL segments, shards that pin the oldest are compacted so it can go. */
  walMaxSegments: number;
  snapshotChunkBytes: number;
  snapshotTimeoutMs: number;
  /** Snapshot streams a leader sends one follower at a time; the rest wait their turn. */
  snapshotStreamsPerPeer: number;
  /** Deadline for a request inside the node (propose/read wait, forwarding). */
  requestTimeoutMs: number;
  /** Max concurrent HTTP requests being served; beyond it: 503 overloaded. */
  maxInFlight: number;
  /** Rounds that may begin while a batch is being written (their writes form the next batch); 0: one round per batch. */
  midFlightRounds: number;
  logLevel: string;
  /**
   * A deliberately planted bug, for proving the fault suite catches it (never in
   * production): `local-lin-reads` serves "linearizable" reads from this node's
   * own replica, leader or not, without ReadIndex or lease; `unguarded-lost-state` lets a replica that
   * starts without its state vote at once (RaftConfig.recoverLostState off); `stale-read-cache` keeps
   * read-cache entries when a batch that overwrote them lands (node/read-cache.ts), on the stale-read
   * path only (linearizable reads skip the cache then); `stale-empty-generation` makes stale single-key
   * reads look in the generation above the live one (empty: 404), as a botched snapshot switch would;
   * `wal-no-dsync` opens WAL segments without O_DSYNC, so an append returns before its data is durable
   * (a power cut loses acknowledged writes: test/integration/power-cut.test.ts).
   */
  plantBug: PlantedServerBug | null;
  /** TESTS ONLY: every WAL append waits this long first (a slow disk, end to end). */
  faultSlowWalMs: number;
  /** TESTS ONLY: the first snapshot stream received loses its chunk 1 on the way (as in a connection that died with it). */
  faultDropSnapshotChunk: boolean;
  /** The highest peer protocol version this node speaks (shard/raft-codec.ts PEER_PROTOCOL; lower: as an older node). */
  peerProtocol: number;
  /** A persist batch (WAL append + LevelDB batch) taking this long is logged as a warning (rate-limited) and counted. */
  slowPersistMs: number;
  /** Bytes of LevelDB values kept for single-key reads (node/read-cache.ts), in MiB; 0: off. */
  readCacheMb: number;
}

export const PLANTED_SERVER_BUGS = ['local-lin-reads', 'unguarded-lost-state', 'stale-read-cache', 'stale-empty-generation', 'wal-no-dsync', 'wal-corrupt-as-torn', 'replica-diverges'] as const;
export type PlantedServerBug = (typeof PLANTED_SERVER_BUGS)[number];

export const USAGE = `usage: tsx node/main.ts --id N --peers SPEC [options]

  --id N                 this node's id (1..)
  --peers SPEC           every node: "1=127.0.0.1:7001:8001,2=127.0.0.1:7002:8002,..."
                         (id=host:httpPort:peerPort); this node listens on its own entry
  --data DIR             LevelDB directory (default ./.cluster/node-<id>)
  --shards N             shard count (default 16; env KV_SHARDS)
  --replicas N           replicas per shard (default 3, at most the node count; env KV_REPLICAS)
  --bucket-ms N          time-bucket width of the partition key (default 3600000)
  --vnodes N             ring points per shard (default 64)
  --tick-ms N            Raft tick (default 100; election after 10-20 ticks, heartbeat every tick)
  --compact-every N      compact a shard's log once it holds N entries (default 20000)
  --compact-keep N       entries kept after compaction for lagging followers (default 5000)
  --log-memory-mb N      memory all shards' Raft logs may hold together; past it the largest are
                         compacted first (default 32)
  --heap-growing-percent N  V8 grows its heap after a full GC to (1 + N/100) x the live size
                         (default 0: V8's own heuristic, up to 4x under a write load;
                         100 saves ~60 MiB of RSS for ~10 % more CPU per linearizable read)
  --wal-segment-bytes N  size of a Raft WAL segment, preallocated and zeroed (default 67108864)
  --wal-max-segments N   past N WAL segments, shards pinning the oldest are compacted so it can go (default 4)
  --idempotency-retention-ms N   how long (log time) a repeated Idempotency-Key returns the first outcome (default 600000)
  --quiesce-after-ticks N   an idle group stops heartbeating after N ticks without requests (default 20; 0 = never)
  --check-every N        replica checks: every replica hashes its shard's data at each multiple of N of
                         the applied index, and the nodes compare the hashes (default 100000; 0 = off,
                         else at least 16)
  --check-compare-ms N   how often a node fetches its peers' hashes to compare (default 10000)
  --lease                linearizable reads from a leader lease instead of ReadIndex rounds
  --mid-flight-rounds N  rounds that may begin while a batch is being written (default 64; 0: one round per batch)
  --snapshot-streams-per-peer N   snapshot streams sent to one follower at a time; the others wait
                         their turn (default 1: interleaved streams cost the receiver's LevelDB
                         merges, see bench/README.md)
  --snapshot-timeout-ms N   a snapshot stream's frame must drain within N ms; a stream sent in full is
                         not sent again for N ms while its follower installs it, unless the follower
                         says it gave it up (default 10000)
  --peer-listen H:P      listen for peers here instead of on this node's --peers entry (the entry is
                         then only where the others dial it, e.g. through a fault-injecting proxy)
  --cluster-id ID        refuse peers of another cluster (default "kv")
  --max-in-flight N      HTTP requests served at once; beyond: 503 overloaded, not_applied (default 4096)
  --log-level LEVEL      pino level (default info; env KV_LOG_LEVEL)
  --slow-persist-ms N    warn (at most every 5 s) when writing one batch takes N ms or more, with the
                         WAL's and LevelDB's parts (default 200)
  --read-cache-mb N      keep up to N MiB of values that single-key reads found in LevelDB, so the
                         next read of the key skips LevelDB (default 32; 0: off)
  --peer-protocol N      speak peer protocol version N at most, as a node of an older release does
                         (1: no leader-contact probes); default the newest (2). Peers speak to each
                         node in the lower of their two versions, so a cluster can be upgraded or
                         rolled back one node at a time
  --fault-slow-wal-ms N  TESTS ONLY: every WAL append waits N ms first (a slow disk)
  --fault-drop-snapshot-chunk
                         TESTS ONLY: the first snapshot stream received loses its chunk 1 on the way
  --plant-bug NAME       TESTS ONLY: plant a known bug so the fault suite can show it catches it
                         (local-lin-reads: linearizable reads served by any replica without ReadIndex;
                         unguarded-lost-state: a replica that starts empty votes at once;
                         stale-read-cache: stale reads' cache keeps values that were overwritten;
                         stale-empty-generation: stale reads of single keys look in the next,
                         empty generation: every one answers 404;
                         wal-no-dsync: WAL appends return before they are durable;
                         wal-corrupt-as-torn: a damaged WAL record is taken for a torn tail,
                         and replay drops it and the rest of its segment;
                         replica-diverges: every 10th record this node stores has its last
                         byte changed, as damage on its disk would leave it)`;

function parseArgs(argv: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) out.set(a.slice(2, eq), a.slice(eq + 1));
    else if (a === '--lease' || a === '--fault-drop-snapshot-chunk') out.set(a.slice(2), 'true');
    else {
      const v = argv[i + 1];
      if (v === undefined) throw new Error(`${a} needs a value`);
      out.set(a.slice(2), v);
      i++;
    }
  }
  return out;
}

function int(v: string | undefined, dflt: number, name: string, min = 1): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}, got ${v}`);
  return n;
}

export function parsePeers(spec: string): NodeInfo[] {
  return spec.split(',').filter((x) => x.length > 0).map((part) => {
    const m = /^(\d+)=([^:]+):(\d+):(\d+)$/.exec(part.trim());
    if (m === null) throw new Error(`bad peer "${part}": expected id=host:httpPort:peerPort`);
    const [, id, host, http, peer] = m as unknown as [string, string, string, string, string];
    return { id: Number(id), apiUrl: `http://${host}:${http}`, peerAddr: `${host}:${peer}` };
  });
}

export function loadConfig(argv: string[], env: NodeJS.ProcessEnv): NodeConfig {
  const a = parseArgs(argv);
  const id = int(a.get('id'), 0, '--id');
  const peersSpec = a.get('peers') ?? env['KV_PEERS'];
  if (peersSpec === undefined) throw new Error('--peers is required');
  const nodes = parsePeers(peersSpec);
  const me = nodes.find((n) => n.id === id);
  if (me === undefined) throw new Error(`--id ${id} is not in --peers`);
  const url = new URL(me.apiUrl);
  const tickMs = int(a.get('tick-ms'), 100, '--tick-ms');
  const raft = defaultRaftConfig(id, { voters: [], learners: [] }, Math.random);
  raft.electionTicks = 10;
  raft.heartbeatTicks = 1;
  raft.maxInflightMsgs = 64;
  raft.maxMsgBytes = 1 << 20;
  raft.maxUncommittedBytes = 64 << 20;
  raft.applyBreakEvery = int(a.get('check-every'), 100_000, '--check-every', 0);
  // Each checkpoint ends a batch for every shard of the node: a small interval costs throughput.
  if (raft.applyBreakEvery > 0 && raft.applyBreakEvery < 16) throw new Error(`--check-every must be 0 (off) or at least 16, got ${raft.applyBreakEvery}`);
  if (a.get('lease') === 'true') raft.readOnly = 'lease';
  const cfg: NodeConfig = {
    id,
    dataDir: a.get('data') ?? `./.cluster/node-${id}`,
    clusterId: a.get('cluster-id') ?? 'kv',
    listen: `${url.hostname}:${url.port}`,
    peerListen: a.get('peer-listen') ?? me.peerAddr,
    cluster: {
      nodes,
      shardCount: int(a.get('shards') ?? env['KV_SHARDS'], 16, '--shards'),
      replicas: int(a.get('replicas') ?? env['KV_REPLICAS'], Math.min(3, nodes.length), '--replicas'),
      bucketMs: int(a.get('bucket-ms'), 3_600_000, '--bucket-ms'),
      vnodes: int(a.get('vnodes'), 64, '--vnodes'),
    },
    tickMs,
    raft,
    idempotencyRetentionMs: int(a.get('idempotency-retention-ms'), 10 * 60 * 1000, '--idempotency-retention-ms'),
    idempotencyGcIntervalMs: 0, // set below from the retention
    maxQueuedPerShard: 10_000,
    maxInbox: 100_000,
    noQuorumTicks: 5,
    quiesceAfterTicks: int(a.get('quiesce-after-ticks'), 20, '--quiesce-after-ticks', 0),
    checkCompareMs: int(a.get('check-compare-ms'), 10_000, '--check-compare-ms', 10),
    compactEveryEntries: int(a.get('compact-every'), 20_000, '--compact-every'),
    compactKeepEntries: int(a.get('compact-keep'), 5_000, '--compact-keep', 0),
    logMemoryBytes: int(a.get('log-memory-mb'), 32, '--log-memory-mb') * (1 << 20),
    heapGrowingPercent: int(a.get('heap-growing-percent'), 0, '--heap-growing-percent', 0),
    walSegmentBytes: int(a.get('wal-segment-bytes'), 64 << 20, '--wal-segment-bytes', 4096),
    walMaxSegments: int(a.get('wal-max-segments'), 4, '--wal-max-segments', 2),
    snapshotChunkBytes: 1 << 20,
    snapshotTimeoutMs: int(a.get('snapshot-timeout-ms'), 10_000, '--snapshot-timeout-ms', 100),
    snapshotStreamsPerPeer: int(a.get('snapshot-streams-per-peer'), 1, '--snapshot-streams-per-peer', 1),
    requestTimeoutMs: 5_000,
    maxInFlight: int(a.get('max-in-flight'), 4096, '--max-in-flight'),
    midFlightRounds: int(a.get('mid-flight-rounds') ?? env['KV_MID_FLIGHT_ROUNDS'], 64, '--mid-flight-rounds', 0),
    logLevel: a.get('log-level') ?? env['KV_LOG_LEVEL'] ?? 'info',
    plantBug: null,
    faultSlowWalMs: int(a.get('fault-slow-wal-ms'), 0, '--fault-slow-wal-ms', 0),
    faultDropSnapshotChunk: a.get('fault-drop-snapshot-chunk') === 'true',
    peerProtocol: int(a.get('peer-protocol'), PEER_PROTOCOL, '--peer-protocol', 1),
    slowPersistMs: int(a.get('slow-persist-ms'), 200, '--slow-persist-ms', 1),
    readCacheMb: int(a.get('read-cache-mb'), 32, '--read-cache-mb', 0),
  };
  if (cfg.peerProtocol > PEER_PROTOCOL) throw new Error(`--peer-protocol must be 1..${PEER_PROTOCOL}, got ${cfg.peerProtocol}`);
  const plant = a.get('plant-bug');
  if (plant !== undefined) {
    const known = PLANTED_SERVER_BUGS.find((b) => b === plant);
    if (known === undefined) throw new Error(`--plant-bug must be one of ${PLANTED_SERVER_BUGS.join(', ')}; got ${plant}`);
    cfg.plantBug = known;
    if (plant === 'unguarded-lost-state') cfg.raft.recoverLostState = false;
  }
  cfg.idempotencyGcIntervalMs = Math.min(5_000, Math.max(100, Math.floor(cfg.idempotencyRetentionMs / 2)));
  if (cfg.cluster.replicas > nodes.length) throw new Error(`--replicas ${cfg.cluster.replicas} exceeds the ${nodes.length} nodes`);
  return cfg;
}
