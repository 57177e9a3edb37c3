/**
 * `npm run bench:sdk`: what the client SDK (`KvClient`, client/) adds in
 * latency over raw HTTP for the same workload, on a throwaway local cluster.
 *
 * 1. Starts a 3-node cluster with ./cluster.sh in a temporary KV_DATA_DIR with
 *    KV_BASE_PORT=7601 and KV_SHARDS=8. It is always stopped and cleaned at the
 *    end (./cluster.sh stop, ./cluster.sh clean, same env), also on error,
 *    SIGINT, SIGTERM and the watchdog (--max-seconds, default 175).
 * 2. Preloads ~1000 keys (4 tenants; half of the keys with an event time `t`
 *    spread over 24 buckets, half without `t`, i.e. in the tenants' static
 *    buckets) with 256-byte values.
 * 3. For C in {1, 16} closed-loop callers and each workload (put of a 256-byte
 *    value, linearizable get, stale get, on a uniformly random preloaded key),
 *    runs a short unrecorded warm-up of both clients, then four measured
 *    phases of --duration seconds in the order raw, sdk, raw, sdk, so machine
 *    noise hits both.
 *
 * The raw baseline sends each request exactly where, and exactly as, the SDK
 * does: the shard from the SDK's own ring (client/ring.ts) over the map of
 * `GET /v1/cluster` (leaders merged by highest term, as the SDK does), writes
 * and linearizable gets to the shard's leader, stale gets to a random replica
 * of the shard; the same path and query, the same headers (a fresh UUID
 * X-Request-Id on every request, a fresh UUID Idempotency-Key on every put,
 * content-type); one undici@7 keep-alive Pool per node with the SDK
 * transport's settings (16 connections, 1 s connect timeout, 30 s keep-alive).
 * The shard is computed per request (as the SDK does). If an answer shows that
 * a leader moved (X-Served-By is not the node asked), the raw client learns
 * the new leader from it (as the SDK does, without the SDK's map refresh).
 * Raw requests are not retried; their errors are counted.
 *
 * "Forwarded" counts answers whose X-Served-By differs from the node the
 * request was sent to, for both clients (for the SDK: the node of the call's
 * last `attempt` event), to show that both route alike.
 *
 * Latency: per call, from just before the call to its result (µs, HDR
 * histogram via hdr-histogram-js, 3 significant digits); failed calls are
 * counted, not recorded. "client CPU µs/op" is this process's user + system
 * CPU over a phase (process.cpuUsage) divided by its successful calls: the
 * SDK's cost in CPU, which is what shows up as latency once the client's core
 * is busy (C = 16) or shared with the nodes.
 *
 * Differences that remain, on purpose: the SDK runs its per-attempt timer,
 * deadline timer and AbortSignals, retry budget, breakers and event hook (the
 * bench's hook records the node of each attempt, to count forwarded answers);
 * the raw pools use undici's own 10 s headers/body timeouts instead.
 *
 * Flags: --duration S (default 5), --concurrency 1,16 (default), --keys N
 * (default 1000), --max-seconds S (watchdog, default 175).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, alive, portOpen, readPid, run } from './proc.ts';
import hdr from 'hdr-histogram-js';
import { Pool } from 'undici';
import { ClientRing, KvClient, KvError, bucketOf, loadHash32, type ClusterMapWire, type KvEvent } from '../client/index.ts';


const CLUSTER_SH = join(ROOT, 'cluster.sh');
const NODES = 3;
const BASE_PORT = 7601;
const SHARDS = 8;
const VALUE_BYTES = 256;
const TENANTS = ['acme', 'globex', 'initech', 'umbrella'];
const T_BUCKETS = 24;
const BASE_T = Date.UTC(2025, 0, 1);
const WARMUP_MS = 300;
/** The SDK transport's settings (client/transport.ts), for the raw pools. */
const POOL_CONNECTIONS = 16;

// ------------------------------------------------------------------ args

interface Args { durationS: number; concurrency: number[]; keys: number; maxSeconds: number }

function parseArgs(argv: string[]): Args {
  const a: Args = { durationS: 5, concurrency: [1, 16], keys: 1000, maxSeconds: 175 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[++i];
    const n = Number(v);
    if (k === '--duration' && n > 0 && n <= 60) a.durationS = n;
    else if (k === '--concurrency' && v !== undefined && v.split(',').every((x) => Number.isInteger(Number(x)) && Number(x) > 0 && Number(x) <= 256)) a.concurrency = v.split(',').map(Number);
    else if (k === '--keys' && Number.isInteger(n) && n >= TENANTS.length && n <= 100_000) a.keys = n;
    else if (k === '--max-seconds' && n > 0 && n <= 3600) a.maxSeconds = n;
    else throw new Error(`bad flag ${k ?? ''} ${v ?? ''} (flags: --duration S, --concurrency 1,16, --keys N, --max-seconds S)`);
  }
  return a;
}

// ------------------------------------------------------------------ the cluster


const uptime = (): string => {
  const r = spawnSync('uptime', [], { encoding: 'utf8' });
  return (r.stdout ?? '').trim() || `load average: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(', ')}`;
};

class Cluster {
  private started = false;
  private pids: number[] = [];
  private tearing: Promise<string[]> | null = null;
  torn = false;
  constructor(readonly dataDir: string) {}

  env(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KV_')) env[k] = v;
    env['KV_DATA_DIR'] = this.dataDir;
    env['KV_BASE_PORT'] = String(BASE_PORT);
    env['KV_SHARDS'] = String(SHARDS);
    return env;
  }

  envPrefix(): string {
    return `KV_DATA_DIR=${this.dataDir} KV_BASE_PORT=${BASE_PORT} KV_SHARDS=${SHARDS}`;
  }

  endpoints(): string[] {
    return Array.from({ length: NODES }, (_, i) => `http://127.0.0.1:${BASE_PORT + i}`);
  }

  async start(): Promise<number> {
    for (let i = 0; i < NODES; i++) {
      for (const p of [BASE_PORT + i, BASE_PORT + 1000 + i]) {
        if (await portOpen(p)) throw new Error(`port ${p} is already in use: another cluster is running there; not starting`);
      }
    }
    const t0 = performance.now();
    this.started = true; // from here on, cleanup must run
    const r = await run(CLUSTER_SH, ['start', String(NODES)], this.env(), 90_000);
    this.pids = Array.from({ length: NODES }, (_, i) => readPid(this.dataDir, i + 1)).filter((p): p is number => p !== undefined);
    if (r.code !== 0) throw new Error(`cluster.sh start failed (exit ${r.code}):\n${r.out}`);
    if (this.pids.length !== NODES) throw new Error(`expected ${NODES} pid files in ${this.dataDir}, found ${this.pids.length}`);
    return performance.now() - t0;
  }

  /** Stop and clean. Idempotent (a second call waits for the first); never throws. */
  teardown(): Promise<string[]> {
    if (!this.started) return Promise.resolve([]);
    this.tearing ??= this.doTeardown();
    return this.tearing;
  }

  private async doTeardown(): Promise<string[]> {
    const notes: string[] = [];
    for (let i = 1; i <= NODES; i++) {
      const p = readPid(this.dataDir, i);
      if (p !== undefined && !this.pids.includes(p)) this.pids.push(p);
    }
    const stop = await run(CLUSTER_SH, ['stop'], this.env(), 30_000);
    notes.push(`cluster.sh stop: exit ${stop.code} (${stop.out.trim().split('\n').pop() ?? ''})`);
    for (const pid of this.pids) {
      if (alive(pid)) {
        notes.push(`node pid ${pid} still alive after cluster.sh stop: SIGKILL`);
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
    }
    const clean = await run(CLUSTER_SH, ['clean'], this.env(), 30_000);
    notes.push(`cluster.sh clean: exit ${clean.code} (${clean.out.trim().split('\n').pop() ?? ''})`);
    if (clean.code !== 0 && this.pids.every((p) => !alive(p))) rmSync(this.dataDir, { recursive: true, force: true });
    this.torn = true;
    return notes;
  }

  /** Last resort from process.on('exit') (synchronous): stop and clean if teardown never finished. */
  teardownSync(): void {
    if (!this.started || this.torn) return;
    spawnSync(CLUSTER_SH, ['stop'], { cwd: ROOT, env: this.env(), stdio: 'ignore', timeout: 20_000 });
    for (let i = 1; i <= NODES; i++) {
      const p = readPid(this.dataDir, i) ?? this.pids[i - 1];
      if (p !== undefined && alive(p)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
    }
    spawnSync(CLUSTER_SH, ['clean'], { cwd: ROOT, env: this.env(), stdio: 'ignore', timeout: 20_000 });
    this.torn = true;
  }
}

// ------------------------------------------------------------------ keyspace

interface Rec { tenant: string; key: string; t: number | undefined }

/** Key i: tenant i % 4; every other key (per tenant) has an event time spread over 24 buckets, the rest none (static bucket). */
function keyspace(n: number, bucketMs: number): Rec[] {
  const out: Rec[] = [];
  for (let i = 0; i < n; i++) {
    const tenant = TENANTS[i % TENANTS.length] as string;
    const j = Math.floor(i / TENANTS.length);
    const withT = j % 2 === 0;
    const within = (Math.imul(i, 2654435761) >>> 0) % bucketMs;
    out.push({ tenant, key: `k${i}`, t: withT ? BASE_T + ((j >> 1) % T_BUCKETS) * bucketMs + within : undefined });
  }
  return out;
}

// ------------------------------------------------------------------ histograms

function newHistogram() {
  // Microseconds, 1 µs .. 10 min, 3 significant digits.
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3, autoResize: true });
}
type Histogram = ReturnType<typeof newHistogram>;

interface Pcts { count: number; p50: number; p99: number; p999: number; max: number }
function pcts(h: Histogram): Pcts {
  if (h.totalCount === 0) return { count: 0, p50: NaN, p99: NaN, p999: NaN, max: NaN };
  return { count: h.totalCount, p50: h.getValueAtPercentile(50), p99: h.getValueAtPercentile(99), p999: h.getValueAtPercentile(99.9), max: h.maxValue };
}

// ------------------------------------------------------------------ the two clients

type Workload = 'put' | 'get-lin' | 'get-stale';
const WORKLOADS: readonly Workload[] = ['put', 'get-lin', 'get-stale'];
type Kind = 'raw' | 'sdk';

/**
 * What one successful call reports: 0 served by the node asked, 1 forwarded
 * (served by another node than the one asked), 2 not found, 3 ok but the
 * serving node could not be compared.
 */
type CallResult = 0 | 1 | 2 | 3;

interface ClientUnderTest {
  call(w: Workload, r: Rec): Promise<CallResult>;
}

/** The raw-HTTP client: the SDK's routing, by hand, on one undici Pool per node. */
class RawClient implements ClientUnderTest {
  readonly pools = new Map<number, Pool>();
  readonly leaders = new Map<number, number>();
  readonly replicas = new Map<number, number[]>();
  leaderLearned = 0;

  constructor(map: ClusterMapWire, leaders: Map<number, number | null>, private readonly ring: ClientRing, private readonly bucketMs: number, private readonly value: Buffer) {
    for (const n of map.nodes) {
      this.pools.set(n.id, new Pool(n.apiUrl.replace(/\/+$/, ''), {
        connections: POOL_CONNECTIONS, connectTimeout: 1000, keepAliveTimeout: 30_000, headersTimeout: 10_000, bodyTimeout: 10_000,
      }));
    }
    for (const s of map.shards) {
      this.replicas.set(s.id, [...s.replicas]);
      const l = leaders.get(s.id);
      if (l !== null && l !== undefined) this.leaders.set(s.id, l);
    }
  }

  async call(w: Workload, r: Rec): Promise<CallResult> {
    const shard = this.ring.shardFor(r.tenant, bucketOf(r.t, this.bucketMs));
    let node: number;
    if (w === 'get-stale') {
      const reps = this.replicas.get(shard) as number[];
      node = reps[Math.floor(Math.random() * reps.length)] as number;
    } else {
      const l = this.leaders.get(shard);
      if (l === undefined) throw Object.assign(new Error(`no leader known for shard ${shard}`), { code: 'no_leader_known' });
      node = l;
    }
    const pool = this.pools.get(node) as Pool;
    const base = `/v1/kv/${encodeURIComponent(r.tenant)}/${encodeURIComponent(r.key)}`;
    const tq = r.t === undefined ? '' : `t=${r.t}`;
    let res;
    if (w === 'put') {
      res = await pool.request({
        method: 'PUT', path: tq === '' ? base : `${base}?${tq}`, body: this.value,
        headers: { 'x-request-id': randomUUID(), 'idempotency-key': randomUUID(), 'content-type': 'application/octet-stream' },
      });
    } else {
      const c = w === 'get-lin' ? 'consistency=linearizable' : 'consistency=stale';
      res = await pool.request({ method: 'GET', path: `${base}?${tq === '' ? c : `${tq}&${c}`}`, headers: { 'x-request-id': randomUUID() } });
    }
    const status = res.statusCode;
    const servedBy = Number(res.headers['x-served-by']);
    if (status >= 200 && status < 300) {
      if (w === 'put') {
        const j = (await res.body.json()) as { version?: number };
        if (typeof j.version !== 'number') throw Object.assign(new Error('PUT answer without a version'), { code: 'bad_response' });
      } else {
        await res.body.arrayBuffer();
      }
      if (!Number.isInteger(servedBy)) return 3;
      if (servedBy !== node) {
        if (w !== 'get-stale' && this.leaders.get(shard) !== servedBy) {
          this.leaders.set(shard, servedBy);
          this.leaderLearned++;
        }
        return 1;
      }
      return 0;
    }
    const text = await res.body.text();
    let code = `http_${status}`;
    try {
      code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? code;
    } catch { /* not JSON */ }
    if (status === 404 && code === 'not_found' && w !== 'put') return 2;
    throw Object.assign(new Error(`${status} ${code}`), { code: `${status} ${code}` });
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.close().catch(() => p.destroy())));
  }
}

/** SDK events seen during a phase (from the onEvent hook). */
interface SdkEvents {
  retry: Record<string, number>;
  retryDenied: Record<string, number>;
  attemptErrors: Record<string, number>;
  breaker: number;
  mapRefresh: Record<string, number>;
  fallbackStale: number;
  hedge: number;
  attempts: number;
}
const emptyEvents = (): SdkEvents => ({ retry: {}, retryDenied: {}, attemptErrors: {}, breaker: 0, mapRefresh: {}, fallbackStale: 0, hedge: 0, attempts: 0 });
const bump = (o: Record<string, number>, k: string, n = 1): void => { o[k] = (o[k] ?? 0) + n; };

class SdkClient implements ClientUnderTest {
  readonly kv: KvClient;
  /** requestId of an attempt -> the node it was sent to (read back when the call returns). */
  private readonly attemptNode = new Map<string, number | null>();
  events = emptyEvents();
  readonly allEvents: string[] = [];

  constructor(endpoints: string[], private readonly value: Buffer) {
    this.kv = new KvClient({ endpoints, onEvent: (e) => this.onEvent(e) });
  }

  private onEvent(e: KvEvent): void {
    switch (e.type) {
      case 'attempt':
        this.attemptNode.set(e.requestId, e.node);
        this.events.attempts++;
        break;
      case 'attempt_end':
        if (e.code !== null) bump(this.events.attemptErrors, `${e.status ?? '-'} ${e.code}`);
        break;
      case 'retry':
        bump(this.events.retry, e.code);
        break;
      case 'retry_denied':
        bump(this.events.retryDenied, `${e.reason}:${e.code}`);
        break;
      case 'breaker':
        this.events.breaker++;
        this.allEvents.push(`breaker node ${e.node}: ${e.from} -> ${e.to}`);
        break;
      case 'map_refresh':
        bump(this.events.mapRefresh, e.reason);
        this.allEvents.push(`map_refresh epoch ${e.epoch} (${e.reason}), ${e.leaders} leaders`);
        break;
      case 'fallback_stale':
        this.events.fallbackStale++;
        break;
      case 'hedge':
        this.events.hedge++;
        break;
    }
  }

  /** Drop per-attempt bookkeeping (calls that failed or missed leave entries behind). */
  resetPhase(): SdkEvents {
    const ev = this.events;
    this.events = emptyEvents();
    this.attemptNode.clear();
    return ev;
  }

  async call(w: Workload, r: Rec): Promise<CallResult> {
    let requestId: string;
    let node: number | null;
    if (w === 'put') {
      const res = await this.kv.put({ tenant: r.tenant, key: r.key, t: r.t, value: this.value });
      requestId = res.requestId;
      node = res.node;
    } else {
      const res = await this.kv.get({ tenant: r.tenant, key: r.key, t: r.t, consistency: w === 'get-lin' ? 'linearizable' : 'stale' });
      if (res === null) return 2;
      requestId = res.requestId;
      node = res.node;
    }
    const sent = this.attemptNode.get(requestId);
    this.attemptNode.delete(requestId);
    if (sent === undefined || sent === null || node === null) return 3;
    return node !== sent ? 1 : 0;
  }
}

// ------------------------------------------------------------------ a phase

interface PhaseResult {
  kind: Kind;
  workload: Workload;
  c: number;
  label: string;
  hist: Histogram;
  elapsedMs: number;
  ok: number;
  forwarded: number;
  unverified: number;
  misses: number;
  /** Client process CPU (user + system) per successful op, µs. */
  cpuUsPerOp: number;
  errors: Record<string, number>;
  sdkEvents?: SdkEvents;
}

async function runPhase(kind: Kind, client: ClientUnderTest, w: Workload, c: number, ms: number, keys: Rec[], stop: { stopped: boolean }, label: string): Promise<PhaseResult> {
  const hist = newHistogram();
  const res: PhaseResult = { kind, workload: w, c, label, hist, elapsedMs: 0, ok: 0, forwarded: 0, unverified: 0, misses: 0, cpuUsPerOp: NaN, errors: {} };
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + ms;
  const caller = async (): Promise<void> => {
    while (!stop.stopped && performance.now() < end) {
      const r = keys[Math.floor(Math.random() * keys.length)] as Rec;
      const s = performance.now();
      try {
        const out = await client.call(w, r);
        const us = Math.max(1, Math.round((performance.now() - s) * 1000));
        hist.recordValue(us);
        res.ok++;
        if (out === 1) res.forwarded++;
        else if (out === 2) res.misses++;
        else if (out === 3) res.unverified++;
      } catch (e) {
        const code = e instanceof KvError ? `${e.status ?? '-'} ${e.code}` : String((e as { code?: string }).code ?? (e as Error).message);
        bump(res.errors, code);
        await sleep(5); // do not spin on a failing cluster
      }
    }
  };
  await Promise.all(Array.from({ length: c }, caller));
  res.elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  res.cpuUsPerOp = res.ok > 0 ? (cpu.user + cpu.system) / res.ok : NaN;
  return res;
}

// ------------------------------------------------------------------ cluster map (raw side)

async function fetchMaps(endpoints: string[]): Promise<{ map: ClusterMapWire; leaders: Map<number, number | null> }> {
  const got: ClusterMapWire[] = [];
  await Promise.all(endpoints.map(async (u) => {
    try {
      const r = await fetch(`${u}/v1/cluster`, { signal: AbortSignal.timeout(2000) });
      if (r.ok) got.push((await r.json()) as ClusterMapWire);
    } catch { /* a node that does not answer */ }
  }));
  if (got.length === 0) throw new Error('no node answered GET /v1/cluster');
  const epoch = Math.max(...got.map((g) => g.epoch));
  const best = got.filter((g) => g.epoch === epoch);
  const seen = new Map<number, { leader: number | null; term: number }>();
  for (const g of best) {
    for (const s of g.shards) {
      if (s.term === null) continue;
      const cur = seen.get(s.id);
      if (cur === undefined || s.term > cur.term || (s.term === cur.term && cur.leader === null)) seen.set(s.id, { leader: s.leader, term: s.term });
    }
  }
  const leaders = new Map<number, number | null>();
  for (const s of (best[0] as ClusterMapWire).shards) leaders.set(s.id, seen.get(s.id)?.leader ?? null);
  return { map: best[0] as ClusterMapWire, leaders };
}

// ------------------------------------------------------------------ formatting

const ms = (us: number): string => (Number.isFinite(us) ? (us / 1000).toFixed(3) : 'n/a');
const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');
const fmtCounts = (o: Record<string, number>): string => {
  const e = Object.entries(o);
  return e.length === 0 ? '0' : e.map(([k, v]) => `${k}: ${v}`).join(', ');
};
const sum = (o: Record<string, number>): number => Object.values(o).reduce((x, y) => x + y, 0);

// ------------------------------------------------------------------ main

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const planned = args.concurrency.length * WORKLOADS.length * (4 * args.durationS + (2 * WARMUP_MS) / 1000);
  if (planned + 30 > args.maxSeconds) {
    throw new Error(`planned measuring time ${planned.toFixed(0)} s + ~30 s of start-up/preload/teardown exceeds --max-seconds ${args.maxSeconds}`);
  }
  const started = new Date();
  const uptimeBefore = uptime();
  const tmp = mkdtempSync(join(tmpdir(), 'kv-sdk-bench-'));
  const cluster = new Cluster(join(tmp, 'cluster'));
  const stop = { stopped: false };
  const log = (s: string): void => { process.stderr.write(`[bench:sdk ${((Date.now() - started.getTime()) / 1000).toFixed(1)}s] ${s}\n`); };

  // On a signal or the watchdog: stop the load and tear the cluster down at once. main() notices the
  // stop flag (phases end within one call), awaits the same teardown, prints what it has and exits
  // with this code; if it is stuck, the process exits 5 s after the teardown anyway.
  let abortCode: number | null = null;
  const abort = (why: string, code: number): void => {
    if (abortCode !== null) return;
    abortCode = code;
    stop.stopped = true;
    process.stderr.write(`\nbench:sdk: ${why}: stopping the cluster (${cluster.dataDir})\n`);
    void cluster.teardown().then((notes) => {
      for (const n of notes) process.stderr.write(`  ${n}\n`);
      try { rmSync(tmp, { recursive: true, force: true }); } catch { /* best effort */ }
    }).finally(() => { setTimeout(() => process.exit(code), 5_000); });
  };
  process.on('SIGINT', () => abort('SIGINT', 130));
  process.on('SIGTERM', () => abort('SIGTERM', 143));
  process.on('exit', () => cluster.teardownSync());
  const watchdog = setTimeout(() => abort(`watchdog (${args.maxSeconds} s)`, 1), args.maxSeconds * 1000);
  watchdog.unref();

  const value = randomBytes(VALUE_BYTES);
  const endpoints = cluster.endpoints();
  const results: PhaseResult[] = [];
  const notes: string[] = [];
  let raw: RawClient | null = null;
  let sdk: SdkClient | null = null;
  let failure: Error | null = null;
  let startMs = 0;
  let keys: Rec[] = [];
  let preloadInfo = '';
  let routingInfo = '';
  let fwdCheck = 'n/a';
  let teardownNotes: string[] = [];

  try {
    log(`starting: ${cluster.envPrefix()} ./cluster.sh start ${NODES}`);
    startMs = await cluster.start();
    log(`cluster up in ${(startMs / 1000).toFixed(1)} s`);

    // ---- the raw client's view: the map, the SDK's ring
    const { map, leaders } = await fetchMaps(endpoints);
    const hash = await loadHash32();
    const ring = new ClientRing(map.shards.map((s) => s.id), map.ring.vnodes, hash);
    keys = keyspace(args.keys, map.bucketMs);
    raw = new RawClient(map, leaders, ring, map.bucketMs, value);
    if (raw.leaders.size !== map.shards.length) throw new Error(`only ${raw.leaders.size}/${map.shards.length} shard leaders known`);

    // ---- preload (raw, 32 in flight); check the ring against the server's `shard`
    const tp = performance.now();
    let next = 0;
    let ringMismatch = 0;
    let preloadErrors = 0;
    const shardsUsed = new Set<number>();
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (next < keys.length && !stop.stopped) {
        const r = keys[next++] as Rec;
        const expect = ring.shardFor(r.tenant, bucketOf(r.t, map.bucketMs));
        shardsUsed.add(expect);
        const pool = (raw as RawClient).pools.get(leaders.get(expect) as number) as Pool;
        const path = `/v1/kv/${encodeURIComponent(r.tenant)}/${encodeURIComponent(r.key)}${r.t === undefined ? '' : `?t=${r.t}`}`;
        for (let attempt = 1; ; attempt++) {
          try {
            const res = await pool.request({ method: 'PUT', path, body: value, headers: { 'idempotency-key': randomUUID(), 'content-type': 'application/octet-stream' } });
            const j = (await res.body.json()) as { shard?: number };
            if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}`);
            if (j.shard !== expect) ringMismatch++;
            break;
          } catch (e) {
            if (attempt >= 5) throw new Error(`preload of ${r.tenant}/${r.key} failed: ${(e as Error).message}`);
            preloadErrors++;
            await sleep(100);
          }
        }
      }
    }));
    preloadInfo = `${keys.length} keys (${TENANTS.length} tenants, ${keys.filter((k) => k.t !== undefined).length} with \`t\` over ${T_BUCKETS} buckets of ${map.bucketMs} ms, ${keys.filter((k) => k.t === undefined).length} without) on ${shardsUsed.size}/${map.shards.length} shards in ${((performance.now() - tp) / 1000).toFixed(1)} s; ring vs server \`shard\` mismatches: ${ringMismatch}; retried preload writes: ${preloadErrors}`;
    log(`preload: ${preloadInfo}`);
    if (ringMismatch > 0) throw new Error(`the SDK ring disagrees with the server on ${ringMismatch} keys`);

    // ---- check that the forwarding counter works: one linearizable get sent to a follower on purpose
    {
      const r = keys[0] as Rec;
      const shard = ring.shardFor(r.tenant, bucketOf(r.t, map.bucketMs));
      const leader = raw.leaders.get(shard) as number;
      const follower = (raw.replicas.get(shard) as number[]).find((n) => n !== leader);
      if (follower !== undefined) {
        const res = await (raw.pools.get(follower) as Pool).request({
          method: 'GET', path: `/v1/kv/${encodeURIComponent(r.tenant)}/${encodeURIComponent(r.key)}${r.t === undefined ? '?' : `?t=${r.t}&`}consistency=linearizable`,
        });
        await res.body.arrayBuffer();
        fwdCheck = `a linearizable get of shard ${shard} sent to follower n${follower} on purpose: HTTP ${res.statusCode}, X-Served-By ${String(res.headers['x-served-by'])} (${Number(res.headers['x-served-by']) === leader ? 'the leader: forwarding is visible' : 'UNEXPECTED'})`;
        log(`forwarding check: ${fwdCheck}`);
      }
    }

    // ---- the SDK
    sdk = new SdkClient(endpoints, value);
    const info = await sdk.kv.connect();
    const sdkLeaders = new Map(info.shards.map((s) => [s.id, s.leader]));
    const agree = [...raw.leaders].every(([s, l]) => sdkLeaders.get(s) === l);
    routingInfo = `shard leaders (raw map vs SDK map): ${agree ? 'identical' : 'DIFFERENT'} — ${[...raw.leaders].sort((a, b) => a[0] - b[0]).map(([s, l]) => `s${s}→n${l}`).join(' ')}`;
    log(routingInfo);
    sdk.resetPhase();

    // ---- phases
    for (const c of args.concurrency) {
      for (const w of WORKLOADS) {
        if (stop.stopped) break;
        log(`${w}, C=${c}: warm-up ${WARMUP_MS} ms each, then raw, sdk, raw, sdk × ${args.durationS} s`);
        await runPhase('raw', raw, w, c, WARMUP_MS, keys, stop, 'warm-up');
        await runPhase('sdk', sdk, w, c, WARMUP_MS, keys, stop, 'warm-up');
        sdk.resetPhase();
        const counts: Record<Kind, number> = { raw: 0, sdk: 0 };
        for (const kind of ['raw', 'sdk', 'raw', 'sdk'] as Kind[]) {
          if (stop.stopped) break;
          const label = `${kind} #${++counts[kind]}`;
          const r = await runPhase(kind, kind === 'raw' ? raw : sdk, w, c, args.durationS * 1000, keys, stop, label);
          if (kind === 'sdk') r.sdkEvents = sdk.resetPhase();
          results.push(r);
          const p = pcts(r.hist);
          log(`  ${label}: ${r.ok} ok, p50 ${ms(p.p50)} ms, p99 ${ms(p.p99)} ms, p99.9 ${ms(p.p999)} ms, fwd ${r.forwarded}, errors ${sum(r.errors)}`);
        }
      }
    }
  } catch (e) {
    failure = e as Error;
    log(`FAILED: ${failure.message}`);
  } finally {
    stop.stopped = true;
    if (sdk !== null) await sdk.kv.close().catch(() => {});
    if (raw !== null) await raw.close().catch(() => {});
    teardownNotes = await cluster.teardown();
    try { rmSync(tmp, { recursive: true, force: true }); } catch { /* best effort */ }
    clearTimeout(watchdog);
  }
  const uptimeAfter = uptime();
  const totalS = (Date.now() - started.getTime()) / 1000;

  // ---- report
  const L: string[] = [];
  const out = (s = ''): void => { L.push(s); };
  const argStr = process.argv.slice(2).join(' ');
  out(`## bench:sdk — KvClient (SDK) vs raw HTTP, ${started.toISOString()}`);
  out();
  out('| | |');
  out('| --- | --- |');
  out(`| command | \`npm run bench:sdk${argStr === '' ? '' : ` -- ${argStr}`}\` (= \`npx tsx bench/sdk-overhead.ts${argStr === '' ? '' : ` ${argStr}`}\`) |`);
  out(`| cluster | \`${cluster.envPrefix()} ./cluster.sh start ${NODES}\` … \`./cluster.sh stop\`, \`./cluster.sh clean\` (same env); up in ${(startMs / 1000).toFixed(1)} s |`);
  out(`| keys | ${preloadInfo || 'n/a'} |`);
  out(`| workloads | put (${VALUE_BYTES}-byte value, fresh Idempotency-Key), linearizable get, stale get; uniformly random key; closed loop, C ∈ {${args.concurrency.join(', ')}}; ${WARMUP_MS} ms unrecorded warm-up per client, then raw, sdk, raw, sdk × ${args.durationS} s |`);
  out(`| routing | ${routingInfo || 'n/a'}; raw: SDK ring + \`GET /v1/cluster\`, undici Pool per node (${POOL_CONNECTIONS} conns, keep-alive); SDK: defaults (\`connectionsPerNode\` ${POOL_CONNECTIONS}) |`);
  out(`| forwarding check | ${fwdCheck} |`);
  out(`| machine | ${cpus().length} × ${cpus()[0]?.model ?? '?'}, Node ${process.version}; client and the 3 nodes share it |`);
  out(`| uptime before | \`${uptimeBefore}\` |`);
  out(`| uptime after | \`${uptimeAfter}\` |`);
  out(`| total run time | ${totalS.toFixed(1)} s |`);
  out();
  out('Per phase (latency in ms; ratio = this SDK phase / the raw phase just before it):');
  out();
  out('| workload | C | phase | ok ops | ops/s | p50 | p99 | p99.9 | max | client CPU µs/op | fwd | misses | errors | p50 sdk/raw | p99 sdk/raw | SDK retries / attempts |');
  out('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |');
  let prevRaw: Pcts | null = null;
  for (const r of results) {
    const p = pcts(r.hist);
    const isSdk = r.kind === 'sdk';
    const ev = r.sdkEvents;
    out(`| ${r.workload} | ${r.c} | ${r.label} | ${r.ok} | ${(r.ok / (r.elapsedMs / 1000)).toFixed(0)} | ${ms(p.p50)} | ${ms(p.p99)} | ${ms(p.p999)} | ${ms(p.max)} | ${r.cpuUsPerOp.toFixed(0)} | ${r.forwarded}${r.unverified > 0 ? ` (+${r.unverified} unverified)` : ''} | ${r.misses} | ${fmtCounts(r.errors)} | ${isSdk && prevRaw ? ratio(p.p50, prevRaw.p50) : ''} | ${isSdk && prevRaw ? ratio(p.p99, prevRaw.p99) : ''} | ${ev ? `${sum(ev.retry)} / ${ev.attempts}` : ''} |`);
    if (!isSdk) prevRaw = p;
  }
  out();
  out('Both phases of each client merged (latency in ms):');
  out();
  out('| workload | C | raw p50 | SDK p50 | p50 SDK/raw | Δp50 µs | raw p99 | SDK p99 | p99 SDK/raw | raw p99.9 | SDK p99.9 | p99.9 SDK/raw | raw ops/s | SDK ops/s | client CPU µs/op raw / SDK | fwd raw / SDK |');
  out('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const c of args.concurrency) {
    for (const w of WORKLOADS) {
      const rs = results.filter((r) => r.c === c && r.workload === w);
      if (rs.length === 0) continue;
      const merged = (k: Kind) => {
        const h = newHistogram();
        let ok = 0;
        let secs = 0;
        let fwd = 0;
        let cpu = 0;
        for (const r of rs.filter((x) => x.kind === k)) { h.add(r.hist); ok += r.ok; secs += r.elapsedMs / 1000; fwd += r.forwarded; cpu += r.cpuUsPerOp * r.ok; }
        return { p: pcts(h), ops: secs > 0 ? ok / secs : NaN, fwd, cpu: ok > 0 ? cpu / ok : NaN };
      };
      const a = merged('raw');
      const b = merged('sdk');
      out(`| ${w} | ${c} | ${ms(a.p.p50)} | ${ms(b.p.p50)} | ${ratio(b.p.p50, a.p.p50)} | ${Number.isFinite(a.p.p50 + b.p.p50) ? (b.p.p50 - a.p.p50).toFixed(0) : 'n/a'} | ${ms(a.p.p99)} | ${ms(b.p.p99)} | ${ratio(b.p.p99, a.p.p99)} | ${ms(a.p.p999)} | ${ms(b.p.p999)} | ${ratio(b.p.p999, a.p.p999)} | ${a.ops.toFixed(0)} | ${b.ops.toFixed(0)} | ${a.cpu.toFixed(0)} / ${b.cpu.toFixed(0)} | ${a.fwd} / ${b.fwd} |`);
    }
  }
  out();
  const sdkRes = results.filter((r) => r.sdkEvents !== undefined);
  const agg = emptyEvents();
  for (const r of sdkRes) {
    const ev = r.sdkEvents as SdkEvents;
    for (const [k, v] of Object.entries(ev.retry)) bump(agg.retry, k, v);
    for (const [k, v] of Object.entries(ev.retryDenied)) bump(agg.retryDenied, k, v);
    for (const [k, v] of Object.entries(ev.attemptErrors)) bump(agg.attemptErrors, k, v);
    for (const [k, v] of Object.entries(ev.mapRefresh)) bump(agg.mapRefresh, k, v);
    agg.breaker += ev.breaker;
    agg.fallbackStale += ev.fallbackStale;
    agg.hedge += ev.hedge;
    agg.attempts += ev.attempts;
  }
  const allErrors: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.errors)) bump(allErrors, `${r.kind} ${k}`, v);
  out(`SDK events in measured phases (onEvent): attempts ${agg.attempts}, retries ${fmtCounts(agg.retry)}, retries denied ${fmtCounts(agg.retryDenied)}, failed attempts ${fmtCounts(agg.attemptErrors)}, map refreshes ${fmtCounts(agg.mapRefresh)}, breaker changes ${agg.breaker}, stale fallbacks ${agg.fallbackStale}, hedges ${agg.hedge}.`);
  out(`Call errors in measured phases: ${fmtCounts(allErrors)}. Raw client leader changes learned from X-Served-By: ${raw?.leaderLearned ?? 0}.`);
  if (sdk !== null && sdk.allEvents.length > 0) out(`SDK map/breaker events over the whole run: ${sdk.allEvents.join('; ')}.`);
  out(`Teardown: ${teardownNotes.join('; ') || 'n/a'}; data dir ${existsSync(cluster.dataDir) ? 'STILL PRESENT' : 'removed'}.`);
  for (const n of notes) out(n);
  if (failure !== null) {
    out();
    out(`**FAILED**: ${failure.message}`);
  }
  if (abortCode !== null) {
    out();
    out(`**INTERRUPTED** (exit ${abortCode}): the results above are partial.`);
  }
  process.stdout.write(L.join('\n') + '\n');
  return abortCode ?? (failure === null ? 0 : 1);
}

main().then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`bench:sdk: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
