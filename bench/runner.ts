/**
 * The load loops, target-agnostic: an unmeasured preload of the keyspace, then
 * one phase of a workload against a Target, either
 *
 *  - closed loop (`concurrency` C): C clients, each sends a request, waits for
 *    the answer, sends the next; latency = answer - send. Throughput is what
 *    the system gives C clients.
 *  - open loop (`rate` R): requests are due at fixed intervals of 1/R from the
 *    start, whatever happens to earlier ones; latency is measured from the
 *    *intended* send time, so a stall delays (and counts against) every
 *    request due during it — no coordinated omission. At most
 *    `maxOutstanding` requests are outstanding; a request due while that many
 *    are is not sent and is counted as dropped.
 *
 * Both are bounded by warm-up + duration and by maxOps. Only requests started
 * (closed) or due (open) after the warm-up are measured. Successful requests go
 * into HDR histograms per operation type; failures are counted by error code.
 * Once a second: one progress line and one time-series point per op type.
 */
import { setImmediate as yieldTurn, setTimeout as sleep } from 'node:timers/promises';
import type { StopSignal } from './cleanup.ts';
import { newHistogram, percentileCurve, recordMs, summarize, type Histogram, type LatencySummary } from './hist.ts';
import { clkTck, cpuTicks, machineTicks } from './proc.ts';
import { cpus } from 'node:os';
import type { OpResult, Target } from './targets/target.ts';
import {
  KeyChooser, MIXES, keyRef, opPicker, opTypesOf, rng, streamSeed,
  type Consistency, type Distribution, type Keyspace, type OpType, type WorkloadName,
} from './workload.ts';

export type LoopMode = { kind: 'closed'; concurrency: number } | { kind: 'open'; rate: number; maxOutstanding: number };

export interface PhaseSpec {
  /** Prefix of progress lines, e.g. "store a". */
  label: string;
  workload: WorkloadName;
  distribution: Distribution;
  consistency: Consistency;
  scanLimit: number;
  keyspace: Keyspace;
  value: Buffer;
  mode: LoopMode;
  warmupMs: number;
  durationMs: number;
  /** Cap on requests started (warm-up included). */
  maxOps: number;
  seed: number;
  /** Closed loop: pause after a failed request so a failing target is not hammered in a hot loop. */
  errorBackoffMs: number;
  /** Longest a request can take (the targets' timeout): bounds the final drain. */
  requestTimeoutMs: number;
  stop: StopSignal;
  /** Receives one progress line a second (undefined: quiet). */
  progress?: (line: string) => void;
}

export interface OpSummary {
  ok: number;
  errors: number;
  opsPerSec: number;
  latency: LatencySummary;
  errorCodes: Record<string, number>;
  /** [percentile, ms] of the successful requests, for plots. */
  percentiles: Array<[number, number]>;
  /** Scans: mean items returned per successful scan. */
  itemsPerScan?: number;
}

export interface SeriesPoint {
  /** Seconds since the phase started (end of the interval). */
  t: number;
  warmup: boolean;
  /** Per op type: successful requests per second in the interval, and latency (ms) of those. */
  ops: Partial<Record<OpType, number>>;
  p50: Partial<Record<OpType, number>>;
  p99: Partial<Record<OpType, number>>;
  max: Partial<Record<OpType, number>>;
  errors: number;
  dropped: number;
}

export interface PhaseResult {
  mode: LoopMode;
  /** Measured window (ms): from the end of the warm-up until the last measured answer. */
  elapsedMs: number;
  ok: number;
  errors: number;
  opsPerSec: number;
  /** All successful requests, any op type. */
  latency: LatencySummary;
  errorCodes: Record<string, number>;
  warmupErrorCodes: Record<string, number>;
  perOp: Partial<Record<OpType, OpSummary>>;
  /** Open loop: requests due in the measured window, and those not sent because maxOutstanding were outstanding. */
  offered?: number;
  dropped: number;
  warmupDropped: number;
  series: SeriesPoint[];
  warmupS: number;
  /** This process (the load generator), % of one core over the phase. */
  clientCpuPct: number;
  /** The target's processes together, % of one core over the measured window (undefined: not ours). */
  serverCpuPct?: number;
  /** The whole machine (every process), % of one core over the measured window (of cores × 100 %). */
  machineCpuPct?: number;
  /** Target counters over the measured window (e.g. forwarded answers). */
  counters: Record<string, number>;
  stoppedEarly: boolean;
}

function bump(m: Record<string, number>, k: string, n = 1): void {
  m[k] = (m[k] ?? 0) + n;
}

/** A value of `bytes` bytes, deterministic from the seed (incompressible). */
export function makeValue(bytes: number, seed: number): Buffer {
  const r = rng(streamSeed(seed, 0xbeef));
  const b = Buffer.allocUnsafe(bytes);
  for (let i = 0; i < bytes; i++) b[i] = Math.floor(r() * 256);
  return b;
}

class OpState {
  readonly hist = newHistogram();
  interval = newHistogram();
  ok = 0;
  errors = 0;
  errorCodes: Record<string, number> = {};
  intervalOk = 0;
  scanItems = 0;
}

function execOp(target: Target, spec: PhaseSpec, op: OpType, k: number): Promise<OpResult> {
  const ref = keyRef(spec.keyspace, k);
  const p = op === 'write' ? target.put(ref, spec.value)
    : op === 'read' ? target.get(ref, spec.consistency)
    : target.scan(ref, spec.scanLimit, spec.consistency);
  return p.catch((e: unknown) => ({ ok: false, code: `ERR ${(e as Error).message ?? 'exception'}` }));
}

export interface PhaseOutput {
  result: PhaseResult;
  /** Measured histograms per op type (µs), for merging rounds. */
  hists: Partial<Record<OpType, Histogram>>;
}

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');

export async function runPhase(target: Target, spec: PhaseSpec): Promise<PhaseOutput> {
  const ops = opTypesOf(spec.workload);
  const state = new Map<OpType, OpState>(ops.map((o) => [o, new OpState()]));
  const all = newHistogram();
  const chooser = new KeyChooser(spec.keyspace.keys, spec.distribution, spec.seed);
  const pickOp = opPicker(MIXES[spec.workload]);
  const warmupErrorCodes: Record<string, number> = {};
  let errorsTotal = 0;
  let intervalErrors = 0;
  let intervalDropped = 0;
  let dropped = 0;
  let warmupDropped = 0;
  let offered = 0;
  let started = 0;
  let inflight = 0;

  const t0 = performance.now();
  const measureFrom = t0 + spec.warmupMs;
  const deadline = measureFrom + spec.durationMs;
  let lastDone = measureFrom;
  const cpu0 = process.cpuUsage();

  // Server CPU and target counters, sampled at the start and the end of the measured window.
  const pids = target.serverPids();
  let srv0: Array<number | undefined> = [];
  let srv1: Array<number | undefined> = [];
  let srvT0 = 0;
  let srvT1 = 0;
  let cnt0: Record<string, number> = {};
  let cnt1: Record<string, number> | undefined;
  let mach0 = { busy: 0, total: 0 };
  let mach1 = { busy: 0, total: 0 };
  const sampleStart = (): void => { srv0 = pids.map(cpuTicks); srvT0 = performance.now(); cnt0 = target.counters?.() ?? {}; mach0 = machineTicks(); };
  const sampleEnd = (): void => { srv1 = pids.map(cpuTicks); srvT1 = performance.now(); cnt1 = target.counters?.() ?? {}; mach1 = machineTicks(); };
  const startTimer = setTimeout(sampleStart, spec.warmupMs);
  const endTimer = setTimeout(sampleEnd, spec.warmupMs + spec.durationMs);
  if (spec.warmupMs === 0) { clearTimeout(startTimer); sampleStart(); }

  const record = (op: OpType, begin: number, end: number, r: OpResult): void => {
    const st = state.get(op)!;
    const measured = begin >= measureFrom && begin < deadline;
    if (r.ok) {
      recordMs(st.interval, end - begin);
      st.intervalOk++;
    } else {
      intervalErrors++;
    }
    if (!measured) {
      if (!r.ok) bump(warmupErrorCodes, r.code ?? 'unknown');
      return;
    }
    if (end > lastDone) lastDone = end;
    if (r.ok) {
      st.ok++;
      recordMs(st.hist, end - begin);
      recordMs(all, end - begin);
      if (r.items !== undefined) st.scanItems += r.items;
    } else {
      st.errors++;
      errorsTotal++;
      bump(st.errorCodes, r.code ?? 'unknown');
    }
  };

  // ---- once a second: a series point and a progress line
  const series: SeriesPoint[] = [];
  let lastTick = t0;
  const tick = (final: boolean): void => {
    const now = performance.now();
    const secs = (now - lastTick) / 1000;
    if (final && secs < 0.2) return;
    lastTick = now;
    const p: SeriesPoint = { t: (now - t0) / 1000, warmup: now <= measureFrom, ops: {}, p50: {}, p99: {}, max: {}, errors: intervalErrors, dropped: intervalDropped };
    let total = 0;
    for (const [op, st] of state) {
      p.ops[op] = st.intervalOk / secs;
      total += st.intervalOk / secs;
      if (st.intervalOk > 0) {
        p.p50[op] = st.interval.getValueAtPercentile(50) / 1000;
        p.p99[op] = st.interval.getValueAtPercentile(99) / 1000;
        p.max[op] = st.interval.maxValue / 1000;
      }
      st.interval.reset();
      st.intervalOk = 0;
    }
    series.push(p);
    if (spec.progress !== undefined && !final) {
      const measuring = now - measureFrom > 500;
      const perOp = ops.length > 1 ? ` (${ops.map((o) => `${o} ${fmtInt(p.ops[o] ?? 0)}`).join(', ')})` : '';
      const p99 = measuring && all.totalCount > 0 ? `p99 so far ${(all.getValueAtPercentile(99) / 1000).toFixed(1)} ms`
        : `p99 (this second) ${Math.max(0, ...ops.map((o) => p.p99[o] ?? 0)).toFixed(1)} ms`;
      const drop = spec.mode.kind === 'open' ? ` | dropped ${intervalDropped}` : '';
      const phase = measuring ? `${((now - measureFrom) / 1000).toFixed(0)}/${(spec.durationMs / 1000).toFixed(0)}s` : 'warm-up';
      spec.progress(`[${spec.label} ${phase}] ${fmtInt(total)} ops/s${perOp} | errors ${intervalErrors} | ${p99} | in flight ${inflight}${drop}`);
    }
    intervalErrors = 0;
    intervalDropped = 0;
  };
  const ticker = setInterval(() => tick(false), 1_000);

  try {
    if (spec.mode.kind === 'closed') {
      const client = async (c: number): Promise<void> => {
        const r = rng(streamSeed(spec.seed, c + 1));
        while (!spec.stop.stopped && started < spec.maxOps) {
          const begin = performance.now();
          if (begin >= deadline) break;
          started++;
          const op = pickOp(r());
          const k = chooser.next(r());
          inflight++;
          const res = await execOp(target, spec, op, k);
          inflight--;
          record(op, begin, performance.now(), res);
          if (!res.ok && spec.errorBackoffMs > 0) await sleep(spec.errorBackoffMs);
        }
      };
      await Promise.all(Array.from({ length: spec.mode.concurrency }, (_, c) => client(c)));
    } else {
      const { rate, maxOutstanding } = spec.mode;
      const interval = 1000 / rate;
      const r = rng(streamSeed(spec.seed, 0));
      let next = t0;
      let drained: (() => void) | null = null;
      while (!spec.stop.stopped && next < deadline && started < spec.maxOps) {
        const now = performance.now();
        while (next <= now && next < deadline && started < spec.maxOps) {
          const intended = next;
          next += interval;
          const op = pickOp(r());
          const k = chooser.next(r());
          const measured = intended >= measureFrom;
          if (measured) offered++;
          if (inflight >= maxOutstanding) {
            intervalDropped++;
            if (measured) dropped++;
            else warmupDropped++;
            continue;
          }
          started++;
          inflight++;
          void execOp(target, spec, op, k).then((res) => {
            inflight--;
            record(op, intended, performance.now(), res);
            if (inflight === 0 && drained !== null) drained();
          });
        }
        const wait = next - performance.now();
        if (wait >= 1) await sleep(Math.min(wait, 50));
        else await yieldTurn();
      }
      if (inflight > 0) {
        await Promise.race([
          new Promise<void>((res) => { drained = res; }),
          sleep(spec.requestTimeoutMs + 2_000),
        ]);
      }
    }
  } finally {
    clearInterval(ticker);
    clearTimeout(startTimer);
    clearTimeout(endTimer);
  }
  if (cnt1 === undefined) sampleEnd();
  tick(true);

  const cpu = process.cpuUsage(cpu0);
  const wallMs = performance.now() - t0;
  const elapsedMs = Math.max(1, lastDone - measureFrom);
  const perOp: Partial<Record<OpType, OpSummary>> = {};
  const hists: Partial<Record<OpType, Histogram>> = {};
  const errorCodes: Record<string, number> = {};
  let okTotal = 0;
  for (const [op, st] of state) {
    okTotal += st.ok;
    for (const [c, n] of Object.entries(st.errorCodes)) bump(errorCodes, `${op}: ${c}`, n);
    perOp[op] = {
      ok: st.ok,
      errors: st.errors,
      opsPerSec: st.ok / (elapsedMs / 1000),
      latency: summarize(st.hist),
      errorCodes: st.errorCodes,
      percentiles: percentileCurve(st.hist),
      ...(op === 'scan' ? { itemsPerScan: st.ok === 0 ? 0 : st.scanItems / st.ok } : {}),
    };
    hists[op] = st.hist;
  }
  let serverCpuPct: number | undefined;
  if (pids.length > 0 && srvT1 > srvT0) {
    let ticks = 0;
    let known = true;
    pids.forEach((_, i) => {
      const a = srv0[i];
      const b = srv1[i];
      if (a === undefined || b === undefined) known = false;
      else ticks += b - a;
    });
    if (known) serverCpuPct = (ticks / clkTck() / ((srvT1 - srvT0) / 1000)) * 100;
  }
  const counters: Record<string, number> = {};
  for (const [k, v] of Object.entries(cnt1 ?? {})) counters[k] = v - (cnt0[k] ?? 0);
  return {
    result: {
      mode: spec.mode,
      elapsedMs,
      ok: okTotal,
      errors: errorsTotal,
      opsPerSec: okTotal / (elapsedMs / 1000),
      latency: summarize(all),
      errorCodes,
      warmupErrorCodes,
      perOp,
      ...(spec.mode.kind === 'open' ? { offered } : {}),
      dropped,
      warmupDropped,
      series,
      warmupS: spec.warmupMs / 1000,
      clientCpuPct: ((cpu.user + cpu.system) / 1000 / wallMs) * 100,
      ...(serverCpuPct === undefined ? {} : { serverCpuPct }),
      ...(mach1.total > mach0.total ? { machineCpuPct: ((mach1.busy - mach0.busy) / (mach1.total - mach0.total)) * 100 * cpus().length } : {}),
      counters,
      stoppedEarly: spec.stop.stopped,
    },
    hists,
  };
}

// ------------------------------------------------------------------ preload

export interface PreloadResult {
  written: number;
  failed: number;
  errorCodes: Record<string, number>;
  elapsedMs: number;
}

/**
 * Write every key of the keyspace once (not measured), `concurrency` writers,
 * each key retried up to 5 times; bounded by timeLimitMs.
 */
export async function preloadKeys(target: Target, ks: Keyspace, value: Buffer, concurrency: number, timeLimitMs: number,
  stop: StopSignal, progress?: (line: string) => void): Promise<PreloadResult> {
  const t0 = performance.now();
  const errorCodes: Record<string, number> = {};
  let next = 0;
  let written = 0;
  let failed = 0;
  let lastWritten = 0;
  const ticker = setInterval(() => {
    progress?.(`[preload] ${fmtInt(written)}/${fmtInt(ks.keys)} keys, ${fmtInt(written - lastWritten)}/s, ${failed} failed`);
    lastWritten = written;
  }, 1_000);
  const worker = async (): Promise<void> => {
    while (!stop.stopped && next < ks.keys && performance.now() - t0 < timeLimitMs) {
      const ref = keyRef(ks, next++);
      let done = false;
      for (let attempt = 0; attempt < 5 && !done && !stop.stopped && performance.now() - t0 < timeLimitMs; attempt++) {
        const r = await target.put(ref, value).catch((e: unknown): OpResult => ({ ok: false, code: `ERR ${(e as Error).message}` }));
        if (r.ok) done = true;
        else {
          bump(errorCodes, r.code ?? 'unknown');
          await sleep(50 * (attempt + 1));
        }
      }
      if (done) written++;
      else failed++;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, ks.keys)) }, () => worker()));
  } finally {
    clearInterval(ticker);
  }
  return { written, failed, errorCodes, elapsedMs: performance.now() - t0 };
}
