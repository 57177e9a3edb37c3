/**
 * KvClient: the shardkv SDK. Routes each call straight to the right node with
 * the cluster map and the same hash ring as the server; retries only what is
 * safe, within a per-attempt timeout, an overall deadline and a retry budget;
 * keeps a circuit breaker per node. See client/README.md.
 */
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { KvError, MAP_STALE_CODES, RETRYABLE_CODES } from './errors.ts';
import { CircuitBreaker, RetryBudget, backoffDelay, sleep, systemClock } from './policy.ts';
import { ClientRing, STATIC_BUCKET, bucketOf, loadHash32, type Hash32 } from './ring.ts';
import { NOT_SENT_CODES, UndiciTransport } from './transport.ts';
import type {
  BreakerState, CallOptions, Clock, ClusterInfo, ClusterMapWire, Consistency, DeleteOptions, DeleteResult, GetOptions, GetResult,
  KvClientOptions, KvEvent, OpName, Outcome, PutOptions, PutResult, Random, ReadOptions, ScanItem, ScanOptions, Transport, TransportResponse,
} from './types.ts';

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

interface ShardView { id: number; replicas: number[]; leader: number | null; term: number }
interface MapState {
  epoch: number;
  bucketMs: number;
  vnodes: number;
  ring: ClientRing;
  nodes: Map<number, string>;
  shards: Map<number, ShardView>;
  fetchedAt: number;
}

/** Where one attempt goes. */
interface Target { url: string; node: number | null; leader: boolean }

/** One call's plan, executed with retries by `execute`. */
interface CallSpec<T> {
  op: OpName;
  mutation: boolean;
  method: 'GET' | 'PUT' | 'DELETE';
  /** Path and query. */
  path: string;
  body?: Uint8Array;
  headers?: Record<string, string>;
  /** Shard to route to, or null for "any node". */
  shard: () => number | null;
  consistency: Consistency;
  /** Turn a response (2xx, or 404 for reads) into the result. */
  decode: (res: TransportResponse, target: Target, requestId: string, attempts: number) => T;
  /** Stop retrying on this error (e.g. to fall back to stale). */
  stopOn?: (e: KvError) => boolean;
  hedge?: { afterMs: number };
}

class AbortReason {
  constructor(readonly code: 'attempt_timeout' | 'deadline_exceeded' | 'aborted' | 'hedge_lost', readonly message: string) {}
}

function parseRetryAfter(v: string | undefined): number | null {
  if (v === undefined) return null;
  const s = Number(v);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const d = Date.parse(v);
  return Number.isNaN(d) ? null : Math.max(0, d - Date.now());
}

function num(v: string | undefined): number | null {
  if (v === undefined || v === '' || v === 'unknown') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

function qs(params: Record<string, string | number | boolean | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) p.set(k, String(v));
  const s = p.toString();
  return s === '' ? '' : `?${s}`;
}

/** Base64 (standard alphabet) to bytes. */
function fromBase64(s: string): Uint8Array {
  const b = Buffer.from(s, 'base64');
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * The shardkv client. Construct it, optionally `await kv.connect()`, call
 * `put` / `get` / `delete` / `scan`, and `close()` it when done.
 *
 * ```ts
 * const kv = new KvClient({ endpoints: ['http://127.0.0.1:7001', 'http://127.0.0.1:7002'] });
 * const { version } = await kv.put({ tenant: 'acme', key: 'k', value: 'v' });
 * const r = await kv.get({ tenant: 'acme', key: 'k' });   // { value, version, ... } | null
 * await kv.close();
 * ```
 */
export class KvClient {
  private readonly opts: KvClientOptions;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly transport: Transport;
  private readonly budget: RetryBudget;
  private readonly breakers = new Map<string, CircuitBreaker>();
  /** Every call in flight listens on this (removed when the call ends): no listener limit. */
  private readonly closeCtl = (() => {
    const c = new AbortController();
    setMaxListeners(0, c.signal);
    return c;
  })();
  private readonly attemptTimeoutMs: number;
  private readonly deadlineMs: number;
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly maxRetryAfterMs: number;
  private hash: Hash32 | null = null;
  private map: MapState | null = null;
  private refreshing: Promise<MapState> | null = null;
  private lastRefreshAt = -Infinity;
  private closed = false;

  constructor(opts: KvClientOptions) {
    if (opts.endpoints.length === 0) throw new TypeError('KvClient needs at least one endpoint');
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    this.transport = opts.transport ?? new UndiciTransport({ connections: opts.connectionsPerNode ?? 16 });
    this.budget = new RetryBudget(this.clock, opts.retryBudget);
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 2000;
    this.deadlineMs = opts.deadlineMs ?? 10_000;
    this.maxAttempts = opts.retry?.maxAttempts ?? 8;
    this.baseDelayMs = opts.retry?.baseDelayMs ?? 25;
    this.maxDelayMs = opts.retry?.maxDelayMs ?? 1000;
    this.maxRetryAfterMs = opts.retry?.maxRetryAfterMs ?? 1000;
  }

  // ------------------------------------------------------------------ public API

  /** Fetch the cluster map now (calls do it lazily). Fails only when no endpoint answers. */
  async connect(): Promise<ClusterInfo> {
    await this.ensureMap();
    return this.info();
  }

  /** The cluster map as the SDK sees it, refreshed from the nodes (leaders merged by highest term). */
  async cluster(opts: CallOptions = {}): Promise<ClusterInfo> {
    void opts;
    this.checkOpen();
    await this.refreshMap('cluster()', true);
    return this.info();
  }

  /**
   * Write a record. Always linearizable; carries an idempotency key reused by
   * every retry, so one call changes the record at most once.
   * With `ifVersion`, a compare-and-set: a mismatch throws `version_mismatch`
   * (`currentVersion` set, outcome `not_applied`).
   */
  async put(o: PutOptions): Promise<PutResult> {
    const value = typeof o.value === 'string' ? utf8.encode(o.value) : o.value;
    const idem = o.idempotencyKey ?? randomUUID();
    return this.execute<PutResult>(o, {
      op: 'put', mutation: true, method: 'PUT', body: value,
      path: `/v1/kv/${encodeURIComponent(o.tenant)}/${encodeURIComponent(o.key)}${qs({ t: o.t, ifVersion: o.ifVersion })}`,
      headers: { 'idempotency-key': idem, 'content-type': 'application/octet-stream' },
      shard: () => this.shardOf(o.tenant, o.t), consistency: 'linearizable',
      decode: (res, target, requestId, attempts) => {
        const j = this.json(res) as { version: number; shard: number };
        return { version: j.version, shard: j.shard, node: num(res.headers['x-served-by']) ?? target.node, requestId, attempts };
      },
    });
  }

  /** Delete a record (optionally only at `ifVersion`). Idempotent across retries like `put`. */
  async delete(o: DeleteOptions): Promise<DeleteResult> {
    const idem = o.idempotencyKey ?? randomUUID();
    return this.execute<DeleteResult>(o, {
      op: 'delete', mutation: true, method: 'DELETE',
      path: `/v1/kv/${encodeURIComponent(o.tenant)}/${encodeURIComponent(o.key)}${qs({ t: o.t, ifVersion: o.ifVersion })}`,
      headers: { 'idempotency-key': idem },
      shard: () => this.shardOf(o.tenant, o.t), consistency: 'linearizable',
      decode: (res, target, requestId, attempts) => {
        const j = this.json(res) as { deleted: boolean; version: number };
        return { deleted: j.deleted, version: j.version, node: num(res.headers['x-served-by']) ?? target.node, requestId, attempts };
      },
    });
  }

  /**
   * Read a record; null when it does not exist. `consistency: 'stale'` reads
   * from a replica (spread over them); `fallbackToStale` and `hedge` are opt-in.
   */
  async get(o: GetOptions): Promise<GetResult | null> {
    const path = (c: Consistency): string =>
      `/v1/kv/${encodeURIComponent(o.tenant)}/${encodeURIComponent(o.key)}${qs({ t: o.t, consistency: c, maxStalenessMs: c === 'stale' ? o.maxStalenessMs : undefined })}`;
    return this.read<GetResult | null>(o, 'get', () => this.shardOf(o.tenant, o.t), path, (res, target, requestId, attempts, c, fellBack) => {
      if (res.status === 404) return null;
      return {
        value: res.body, version: num(res.headers['x-version']) ?? 0, shard: num(res.headers['x-shard']) ?? -1,
        consistency: fellBack ? 'stale' : c, stale: c === 'stale', stalenessMs: c === 'stale' ? num(res.headers['x-staleness-ms']) : null,
        node: num(res.headers['x-served-by']) ?? target.node, requestId, attempts,
      };
    });
  }

  /**
   * Scan a tenant: a time range [from, to] (its buckets visited in order, each
   * sent to its own shard) or the static bucket. Pages are fetched lazily.
   */
  async *scan(o: ScanOptions): AsyncGenerator<ScanItem, void, undefined> {
    await this.ensureMap();
    const bucketMs = (this.map as MapState).bucketMs;
    const pageSize = Math.min(1000, Math.max(1, o.pageSize ?? 500));
    let first: number;
    let last: number;
    if (o.static === true) {
      first = STATIC_BUCKET;
      last = STATIC_BUCKET;
    } else {
      if (o.from === undefined || o.to === undefined) throw new KvError({ code: 'invalid_argument', message: 'scan needs from and to, or static: true', outcome: 'not_applied' });
      if (o.to < o.from) throw new KvError({ code: 'invalid_argument', message: 'to must be >= from', outcome: 'not_applied' });
      first = bucketOf(o.from, bucketMs);
      last = bucketOf(o.to, bucketMs);
    }
    for (let b = first; b <= last; b++) {
      const from = b === STATIC_BUCKET ? undefined : Math.max(o.from as number, b * bucketMs);
      const to = b === STATIC_BUCKET ? undefined : Math.min(o.to as number, (b + 1) * bucketMs - 1);
      let cursor: string | undefined;
      for (;;) {
        const path = (c: Consistency): string => `/v1/kv/${encodeURIComponent(o.tenant)}${qs({
          from, to, static: b === STATIC_BUCKET ? 'true' : undefined, prefix: o.prefix, limit: pageSize, cursor, consistency: c,
          maxStalenessMs: c === 'stale' ? o.maxStalenessMs : undefined,
        })}`;
        const page = await this.read(o, 'scan', () => this.shardFor(o.tenant, b), path, (res) => {
          if (res.status === 404) return { items: [], cursor: null };
          return this.json(res) as { items: Array<{ key: string; t: number | null; version: number; value: string }>; cursor: string | null };
        });
        for (const it of page.items) yield { key: it.key, t: it.t, version: it.version, value: fromBase64(it.value) };
        if (page.cursor === null) break;
        cursor = page.cursor;
      }
    }
  }

  /** Abort calls in flight, close the connection pools. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closeCtl.abort(new AbortReason('aborted', 'client closed'));
    await this.transport.close();
  }

  /** State of each node's circuit breaker (by base URL). */
  breakerStates(): Record<string, BreakerState> {
    const out: Record<string, BreakerState> = {};
    for (const [url, b] of this.breakers) out[url] = b.state;
    return out;
  }

  /** Retry-budget counts in the current window. */
  retryBudgetStats(): { firsts: number; retries: number } {
    return this.budget.stats();
  }

  // ------------------------------------------------------------------ reads: fallback and hedging

  private async read<T>(o: ReadOptions, op: OpName, shard: () => number | null, path: (c: Consistency) => string,
    decode: (res: TransportResponse, target: Target, requestId: string, attempts: number, c: Consistency, fellBack: boolean) => T): Promise<T> {
    const consistency = o.consistency ?? this.opts.consistency ?? 'linearizable';
    const spec = (c: Consistency, fellBack: boolean): CallSpec<T> => ({
      op, mutation: false, method: 'GET', path: path(c), shard, consistency: c,
      decode: (res, target, requestId, attempts) => decode(res, target, requestId, attempts, c, fellBack),
      ...(c === 'stale' && o.hedge === true ? { hedge: { afterMs: o.hedgeAfterMs ?? 50 } } : {}),
    });
    if (consistency === 'stale' || o.fallbackToStale !== true) return this.execute(o, spec(consistency, false));
    const deadline = o.deadlineMs ?? this.deadlineMs;
    const linMs = Math.min(deadline, o.fallbackAfterMs ?? Math.floor(deadline / 2));
    const started = this.clock.now();
    try {
      return await this.execute({ ...o, deadlineMs: linMs }, { ...spec('linearizable', false), stopOn: (e) => e.code === 'no_quorum' });
    } catch (e) {
      if (!(e instanceof KvError) || o.signal?.aborted === true || this.closed) throw e;
      if (!(RETRYABLE_CODES.has(e.code) || e.code === 'deadline_exceeded')) throw e;
      this.emit({ type: 'fallback_stale', op, requestId: e.requestId ?? '', code: e.code });
      const left = Math.max(1, deadline - (this.clock.now() - started));
      return this.execute({ ...o, deadlineMs: left }, spec('stale', true));
    }
  }

  // ------------------------------------------------------------------ the retry loop

  private async execute<T>(co: CallOptions, spec: CallSpec<T>): Promise<T> {
    this.checkOpen();
    const base = co.requestId ?? randomUUID();
    const deadlineMs = co.deadlineMs ?? this.deadlineMs;
    const attemptMs = co.attemptTimeoutMs ?? this.attemptTimeoutMs;
    const start = this.clock.now();
    const callCtl = new AbortController();
    const onUserAbort = (): void => callCtl.abort(new AbortReason('aborted', 'aborted by the caller'));
    const onClose = (): void => callCtl.abort(new AbortReason('aborted', 'client closed'));
    if (co.signal?.aborted === true) onUserAbort();
    co.signal?.addEventListener('abort', onUserAbort, { once: true });
    this.closeCtl.signal.addEventListener('abort', onClose, { once: true });
    const cancelDeadline = this.clock.setTimer(deadlineMs, () => callCtl.abort(new AbortReason('deadline_exceeded', `deadline of ${deadlineMs} ms exceeded`)));
    this.budget.recordFirst();
    let maybeApplied = false;
    let last: KvError | null = null;
    let attempt = 0;
    const tried = new Set<string>();
    const finalError = (e: KvError): KvError => e.with({
      outcome: spec.mutation && (maybeApplied || e.outcome === 'unknown') ? 'unknown' : 'not_applied', attempts: attempt,
    });
    try {
      for (;;) {
        attempt++;
        const requestId = attempt === 1 ? base : `${base}.${attempt}`;
        let err: KvError;
        try {
          await this.ensureMap(callCtl.signal);
          if (spec.hedge !== undefined) return await this.hedged(spec, requestId, attempt, attemptMs, callCtl.signal, tried);
          const target = this.route(spec, tried);
          return await this.attempt(spec, target, requestId, attempt, attemptMs, callCtl.signal);
        } catch (e) {
          err = this.toKvError(e, spec, requestId, callCtl.signal);
        }
        if (err.outcome === 'unknown') maybeApplied = true;
        if (err.url !== null) tried.add(err.url);
        last = err;
        if (callCtl.signal.aborted) throw finalError(this.abortError(callCtl.signal, err, requestId));
        // Definitive answers end the call.
        // (With the idempotency key recorded even for conflicts, a later definitive answer is authoritative.)
        if (!RETRYABLE_CODES.has(err.code)) throw err.with({ attempts: attempt, outcome: spec.mutation ? err.outcome : 'not_applied' });
        if (MAP_STALE_CODES.has(err.code)) void this.refreshMap(`${spec.op}: ${err.code} from ${err.url ?? '?'}`).catch(() => {});
        if (spec.stopOn?.(err) === true) throw finalError(err);
        if (attempt >= this.maxAttempts) {
          this.emit({ type: 'retry_denied', op: spec.op, requestId: base, reason: 'attempts', code: err.code });
          throw finalError(err);
        }
        // A Retry-After is the advice of that node: honour it unless the next attempt goes elsewhere.
        const nextTarget = this.peekRoute(spec, tried);
        const retryAfter = nextTarget !== null && nextTarget === err.url ? err.retryAfterMs : null;
        const delay = backoffDelay(attempt, this.baseDelayMs, this.maxDelayMs, this.random, retryAfter, this.maxRetryAfterMs);
        if (this.clock.now() - start + delay >= deadlineMs) {
          this.emit({ type: 'retry_denied', op: spec.op, requestId: base, reason: 'deadline', code: err.code });
          throw finalError(err);
        }
        if (!this.budget.tryRetry()) {
          this.emit({ type: 'retry_denied', op: spec.op, requestId: base, reason: 'budget', code: err.code });
          throw finalError(err.with({ message: `${err.message} (retry budget exhausted)` }));
        }
        this.emit({ type: 'retry', op: spec.op, requestId: base, attempt, delayMs: delay, code: err.code, outcome: err.outcome });
        try {
          await sleep(this.clock, delay, callCtl.signal);
        } catch {
          throw finalError(this.abortError(callCtl.signal, last, requestId));
        }
      }
    } finally {
      cancelDeadline();
      co.signal?.removeEventListener('abort', onUserAbort);
      this.closeCtl.signal.removeEventListener('abort', onClose);
    }
  }

  private abortError(signal: AbortSignal, last: KvError | null, requestId: string): KvError {
    const r = signal.reason as unknown;
    const code = r instanceof AbortReason ? r.code : 'aborted';
    const message = r instanceof AbortReason ? r.message : 'aborted';
    return new KvError({
      code, message: last === null ? message : `${message}; last error: ${last.code}: ${last.message}`, outcome: last?.outcome ?? 'not_applied',
      status: last?.status ?? null, requestId: last?.requestId ?? requestId, node: last?.node ?? null, url: last?.url ?? null,
    });
  }

  /** Stale reads: ask one replica; if it has not answered within afterMs, ask another too; first answer wins. */
  private async hedged<T>(spec: CallSpec<T>, requestId: string, attempt: number, attemptMs: number, signal: AbortSignal, tried: Set<string>): Promise<T> {
    const first = this.route(spec, tried);
    const ctls = [new AbortController(), new AbortController()];
    const link = (): void => { for (const c of ctls) c.abort(signal.reason); };
    signal.addEventListener('abort', link, { once: true });
    try {
      return await new Promise<T>((resolve, reject) => {
        let pending = 0;
        let done = false;
        let lastErr: unknown = null;
        const launch = (target: Target, i: number, hedge: boolean): void => {
          pending++;
          if (hedge) this.emit({ type: 'hedge', op: spec.op, requestId, node: target.node ?? -1 });
          this.attempt(spec, target, hedge ? `${requestId}.h` : requestId, attempt, attemptMs, (ctls[i] as AbortController).signal, hedge).then((v) => {
            if (done) return;
            done = true;
            for (const c of ctls) c.abort(new AbortReason('hedge_lost', 'another replica answered first'));
            resolve(v);
          }, (e: unknown) => {
            pending--;
            lastErr = e;
            if (done) return;
            // The first replica failed fast: hedge now rather than wait.
            if (!hedgeStarted && second !== null) {
              cancelHedge();
              startHedge();
              return;
            }
            if (pending === 0) {
              done = true;
              cancelHedge();
              reject(lastErr);
            }
          });
        };
        let hedgeStarted = false;
        const exclude = new Set([...tried, first.url]);
        const second = this.route(spec, exclude, true);
        const startHedge = (): void => {
          if (done || hedgeStarted || second === null) return;
          hedgeStarted = true;
          launch(second, 1, true);
        };
        const cancelHedge = this.clock.setTimer(spec.hedge?.afterMs ?? 50, startHedge);
        launch(first, 0, false);
      });
    } finally {
      signal.removeEventListener('abort', link);
    }
  }

  /** One HTTP attempt. Resolves with the decoded result, or throws (a KvError for error responses). */
  private async attempt<T>(spec: CallSpec<T>, target: Target, requestId: string, attempt: number, attemptMs: number, signal: AbortSignal, hedge = false): Promise<T> {
    const ctl = new AbortController();
    const link = (): void => ctl.abort(signal.reason);
    if (signal.aborted) link();
    signal.addEventListener('abort', link, { once: true });
    const cancel = this.clock.setTimer(attemptMs, () => ctl.abort(new AbortReason('attempt_timeout', `attempt timed out after ${attemptMs} ms`)));
    const t0 = this.clock.now();
    this.emit({ type: 'attempt', op: spec.op, requestId, attempt, node: target.node, url: target.url, ...(hedge ? { hedge } : {}) });
    const breaker = this.breaker(target.url);
    let res: TransportResponse;
    try {
      res = await this.transport.request(target.url, {
        method: spec.method, path: spec.path, headers: { 'x-request-id': requestId, ...spec.headers }, signal: ctl.signal,
        ...(spec.body !== undefined ? { body: spec.body } : {}),
      });
    } catch (e) {
      const reason = ctl.signal.reason as unknown;
      const code = ctl.signal.aborted ? (reason instanceof AbortReason ? reason.code : 'aborted') : 'unreachable';
      // The node did not answer in time, or the connection failed: the node's fault (not a hedge we cancelled or the caller's abort).
      if (code === 'attempt_timeout' || code === 'unreachable') breaker.onFailure();
      const errCode = (e as { code?: string; cause?: { code?: string } }).code ?? (e as { cause?: { code?: string } }).cause?.code ?? '';
      const notSent = code === 'unreachable' && NOT_SENT_CODES.has(errCode);
      this.emit({ type: 'attempt_end', op: spec.op, requestId, attempt, node: target.node, durationMs: this.clock.now() - t0, status: null, code });
      throw new KvError({
        code: code === 'hedge_lost' ? 'aborted' : code, message: `${spec.method} ${target.url}: ${code === 'unreachable' ? `${errCode || 'network error'}: ${(e as Error).message}` : (reason instanceof AbortReason ? reason.message : String(reason))}`,
        outcome: spec.mutation && !notSent ? 'unknown' : 'not_applied', status: null, requestId, node: target.node, url: target.url, cause: e,
      });
    } finally {
      cancel();
      signal.removeEventListener('abort', link);
    }
    breaker.onSuccess();
    // A node on a newer cluster map than ours: placement may have changed.
    const epoch = num(res.headers['x-cluster-epoch']);
    if (epoch !== null && this.map !== null && epoch > this.map.epoch) void this.refreshMap(`epoch ${epoch} > cached ${this.map.epoch}`, true).catch(() => {});
    const servedBy = num(res.headers['x-served-by']);
    const ok = res.status >= 200 && res.status < 300;
    const notFound = res.status === 404 && spec.method === 'GET';
    if (ok || notFound) {
      // The leader we sent it to forwarded it: leadership moved; learn it.
      if (spec.consistency === 'linearizable' && servedBy !== null) this.learnLeader(spec.shard(), servedBy, `served by ${servedBy}, not ${target.node}`);
      this.emit({ type: 'attempt_end', op: spec.op, requestId, attempt, node: target.node, durationMs: this.clock.now() - t0, status: res.status, code: null });
      if (notFound && res.body.length > 0 && !this.isNotFoundBody(res)) throw this.errorFromResponse(res, spec, target, requestId);
      return spec.decode(res, target, requestId, attempt);
    }
    const err = this.errorFromResponse(res, spec, target, requestId);
    this.emit({ type: 'attempt_end', op: spec.op, requestId, attempt, node: target.node, durationMs: this.clock.now() - t0, status: res.status, code: err.code });
    throw err;
  }

  private isNotFoundBody(res: TransportResponse): boolean {
    try {
      return (JSON.parse(utf8d.decode(res.body)) as { error?: { code?: string } }).error?.code === 'not_found';
    } catch {
      return false;
    }
  }

  private errorFromResponse(res: TransportResponse, spec: CallSpec<unknown>, target: Target, requestId: string): KvError {
    let body: { error?: { code?: string; message?: string; requestId?: string; outcome?: Outcome; currentVersion?: number } } = {};
    try {
      body = JSON.parse(utf8d.decode(res.body)) as typeof body;
    } catch { /* not JSON */ }
    const e = body.error;
    const code = e?.code ?? (res.status >= 500 ? 'internal' : 'bad_response');
    // A mutation's outcome: the server's word; without one, a 5xx may have applied.
    const outcome: Outcome = !spec.mutation ? 'not_applied' : e?.outcome ?? (res.status >= 500 ? 'unknown' : 'not_applied');
    return new KvError({
      code, message: e?.message ?? `HTTP ${res.status} from ${target.url}`, outcome, status: res.status,
      requestId: e?.requestId ?? res.headers['x-request-id'] ?? requestId, node: num(res.headers['x-served-by']) ?? target.node, url: target.url,
      retryAfterMs: parseRetryAfter(res.headers['retry-after']), currentVersion: e?.currentVersion ?? null,
    });
  }

  private toKvError(e: unknown, spec: CallSpec<unknown>, requestId: string, signal: AbortSignal): KvError {
    if (e instanceof KvError) return e;
    if (signal.aborted) return this.abortError(signal, null, requestId);
    return new KvError({ code: 'internal', message: `SDK error: ${(e as Error)?.message ?? String(e)}`, outcome: spec.mutation ? 'unknown' : 'not_applied', requestId, cause: e });
  }

  // ------------------------------------------------------------------ routing

  private shardOf(tenant: string, t: number | undefined): number | null {
    const m = this.map;
    return m === null ? null : m.ring.shardFor(tenant, bucketOf(t, m.bucketMs));
  }

  private shardFor(tenant: string, bucket: number): number | null {
    return this.map === null ? null : this.map.ring.shardFor(tenant, bucket);
  }

  private peekRoute(spec: CallSpec<unknown>, tried: Set<string>): string | null {
    try {
      return this.route(spec, tried, false, false).url;
    } catch {
      return null;
    }
  }

  /**
   * Choose the node of the next attempt. Consistent operations: the shard's
   * leader, else another replica (which forwards). Stale reads: a random
   * replica, untried first. Nodes whose breaker is open are skipped (and a
   * probe is started when one is due).
   */
  private route(spec: CallSpec<unknown>, tried: Set<string>, optional: true): Target | null;
  private route(spec: CallSpec<unknown>, tried: Set<string>, optional?: false, probe?: boolean): Target;
  private route(spec: CallSpec<unknown>, tried: Set<string>, optional = false, probe = true): Target | null {
    const m = this.map;
    if (m === null) throw new KvError({ code: 'no_endpoint', message: 'no cluster map', outcome: 'not_applied' });
    // Any node whose open period is over gets its half-open probe, whether or not this call needs it.
    if (probe) for (const [url, b] of this.breakers) if (b.state === 'half_open') this.probe(url);
    const shardId = spec.shard();
    const shard = shardId === null ? undefined : m.shards.get(shardId);
    const allNodes = [...m.nodes.keys()];
    const replicas = shard?.replicas.filter((r) => m.nodes.has(r)) ?? allNodes;
    const usable = (id: number): boolean => {
      const url = m.nodes.get(id) as string;
      const b = this.breaker(url);
      if (probe && b.state === 'half_open') this.probe(url);
      return b.allows();
    };
    const target = (id: number, leader: boolean): Target => ({ url: m.nodes.get(id) as string, node: id, leader });
    const pick = (ids: number[]): number | undefined => ids[Math.floor(this.random() * ids.length)];
    const fresh = (ids: number[]): number[] => ids.filter((id) => !tried.has(m.nodes.get(id) as string));
    if (spec.consistency === 'linearizable') {
      const leader = shard?.leader ?? null;
      if (leader !== null && m.nodes.has(leader) && usable(leader) && !tried.has(m.nodes.get(leader) as string)) return target(leader, true);
      const others = replicas.filter((r) => r !== leader && usable(r));
      const choice = pick(fresh(others)) ?? (leader !== null && m.nodes.has(leader) && usable(leader) ? leader : undefined) ?? pick(others)
        ?? pick(fresh(allNodes.filter(usable))) ?? pick(allNodes.filter(usable));
      if (choice !== undefined) return target(choice, choice === leader);
    } else {
      const ok = replicas.filter(usable);
      const choice = pick(fresh(ok)) ?? (optional ? undefined : pick(ok));
      if (choice !== undefined) return target(choice, false);
      if (optional) return null;
      const any = pick(allNodes.filter(usable));
      if (any !== undefined) return target(any, false);
    }
    if (optional) return null;
    throw new KvError({ code: 'circuit_open', message: `every node that can serve shard ${shardId ?? '?'} has an open circuit breaker`, outcome: 'not_applied' });
  }

  private breaker(url: string): CircuitBreaker {
    let b = this.breakers.get(url);
    if (b === undefined) {
      b = new CircuitBreaker(this.clock, this.opts.breaker, (from, to) => {
        this.emit({ type: 'breaker', node: this.nodeIdOf(url) ?? -1, url, from, to });
        if (to === 'open') void this.refreshMap(`breaker of ${url} opened`).catch(() => {});
      });
      this.breakers.set(url, b);
    }
    return b;
  }

  private nodeIdOf(url: string): number | null {
    if (this.map === null) return null;
    for (const [id, u] of this.map.nodes) if (u === url) return id;
    return null;
  }

  /** Half-open: one `GET /health` decides whether the node's breaker closes. */
  private probe(url: string): void {
    const b = this.breaker(url);
    if (!b.tryStartProbe() || this.closed) return;
    const ctl = new AbortController();
    const cancel = this.clock.setTimer(this.opts.breaker?.probeTimeoutMs ?? 500, () => ctl.abort(new AbortReason('attempt_timeout', 'probe timed out')));
    const onClose = (): void => ctl.abort(new AbortReason('aborted', 'closed'));
    this.closeCtl.signal.addEventListener('abort', onClose, { once: true });
    this.transport.request(url, { method: 'GET', path: '/health', headers: { 'x-request-id': `probe-${randomUUID()}` }, signal: ctl.signal }).then(
      (res) => (res.status === 200 ? b.onSuccess() : b.onFailure()),
      () => { if (!this.closed) b.onFailure(); },
    ).finally(() => {
      cancel();
      this.closeCtl.signal.removeEventListener('abort', onClose);
    });
  }

  // ------------------------------------------------------------------ the cluster map

  private learnLeader(shardId: number | null, leader: number, why: string): void {
    const s = shardId === null ? undefined : this.map?.shards.get(shardId);
    if (s === undefined || s.leader === leader) return;
    s.leader = leader;
    void this.refreshMap(why).catch(() => {});
  }

  private async ensureMap(signal?: AbortSignal): Promise<MapState> {
    if (this.map !== null) return this.map;
    const p = this.refreshMap('start-up', true);
    if (signal === undefined) return p;
    return new Promise<MapState>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = (): void => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  /**
   * Fetch the map from every known node (and the seeds) in parallel; the first
   * answer plus whatever arrives within a short grace is merged: the highest
   * epoch wins, and each shard's leader is the one reported with the highest term.
   * Single-flight; rate-limited to one per 100 ms unless forced.
   */
  private refreshMap(reason: string, force = false): Promise<MapState> {
    if (this.refreshing !== null) return this.refreshing;
    if (!force && this.map !== null && this.clock.now() - this.lastRefreshAt < 100) return Promise.resolve(this.map);
    const p = this.doRefresh(reason).finally(() => {
      this.lastRefreshAt = this.clock.now();
      this.refreshing = null;
    });
    this.refreshing = p;
    return p;
  }

  private async doRefresh(reason: string): Promise<MapState> {
    this.hash ??= await loadHash32();
    const urls = new Set<string>();
    if (this.map !== null) for (const u of this.map.nodes.values()) if (this.breaker(u).allows()) urls.add(u);
    for (const u of this.opts.endpoints) urls.add(u.replace(/\/+$/, ''));
    const timeoutMs = Math.min(this.attemptTimeoutMs, 2000);
    const got: ClusterMapWire[] = [];
    const errors: string[] = [];
    await new Promise<void>((resolve) => {
      let pending = urls.size;
      let graceStarted = false;
      let cancelTimeout = (): void => {};
      const finish = (): void => { cancelTimeout(); resolve(); };
      cancelTimeout = this.clock.setTimer(timeoutMs + 50, finish);
      for (const url of urls) {
        const ctl = new AbortController();
        const cancel = this.clock.setTimer(timeoutMs, () => ctl.abort(new AbortReason('attempt_timeout', 'map fetch timed out')));
        this.transport.request(url, { method: 'GET', path: '/v1/cluster', headers: { 'x-request-id': `map-${randomUUID()}` }, signal: ctl.signal }).then((res) => {
          if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
          got.push(JSON.parse(utf8d.decode(res.body)) as ClusterMapWire);
          this.breaker(url).onSuccess();
          if (!graceStarted) {
            graceStarted = true;
            this.clock.setTimer(30, finish);
          }
        }).catch((e: unknown) => {
          errors.push(`${url}: ${(e as Error)?.message ?? String(e)}`);
        }).finally(() => {
          cancel();
          if (--pending === 0) finish();
        });
      }
    });
    if (got.length === 0) {
      if (this.map !== null) return this.map;
      throw new KvError({ code: 'no_endpoint', message: `no endpoint answered GET /v1/cluster: ${errors.join('; ')}`, outcome: 'not_applied' });
    }
    const epoch = Math.max(...got.map((g) => g.epoch));
    const best = got.filter((g) => g.epoch === epoch);
    const head = best[0] as ClusterMapWire;
    const prev = this.map;
    let next: MapState;
    if (prev !== null && prev.epoch > epoch) return prev;
    if (prev !== null && prev.epoch === epoch) next = prev;
    else {
      next = {
        epoch, bucketMs: head.bucketMs, vnodes: head.ring.vnodes,
        ring: new ClientRing(head.shards.map((s) => s.id), head.ring.vnodes, this.hash),
        nodes: new Map(head.nodes.map((n) => [n.id, n.apiUrl.replace(/\/+$/, '')])),
        shards: new Map(head.shards.map((s) => [s.id, { id: s.id, replicas: [...s.replicas], leader: null, term: -1 }])),
        fetchedAt: this.clock.now(),
      };
    }
    // Leaders: the highest term reported wins (a node that answers is alive; a stale leader has a lower term).
    const seen = new Map<number, { leader: number | null; term: number }>();
    for (const g of best) {
      for (const s of g.shards) {
        if (s.term === null) continue;
        const cur = seen.get(s.id);
        if (cur === undefined || s.term > cur.term || (s.term === cur.term && cur.leader === null)) seen.set(s.id, { leader: s.leader, term: s.term });
      }
    }
    let leaders = 0;
    for (const [id, v] of seen) {
      const s = next.shards.get(id);
      if (s === undefined) continue;
      // Same term, same leader (one per term); a leader learned from X-Served-By is kept until a newer term shows up.
      if (v.term > s.term || s.leader === null) {
        s.leader = v.leader;
        s.term = v.term;
      }
    }
    for (const s of next.shards.values()) if (s.leader !== null) leaders++;
    next.fetchedAt = this.clock.now();
    this.map = next;
    this.emit({ type: 'map_refresh', epoch, reason, leaders });
    // The first map came from the seeds only: if they did not know every leader, ask every node of the map once.
    if (prev === null && leaders < next.shards.size) this.clock.setTimer(0, () => void this.refreshMap('leaders unknown at start-up', true).catch(() => {}));
    return next;
  }

  private info(): ClusterInfo {
    const m = this.map as MapState;
    return {
      epoch: m.epoch, bucketMs: m.bucketMs, vnodes: m.vnodes, fetchedAt: m.fetchedAt,
      nodes: [...m.nodes].map(([id, apiUrl]) => ({ id, apiUrl, breaker: this.breaker(apiUrl).state })),
      shards: [...m.shards.values()].map((s) => ({ id: s.id, replicas: [...s.replicas], leader: s.leader, term: s.term < 0 ? null : s.term })),
    };
  }

  // ------------------------------------------------------------------ misc

  private json(res: TransportResponse): unknown {
    try {
      return JSON.parse(utf8d.decode(res.body));
    } catch (e) {
      // A 2xx we cannot read: for a mutation it may well have applied.
      throw new KvError({ code: 'bad_response', message: `response is not JSON: ${(e as Error).message}`, outcome: 'unknown', status: res.status });
    }
  }

  private emit(e: KvEvent): void {
    try {
      this.opts.onEvent?.(e);
    } catch { /* a hook must not break calls */ }
  }

  private checkOpen(): void {
    if (this.closed) throw new KvError({ code: 'aborted', message: 'client is closed', outcome: 'not_applied' });
  }
}
