/**
 * What the load generator drives: a system under test that can put, get and
 * scan the benchmark keyspace. Each target starts (and later stops) its own
 * processes unless pointed at running ones.
 */
import type { Consistency, KeyRef, Keyspace } from '../workload.ts';

/**
 * ceiling3: the ceiling server as three processes (a partition on one of them), shaped like a 3-node cluster.
 * floor: ceiling3 whose PUTs are durable on two of the three before they are answered (bench/floor-log.ts).
 */
export const TARGETS = ['store', 'etcd', 'ceiling', 'ceiling3', 'floor'] as const;
export type TargetKind = (typeof TARGETS)[number];

export interface OpResult {
  ok: boolean;
  /** Error class when not ok: "<HTTP status> <code>" (e.g. "503 no_leader") or "ERR <transport code>". */
  code?: string;
  /** Scans: items returned. */
  items?: number;
}

export interface Target {
  readonly kind: TargetKind;
  /** Facts for the report: endpoints, routing, versions, how processes were started. */
  readonly info: Record<string, unknown>;
  put(ref: KeyRef, value: Buffer): Promise<OpResult>;
  get(ref: KeyRef, consistency: Consistency): Promise<OpResult>;
  /** Up to `limit` records of one tenant's time bucket (bucket = floor(t / bucketMs) of `ref.t`). */
  scan(ref: KeyRef, limit: number, consistency: Consistency): Promise<OpResult>;
  /** PIDs of the server processes (for CPU accounting); empty when they are not ours. */
  serverPids(): number[];
  /** Client-side counters for the report (e.g. answers forwarded by another node); cumulative. */
  counters?(): Record<string, number>;
  /** Close connections and stop what was started (by PID), remove temp dirs. Idempotent; never throws. Returns notes. */
  close(): Promise<string[]>;
}

export interface TargetOptions {
  /** store: use this running cluster instead of starting one. */
  endpoints?: string[];
  /** Cluster shape for targets the harness starts (etcd: always 3 members unless nodes says otherwise). */
  nodes: number;
  shards: number;
  replicas: number;
  /** Per-request timeout (ms): undici headers and body timeouts. */
  timeoutMs: number;
  /** Connections per endpoint. */
  connections: number;
  valueBytes: number;
  keyspace: Keyspace;
  /** Check that reads return a value of the written length. */
  verify: boolean;
  /** store: the raw HTTP client routed like bench/load.ts's `leader` route, or the SDK (client/). */
  storeClient: 'raw' | 'sdk';
  /** etcd: where puts go (reads always round-robin over the members). */
  etcdPutRoute: 'spread' | 'leader';
  /** ceiling: server processes (a partition lives on one of them, by hash). */
  ceilingProcs?: number;
  /**
   * Where stale reads go: `spread` (default) over the nodes that can serve them (store: the shard's
   * replicas; etcd: every member), or `one`: all to the first node (store: when it holds a replica of
   * the shard, as every node does with 3 replicas on 3 nodes; etcd: the first member), as clients
   * that read from the replica next to them. ceiling3 keeps each partition on its process either way.
   */
  staleReadsTo?: 'spread' | 'one';
  /** Parent directory for temp data dirs and logs. */
  workDir: string;
  log: (s: string) => void;
}

/** Error key of a thrown transport error (undici codes such as UND_ERR_HEADERS_TIMEOUT). */
export function transportErrorCode(e: unknown): string {
  const x = e as { code?: unknown; name?: unknown };
  return `ERR ${typeof x.code === 'string' ? x.code : typeof x.name === 'string' ? x.name : 'unknown'}`;
}
