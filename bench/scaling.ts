/**
 * `npm run bench:scaling -- [--only shards|values|bigdata] [--duration S] [--keys N]`:
 * the scaling runs of issue 6, each on fresh local clusters started through
 * ./cluster.sh (bench/local-cluster.ts) on free ports in a temp dir.
 *
 *  1. shards   — 3 nodes × 3 replicas with 8, 64, 256 shards: writes/s and
 *                linearizable reads/s at 64 clients (256 B values, leader
 *                routing, the store target's raw client), then idle CPU per
 *                node (settle, then utime+stime over 10 s) and RSS per node.
 *  2. values   — 16 shards, writes of 64 B, 1 KiB, 16 KiB, 64 KiB values at
 *                64 clients: writes/s, MB/s, p50/p99.
 *  3. bigdata  — 16 shards, `--compact-every 20000 --compact-keep 1000`:
 *                load --keys keys of 100 B at high concurrency (load rate,
 *                RSS per node); kill -9 a node and time its restart (spawn ->
 *                /ready 200, -> first stale read of a known key); kill it
 *                again, write until every shard's leader has compacted its log
 *                past it, restart it and time the snapshot catch-up (applied
 *                index = leader's commit index on every shard) and the bytes
 *                streamed ('snapshot sent' lines of the leaders' logs); then,
 *                for context, RSS of a 3-member etcd loaded with the same keys.
 *
 * Output: progress on stderr; markdown tables then one JSON line on stdout.
 * Every process started is stopped by PID (cluster.sh stop / SIGKILL, etcd by
 * PID) on every way out, as in the rest of the harness (bench/cleanup.ts).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { num, stderrWriters } from './args.ts';
import { cleanupAll, installSignalHandlers, registerCleanup, startReaper, startWatchdog, type StopSignal } from './cleanup.ts';
import { LocalCluster } from './local-cluster.ts';
import { ROOT, alive, clkTck, cpuTicks, findFreePorts, machineTicks, readPid, run } from './proc.ts';
import { mergeHistograms, summarize, type Histogram } from './hist.ts';
import { errorSummary, finishMachine, fmtMs, fmtRate, gitInfo, machineInfo } from './report.ts';
import { makeValue, preloadKeys, runPhase, type PhaseOutput } from './runner.ts';
import {
  bulkLoad, caughtUp, clusterView, cpuOver, fileSize, get200, leadersOf, loadAvg, logLinesFrom, memMiB, metricSum, storeClient,
  type BulkLoadResult, type LoadProgress, type StoreClient,
} from './scaling-lib.ts';
import { openEtcdTarget } from './targets/etcd.ts';
import type { OpResult, Target } from './targets/target.ts';
import { DEFAULT_KEYSPACE, keyRef, type Consistency, type Keyspace, type WorkloadName } from './workload.ts';

const SECTIONS = ['shards', 'values', 'bigdata'] as const;
type Section = (typeof SECTIONS)[number];

/** Where the clusters' HTTP ports begin (peers at +1000); the next free block of 10 is taken. */
const SCALING_BASE_PORT = 17501;
const NODES = 3;
const CLUSTER_SH = join(ROOT, 'cluster.sh');

const HELP = `usage: npm run bench:scaling -- [flags]

  --only LIST            sections to run, comma-separated: shards,values,bigdata (default all)
  --duration S           measured seconds per load phase (default 10)
  --rounds N             sections 1 and 2: rounds; each alternates the shard counts / value sizes (default 2)
  --warmup S             unmeasured seconds before each phase (default 2)
  --clients C            closed-loop clients of the load phases (default 64)
  --phase-keys N         keyspace of the load phases of sections 1 and 2 (default 10000)
  --shard-counts LIST    section 1 (default 8,64,256)
  --value-sizes LIST     section 2, bytes (default 64,1024,16384,65536)
  --settle S             section 1: idle seconds after the load before sampling (default 5)
  --idle-window S        section 1: idle CPU sampling window (default 10)
  --keys N               section 3: keys loaded, 100-byte values (default 1000000)
  --load-clients N       section 3: concurrent writers of the bulk loads (default 256)
  --load-limit S         section 3: time limit of each bulk load (default 1500)
  --big-shards N         section 3: shards (default 16)
  --compact-every N      section 3: node flag (default 20000)
  --compact-keep N       section 3: node flag (default 1000)
  --catchup-limit S      section 3: limit of the extra writes, and of the catch-up itself (default 900)
  --no-etcd              section 3: skip the etcd RSS comparison
  --etcd-keys N          section 3: keys loaded into etcd (default --keys)
  --timeout-ms N         per-request timeout (default 10000)
  --keep-logs            keep the temp dir with every node's log
  --render FILE          start nothing: print the tables of a saved run (its stdout, or its JSON line) again
  --quiet                no progress lines
`;

interface Args {
  only: Section[];
  rounds: number;
  durationS: number;
  warmupS: number;
  clients: number;
  phaseKeys: number;
  shardCounts: number[];
  valueSizes: number[];
  settleS: number;
  idleWindowS: number;
  keys: number;
  loadClients: number;
  loadLimitS: number;
  bigShards: number;
  compactEvery: number;
  compactKeep: number;
  catchupLimitS: number;
  etcd: boolean;
  etcdKeys?: number;
  timeoutMs: number;
  keepLogs: boolean;
  quiet: boolean;
  render?: string;
}

function numList(name: string, v: string | undefined, min: number, max: number): number[] {
  const xs = (v ?? '').split(',').map((s) => s.trim()).filter(Boolean).map((s) => num(name, s, min, max));
  if (xs.length === 0) throw new Error(`${name} needs a comma-separated list`);
  return xs;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    only: [...SECTIONS], rounds: 2, durationS: 10, warmupS: 2, clients: 64, phaseKeys: 10_000,
    shardCounts: [8, 64, 256], valueSizes: [64, 1024, 16_384, 65_536], settleS: 5, idleWindowS: 10,
    keys: 1_000_000, loadClients: 256, loadLimitS: 1_500, bigShards: 16, compactEvery: 20_000, compactKeep: 1_000,
    catchupLimitS: 900, etcd: true, timeoutMs: 10_000, keepLogs: false, quiet: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i] as string;
    const value = (): string | undefined => argv[++i];
    switch (f) {
      case '--only': {
        const list = (value() ?? '').split(',').map((s) => s.trim()).filter(Boolean);
        for (const s of list) if (!(SECTIONS as readonly string[]).includes(s)) throw new Error(`--only: unknown section '${s}' (${SECTIONS.join(', ')})`);
        if (list.length === 0) throw new Error('--only needs a section');
        a.only = list as Section[];
        break;
      }
      case '--rounds': a.rounds = num(f, value(), 1, 20); break;
      case '--duration': a.durationS = num(f, value(), 0.5, 3600, false); break;
      case '--warmup': a.warmupS = num(f, value(), 0, 600, false); break;
      case '--clients': a.clients = num(f, value(), 1, 4096); break;
      case '--phase-keys': a.phaseKeys = num(f, value(), 1, 10_000_000); break;
      case '--shard-counts': a.shardCounts = numList(f, value(), 1, 4096); break;
      case '--value-sizes': a.valueSizes = numList(f, value(), 1, 1 << 20); break;
      case '--settle': a.settleS = num(f, value(), 0, 600, false); break;
      case '--idle-window': a.idleWindowS = num(f, value(), 1, 600, false); break;
      case '--keys': a.keys = num(f, value(), 1, 10_000_000); break;
      case '--load-clients': a.loadClients = num(f, value(), 1, 4096); break;
      case '--load-limit': a.loadLimitS = num(f, value(), 10, 24 * 3600, false); break;
      case '--big-shards': a.bigShards = num(f, value(), 1, 4096); break;
      case '--compact-every': a.compactEvery = num(f, value(), 10, 10_000_000); break;
      case '--compact-keep': a.compactKeep = num(f, value(), 0, 10_000_000); break;
      case '--catchup-limit': a.catchupLimitS = num(f, value(), 10, 24 * 3600, false); break;
      case '--no-etcd': a.etcd = false; break;
      case '--etcd-keys': a.etcdKeys = num(f, value(), 1, 10_000_000); break;
      case '--timeout-ms': a.timeoutMs = num(f, value(), 1, 600_000); break;
      case '--keep-logs': a.keepLogs = true; break;
      case '--render': { const v = value(); if (v === undefined || v === '') throw new Error('--render needs a file'); a.render = v; break; }
      case '--quiet': a.quiet = true; break;
      case '--help': case '-h': process.stdout.write(HELP); process.exit(0);
      // falls through (unreachable)
      default: throw new Error(`unknown flag '${f}' (see --help)`);
    }
  }
  return a;
}

// ------------------------------------------------------------------ context

interface Ctx {
  a: Args;
  workDir: string;
  stop: StopSignal;
  log: (s: string) => void;
  progress: ((s: string) => void) | undefined;
}

interface Started { cluster: LocalCluster; startMs: number; done: () => Promise<string[]> }

let clusterSeq = 0;

/** A fresh 3-node cluster, registered for cleanup; `done()` stops and cleans it (never throws). */
async function startCluster(ctx: Ctx, label: string, shards: number, nodeArgs?: string): Promise<Started> {
  const base = await findFreePorts(NODES, SCALING_BASE_PORT, [0, 1000]);
  const name = `${++clusterSeq}-${label}`;
  const c = new LocalCluster(join(ctx.workDir, name), {
    nodes: NODES, shards, replicas: 3, basePort: base, peerBasePort: base + 1000, startTimeoutMs: 180_000,
    ...(nodeArgs !== undefined ? { nodeArgs } : {}),
  }, join(ctx.workDir, `${name}-logs`));
  const unregister = registerCleanup(`store cluster ${c.dataDir}`, () => c.teardown(), () => c.teardownSync(), { pids: () => c.nodePids(), dirs: [c.dataDir] });
  const done = async (): Promise<string[]> => {
    const notes = await c.teardown();
    unregister();
    return notes;
  };
  ctx.log(`${label}: ${c.command()}`);
  try {
    const startMs = await c.start();
    ctx.log(`${label}: ${NODES} nodes up in ${(startMs / 1000).toFixed(1)} s (pids ${c.nodePids().join(' ')})`);
    return { cluster: c, startMs, done };
  } catch (e) {
    await done();
    throw e;
  }
}

/** The PIDs of the nodes now running (cluster.sh's pid files: a restarted node has a new one). */
function livePids(c: LocalCluster): number[] {
  return Array.from({ length: NODES }, (_, i) => readPid(c.dataDir, i + 1)).map((p) => (p !== undefined && alive(p) ? p : -1));
}

interface OpStats {
  ok: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  errorCodes: Record<string, number>;
  serverCpuPct?: number;
  clientCpuPct: number;
  /** Every other process on the machine during the measured window, % of one core. */
  otherCpuPct?: number;
}

function opStats(out: PhaseOutput, op: 'write' | 'read'): OpStats {
  const r = out.result;
  const s = r.perOp[op];
  return {
    ok: s?.ok ?? 0,
    opsPerSec: s?.opsPerSec ?? 0,
    p50Ms: s?.latency.p50Ms ?? 0,
    p99Ms: s?.latency.p99Ms ?? 0,
    maxMs: s?.latency.maxMs ?? 0,
    errors: s?.errors ?? 0,
    errorCodes: s?.errorCodes ?? {},
    ...(r.serverCpuPct !== undefined ? { serverCpuPct: r.serverCpuPct } : {}),
    clientCpuPct: r.clientCpuPct,
    ...(r.serverCpuPct !== undefined && r.machineCpuPct !== undefined ? { otherCpuPct: Math.max(0, r.machineCpuPct - r.serverCpuPct - r.clientCpuPct) } : {}),
  };
}

/** Histograms of every round's measured requests, per row and op, merged for the tables. */
const hists = new Map<string, Histogram[]>();
function keepHist(key: string, out: PhaseOutput, op: 'write' | 'read'): void {
  const h = out.hists[op];
  if (h === undefined) return;
  const l = hists.get(key) ?? [];
  l.push(h);
  hists.set(key, l);
}

/** A row of a section over its rounds: ops/s mean and per round, latency of all rounds' requests together. */
interface Agg {
  rounds: number[];
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  errorCodes: Record<string, number>;
  serverCpuPct?: number;
  clientCpuPct: number;
  otherCpuPct?: number;
}

const meanOf = (xs: number[]): number => (xs.length === 0 ? 0 : xs.reduce((x, y) => x + y, 0) / xs.length);

function aggregate(key: string, stats: OpStats[]): Agg | undefined {
  if (stats.length === 0) return undefined;
  const lat = summarize(mergeHistograms(hists.get(key) ?? []));
  const codes: Record<string, number> = {};
  for (const s of stats) for (const [k, n] of Object.entries(s.errorCodes)) codes[k] = (codes[k] ?? 0) + n;
  const srv = stats.map((s) => s.serverCpuPct).filter((x): x is number => x !== undefined);
  const oth = stats.map((s) => s.otherCpuPct).filter((x): x is number => x !== undefined);
  return {
    rounds: stats.map((s) => Math.round(s.opsPerSec)),
    opsPerSec: meanOf(stats.map((s) => s.opsPerSec)),
    p50Ms: lat.p50Ms, p99Ms: lat.p99Ms, maxMs: lat.maxMs,
    errors: stats.reduce((x, s) => x + s.errors, 0),
    errorCodes: codes,
    ...(srv.length > 0 ? { serverCpuPct: meanOf(srv) } : {}),
    clientCpuPct: meanOf(stats.map((s) => s.clientCpuPct)),
    ...(oth.length > 0 ? { otherCpuPct: meanOf(oth) } : {}),
  };
}

function phaseKeyspace(keys: number): Keyspace {
  return { ...DEFAULT_KEYSPACE, keys, tenants: 64, buckets: 8 };
}

async function phase(ctx: Ctx, target: Target, label: string, workload: WorkloadName, consistency: Consistency, ks: Keyspace, value: Buffer): Promise<PhaseOutput> {
  const a = ctx.a;
  ctx.log(`${label}: ${a.clients} clients, ${a.warmupS} s warm-up + ${a.durationS} s`);
  const out = await runPhase(target, {
    label, workload, distribution: 'uniform', consistency, scanLimit: 100, keyspace: ks, value,
    mode: { kind: 'closed', concurrency: a.clients }, warmupMs: a.warmupS * 1000, durationMs: a.durationS * 1000,
    maxOps: 50_000_000, seed: 1, errorBackoffMs: 10, requestTimeoutMs: a.timeoutMs, stop: ctx.stop,
    ...(ctx.progress !== undefined ? { progress: ctx.progress } : {}),
  });
  const r = out.result;
  ctx.log(`${label}: ${fmtRate(r.opsPerSec)} ops/s, p50 ${fmtMs(r.latency.p50Ms)} ms, p99 ${fmtMs(r.latency.p99Ms)} ms, ${r.errors} errors`);
  if (ctx.stop.stopped) throw new Error('interrupted');
  return out;
}

/** CPU meter: % of one core per process since start, the machine's (all processes), and this process's. */
function cpuMeter(pids: number[]): () => { perPid: Array<number | null>; machine: number; self: number } {
  const p0 = pids.map(cpuTicks);
  const m0 = machineTicks();
  const s0 = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const secs = (performance.now() - t0) / 1000;
    const m1 = machineTicks();
    const s = process.cpuUsage(s0);
    return {
      perPid: pids.map((p, i) => {
        const a = p0[i];
        const b = cpuTicks(p);
        return a === undefined || b === undefined ? null : Math.round(((b - a) / clkTck() / secs) * 1000) / 10;
      }),
      machine: m1.total > m0.total ? Math.round(((m1.busy - m0.busy) / (m1.total - m0.total)) * 100 * cpus().length) : 0,
      self: Math.round(((s.user + s.system) / 1000 / (secs * 1000)) * 100),
    };
  };
}

const round1 = (x: number | undefined): number | null => (x === undefined ? null : Math.round(x * 10) / 10);

// ------------------------------------------------------------------ 1. shards

interface ShardRun {
  shards: number;
  round: number;
  startS?: number;
  write?: OpStats;
  read?: OpStats;
  idleCpuPct?: Array<number | null>;
  rssMiB?: Array<number | null>;
  quiesced?: Array<number | null>;
  loadavg: number[];
  failure?: string;
  notes: string[];
}

interface ShardRow {
  shards: number;
  write?: Agg;
  read?: Agg;
  /** Per node: the highest over the rounds. */
  idleCpuPct?: Array<number | null>;
  rssMiB?: Array<number | null>;
  /** Per node, the last round's. */
  quiesced?: Array<number | null>;
  runs: ShardRun[];
}

const maxPerNode = (xs: Array<Array<number | null> | undefined>): Array<number | null> | undefined => {
  const ok = xs.filter((x): x is Array<number | null> => x !== undefined);
  if (ok.length === 0) return undefined;
  return Array.from({ length: NODES }, (_, i) => {
    const v = ok.map((x) => x[i]).filter((y): y is number => y !== null && y !== undefined);
    return v.length === 0 ? null : Math.max(...v);
  });
};

async function shardRun(ctx: Ctx, shards: number, round: number): Promise<ShardRun> {
  const a = ctx.a;
  const ks = phaseKeyspace(a.phaseKeys);
  const value = makeValue(256, 1);
  const run1: ShardRun = { shards, round, loadavg: loadAvg(), notes: [] };
  const label = `shards=${shards} r${round}`;
  let st: Started | undefined;
  let sc: StoreClient | undefined;
  try {
    st = await startCluster(ctx, label.replace(' ', '-'), shards);
    const c = st.cluster;
    run1.startS = round1(st.startMs / 1000) ?? 0;
    sc = await storeClient(c.endpoints(), a.clients, a.timeoutMs, 256, () => c.nodePids());
    const w = await phase(ctx, sc.target, `${label} write`, 'write', 'linearizable', ks, value);
    run1.write = opStats(w, 'write');
    keepHist(`shards ${shards} write`, w, 'write');
    ctx.log(`${label}: preloading ${ks.keys} keys for the reads (not measured)`);
    const pl = await preloadKeys(sc.target, ks, value, 64, 300_000, ctx.stop, ctx.progress);
    if (pl.failed > 0 || pl.written < ks.keys) run1.notes.push(`preload wrote ${pl.written} of ${ks.keys} keys`);
    const r = await phase(ctx, sc.target, `${label} read-lin`, 'read', 'linearizable', ks, value);
    run1.read = opStats(r, 'read');
    keepHist(`shards ${shards} read`, r, 'read');
    await sc.target.close();
    sc = undefined;
    ctx.log(`${label}: idle: settling ${a.settleS} s, then sampling CPU for ${a.idleWindowS} s`);
    await sleep(a.settleS * 1000);
    const pids = c.nodePids();
    const cpu = await cpuOver(pids, a.idleWindowS * 1000, ctx.stop);
    run1.idleCpuPct = cpu.map((x) => (x === undefined ? null : Math.round(x * 100) / 100));
    run1.rssMiB = pids.map((p) => round1(memMiB(p)));
    run1.quiesced = await Promise.all(c.endpoints().map(async (u) => (await metricSum(u, 'kv_raft_quiesced')) ?? null));
    ctx.log(`${label}: idle CPU ${run1.idleCpuPct.map((x) => `${x ?? '?'}%`).join(' ')}, RSS ${run1.rssMiB.map((x) => `${x ?? '?'} MiB`).join(' ')}, quiesced groups ${run1.quiesced.join(' ')}`);
  } catch (e) {
    run1.failure = (e as Error).message;
    ctx.log(`${label}: FAILED: ${run1.failure}`);
  } finally {
    if (sc !== undefined) await sc.target.close();
    if (st !== undefined) run1.notes.push(...(await st.done()));
  }
  return run1;
}

/** Rounds alternate the shard counts (8, 64, 256, 8, 64, 256, ...), so slow drift of a shared machine hits them alike. */
async function sectionShards(ctx: Ctx): Promise<ShardRow[]> {
  const a = ctx.a;
  const runs: ShardRun[] = [];
  for (let round = 1; round <= a.rounds; round++) {
    for (const shards of a.shardCounts) {
      if (ctx.stop.stopped) break;
      runs.push(await shardRun(ctx, shards, round));
    }
  }
  return a.shardCounts.map((shards) => {
    const rs = runs.filter((r) => r.shards === shards);
    const write = aggregate(`shards ${shards} write`, rs.map((r) => r.write).filter((x): x is OpStats => x !== undefined));
    const read = aggregate(`shards ${shards} read`, rs.map((r) => r.read).filter((x): x is OpStats => x !== undefined));
    const idle = maxPerNode(rs.map((r) => r.idleCpuPct));
    const rss = maxPerNode(rs.map((r) => r.rssMiB));
    const q = [...rs].reverse().find((r) => r.quiesced !== undefined)?.quiesced;
    return {
      shards, runs: rs,
      ...(write !== undefined ? { write } : {}), ...(read !== undefined ? { read } : {}),
      ...(idle !== undefined ? { idleCpuPct: idle } : {}), ...(rss !== undefined ? { rssMiB: rss } : {}), ...(q !== undefined ? { quiesced: q } : {}),
    };
  });
}

// ------------------------------------------------------------------ 2. values

interface ValueRun {
  bytes: number;
  round: number;
  write?: OpStats;
  loadavg: number[];
  failure?: string;
  notes: string[];
}

interface ValueRow {
  bytes: number;
  write?: Agg;
  mbPerSec?: number;
  runs: ValueRun[];
}

async function valueRun(ctx: Ctx, bytes: number, round: number): Promise<ValueRun> {
  const a = ctx.a;
  const ks = phaseKeyspace(a.phaseKeys);
  const run1: ValueRun = { bytes, round, loadavg: loadAvg(), notes: [] };
  const label = `value=${bytes}B r${round}`;
  let st: Started | undefined;
  let sc: StoreClient | undefined;
  try {
    st = await startCluster(ctx, label.replace(' ', '-'), 16);
    const c = st.cluster;
    sc = await storeClient(c.endpoints(), a.clients, a.timeoutMs, bytes, () => c.nodePids());
    const w = await phase(ctx, sc.target, `${label} write`, 'write', 'linearizable', ks, makeValue(bytes, 1));
    run1.write = opStats(w, 'write');
    keepHist(`value ${bytes} write`, w, 'write');
  } catch (e) {
    run1.failure = (e as Error).message;
    ctx.log(`${label}: FAILED: ${run1.failure}`);
  } finally {
    if (sc !== undefined) await sc.target.close();
    if (st !== undefined) run1.notes.push(...(await st.done()));
  }
  return run1;
}

async function sectionValues(ctx: Ctx): Promise<ValueRow[]> {
  const a = ctx.a;
  const runs: ValueRun[] = [];
  for (let round = 1; round <= a.rounds; round++) {
    for (const bytes of a.valueSizes) {
      if (ctx.stop.stopped) break;
      runs.push(await valueRun(ctx, bytes, round));
    }
  }
  return a.valueSizes.map((bytes) => {
    const rs = runs.filter((r) => r.bytes === bytes);
    const write = aggregate(`value ${bytes} write`, rs.map((r) => r.write).filter((x): x is OpStats => x !== undefined));
    return { bytes, runs: rs, ...(write !== undefined ? { write, mbPerSec: (write.opsPerSec * bytes) / 1e6 } : {}) };
  });
}

// ------------------------------------------------------------------ 3. big data

interface Checkpoint { keys: number; secs: number; rssMiB: Array<number | null> }

interface LoadSummary {
  keys: number;
  written: number;
  failed: number;
  secs: number;
  keysPerSec: number;
  cut: boolean;
  errorCodes: Record<string, number>;
  checkpoints: Checkpoint[];
  rssAfterMiB?: Array<number | null>;
  hwmMiB?: Array<number | null>;
  /** Store nodes after the load, from their /metrics (prom-client's process metrics): V8 heap used, heap total, external memory (MiB). */
  heapMiB?: Array<{ used: number | null; total: number | null; external: number | null }>;
  /** During the load, % of one core: each server process, the load generator, the whole machine. */
  nodeCpuPct?: Array<number | null>;
  clientCpuPct?: number;
  machineCpuPct?: number;
}

interface RestartResult {
  victim: number;
  readyMs?: number;
  staleReadMs?: number;
  caughtUpMs?: number;
  /** The restarted process's peak RSS (VmHWM) once it serves: what replaying its WAL and loading its shards took. */
  peakRssMiB?: number;
  failure?: string;
}

interface CatchupResult {
  victim: number;
  extraWrites?: number;
  extraWriteSecs?: number;
  shardsCompactedPast?: number;
  readyMs?: number;
  caughtUpMs?: number;
  /** 'snapshot sent' lines to the victim: every stream, and the distinct (shard, index) among them. */
  snapshots?: number;
  snapshotShards?: number;
  /** Bytes of every stream (a snapshot streamed twice counts twice). */
  bytes?: number;
  /** Bytes of one stream per distinct (shard, index): what the victim needed. */
  uniqueBytes?: number;
  records?: number;
  uniqueRecords?: number;
  /** uniqueBytes / (first stream start -> caught up): the catch-up rate. */
  mbPerSecEffective?: number;
  /** uniqueBytes / (ready -> caught up). */
  mbPerSecFromReady?: number;
  /** bytes / (first stream start -> last stream end): what went over the wire. */
  mbPerSecWire?: number;
  streamMbPerSec?: { min: number; median: number; max: number };
  sentCounterDelta?: number;
  /** From the spawn to caught up, % of one core: each node (node 3: its new process), the whole machine. */
  nodeCpuPct?: Array<number | null>;
  machineCpuPct?: number;
  failure?: string;
}

interface BigResult {
  keys: number;
  shards: number;
  nodeArgs: string;
  startS?: number;
  load?: LoadSummary;
  restart?: RestartResult;
  catchup?: CatchupResult;
  etcd?: LoadSummary & { version?: string; failure?: string };
  loadavg: number[];
  loadavgEnd?: number[];
  failure?: string;
  notes: string[];
}

function checkpointsFor(keys: number): number[] {
  const step = keys >= 1_000_000 ? 200_000 : Math.max(1, Math.ceil(keys / 5));
  const out: number[] = [];
  for (let k = step; k < keys; k += step) out.push(k);
  return out;
}

async function loadWithRss(ctx: Ctx, label: string, put: (i: number) => Promise<OpResult>, keys: number, pids: () => number[]): Promise<LoadSummary> {
  const a = ctx.a;
  const checkpoints: Checkpoint[] = [];
  ctx.log(`${label}: loading ${keys} keys of 100 B, ${a.loadClients} writers (limit ${a.loadLimitS} s)`);
  const meter = cpuMeter(pids());
  const r: BulkLoadResult = await bulkLoad({
    put, from: 0, to: keys, concurrency: a.loadClients, limitMs: a.loadLimitS * 1000, stop: ctx.stop,
    each: (p: LoadProgress, perSec: number) => ctx.progress?.(`[${label} load] ${fmtRate(p.written)}/${fmtRate(keys)} keys, ${fmtRate(perSec)}/s, ${p.failed} failed`),
    checkpoints: checkpointsFor(keys),
    checkpoint: async (p: LoadProgress) => {
      const cp = { keys: p.written, secs: round1(p.elapsedMs / 1000) ?? 0, rssMiB: pids().map((x) => round1(memMiB(x))) };
      checkpoints.push(cp);
      ctx.log(`${label}: ${fmtRate(p.written)} keys in ${cp.secs} s, RSS ${cp.rssMiB.join(' ')} MiB`);
    },
  });
  const secs = r.elapsedMs / 1000;
  const cpu = meter();
  ctx.log(`${label}: ${r.written} written, ${r.failed} failed in ${secs.toFixed(1)} s (${fmtRate(r.written / secs)} keys/s)${r.cut ? ' — cut short (time limit or interrupted)' : ''}`);
  return {
    keys, written: r.written, failed: r.failed, secs: round1(secs) ?? 0, keysPerSec: Math.round(r.written / secs), cut: r.cut,
    errorCodes: r.errorCodes, checkpoints, nodeCpuPct: cpu.perPid, clientCpuPct: cpu.self, machineCpuPct: cpu.machine,
  };
}

/** The leaders' commit index per shard, once every shard has a leader among `urls` that answers for itself (bounded). */
async function leaderCommits(urls: string[], exclude: number | undefined, timeoutMs: number, stop: StopSignal): Promise<Map<number, { leader: number; commit: number }>> {
  const t0 = performance.now();
  let lastMissing = '';
  while (!stop.stopped && performance.now() - t0 < timeoutMs) {
    const views = await Promise.all(urls.map((u) => clusterView(u, 1_000)));
    const shards = views.find((v) => v !== undefined)?.shards.map((s) => s.id) ?? [];
    const ls = leadersOf(views);
    const out = new Map<number, { leader: number; commit: number }>();
    const missing: number[] = [];
    for (const id of shards) {
      const l = ls.get(id);
      if (l === undefined || l.commit === null || l.leader === exclude) missing.push(id);
      else out.set(id, { leader: l.leader, commit: l.commit });
    }
    if (shards.length > 0 && missing.length === 0) return out;
    lastMissing = missing.join(',');
    await sleep(200);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for a leader on every shard (missing: ${lastMissing || 'no answer'})`);
}

async function restartTest(ctx: Ctx, c: LocalCluster, victim: number, ks: Keyspace, sc: StoreClient): Promise<RestartResult> {
  const res: RestartResult = { victim };
  const urls = c.endpoints();
  const url = urls[victim - 1] as string;
  // A known key whose shard has a replica on the victim.
  let known = 0;
  for (let i = 0; i < Math.min(ks.keys, 10_000); i++) {
    const sh = sc.shardOfKey(ks, i);
    if (sc.map.shards.find((s) => s.id === sh)?.replicas.includes(victim) === true) { known = i; break; }
  }
  const ref = keyRef(ks, known);
  const readUrl = `${url}/v1/kv/${encodeURIComponent(ref.tenant)}/${encodeURIComponent(ref.key)}?t=${ref.t}&consistency=stale`;
  try {
    const pre = await get200(readUrl, 2_000);
    if (!pre.ok) throw new Error(`the known key ${ref.tenant}/${ref.key} is not readable on node ${victim} before the kill (HTTP ${pre.status})`);
    const k = await run(CLUSTER_SH, ['kill', String(victim)], c.env(), 15_000);
    if (k.code !== 0) throw new Error(`cluster.sh kill ${victim} failed: ${k.out.trim()}`);
    ctx.log(`restart: ${k.out.trim()}; restarting it with cluster.sh restart ${victim}`);
    await sleep(1_000);
    const t0 = performance.now();
    const restarting = run(CLUSTER_SH, ['restart', String(victim)], c.env(), 120_000);
    let exited = false;
    void restarting.then(() => { exited = true; });
    const limit = 90_000;
    while (!ctx.stop.stopped && performance.now() - t0 < limit && (res.readyMs === undefined || res.staleReadMs === undefined)) {
      const now = (): number => Math.round(performance.now() - t0);
      const [ready, read] = await Promise.all([
        res.readyMs === undefined ? get200(`${url}/ready`, 500) : Promise.resolve(undefined),
        res.staleReadMs === undefined ? get200(readUrl, 500) : Promise.resolve(undefined),
      ]);
      if (ready?.ok === true) res.readyMs = now();
      if (read?.ok === true && read.body?.length === 100) res.staleReadMs = now();
      if (exited && readPid(c.dataDir, victim) === undefined) break;
      await sleep(10);
    }
    const r = await restarting;
    if (r.code !== 0) ctx.log(`restart: cluster.sh restart ${victim} exited ${r.code}: ${r.out.trim()}`);
    if (res.readyMs === undefined || res.staleReadMs === undefined) {
      throw new Error(`node ${victim} not serving after ${Math.round((performance.now() - t0) / 1000)} s (ready ${res.readyMs ?? 'never'}, stale read ${res.staleReadMs ?? 'never'})`);
    }
    const pid = readPid(c.dataDir, victim);
    res.peakRssMiB = pid === undefined ? undefined : round1(memMiB(pid, 'VmHWM')) ?? undefined;
    ctx.log(`restart: /ready after ${res.readyMs} ms, first stale read after ${res.staleReadMs} ms, peak RSS ${res.peakRssMiB ?? '?'} MiB`);
    // Context: until the restarted node has applied what the leaders had committed.
    const target = new Map([...(await leaderCommits(urls, undefined, 30_000, ctx.stop))].map(([s, l]) => [s, l.commit]));
    while (!ctx.stop.stopped && performance.now() - t0 < limit) {
      if (await caughtUp(url, target)) { res.caughtUpMs = Math.round(performance.now() - t0); break; }
      await sleep(50);
    }
    ctx.log(`restart: caught up with the leaders ${res.caughtUpMs === undefined ? 'not within the limit' : `after ${res.caughtUpMs} ms`}`);
  } catch (e) {
    res.failure = (e as Error).message;
    ctx.log(`restart: FAILED: ${res.failure}`);
  }
  return res;
}

async function catchupTest(ctx: Ctx, c: LocalCluster, victim: number, ks: Keyspace, written: number, sc: StoreClient): Promise<CatchupResult> {
  const a = ctx.a;
  const res: CatchupResult = { victim };
  const urls = c.endpoints();
  const url = urls[victim - 1] as string;
  const survivors = urls.filter((_, i) => i !== victim - 1);
  try {
    // 1. The victim's applied index per shard (it is caught up: restartTest waited for that), then kill -9.
    const before = await clusterView(url, 2_000);
    if (before === undefined) throw new Error(`node ${victim} does not answer GET /v1/cluster`);
    const f = new Map(before.shards.filter((s) => s.replicas.includes(victim)).map((s) => [s.id, s.appliedIndex ?? 0]));
    const k = await run(CLUSTER_SH, ['kill', String(victim)], c.env(), 15_000);
    if (k.code !== 0) throw new Error(`cluster.sh kill ${victim} failed: ${k.out.trim()}`);
    ctx.log(`catch-up: ${k.out.trim()}; waiting for leaders among the others`);
    const l0 = await leaderCommits(survivors, victim, 60_000, ctx.stop);
    await sc.http.eps.refresh();
    // 2. Write until every shard's leader must have compacted past the victim's log: its log holds at
    //    most ~compact-every entries, so commit >= f + compact-every + compact-keep + 100 is enough.
    const margin = a.compactEvery + a.compactKeep + 100;
    const goal = new Map([...f].map(([s, idx]) => [s, idx + margin]));
    const byShard = new Map<number, number[]>();
    for (let i = 0; i < written; i++) {
      const s = sc.shardOfKey(ks, i);
      if (!goal.has(s)) continue;
      let l = byShard.get(s);
      if (l === undefined) byShard.set(s, (l = []));
      l.push(i);
    }
    const value = makeValue(100, 2);
    const t0 = performance.now();
    const limitMs = a.catchupLimitS * 1000;
    let extra = 0;
    let commits = new Map([...l0].map(([s, l]) => [s, l.commit]));
    for (let pass = 0; !ctx.stop.stopped && performance.now() - t0 < limitMs; pass++) {
      const remaining = new Map<number, number>();
      for (const [s, g] of goal) {
        const cm = commits.get(s) ?? 0;
        if (cm < g) remaining.set(s, g - cm);
      }
      if (remaining.size === 0) break;
      const total = [...remaining.values()].reduce((x, y) => x + y, 0);
      ctx.log(`catch-up: pass ${pass + 1}: ${fmtRate(total)} more writes on ${remaining.size} shards, so their leaders compact past node ${victim}`);
      const queue: number[] = [];
      const cursors = new Map<number, number>();
      // Interleave shards so every leader is busy at once.
      for (let more = true; more;) {
        more = false;
        for (const [s, n] of remaining) {
          if (n <= 0) continue;
          const keysOf = byShard.get(s) ?? [];
          if (keysOf.length === 0) continue;
          const cur = cursors.get(s) ?? 0;
          queue.push(keysOf[cur % keysOf.length] as number);
          cursors.set(s, cur + 1);
          remaining.set(s, n - 1);
          more = true;
        }
      }
      const r = await bulkLoad({
        put: (i) => sc.target.put(keyRef(ks, queue[i] as number), value),
        from: 0, to: queue.length, concurrency: a.loadClients, limitMs: Math.max(1_000, limitMs - (performance.now() - t0)), stop: ctx.stop,
        each: (p, perSec) => ctx.progress?.(`[catch-up writes] ${fmtRate(p.written)}/${fmtRate(queue.length)}, ${fmtRate(perSec)}/s, ${p.failed} failed`),
      });
      extra += r.written;
      if (Object.keys(r.errorCodes).length > 0) ctx.log(`catch-up: write errors (retried): ${errorSummary(r.errorCodes)}`);
      commits = new Map([...(await leaderCommits(survivors, victim, 60_000, ctx.stop))].map(([s, l]) => [s, l.commit]));
    }
    res.extraWrites = extra;
    res.extraWriteSecs = round1((performance.now() - t0) / 1000) ?? 0;
    res.shardsCompactedPast = [...goal].filter(([s, g]) => (commits.get(s) ?? 0) >= g).length;
    if (res.shardsCompactedPast < goal.size) throw new Error(`only ${res.shardsCompactedPast} of ${goal.size} shards got enough writes within ${a.catchupLimitS} s`);
    ctx.log(`catch-up: ${fmtRate(extra)} writes in ${res.extraWriteSecs} s; restarting node ${victim}`);
    // 3. Restart and wait for the victim's applied index to reach the leaders' commit index on every shard.
    const l1 = await leaderCommits(survivors, victim, 60_000, ctx.stop);
    const target = new Map([...l1].filter(([s]) => f.has(s)).map(([s, l]) => [s, l.commit]));
    const logs = Array.from({ length: NODES }, (_, i) => join(c.dataDir, `node-${i + 1}.log`));
    const offsets = logs.map(fileSize);
    const sent0 = await Promise.all(survivors.map((u) => metricSum(u, 'kv_snapshots_total', { direction: 'sent', result: 'ok' })));
    const survivorPids = livePids(c);
    const meter = cpuMeter(survivorPids);
    const tWall = Date.now();
    const t1 = performance.now();
    const restarting = run(CLUSTER_SH, ['restart', String(victim)], c.env(), 120_000);
    const limit = Math.max(60_000, limitMs);
    while (!ctx.stop.stopped && performance.now() - t1 < limit) {
      if (res.readyMs === undefined && (await get200(`${url}/ready`, 500)).ok) res.readyMs = Math.round(performance.now() - t1);
      if (res.readyMs !== undefined && (await caughtUp(url, target))) {
        res.caughtUpMs = Math.round(performance.now() - t1);
        const cpu = meter();
        const vp = readPid(c.dataDir, victim);
        const vt = vp === undefined ? undefined : cpuTicks(vp);
        res.nodeCpuPct = cpu.perPid.map((x, i) => (i === victim - 1 ? (vt === undefined ? null : Math.round((vt / clkTck() / (res.caughtUpMs as number / 1000)) * 1000) / 10) : x));
        res.machineCpuPct = cpu.machine;
        break;
      }
      await sleep(50);
    }
    const rr = await restarting;
    if (rr.code !== 0) ctx.log(`catch-up: cluster.sh restart ${victim} exited ${rr.code}: ${rr.out.trim()}`);
    await sleep(500); // the senders log 'snapshot sent' after the last frame
    const sent1 = await Promise.all(survivors.map((u) => metricSum(u, 'kv_snapshots_total', { direction: 'sent', result: 'ok' })));
    res.sentCounterDelta = sent1.reduce<number>((s, x, i) => s + ((x ?? 0) - (sent0[i] ?? 0)), 0);
    // 4. What the leaders streamed to the victim, from their logs.
    const streams = logs.flatMap((file, i) => (i === victim - 1 ? [] : logLinesFrom(file, offsets[i] ?? 0)))
      .filter((l) => l['msg'] === 'snapshot sent' && l['peer'] === victim && typeof l['time'] === 'number' && (l['time'] as number) >= tWall);
    res.snapshots = streams.length;
    res.snapshotShards = new Set(streams.map((l) => l['shard'])).size;
    res.bytes = streams.reduce((s, l) => s + Number(l['bytes'] ?? 0), 0);
    res.records = streams.reduce((s, l) => s + Number(l['records'] ?? 0), 0);
    const unique = new Map<string, Record<string, unknown>>();
    for (const l of streams) unique.set(`${String(l['shard'])}:${String(l['index'])}`, l);
    res.uniqueBytes = [...unique.values()].reduce((s, l) => s + Number(l['bytes'] ?? 0), 0);
    res.uniqueRecords = [...unique.values()].reduce((s, l) => s + Number(l['records'] ?? 0), 0);
    const rates = streams.map((l) => Number(l['mbPerSec'] ?? 0)).sort((x, y) => x - y);
    if (rates.length > 0) res.streamMbPerSec = { min: rates[0] as number, median: rates[Math.floor(rates.length / 2)] as number, max: rates[rates.length - 1] as number };
    const mb = (bytes: number, ms: number): number | undefined => (ms > 0 ? Math.round((bytes / 1e6 / (ms / 1000)) * 10) / 10 : undefined);
    if (streams.length > 0) {
      // A stream's start: its end (the log line's time) less its duration (bytes / mbPerSec).
      const starts = streams.map((l) => (l['time'] as number) - (Number(l['bytes']) / 1e6 / Math.max(1e-9, Number(l['mbPerSec']))) * 1000);
      const ends = streams.map((l) => l['time'] as number);
      const first = Math.min(...starts);
      const wire = mb(res.bytes, Math.max(...ends) - first);
      if (wire !== undefined) res.mbPerSecWire = wire;
      if (res.caughtUpMs !== undefined) {
        const eff = mb(res.uniqueBytes, tWall + res.caughtUpMs - first);
        if (eff !== undefined) res.mbPerSecEffective = eff;
      }
    }
    if (res.caughtUpMs !== undefined && res.readyMs !== undefined) {
      const r = mb(res.uniqueBytes, res.caughtUpMs - res.readyMs);
      if (r !== undefined) res.mbPerSecFromReady = r;
    }
    ctx.log(`catch-up: ready after ${res.readyMs ?? '?'} ms, caught up after ${res.caughtUpMs ?? 'never'} ms; ${res.snapshots} snapshot streams (${unique.size} distinct, ${res.snapshotShards} shards), ${((res.uniqueBytes ?? 0) / 1e6).toFixed(1)} MB distinct, ${((res.bytes ?? 0) / 1e6).toFixed(1)} MB streamed`);
    if (res.caughtUpMs === undefined) throw new Error(`node ${victim} had not caught up after ${Math.round(limit / 1000)} s`);
  } catch (e) {
    res.failure = (e as Error).message;
    ctx.log(`catch-up: FAILED: ${res.failure}`);
  }
  return res;
}

async function sectionBig(ctx: Ctx): Promise<BigResult> {
  const a = ctx.a;
  const nodeArgs = `--compact-every ${a.compactEvery} --compact-keep ${a.compactKeep}`;
  const res: BigResult = { keys: a.keys, shards: a.bigShards, nodeArgs, loadavg: loadAvg(), notes: [] };
  const ks = phaseKeyspace(a.keys);
  const value = makeValue(100, 1);
  let st: Started | undefined;
  let sc: StoreClient | undefined;
  try {
    st = await startCluster(ctx, 'bigdata', a.bigShards, nodeArgs);
    const c = st.cluster;
    res.startS = round1(st.startMs / 1000) ?? 0;
    const client = await storeClient(c.endpoints(), a.loadClients, a.timeoutMs, 100, () => livePids(c));
    sc = client;
    const pids = (): number[] => livePids(c);
    res.load = await loadWithRss(ctx, 'store', (i) => client.target.put(keyRef(ks, i), value), a.keys, pids);
    await sleep(5_000);
    res.load.rssAfterMiB = pids().map((p) => round1(memMiB(p)));
    res.load.hwmMiB = pids().map((p) => round1(memMiB(p, 'VmHWM')));
    const mib = (x: number | undefined): number | null => (x === undefined ? null : Math.round(x / 2 ** 20));
    res.load.heapMiB = await Promise.all(c.endpoints().map(async (u) => ({
      used: mib(await metricSum(u, 'nodejs_heap_size_used_bytes')),
      total: mib(await metricSum(u, 'nodejs_heap_size_total_bytes')),
      external: mib(await metricSum(u, 'nodejs_external_memory_bytes')),
    })));
    ctx.log(`store: RSS after loading (+5 s) ${res.load.rssAfterMiB.join(' ')} MiB (peak ${res.load.hwmMiB.join(' ')}); V8 heap used/total, external: ${res.load.heapMiB.map((h) => `${h.used}/${h.total}, ${h.external}`).join('; ')} MiB`);
    if (!ctx.stop.stopped) res.restart = await restartTest(ctx, c, NODES, ks, client);
    if (!ctx.stop.stopped && res.restart?.failure === undefined) {
      res.catchup = await catchupTest(ctx, c, NODES, ks, res.load.written, client);
    } else if (res.restart?.failure !== undefined) {
      res.catchup = { victim: NODES, failure: 'skipped: the restart step failed' };
    }
  } catch (e) {
    res.failure = (e as Error).message;
    ctx.log(`bigdata: FAILED: ${res.failure}`);
  } finally {
    if (sc !== undefined) await sc.target.close();
    if (st !== undefined) res.notes.push(...(await st.done()));
  }
  if (a.etcd && !ctx.stop.stopped) res.etcd = await etcdLoad(ctx, a.etcdKeys ?? a.keys);
  res.loadavgEnd = loadAvg();
  return res;
}

async function etcdLoad(ctx: Ctx, keys: number): Promise<LoadSummary & { version?: string; failure?: string }> {
  const a = ctx.a;
  const ks = phaseKeyspace(keys);
  const value = makeValue(100, 1);
  let target: Target | undefined;
  try {
    target = await openEtcdTarget({
      nodes: 3, shards: 1, replicas: 3, timeoutMs: a.timeoutMs, connections: a.loadClients, valueBytes: 100, keyspace: ks,
      verify: true, storeClient: 'raw', etcdPutRoute: 'leader', workDir: ctx.workDir, log: ctx.log,
    });
    const t = target;
    const r = await loadWithRss(ctx, 'etcd', (i) => t.put(keyRef(ks, i), value), keys, () => t.serverPids());
    await sleep(5_000);
    r.rssAfterMiB = t.serverPids().map((p) => round1(memMiB(p)));
    r.hwmMiB = t.serverPids().map((p) => round1(memMiB(p, 'VmHWM')));
    ctx.log(`etcd: RSS after loading (+5 s) ${r.rssAfterMiB.join(' ')} MiB (peak ${r.hwmMiB.join(' ')})`);
    const version = t.info['version'];
    return { ...r, ...(typeof version === 'string' ? { version } : {}) };
  } catch (e) {
    ctx.log(`etcd: FAILED: ${(e as Error).message}`);
    return { keys, written: 0, failed: 0, secs: 0, keysPerSec: 0, cut: true, errorCodes: {}, checkpoints: [], failure: (e as Error).message };
  } finally {
    if (target !== undefined) await target.close();
  }
}

// ------------------------------------------------------------------ report

const cells = (xs: Array<number | null> | undefined, digits = 1): string => (xs === undefined ? '—' : xs.map((x) => (x === null ? '?' : x.toFixed(digits))).join(' / '));
const la = (xs: number[]): string => xs.map((x) => x.toFixed(2)).join(' ');
const met = (ok: boolean | undefined): string => (ok === undefined ? 'n/a' : ok ? '**met**' : '**not met**');
const secs = (ms: number | undefined): string => (ms === undefined ? '—' : `${(ms / 1000).toFixed(2)} s`);

interface Verdicts {
  writeRatio64to8?: number;
  writeRatioMet?: boolean;
  writeRatioPerRound?: Array<number | null>;
  /** The nodes' CPU time per write at 64 shards / at 8 shards: on a CPU-bound machine the write ratio tends to its inverse. */
  cpuPerWriteRatio64to8?: number;
  idleCpuMax256?: number;
  idleCpuMet?: boolean;
  restartMet?: boolean;
  catchupMet?: boolean;
  rssVsEtcd?: { keys: number; storeMaxMiB: number; etcdMaxMiB: number; met: boolean };
}

function verdicts(shards: ShardRow[] | undefined, big: BigResult | undefined): Verdicts {
  const v: Verdicts = {};
  const w = (n: number): Agg | undefined => shards?.find((r) => r.shards === n)?.write;
  const w8 = w(8);
  const w64 = w(64);
  if (w8 !== undefined && w64 !== undefined && w8.opsPerSec > 0) {
    v.writeRatio64to8 = Math.round((w64.opsPerSec / w8.opsPerSec) * 100) / 100;
    v.writeRatioMet = w64.opsPerSec / w8.opsPerSec >= 0.9;
    if (w8.serverCpuPct !== undefined && w64.serverCpuPct !== undefined && w64.opsPerSec > 0 && w8.serverCpuPct > 0) {
      v.cpuPerWriteRatio64to8 = Math.round(((w64.serverCpuPct / w64.opsPerSec) / (w8.serverCpuPct / w8.opsPerSec)) * 100) / 100;
    }
    v.writeRatioPerRound = w64.rounds.map((x, i) => {
      const y = w8.rounds[i];
      return y === undefined || y === 0 ? null : Math.round((x / y) * 100) / 100;
    });
  }
  const idle = shards?.find((r) => r.shards === 256)?.idleCpuPct;
  if (idle !== undefined && idle.every((x) => x !== null)) {
    v.idleCpuMax256 = Math.max(...(idle as number[]));
    v.idleCpuMet = v.idleCpuMax256 < 3;
  }
  const rs = big?.restart;
  if (rs !== undefined) v.restartMet = rs.staleReadMs !== undefined && rs.readyMs !== undefined && Math.max(rs.staleReadMs, rs.readyMs) <= 5_000;
  const cu = big?.catchup;
  if (cu !== undefined) v.catchupMet = cu.failure === undefined && (cu.mbPerSecEffective ?? 0) >= 50;
  // RSS vs etcd at the largest key count both reached (a checkpoint, or the whole load).
  const sl = big?.load;
  const el = big?.etcd;
  if (sl !== undefined && el !== undefined && el.failure === undefined) {
    const pts = (l: LoadSummary): Map<number, Array<number | null>> => {
      const m = new Map<number, Array<number | null>>();
      for (const cp of l.checkpoints) m.set(cp.keys, cp.rssMiB);
      if (!l.cut && l.failed === 0 && l.rssAfterMiB !== undefined) m.set(l.keys, l.rssAfterMiB);
      return m;
    };
    const sp = pts(sl);
    const ep = pts(el);
    const common = [...sp.keys()].filter((k) => ep.has(k)).sort((x, y) => y - x)[0];
    if (common !== undefined) {
      const mx = (xs: Array<number | null> | undefined): number => Math.max(...(xs ?? []).map((x) => x ?? 0));
      const s = mx(sp.get(common));
      const e = mx(ep.get(common));
      v.rssVsEtcd = { keys: common, storeMaxMiB: s, etcdMaxMiB: e, met: s <= e };
    }
  }
  return v;
}

function markdown(a: Args, time: string, machine: ReturnType<typeof machineInfo>, git: ReturnType<typeof gitInfo>,
  shards: ShardRow[] | undefined, values: ValueRow[] | undefined, big: BigResult | undefined, v: Verdicts): string {
  const L: string[] = [];
  L.push(`## bench:scaling — ${time}`);
  L.push('');
  L.push(`- machine: ${machine.cores} cores (${machine.cpuModel}), ${machine.memGiB} GiB, Node ${machine.node}, data dirs in ${machine.tmpDir} (${machine.tmpFs}); ` +
    `load average ${la(machine.loadavgStart)} at start${machine.loadavgEnd !== undefined ? `, ${la(machine.loadavgEnd)} at end` : ''}; git ${git.commit.slice(0, 12)}${git.dirty ? ' (dirty)' : ''} on ${git.branch}.`);
  L.push(`- every cluster: ${NODES} nodes, 3 replicas per shard, started fresh with ./cluster.sh; load: the store target's raw client (writes and linearizable reads to the shard leader), ` +
    `${a.clients} closed-loop clients, uniform keys, ${a.warmupS} s warm-up + ${a.durationS} s measured per phase. The machine is shared: see the load averages and the CPU of other processes.`);
  const perRound = (x: Agg | undefined): string => (x === undefined ? '—' : `**${fmtRate(x.opsPerSec)}** (${x.rounds.map(fmtRate).join(', ')})`);
  const errsAgg = (x: Agg | undefined): string => (x === undefined || x.errors === 0 ? '0' : `${x.errors}: ${errorSummary(x.errorCodes)}`);
  // The nodes' CPU time per successful request (ms, all three nodes together): less sensitive to a busy machine than ops/s.
  const perOp = (x: Agg): string => (x.serverCpuPct === undefined || x.opsPerSec <= 0 ? '' : `; ${((x.serverCpuPct * 10) / x.opsPerSec).toFixed(2)} ms/op`);
  const cpuAgg = (x: Agg | undefined): string => (x === undefined ? '—' : `${x.serverCpuPct?.toFixed(0) ?? '?'} / ${x.clientCpuPct.toFixed(0)} / ${x.otherCpuPct?.toFixed(0) ?? '?'}${perOp(x)}`);
  if (shards !== undefined) {
    L.push('');
    L.push(`### 1. Shards per node (256 B values, ${fmtRate(a.phaseKeys)} keys, ${a.rounds} rounds alternating the shard counts, each on a fresh cluster)`);
    L.push('');
    L.push('ops/s: mean over the rounds (each round); latency: all rounds\' requests together; CPU % of one core (mean over the rounds): the nodes / the load generator / every other process on the machine; then the nodes\' CPU time per request (ms, three nodes together).');
    L.push('');
    L.push('| shards | writes/s | write p50 ms | write p99 ms | lin reads/s | read p50 ms | read p99 ms | errors (w; r) | CPU during writes | CPU during reads |');
    L.push('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |');
    for (const r of shards) {
      const l = (x: Agg | undefined): string => (x === undefined ? '— | —' : `${fmtMs(x.p50Ms)} | ${fmtMs(x.p99Ms)}`);
      L.push(`| ${r.shards} | ${perRound(r.write)} | ${l(r.write)} | ${perRound(r.read)} | ${l(r.read)} | ${errsAgg(r.write)}; ${errsAgg(r.read)} | ${cpuAgg(r.write)} | ${cpuAgg(r.read)} |`);
    }
    L.push('');
    L.push(`Idle, after the load: ${a.settleS} s of settling, then utime+stime of /proc/<pid>/stat over ${a.idleWindowS} s (highest per node over the rounds), RSS (highest per node), quiesced groups (kv_raft_quiesced, last round):`);
    L.push('');
    L.push('| shards | idle CPU % of a core, per node | RSS MiB per node | quiesced groups per node | load average at the start of each round |');
    L.push('| ---: | --- | --- | --- | --- |');
    for (const r of shards) {
      L.push(`| ${r.shards} | ${cells(r.idleCpuPct, 2)} | ${cells(r.rssMiB, 0)} | ${cells(r.quiesced, 0)} of ${r.shards} | ${r.runs.map((x) => la(x.loadavg)).join('; ')} |`);
    }
    L.push('');
    for (const r of shards) {
      for (const x of r.runs) {
        if (x.failure !== undefined) L.push(`- ${r.shards} shards, round ${x.round}: **failed**: ${x.failure}`);
        for (const n of x.notes) L.push(`- ${r.shards} shards, round ${x.round}: ${n}`);
      }
    }
    L.push(`- writes/s(64 shards) / writes/s(8 shards) = **${v.writeRatio64to8?.toFixed(2) ?? 'n/a'}** (per round: ${(v.writeRatioPerRound ?? []).map((x) => x?.toFixed(2) ?? '?').join(', ') || 'n/a'}; target ≥ 0.9): ${met(v.writeRatioMet)}.`);
    if (v.cpuPerWriteRatio64to8 !== undefined) {
      L.push(`- the nodes' CPU time per write, 64 shards / 8 shards = **${v.cpuPerWriteRatio64to8.toFixed(2)}×**: where the nodes are CPU-bound (a busy 2-core machine), ` +
        `expect writes/s(64) / writes/s(8) ≈ ${(1 / v.cpuPerWriteRatio64to8).toFixed(2)}; this figure moves less with the machine's noise than ops/s do.`);
    }
    L.push(`- idle CPU at 256 shards, highest node: **${v.idleCpuMax256?.toFixed(2) ?? 'n/a'} %** of a core (target < 3 %): ${met(v.idleCpuMet)}.`);
  }
  if (values !== undefined) {
    L.push('');
    L.push(`### 2. Value size (16 shards, writes, ${fmtRate(a.phaseKeys)} keys, ${a.rounds} rounds alternating the sizes, each on a fresh cluster)`);
    L.push('');
    L.push('| value | writes/s | MB/s | p50 ms | p99 ms | max ms | errors | CPU: nodes / load generator / others | load average at the start of each round |');
    L.push('| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |');
    for (const r of values) {
      const size = r.bytes >= 1024 ? `${r.bytes / 1024} KiB` : `${r.bytes} B`;
      const w = r.write;
      const lds = r.runs.map((x) => la(x.loadavg)).join('; ');
      if (w === undefined) {
        L.push(`| ${size} | **failed** |  |  |  |  |  |  | ${lds} |`);
        continue;
      }
      L.push(`| ${size} | ${perRound(w)} | ${(r.mbPerSec ?? 0).toFixed(1)} | ${fmtMs(w.p50Ms)} | ${fmtMs(w.p99Ms)} | ${fmtMs(w.maxMs)} | ${errsAgg(w)} | ${cpuAgg(w)} | ${lds} |`);
    }
    for (const r of values) {
      for (const x of r.runs) {
        if (x.failure !== undefined) L.push(`- ${r.bytes} B, round ${x.round}: **failed**: ${x.failure}`);
        for (const n of x.notes) L.push(`- ${r.bytes} B, round ${x.round}: ${n}`);
      }
    }
  }
  if (big !== undefined) {
    L.push('');
    L.push(`### 3. ${fmtRate(big.keys)} keys (100 B values, ${big.shards} shards, node flags \`${big.nodeArgs}\`)`);
    L.push('');
    if (big.failure !== undefined) L.push(`- **failed**: ${big.failure}`);
    const ld = big.load;
    const rs = big.restart;
    const cu = big.catchup;
    L.push('| step | result | target |');
    L.push('| --- | --- | --- |');
    if (ld !== undefined) {
      L.push(`| load ${fmtRate(ld.keys)} keys, ${a.loadClients} writers | ${fmtRate(ld.written)} written, ${ld.failed} failed in ${ld.secs} s = **${fmtRate(ld.keysPerSec)} keys/s**${ld.cut ? ' (**cut short**: time limit or interrupted)' : ''}` +
        `${Object.keys(ld.errorCodes).length > 0 ? `; errors retried: ${errorSummary(ld.errorCodes)}` : ''} | — |`);
      L.push(`| CPU during the load, % of one core | nodes ${cells(ld.nodeCpuPct, 0)}; load generator ${ld.clientCpuPct ?? '?'}; whole machine ${ld.machineCpuPct ?? '?'} of ${cpus().length * 100} | — |`);
      L.push(`| RSS per node after loading (+5 s) | ${cells(ld.rssAfterMiB, 0)} MiB (peak ${cells(ld.hwmMiB, 0)}) | ≤ an etcd member's with the same data |`);
      if (ld.heapMiB !== undefined) L.push(`| … of which V8 heap used / heap total, external memory (nodes' /metrics) | ${ld.heapMiB.map((h) => `${h.used ?? '?'} / ${h.total ?? '?'}, ${h.external ?? '?'}`).join('; ')} MiB | — |`);
    }
    if (rs !== undefined) {
      L.push(`| kill -9 node ${rs.victim}, restart: spawn → /ready 200 | ${rs.readyMs !== undefined ? `**${secs(rs.readyMs)}**` : `**failed**: ${rs.failure ?? '?'}`} | ≤ 5 s: ${met(big.restart === undefined ? undefined : rs.readyMs !== undefined && rs.readyMs <= 5_000)} |`);
      L.push(`| … spawn → first stale read of a known key | ${rs.staleReadMs !== undefined ? `**${secs(rs.staleReadMs)}**` : '**never**'} | ≤ 5 s: ${met(rs.staleReadMs !== undefined && rs.staleReadMs <= 5_000)} |`);
      L.push(`| … spawn → applied = leaders' commit on every shard | ${secs(rs.caughtUpMs)} | — |`);
      L.push(`| … its peak RSS (VmHWM) once serving: WAL replay and shard loading | ${rs.peakRssMiB === undefined ? '?' : `${rs.peakRssMiB} MiB`} | — |`);
    }
    if (cu !== undefined) {
      if (cu.extraWrites !== undefined) {
        L.push(`| kill -9 node ${cu.victim}, write until every leader compacted past it | ${fmtRate(cu.extraWrites)} writes in ${cu.extraWriteSecs} s; ${cu.shardsCompactedPast ?? '?'} shards past it | — |`);
      }
      L.push(`| restart: spawn → /ready 200 | ${secs(cu.readyMs)} | — |`);
      L.push(`| restart: spawn → applied = leaders' commit on every shard (catch-up) | ${cu.caughtUpMs !== undefined ? `**${secs(cu.caughtUpMs)}**` : '**never**'} | — |`);
      L.push(`| snapshots streamed to it ('snapshot sent' lines of the leaders' logs) | ${cu.snapshots ?? '?'} streams of ${cu.snapshotShards ?? '?'} shards (kv_snapshots_total sent +${cu.sentCounterDelta ?? '?'}): ` +
        `${((cu.uniqueBytes ?? 0) / 1e6).toFixed(1)} MB / ${fmtRate(cu.uniqueRecords ?? 0)} records distinct, ${((cu.bytes ?? 0) / 1e6).toFixed(1)} MB / ${fmtRate(cu.records ?? 0)} records streamed in all | — |`);
      L.push(`| catch-up rate: distinct snapshot bytes / (first stream start → caught up) | **${cu.mbPerSecEffective?.toFixed(1) ?? '—'} MB/s** | ≥ 50 MB/s: ${met(v.catchupMet)} |`);
      L.push(`| … distinct bytes / (ready → caught up) | ${cu.mbPerSecFromReady?.toFixed(1) ?? '—'} MB/s | — |`);
      L.push(`| … every stream's bytes / (first stream start → last stream end) | ${cu.mbPerSecWire?.toFixed(1) ?? '—'} MB/s | — |`);
      if (cu.nodeCpuPct !== undefined) L.push(`| … CPU from spawn to caught up, % of one core | nodes ${cells(cu.nodeCpuPct, 0)}; whole machine ${cu.machineCpuPct ?? '?'} of ${cpus().length * 100} | — |`);
      if (cu.streamMbPerSec !== undefined) L.push(`| … per stream (min / median / max) | ${cu.streamMbPerSec.min} / ${cu.streamMbPerSec.median} / ${cu.streamMbPerSec.max} MB/s | — |`);
      if (cu.failure !== undefined) L.push(`| catch-up step | **failed**: ${cu.failure} | — |`);
    }
    const et = big.etcd;
    if (ld !== undefined) {
      L.push('');
      L.push('RSS per node (MiB) while loading, store vs a 3-member etcd loaded the same way (same keys, 100 B values, ' +
        `${a.loadClients} writers, puts to the etcd leader through its JSON gateway):`);
      L.push('');
      L.push('| keys | store RSS per node | etcd RSS per member |');
      L.push('| ---: | --- | --- |');
      const ks = new Set<number>([...ld.checkpoints.map((c) => c.keys), ...(et?.checkpoints.map((c) => c.keys) ?? [])]);
      const row = (l: LoadSummary | undefined, k: number): string => cells(l?.checkpoints.find((c) => c.keys === k)?.rssMiB, 0);
      for (const k of [...ks].sort((x, y) => x - y)) L.push(`| ${fmtRate(k)} | ${row(ld, k)} | ${row(et, k)} |`);
      L.push(`| after loading (+5 s) | ${cells(ld.rssAfterMiB, 0)} (${fmtRate(ld.written)} keys) | ${et === undefined ? 'not run' : et.failure !== undefined ? `failed: ${et.failure}` : `${cells(et.rssAfterMiB, 0)} (${fmtRate(et.written)} keys)`} |`);
      if (et !== undefined && et.failure === undefined) {
        L.push('');
        L.push(`- etcd ${et.version ?? ''} load: ${fmtRate(et.written)} of ${fmtRate(et.keys)} keys in ${et.secs} s = ${fmtRate(et.keysPerSec)} keys/s${et.cut ? ' (**cut short**, time limit or interrupted: compare at the checkpoints)' : ''}; ` +
          `CPU % of one core: members ${cells(et.nodeCpuPct, 0)}, load generator ${et.clientCpuPct ?? '?'}, whole machine ${et.machineCpuPct ?? '?'}.`);
      }
      if (v.rssVsEtcd !== undefined) {
        L.push(`- at ${fmtRate(v.rssVsEtcd.keys)} keys: store's largest node ${v.rssVsEtcd.storeMaxMiB.toFixed(0)} MiB vs etcd's largest member ${v.rssVsEtcd.etcdMaxMiB.toFixed(0)} MiB ` +
          `(target: no higher): ${met(v.rssVsEtcd.met)}.`);
      }
    }
    L.push(`- load average ${la(big.loadavg)} at the start of this section${big.loadavgEnd !== undefined ? `, ${la(big.loadavgEnd)} at its end` : ''}.`);
    for (const n of big.notes) L.push(`- ${n}`);
  }
  return L.join('\n');
}

// ------------------------------------------------------------------ main

/** --render: the tables of a saved run, from its JSON line (each row keeps only its own rounds). */
function render(file: string): void {
  const line = readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('{')).pop();
  if (line === undefined) throw new Error(`${file} has no JSON line`);
  const j = JSON.parse(line) as {
    kind?: string; time: string; params: Args; machine: ReturnType<typeof machineInfo>; git: ReturnType<typeof gitInfo>;
    shards?: ShardRow[]; values?: ValueRow[]; bigdata?: BigResult;
  };
  if (j.kind !== 'shardkv-scaling') throw new Error(`${file}: not a bench:scaling run`);
  const shards = j.shards?.map((r) => ({ ...r, runs: r.runs.filter((x) => x.shards === r.shards) }));
  const values = j.values?.map((r) => ({ ...r, runs: r.runs.filter((x) => x.bytes === r.bytes) }));
  const v = verdicts(shards, j.bigdata);
  process.stdout.write(`${markdown({ ...j.params }, j.time, j.machine, j.git, shards, values, j.bigdata, v)}\n\n${JSON.stringify({ ...j, shards, values, verdicts: v })}\n`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const a = parseArgs(argv);
  if (a.render !== undefined) {
    render(a.render);
    return;
  }
  const { log, progress } = stderrWriters(a.quiet);
  const stop: StopSignal = { stopped: false };
  const workDir = mkdtempSync(join(tmpdir(), 'shardkv-scaling-'));
  installSignalHandlers(stop, log, 30_000, () => log(`logs of the processes started: ${workDir}`));
  startReaper(workDir);
  const phaseMs = (a.warmupS + a.durationS) * 1000 + a.timeoutMs + 5_000;
  let watchdogMs = 60_000;
  if (a.only.includes('shards')) watchdogMs += a.rounds * a.shardCounts.length * (200_000 + 2 * phaseMs + 300_000 + (a.settleS + a.idleWindowS) * 1000 + 40_000);
  if (a.only.includes('values')) watchdogMs += a.rounds * a.valueSizes.length * (200_000 + phaseMs + 40_000);
  if (a.only.includes('bigdata')) watchdogMs += 200_000 + 2 * a.loadLimitS * 1000 + 2 * Math.max(60_000, a.catchupLimitS * 1000) + 600_000;
  startWatchdog(watchdogMs, stop, log);
  const ctx: Ctx = { a, workDir, stop, log, progress };
  const machine = machineInfo();
  const git = gitInfo();
  const time = new Date().toISOString();
  log(`bench:scaling: sections ${a.only.join(', ')}; load average ${la(machine.loadavgStart)}; temp dir ${workDir}`);
  let shards: ShardRow[] | undefined;
  let values: ValueRow[] | undefined;
  let big: BigResult | undefined;
  let failed = false;
  try {
    if (a.only.includes('shards') && !stop.stopped) shards = await sectionShards(ctx);
    if (a.only.includes('values') && !stop.stopped) values = await sectionValues(ctx);
    if (a.only.includes('bigdata') && !stop.stopped) big = await sectionBig(ctx);
  } catch (e) {
    failed = true;
    log(`bench:scaling: FAILED: ${(e as Error).message}`);
    process.exitCode = 1;
  } finally {
    await cleanupAll(log);
  }
  const m = finishMachine(machine);
  const v = verdicts(shards, big);
  const anyFailure = failed || (shards ?? []).some((r) => r.runs.some((x) => x.failure !== undefined)) || (values ?? []).some((r) => r.runs.some((x) => x.failure !== undefined)) ||
    (big !== undefined && (big.failure !== undefined || big.restart?.failure !== undefined || big.catchup?.failure !== undefined || big.etcd?.failure !== undefined));
  const json = {
    kind: 'shardkv-scaling', time, command: `npm run bench:scaling -- ${argv.join(' ')}`.trim(), params: a, machine: m, git,
    ...(shards !== undefined ? { shards } : {}), ...(values !== undefined ? { values } : {}), ...(big !== undefined ? { bigdata: big } : {}),
    verdicts: v, stoppedEarly: stop.stopped, anyFailure,
  };
  process.stdout.write(`${markdown(a, time, m, git, shards, values, big, v)}\n\n${JSON.stringify(json)}\n`);
  if (stop.stopped) process.exitCode = 130;
  if (anyFailure || a.keepLogs || stop.stopped) log(`logs of the processes started: ${workDir}`);
  else rmSync(workDir, { recursive: true, force: true });
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:scaling: ${(e as Error).message}\n`);
  void cleanupAll().finally(() => process.exit(1));
});
