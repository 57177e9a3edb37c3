/**
 * Public types of the shardkv SDK: options, results, events and the protocol
 * shapes it shares with the server (types only: the SDK shares no runtime code
 * with the server).
 */

/** Read consistency, per operation. Writes are always linearizable. */
export type Consistency = 'linearizable' | 'stale';

/**
 * What an error says about a mutation: `not_applied` when it certainly did not
 * and will not take effect, `unknown` when it may have.
 */
export type Outcome = 'not_applied' | 'unknown';

/** The clock the SDK uses for timeouts, backoff, budgets and breakers (inject a fake one in tests). */
export interface Clock {
  /** Milliseconds, monotonic enough for intervals. */
  now(): number;
  /** Run `fn` after `ms`; returns a function that cancels it. */
  setTimer(ms: number, fn: () => void): () => void;
}

/** A uniform random number in [0, 1) (inject a seeded one in tests). */
export type Random = () => number;

/** One HTTP request as the SDK's transport sees it. */
export interface TransportRequest {
  method: 'GET' | 'PUT' | 'DELETE';
  /** Path and query, e.g. `/v1/kv/acme/k?t=1`. */
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array;
  signal: AbortSignal;
}

/** One HTTP response: status, lower-cased headers, the whole body. */
export interface TransportResponse {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
}

/**
 * The transport port: sends one request to a node's base URL. The default is
 * a keep-alive undici pool per node. A transport throws on network failure;
 * an error with `code` in {ECONNREFUSED, ENOTFOUND, EHOSTUNREACH,
 * UND_ERR_CONNECT_TIMEOUT} is taken to mean the request never left.
 */
export interface Transport {
  request(baseUrl: string, req: TransportRequest): Promise<TransportResponse>;
  close(): Promise<void>;
}

/** Retry policy: exponential backoff with full jitter, honouring Retry-After. */
export interface RetryOptions {
  /** Attempts per call, the first included. Default 8. */
  maxAttempts?: number;
  /** First backoff cap, ms. Default 25. */
  baseDelayMs?: number;
  /** Largest backoff cap, ms. Default 1000. */
  maxDelayMs?: number;
  /** Wait at least the server's Retry-After (capped by this, ms) before retrying that node. Default 1000. */
  maxRetryAfterMs?: number;
}

/** Retry budget: retries may be at most `ratio` × first attempts (+ `minRetries`) over a sliding window. */
export interface RetryBudgetOptions {
  /** Default 0.2 (20 %). */
  ratio?: number;
  /** Retries always allowed per window, so a quiet client can still retry. Default 10. */
  minRetries?: number;
  /** Sliding window, ms. Default 10,000. */
  windowMs?: number;
}

/** Per-node circuit breaker. */
export interface BreakerOptions {
  /** Consecutive failures (network errors, attempt timeouts, 5xx from the node itself) that open it. Default 3. */
  failureThreshold?: number;
  /** How long it stays open before a half-open probe, ms. Default 1000 (doubles on a failed probe, up to 8×). */
  openMs?: number;
  /** Timeout of the probe (`GET /health`), ms. Default 500. */
  probeTimeoutMs?: number;
}

/** Options of {@link KvClient}. */
export interface KvClientOptions {
  /** Seed endpoints (base URLs). Any reachable one is enough to start. */
  endpoints: string[];
  /** Per-attempt timeout, ms. Default 2000. */
  attemptTimeoutMs?: number;
  /** Overall deadline per call (all attempts and backoff), ms. Default 10,000. */
  deadlineMs?: number;
  retry?: RetryOptions;
  retryBudget?: RetryBudgetOptions;
  breaker?: BreakerOptions;
  /** Default read consistency. Default 'linearizable'. */
  consistency?: Consistency;
  /** Keep-alive connections per node. Default 16. */
  connectionsPerNode?: number;
  /** Observe attempts, retries, breaker changes, map refreshes (for metrics and logs). Must not throw. */
  onEvent?: (e: KvEvent) => void;
  /** Injected for tests. */
  clock?: Clock;
  random?: Random;
  transport?: Transport;
}

/** Options every call accepts. */
export interface CallOptions {
  /** Overrides the client's per-attempt timeout, ms. */
  attemptTimeoutMs?: number;
  /** Overrides the client's overall deadline, ms. */
  deadlineMs?: number;
  /** Cancels the call (the error is `aborted`; for a mutation already sent the outcome is `unknown`). */
  signal?: AbortSignal;
  /** X-Request-Id of the call (retries append `.2`, `.3`, ...). Default: a random UUID. */
  requestId?: string;
}

/** Addresses one record. */
export interface RecordRef {
  tenant: string;
  key: string;
  /** Event time, ms since the epoch; absent = the tenant's static bucket. */
  t?: number;
}

export interface PutOptions extends RecordRef, CallOptions {
  value: Uint8Array | string;
  /** Compare-and-set: only if the current version is this (0 = only if absent). */
  ifVersion?: number;
  /** Default: a random one, reused by every retry of this call. */
  idempotencyKey?: string;
}

export interface PutResult {
  version: number;
  shard: number;
  /** The node that answered (X-Served-By). */
  node: number | null;
  requestId: string;
  attempts: number;
}

export interface DeleteOptions extends RecordRef, CallOptions {
  ifVersion?: number;
  idempotencyKey?: string;
}

export interface DeleteResult {
  deleted: boolean;
  /** The version that was deleted (0 if there was none). */
  version: number;
  node: number | null;
  requestId: string;
  attempts: number;
}

export interface ReadOptions extends CallOptions {
  consistency?: Consistency;
  /** Stale reads only: a replica that cannot show it is within this bound answers too_stale (then another is tried). */
  maxStalenessMs?: number;
  /**
   * Linearizable reads only: when the linearizable read fails with an
   * unavailability error (no_quorum, no_leader, timeout, unreachable), or after
   * `fallbackAfterMs`, serve a stale read instead; the result has `stale: true`.
   */
  fallbackToStale?: boolean;
  /** With fallbackToStale: give the linearizable path this long. Default half the deadline. */
  fallbackAfterMs?: number;
  /** Stale reads only: if no answer within `hedgeAfterMs`, ask another replica too; the first answer wins. */
  hedge?: boolean;
  /** Default 50 ms. */
  hedgeAfterMs?: number;
}

export interface GetOptions extends RecordRef, ReadOptions {}

export interface GetResult {
  value: Uint8Array;
  version: number;
  shard: number;
  /** How it was served: 'stale' also when a linearizable read fell back. */
  consistency: Consistency;
  /** True when the read is not linearizable (asked stale, or fell back). */
  stale: boolean;
  /** Stale reads: how far behind the leader the replica may be (null when unknown). */
  stalenessMs: number | null;
  node: number | null;
  requestId: string;
  attempts: number;
}

export interface ScanOptions extends ReadOptions {
  tenant: string;
  /** Event-time range, ms, inclusive; buckets are visited in order. */
  from?: number;
  to?: number;
  /** Scan the static bucket instead of a time range. */
  static?: boolean;
  prefix?: string;
  /** Page size per request (≤ 1000). Default 500. */
  pageSize?: number;
}

export interface ScanItem {
  key: string;
  t: number | null;
  version: number;
  value: Uint8Array;
}

/** Wire shape of GET /v1/cluster. */
export interface ClusterMapWire {
  epoch: number;
  bucketMs: number;
  ring: { vnodes: number; hash: string };
  nodeId?: number;
  nodes: Array<{ id: number; apiUrl: string; state: string }>;
  shards: Array<{ id: number; replicas: number[]; leader: number | null; term: number | null; commitIndex: number | null; appliedIndex: number | null }>;
}

/** The SDK's view of the cluster: the map merged from the nodes it could reach. */
export interface ClusterInfo {
  epoch: number;
  bucketMs: number;
  vnodes: number;
  nodes: Array<{ id: number; apiUrl: string; breaker: BreakerState }>;
  shards: Array<{ id: number; replicas: number[]; leader: number | null; term: number | null }>;
  /** When the SDK fetched it (client clock, ms). */
  fetchedAt: number;
}

export type BreakerState = 'closed' | 'open' | 'half_open';

export type OpName = 'put' | 'get' | 'delete' | 'scan' | 'cluster';

/** Events for metrics and logs. */
export type KvEvent =
  | { type: 'attempt'; op: OpName; requestId: string; attempt: number; node: number | null; url: string; hedge?: boolean }
  | { type: 'attempt_end'; op: OpName; requestId: string; attempt: number; node: number | null; durationMs: number; status: number | null; code: string | null }
  | { type: 'retry'; op: OpName; requestId: string; attempt: number; delayMs: number; code: string; outcome: Outcome }
  | { type: 'retry_denied'; op: OpName; requestId: string; reason: 'budget' | 'deadline' | 'attempts' | 'not_retryable'; code: string }
  | { type: 'breaker'; node: number; url: string; from: BreakerState; to: BreakerState }
  | { type: 'map_refresh'; epoch: number; reason: string; leaders: number }
  | { type: 'fallback_stale'; op: OpName; requestId: string; code: string }
  | { type: 'hedge'; op: OpName; requestId: string; node: number };
