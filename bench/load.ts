/**
 * Closed-loop HTTP load generator for the shardkv HTTP API.
 *
 * N clients (default 64) each send one request, wait for its answer, and send
 * the next, until the phase's time or op budget runs out (both are always
 * bounded). Latency goes into an HDR histogram (hdr-histogram-js, µs, 3
 * significant digits); errors are counted by HTTP status and the `code` of the
 * JSON error body, or by the transport error code (e.g. UND_ERR_HEADERS_TIMEOUT).
 *
 * Routing (`--route`):
 *  - `spread` (default): round-robin over all endpoints. The shard is chosen by
 *    the server's ring hash, so with 3 nodes about 2/3 of writes and
 *    linearizable reads land on a follower and are forwarded to the leader
 *    (one extra hop). Stale reads are served by whichever node hosts a replica.
 *  - `leader`: the client cannot compute the shard (the ring hash lives on the
 *    server), so it learns it: every PUT answer carries `shard` and every GET
 *    answer `X-Shard`, for the partition key (tenant, floor(t / bucketMs)).
 *    Once a partition key's shard is known, requests for it go straight to the
 *    shard leader from `GET /v1/cluster` (refreshed every second and after a
 *    forwarded answer or a 503). Unknown partition keys go round-robin.
 *
 * The fraction of answers served by another node than the one asked
 * (`X-Served-By`) is reported as "forwarded".
 *
 * CLI:
 *   npx tsx bench/load.ts --endpoints http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003 \
 *     --op put,get-lin,get-stale --clients 64 --duration 10 [--route spread|leader] [--json]
 * Run with --help for every flag.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import { newHistogram, summarize, type LatencySummary } from './hist.ts';
import { DEFAULT_KEYSPACE, keyRef, rng, type KeyRef, type Keyspace } from './workload.ts';

export { DEFAULT_KEYSPACE, keyRef, type KeyRef, type Keyspace, type LatencySummary };

export type Op = 'put' | 'get-lin' | 'get-stale';
/** spread: round-robin; leader: the shard's leader (stale reads: its replicas); partition: by a hash of the partition key. */
export type Route = 'spread' | 'leader' | 'partition';
export const OPS: readonly Op[] = ['put', 'get-lin', 'get-stale'];

export interface LoadOptions {
  endpoints: string[];
  op: Op;
  clients: number;
  /** Measured time (ms), after the warm-up. */
  durationMs: number;
  /** Not recorded; the clients run this long before measuring. */
  warmupMs: number;
  /** Hard cap on requests started in the phase (warm-up included). */
  maxOps: number;
  valueBytes: number;
  keyspace: Keyspace;
  route: Route;
  /** Per-request headers/body timeout (ms). */
  timeoutMs: number;
  /** Connections per endpoint (undici Pool). */
  connectionsPerNode: number;
  /** Sleep after an error before the next request, so a failing cluster is not hammered in a hot loop. */
  errorBackoffMs: number;
  /** Check that read values have the written length. */
  verify: boolean;
  seed: number;
  /** Polled between requests: a true value stops the phase early (SIGINT). */
  stopSignal?: { stopped: boolean };
}

export interface LoadResult {
  op: Op;
  route: Route;
  clients: number;
  endpoints: string[];
  /** Measured window (ms): from the end of the warm-up until the last client finished. */
  elapsedMs: number;
  okOps: number;
  errorOps: number;
  opsPerSec: number;
  latency: LatencySummary;
  /** Latency of failed requests (transport errors and non-2xx). */
  errorLatency: LatencySummary;
  /** "503 no_leader": 12, "ERR UND_ERR_HEADERS_TIMEOUT": 3, ... (measured window only). */
  errors: Record<string, number>;
  /** Errors during the warm-up, same keys. */
  warmupErrors: Record<string, number>;
  /** Answers served by another node than the one asked (X-Served-By), over answers that said who served them. */
  forwarded: number;
  servedByKnown: number;
  /** Requests sent per endpoint (measured window). */
  perEndpoint: Record<string, number>;
  /** Load generator CPU over the phase, % of one core (user+system). */
  clientCpuPct: number;
  stoppedEarly: boolean;
}

export function defaultOptions(): LoadOptions {
  return {
    endpoints: ['http://127.0.0.1:7001', 'http://127.0.0.1:7002', 'http://127.0.0.1:7003'],
    op: 'put',
    clients: 64,
    durationMs: 10_000,
    warmupMs: 1_000,
    maxOps: 5_000_000,
    valueBytes: 256,
    keyspace: { ...DEFAULT_KEYSPACE },
    route: 'spread',
    timeoutMs: 10_000,
    connectionsPerNode: 64,
    errorBackoffMs: 10,
    verify: true,
    seed: 1,
  };
}

// ------------------------------------------------------------------ endpoints and routing

interface ClusterView {
  nodeId?: number;
  bucketMs?: number;
  nodes?: Array<{ id: number; apiUrl: string }>;
  shards?: Array<{ id: number; replicas: number[]; leader: number | null; term: number | null }>;
}

function normalizeUrl(u: string): string {
  const url = new URL(u);
  if (url.hostname === 'localhost') url.hostname = '127.0.0.1';
  return url.origin;
}

/** Connection pools to the nodes and the routing of a request to one of them. */
export class Endpoints {
  readonly urls: string[];
  readonly pools: Pool[];
  /** Node id behind each endpoint (from its own /v1/cluster `nodeId`), when known. */
  readonly nodeIdOf: Array<number | undefined>;
  private readonly indexOfNode = new Map<number, number>();
  private rr = 0;
  // leader routing
  private readonly shardOfPk = new Map<string, number>();
  private leaders = new Map<number, number>();
  private replicas = new Map<number, number[]>();
  /** Stale reads to the first endpoint's node when it holds a replica of the shard (see TargetOptions.staleReadsTo). */
  staleToFirst = false;
  private lastRefresh = 0;
  private refreshing: Promise<void> | null = null;
  private refreshWanted = false;

  constructor(urls: string[], connections: number, timeoutMs: number) {
    this.urls = urls.map(normalizeUrl);
    this.pools = this.urls.map((u) => new Pool(u, {
      connections,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 60_000,
      connectTimeout: 2_000,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    }));
    this.nodeIdOf = this.urls.map(() => undefined);
  }

  /** Ask every endpoint who it is and (for leader routing) who leads what. Bounded by a 2 s timeout per endpoint. */
  async refresh(): Promise<void> {
    const views = await Promise.all(this.urls.map(async (_u, i): Promise<ClusterView | null> => {
      try {
        const res = await (this.pools[i] as Pool).request({ method: 'GET', path: '/v1/cluster', headersTimeout: 2_000, bodyTimeout: 2_000 });
        if (res.statusCode !== 200) {
          await res.body.dump();
          return null;
        }
        return (await res.body.json()) as ClusterView;
      } catch {
        return null;
      }
    }));
    const best = new Map<number, { leader: number; term: number }>();
    views.forEach((v, i) => {
      if (v === null) return;
      if (typeof v.nodeId === 'number') {
        this.nodeIdOf[i] = v.nodeId;
        this.indexOfNode.set(v.nodeId, i);
      }
      for (const n of v.nodes ?? []) {
        const j = this.urls.indexOf(normalizeUrl(n.apiUrl));
        if (j >= 0 && this.nodeIdOf[j] === undefined) {
          this.nodeIdOf[j] = n.id;
          this.indexOfNode.set(n.id, j);
        }
      }
      for (const s of v.shards ?? []) {
        this.replicas.set(s.id, s.replicas);
        if (s.leader === null) continue;
        const term = s.term ?? 0;
        const cur = best.get(s.id);
        if (cur === undefined || term > cur.term) best.set(s.id, { leader: s.leader, term });
      }
    });
    this.leaders = new Map([...best].map(([s, v]) => [s, v.leader]));
    this.lastRefresh = Date.now();
  }

  /** Refresh in the background, at most one at a time and at most every 200 ms when asked, else every second. */
  maybeRefresh(force = false): void {
    if (force) this.refreshWanted = true;
    if (this.refreshing !== null) return;
    const age = Date.now() - this.lastRefresh;
    if (!(age > 1_000 || (this.refreshWanted && age > 200))) return;
    this.refreshWanted = false;
    this.refreshing = this.refresh().catch(() => {}).finally(() => { this.refreshing = null; });
  }

  async settle(): Promise<void> {
    if (this.refreshing !== null) await this.refreshing;
  }

  learn(pk: string, shard: number): void {
    if (Number.isInteger(shard)) this.shardOfPk.set(pk, shard);
  }

  roundRobin(): number {
    const i = this.rr;
    this.rr = (this.rr + 1) % this.urls.length;
    return i;
  }

  pick(route: Route, op: Op, pk: string): number {
    if (route === 'spread') return this.roundRobin();
    if (route === 'partition') return fnv1a(pk) % this.urls.length;
    const shard = this.shardOfPk.get(pk);
    if (shard === undefined) return this.roundRobin();
    if (op === 'get-stale') {
      // Any replica serves a stale read locally: the first endpoint's node when asked to, if it holds one,
      // else spread over the shard's replicas we can reach.
      const replicas = this.replicas.get(shard) ?? [];
      const first = this.nodeIdOf[0];
      if (this.staleToFirst && first !== undefined && replicas.includes(first)) return 0;
      const reps = replicas.map((r) => this.indexOfNode.get(r)).filter((x): x is number => x !== undefined);
      if (reps.length === 0) return this.roundRobin();
      return reps[this.roundRobin() % reps.length] as number;
    }
    const leader = this.leaders.get(shard);
    const idx = leader === undefined ? undefined : this.indexOfNode.get(leader);
    return idx ?? this.roundRobin();
  }

  async close(): Promise<void> {
    await this.settle();
    await Promise.all(this.pools.map((p) => p.close().catch(() => {})));
  }
}

/** FNV-1a of a string's UTF-16 code units: a cheap, stable spread of partition keys. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

// ------------------------------------------------------------------ one request

export interface Outcome {
  ok: boolean;
  /** Error class key, when not ok. */
  err?: string;
  servedBy?: number;
  shard?: number;
}

/** One put or get; the JSON error code (or status) becomes the error key. Throws on transport errors. */
export async function doRequest(pool: Pool, op: Op, ref: KeyRef, value: Buffer, opts: Pick<LoadOptions, 'route' | 'verify' | 'valueBytes'>): Promise<Outcome> {
  const path = `/v1/kv/${encodeURIComponent(ref.tenant)}/${encodeURIComponent(ref.key)}?t=${ref.t}` +
    (op === 'get-lin' ? '&consistency=linearizable' : op === 'get-stale' ? '&consistency=stale' : '');
  const res = await pool.request(op === 'put'
    ? { method: 'PUT', path, body: value, headers: { 'content-type': 'application/octet-stream' } }
    : { method: 'GET', path });
  const sb = res.headers['x-served-by'];
  const servedBy = typeof sb === 'string' && /^\d+$/.test(sb) ? Number(sb) : undefined;
  const buf = Buffer.from(await res.body.arrayBuffer());
  if (res.statusCode >= 200 && res.statusCode < 300) {
    let shard: number | undefined;
    if (op === 'put') {
      if (opts.route === 'leader') {
        try { shard = (JSON.parse(buf.toString('utf8')) as { shard?: number }).shard; } catch { /* not JSON: ignore */ }
      }
    } else {
      const xs = res.headers['x-shard'];
      if (typeof xs === 'string') shard = Number(xs);
      if (opts.verify && buf.length !== opts.valueBytes) return { ok: false, err: `${res.statusCode} bad_value_length(${buf.length})`, servedBy, shard };
    }
    return { ok: true, servedBy, shard };
  }
  let code = 'no_code';
  try {
    const j = JSON.parse(buf.toString('utf8')) as { error?: { code?: string } };
    if (typeof j.error?.code === 'string') code = j.error.code;
  } catch { /* non-JSON error body */ }
  return { ok: false, err: `${res.statusCode} ${code}`, servedBy };
}

// ------------------------------------------------------------------ the closed loop

function bump(m: Record<string, number>, k: string, n = 1): void {
  m[k] = (m[k] ?? 0) + n;
}

/** Run one phase: opts.clients closed-loop clients for warmupMs + durationMs (or maxOps requests). */
export async function runLoad(opts: LoadOptions, shared?: Endpoints): Promise<LoadResult> {
  if (opts.endpoints.length === 0) throw new Error('no endpoints');
  const eps = shared ?? new Endpoints(opts.endpoints, opts.connectionsPerNode, opts.timeoutMs);
  try {
    await eps.refresh();
    const okH = newHistogram();
    const errH = newHistogram();
    const errors: Record<string, number> = {};
    const warmupErrors: Record<string, number> = {};
    const perEndpoint: Record<string, number> = {};
    let okOps = 0;
    let errorOps = 0;
    let forwarded = 0;
    let servedByKnown = 0;
    let started = 0;
    const stop = opts.stopSignal ?? { stopped: false };

    const t0 = performance.now();
    const measureFrom = t0 + opts.warmupMs;
    const deadline = measureFrom + opts.durationMs;
    const cpu0 = process.cpuUsage();
    let lastDone = measureFrom;

    const client = async (c: number): Promise<void> => {
      const rand = rng(opts.seed * 1_000_003 + c * 7919 + 1);
      const value = Buffer.from(randomBytes(Math.ceil(opts.valueBytes / 2)).toString('hex').slice(0, opts.valueBytes), 'latin1');
      while (!stop.stopped && started < opts.maxOps) {
        const now = performance.now();
        if (now >= deadline) break;
        started++;
        const ref = keyRef(opts.keyspace, Math.floor(rand() * opts.keyspace.keys));
        const idx = eps.pick(opts.route, opts.op, ref.pk);
        const begin = performance.now();
        let out: Outcome;
        try {
          out = await doRequest(eps.pools[idx] as Pool, opts.op, ref, value, opts);
        } catch (e) {
          const code = (e as { code?: string }).code ?? (e as Error).name ?? 'unknown';
          out = { ok: false, err: `ERR ${code}` };
        }
        const end = performance.now();
        const measured = begin >= measureFrom;
        if (out.shard !== undefined && opts.route === 'leader') eps.learn(ref.pk, out.shard);
        const askedId = eps.nodeIdOf[idx];
        const wasForwarded = out.servedBy !== undefined && askedId !== undefined && out.servedBy !== askedId;
        if (measured) {
          lastDone = Math.max(lastDone, end);
          bump(perEndpoint, eps.urls[idx] as string);
          if (out.servedBy !== undefined && askedId !== undefined) {
            servedByKnown++;
            if (wasForwarded) forwarded++;
          }
          const us = Math.max(1, Math.round((end - begin) * 1000));
          if (out.ok) {
            okOps++;
            okH.recordValue(us);
          } else {
            errorOps++;
            errH.recordValue(us);
            bump(errors, out.err ?? 'unknown');
          }
        } else if (!out.ok) {
          bump(warmupErrors, out.err ?? 'unknown');
        }
        if (opts.route === 'leader') eps.maybeRefresh(wasForwarded || (!out.ok && out.err?.startsWith('503') === true));
        if (!out.ok && opts.errorBackoffMs > 0) await sleep(opts.errorBackoffMs);
      }
    };

    await Promise.all(Array.from({ length: opts.clients }, (_, c) => client(c)));
    const cpu = process.cpuUsage(cpu0);
    const wall = performance.now() - t0;
    const elapsedMs = Math.max(1, lastDone - measureFrom);
    return {
      op: opts.op,
      route: opts.route,
      clients: opts.clients,
      endpoints: eps.urls,
      elapsedMs,
      okOps,
      errorOps,
      opsPerSec: okOps / (elapsedMs / 1000),
      latency: summarize(okH),
      errorLatency: summarize(errH),
      errors,
      warmupErrors,
      forwarded,
      servedByKnown,
      perEndpoint,
      clientCpuPct: ((cpu.user + cpu.system) / 1000 / wall) * 100,
      stoppedEarly: stop.stopped,
    };
  } finally {
    if (shared === undefined) await eps.close();
  }
}

export interface PreloadResult {
  written: number;
  failed: number;
  errors: Record<string, number>;
  elapsedMs: number;
}

/**
 * Write every key of the keyspace once (with `clients` concurrent writers), so
 * read phases hit existing keys. Each key is retried up to 5 times; the whole
 * preload is bounded by timeLimitMs.
 */
export async function preload(opts: LoadOptions, timeLimitMs = 120_000, shared?: Endpoints): Promise<PreloadResult> {
  const eps = shared ?? new Endpoints(opts.endpoints, opts.connectionsPerNode, opts.timeoutMs);
  try {
    await eps.refresh();
    const t0 = performance.now();
    const errors: Record<string, number> = {};
    let next = 0;
    let written = 0;
    let failed = 0;
    const stop = opts.stopSignal ?? { stopped: false };
    const value = Buffer.alloc(opts.valueBytes, 'v');
    const worker = async (): Promise<void> => {
      while (!stop.stopped && next < opts.keyspace.keys && performance.now() - t0 < timeLimitMs) {
        const ref = keyRef(opts.keyspace, next++);
        let done = false;
        for (let attempt = 0; attempt < 5 && !done && performance.now() - t0 < timeLimitMs; attempt++) {
          const idx = eps.pick(opts.route, 'put', ref.pk);
          let out: Outcome;
          try {
            out = await doRequest(eps.pools[idx] as Pool, 'put', ref, value, { ...opts, route: 'leader' });
          } catch (e) {
            out = { ok: false, err: `ERR ${(e as { code?: string }).code ?? (e as Error).name}` };
          }
          if (out.shard !== undefined) eps.learn(ref.pk, out.shard);
          if (out.ok) done = true;
          else {
            bump(errors, out.err ?? 'unknown');
            await sleep(50 * (attempt + 1));
          }
        }
        if (done) written++;
        else failed++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.clients, opts.keyspace.keys) }, () => worker()));
    return { written, failed, errors, elapsedMs: performance.now() - t0 };
  } finally {
    if (shared === undefined) await eps.close();
  }
}

/** One connection pool set shared by several phases (keeps connections warm and the learned shard map). */
export function openEndpoints(opts: LoadOptions): Endpoints {
  return new Endpoints(opts.endpoints, opts.connectionsPerNode, opts.timeoutMs);
}

// ------------------------------------------------------------------ reporting

const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

export function errorSummary(errs: Record<string, number>): string {
  const e = Object.entries(errs).sort((a, b) => b[1] - a[1]);
  return e.length === 0 ? 'none' : e.map(([k, n]) => `${k} ×${n}`).join(', ');
}

export function forwardedPct(r: LoadResult): string {
  return r.servedByKnown === 0 ? 'n/a' : `${f1((100 * r.forwarded) / r.servedByKnown)}%`;
}

export const TABLE_HEADER =
  '| phase | route | clients | ok ops | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | forwarded | loadgen CPU |\n' +
  '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |';

export function tableRow(r: LoadResult, label: string = r.op): string {
  const l = r.latency;
  return `| ${label} | ${r.route} | ${r.clients} | ${r.okOps} | ${r.opsPerSec.toFixed(0)} | ${f2(l.p50Ms)} | ${f2(l.p90Ms)} | ${f2(l.p99Ms)} | ${f2(l.p999Ms)} | ${f2(l.maxMs)} | ${r.errorOps === 0 ? '0' : `${r.errorOps}: ${errorSummary(r.errors)}`} | ${forwardedPct(r)} | ${r.clientCpuPct.toFixed(0)}% |`;
}

export function formatResult(r: LoadResult): string {
  const l = r.latency;
  const lines = [
    `${r.op}: ${r.okOps} ok, ${r.errorOps} errors in ${(r.elapsedMs / 1000).toFixed(1)} s = ${r.opsPerSec.toFixed(0)} ops/s (${r.clients} clients, route ${r.route}${r.stoppedEarly ? ', STOPPED EARLY' : ''})`,
    `  latency ms: mean ${f2(l.meanMs)}  p50 ${f2(l.p50Ms)}  p90 ${f2(l.p90Ms)}  p99 ${f2(l.p99Ms)}  p99.9 ${f2(l.p999Ms)}  max ${f2(l.maxMs)}`,
    `  errors: ${errorSummary(r.errors)}${r.errorOps > 0 ? ` (error latency p50 ${f2(r.errorLatency.p50Ms)} ms, max ${f2(r.errorLatency.maxMs)} ms)` : ''}`,
  ];
  if (Object.keys(r.warmupErrors).length > 0) lines.push(`  warm-up errors (not counted): ${errorSummary(r.warmupErrors)}`);
  lines.push(`  forwarded to another node: ${forwardedPct(r)} of ${r.servedByKnown} answers${r.route === 'spread' && r.op !== 'get-stale' ? ' (route spread: requests not sent to the shard leader take one extra hop)' : ''}`);
  lines.push(`  per endpoint: ${Object.entries(r.perEndpoint).map(([u, n]) => `${u} ${n}`).join(', ')}`);
  lines.push(`  load generator CPU: ${r.clientCpuPct.toFixed(0)}% of one core`);
  return lines.join('\n');
}

// ------------------------------------------------------------------ CLI

const HELP = `usage: npx tsx bench/load.ts [flags]
  --endpoints URL[,URL...]   nodes to send to (default http://127.0.0.1:7001..7003; or --base-port P --nodes N)
  --base-port P --nodes N    endpoints http://127.0.0.1:P .. P+N-1
  --op put|get-lin|get-stale[,...]  phases to run in order (default put)
  --clients N                concurrent closed-loop clients (default 64)
  --duration S               measured seconds per phase (default 10)
  --warmup S                 unmeasured seconds before each phase (default 1)
  --max-ops N                cap on requests per phase (default 5000000)
  --value-bytes N            PUT value size (default 256)
  --keys N --tenants N --buckets N   keyspace (default 4096 keys, 64 tenants, 24 hourly buckets)
  --route spread|leader      round-robin over nodes, or learn shard -> leader (default spread)
  --timeout-ms N             per-request timeout (default 10000)
  --connections N            connections per node (default: clients)
  --no-preload               do not write the keyspace before the first read phase
  --no-verify                do not check read value lengths
  --json                     print the results as JSON as well
`;

export function parseArgs(argv: string[]): { opts: LoadOptions; ops: Op[]; preload: boolean; json: boolean } {
  const opts = defaultOptions();
  let ops: Op[] = ['put'];
  let doPreload = true;
  let json = false;
  let basePort: number | undefined;
  let nodes = 3;
  let connections: number | undefined;
  const num = (name: string, v: string | undefined, min = 0): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min) throw new Error(`${name} needs a number >= ${min}, got '${v ?? ''}'`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const v = () => argv[++i];
    switch (a) {
      case '--endpoints': opts.endpoints = (v() ?? '').split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--base-port': basePort = num(a, v(), 1); break;
      case '--nodes': nodes = num(a, v(), 1); break;
      case '--op': case '--ops': {
        const list = (v() ?? '').split(',').map((s) => s.trim());
        for (const o of list) if (!(OPS as readonly string[]).includes(o)) throw new Error(`unknown op '${o}' (${OPS.join(', ')})`);
        ops = list as Op[];
        break;
      }
      case '--clients': opts.clients = num(a, v(), 1); break;
      case '--duration': opts.durationMs = num(a, v()) * 1000; break;
      case '--warmup': opts.warmupMs = num(a, v()) * 1000; break;
      case '--max-ops': opts.maxOps = num(a, v(), 1); break;
      case '--value-bytes': opts.valueBytes = num(a, v()); break;
      case '--keys': opts.keyspace.keys = num(a, v(), 1); break;
      case '--tenants': opts.keyspace.tenants = num(a, v(), 1); break;
      case '--buckets': opts.keyspace.buckets = num(a, v(), 1); break;
      case '--route': {
        const r = v();
        if (r !== 'spread' && r !== 'leader') throw new Error(`--route is spread or leader, got '${r ?? ''}'`);
        opts.route = r;
        break;
      }
      case '--timeout-ms': opts.timeoutMs = num(a, v(), 1); break;
      case '--connections': connections = num(a, v(), 1); break;
      case '--no-preload': doPreload = false; break;
      case '--no-verify': opts.verify = false; break;
      case '--json': json = true; break;
      case '--help': case '-h': process.stdout.write(HELP); process.exit(0);
      // falls through (unreachable)
      default: throw new Error(`unknown flag '${a}'\n${HELP}`);
    }
  }
  if (basePort !== undefined) opts.endpoints = Array.from({ length: nodes }, (_, i) => `http://127.0.0.1:${(basePort as number) + i}`);
  opts.connectionsPerNode = connections ?? opts.clients;
  if (opts.durationMs > 3_600_000) throw new Error('--duration is capped at 3600 s');
  return { opts, ops, preload: doPreload, json };
}

/** Fetch bucketMs from the cluster so keys land in the buckets we think they do. */
export async function clusterBucketMs(endpoint: string): Promise<number | undefined> {
  try {
    const r = await fetch(`${normalizeUrl(endpoint)}/v1/cluster`, { signal: AbortSignal.timeout(2_000) });
    const j = (await r.json()) as { bucketMs?: number };
    return typeof j.bucketMs === 'number' ? j.bucketMs : undefined;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const { opts, ops, preload: doPreload, json } = parseArgs(process.argv.slice(2));
  const stop = { stopped: false };
  opts.stopSignal = stop;
  process.on('SIGINT', () => {
    if (stop.stopped) process.exit(130);
    stop.stopped = true;
    process.stderr.write('\nSIGINT: finishing in-flight requests (again to abort)\n');
  });
  const bucketMs = await clusterBucketMs(opts.endpoints[0] as string);
  if (bucketMs !== undefined) opts.keyspace.bucketMs = bucketMs;
  const eps = openEndpoints(opts);
  const results: LoadResult[] = [];
  try {
    let loaded = false;
    for (const op of ops) {
      if (stop.stopped) break;
      if (op !== 'put' && !loaded && doPreload) {
        const p = await preload({ ...opts, op: 'put' }, 120_000, eps);
        console.log(`preload: ${p.written}/${opts.keyspace.keys} keys written in ${(p.elapsedMs / 1000).toFixed(1)} s, ${p.failed} failed${p.failed + Object.keys(p.errors).length > 0 ? ` (errors: ${errorSummary(p.errors)})` : ''}`);
        loaded = true;
      }
      const r = await runLoad({ ...opts, op }, eps);
      results.push(r);
      console.log(formatResult(r));
    }
  } finally {
    await eps.close();
  }
  if (results.length > 0) {
    console.log('');
    console.log(TABLE_HEADER);
    for (const r of results) console.log(tableRow(r));
  }
  if (json) console.log(JSON.stringify(results, null, 2));
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('bench/load.ts')) {
  main().catch((e: unknown) => {
    console.error((e as Error).message);
    process.exit(1);
  });
}
