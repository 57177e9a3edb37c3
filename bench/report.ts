/**
 * What a run reports: the machine and git commit it ran on, the parameters,
 * and the results as a markdown table (for people) and one JSON line (for
 * scripts: `npm run bench ... | tail -1 | jq`).
 */
import { spawnSync } from 'node:child_process';
import { statfsSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import type { LatencySummary } from './hist.ts';
import { ROOT } from './proc.ts';
import type { PhaseResult, PreloadResult } from './runner.ts';
import type { TargetKind } from './targets/target.ts';
import { OP_TYPES, WORKLOAD_DESCRIPTIONS, type WorkloadName } from './workload.ts';

export interface Machine {
  cores: number;
  cpuModel: string;
  memGiB: number;
  node: string;
  kernel: string;
  /** Where the data dirs of started targets live, and its file system (fsync on tmpfs would be free). */
  tmpDir: string;
  tmpFs: string;
  /** 1/5/15-minute load averages when the run started and ended. */
  loadavgStart: number[];
  loadavgEnd?: number[];
}

export function machineInfo(): Machine {
  const c = cpus();
  return {
    cores: c.length,
    cpuModel: c[0]?.model.trim() ?? 'unknown',
    memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    kernel: release(),
    tmpDir: tmpdir(),
    tmpFs: fsType(tmpdir()),
    loadavgStart: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

const FS_MAGIC: Record<number, string> = {
  0xef53: 'ext4', 0x01021994: 'tmpfs', 0x58465342: 'xfs', 0x9123683e: 'btrfs', 0x794c7630: 'overlayfs', 0x6969: 'nfs', 0x858458f6: 'ramfs', 0x2fc12fc1: 'zfs', 0x65735546: 'fuse',
};

function fsType(path: string): string {
  try {
    const t = Number(statfsSync(path).type);
    return FS_MAGIC[t] ?? `0x${t.toString(16)}`;
  } catch {
    return 'unknown';
  }
}

export function finishMachine(m: Machine): Machine {
  return { ...m, loadavgEnd: loadavg().map((x) => Math.round(x * 100) / 100) };
}

export interface GitInfo { commit: string; branch: string; dirty: boolean }

export function gitInfo(): GitInfo {
  const git = (args: string[]): string => {
    const r = spawnSync('git', ['-C', ROOT, ...args], { encoding: 'utf8', timeout: 5_000 });
    return r.status === 0 ? r.stdout.trim() : '';
  };
  return { commit: git(['rev-parse', 'HEAD']) || 'unknown', branch: git(['rev-parse', '--abbrev-ref', 'HEAD']) || 'unknown', dirty: git(['status', '--porcelain', '--untracked-files=no']) !== '' };
}

/** The parameters of one `npm run bench` run, as given or defaulted. */
export interface BenchParams {
  target: TargetKind;
  workload: WorkloadName;
  consistency: string;
  distribution: string;
  keys: number;
  valueBytes: number;
  tenants: number;
  buckets: number;
  scanLimit: number;
  concurrency?: number;
  rate?: number;
  maxOutstanding?: number;
  warmupS: number;
  durationS: number;
  seed: number;
  timeoutMs: number;
  connections: number;
  nodes: number;
  shards?: number;
  replicas?: number;
  endpoints?: string[];
  storeClient?: string;
  etcdPutRoute?: string;
  preload: boolean;
}

export interface BenchReport {
  kind: 'shardkv-bench';
  time: string;
  command: string;
  params: BenchParams;
  machine: Machine;
  git: GitInfo;
  target: Record<string, unknown>;
  preload?: PreloadResult;
  result: PhaseResult;
  notes: string[];
}

// ------------------------------------------------------------------ formatting

export const fmtMs = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
export const fmtRate = (x: number): string => Math.round(x).toLocaleString('en-US');

export function errorSummary(errs: Record<string, number>): string {
  const e = Object.entries(errs).sort((a, b) => b[1] - a[1]);
  return e.length === 0 ? 'none' : e.map(([k, n]) => `${k} ×${n}`).join(', ');
}

function latencyCells(l: LatencySummary): string {
  return `${fmtMs(l.p50Ms)} | ${fmtMs(l.p90Ms)} | ${fmtMs(l.p99Ms)} | ${fmtMs(l.p999Ms)} | ${fmtMs(l.maxMs)}`;
}

export function modeText(r: PhaseResult): string {
  return r.mode.kind === 'closed'
    ? `closed loop, ${r.mode.concurrency} clients`
    : `open loop, ${fmtRate(r.mode.rate)} req/s offered, at most ${r.mode.maxOutstanding} outstanding`;
}

export function markdownReport(rep: BenchReport): string {
  const p = rep.params;
  const r = rep.result;
  const L: string[] = [];
  L.push(`## bench: ${p.target}, workload ${p.workload} — ${rep.time}`);
  L.push('');
  L.push(`${WORKLOAD_DESCRIPTIONS[p.workload]}; reads ${p.consistency}; keys ${p.distribution} over ${fmtRate(p.keys)} keys ` +
    `(${p.tenants} tenants × ${p.buckets} hourly buckets), ${p.valueBytes}-byte values${p.workload === 'scan' ? `, scan limit ${p.scanLimit}` : ''}; ` +
    `${modeText(r)}; ${p.warmupS} s warm-up + ${p.durationS} s measured; seed ${p.seed}.`);
  L.push('');
  L.push('| op | ok | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |');
  L.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const op of OP_TYPES) {
    const s = r.perOp[op];
    if (s === undefined) continue;
    const extra = s.itemsPerScan !== undefined ? ` (${s.itemsPerScan.toFixed(1)} items/scan)` : '';
    L.push(`| ${op}${extra} | ${s.ok} | ${fmtRate(s.opsPerSec)} | ${latencyCells(s.latency)} | ${s.errors === 0 ? '0' : `${s.errors}: ${errorSummary(s.errorCodes)}`} |`);
  }
  if (Object.keys(r.perOp).length > 1) {
    L.push(`| all | ${r.ok} | ${fmtRate(r.opsPerSec)} | ${latencyCells(r.latency)} | ${r.errors} |`);
  }
  L.push('');
  const facts: string[] = [];
  facts.push(`measured ${(r.elapsedMs / 1000).toFixed(1)} s`);
  if (r.offered !== undefined) facts.push(`offered ${r.offered} requests, dropped ${r.dropped} (at the outstanding limit)`);
  facts.push(`load generator CPU ${r.clientCpuPct.toFixed(0)}% of one core`);
  if (r.serverCpuPct !== undefined) facts.push(`${p.target} processes CPU ${r.serverCpuPct.toFixed(0)}% of one core (of ${rep.machine.cores * 100}%)`);
  if (r.machineCpuPct !== undefined) {
    const others = r.machineCpuPct - (r.serverCpuPct ?? 0) - r.clientCpuPct;
    facts.push(`whole machine ${r.machineCpuPct.toFixed(0)}%${r.serverCpuPct !== undefined ? ` (other processes ≈ ${Math.max(0, others).toFixed(0)}%)` : ''}`);
  }
  const fw = r.counters;
  if ((fw['answers'] ?? 0) > 0) facts.push(`forwarded by another node ${((100 * (fw['forwarded'] ?? 0)) / (fw['answers'] ?? 1)).toFixed(1)}% of answers`);
  L.push(`- ${facts.join('; ')}.`);
  if (Object.keys(r.warmupErrorCodes).length > 0) L.push(`- warm-up errors (not counted): ${errorSummary(r.warmupErrorCodes)}.`);
  if (rep.preload !== undefined) {
    const pl = rep.preload;
    L.push(`- preload (not measured): ${pl.written} keys in ${(pl.elapsedMs / 1000).toFixed(1)} s, ${pl.failed} failed${Object.keys(pl.errorCodes).length > 0 ? ` (errors, retried: ${errorSummary(pl.errorCodes)})` : ''}.`);
  }
  const routing = rep.target['routing'];
  if (typeof routing === 'string') L.push(`- routing: ${routing}.`);
  const endpoints = rep.target['endpoints'];
  if (Array.isArray(endpoints)) L.push(`- endpoints: ${endpoints.join(' ')}${typeof rep.target['version'] === 'string' ? ` (version ${rep.target['version']})` : ''}.`);
  const m = rep.machine;
  L.push(`- machine: ${m.cores} cores (${m.cpuModel}), ${m.memGiB} GiB, Node ${m.node}, data dirs in ${m.tmpDir} (${m.tmpFs}); load average ${m.loadavgStart.join(' ')} at start` +
    `${m.loadavgEnd !== undefined ? `, ${m.loadavgEnd.join(' ')} at end` : ''}; git ${rep.git.commit.slice(0, 12)}${rep.git.dirty ? ' (dirty)' : ''} on ${rep.git.branch}.`);
  for (const n of rep.notes) L.push(`- ${n}`);
  if (r.stoppedEarly) L.push('- **stopped early** (signal or watchdog): partial results.');
  return L.join('\n');
}

/** The JSON line: everything but the time series and percentile curves (those are in the HTML report). */
export function jsonLine(rep: BenchReport): string {
  const { series: _series, ...result } = rep.result;
  const perOp: Record<string, unknown> = {};
  for (const [op, s] of Object.entries(result.perOp)) {
    const { percentiles: _p, ...rest } = s;
    perOp[op] = rest;
  }
  return JSON.stringify({ ...rep, result: { ...result, perOp } });
}
