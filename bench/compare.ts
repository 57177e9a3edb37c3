/**
 * `npm run bench:compare -- [flags]`: the store next to etcd and the HTTP
 * ceiling, with the same load generator and the same workload parameters.
 *
 * For each workload (default: writes, then linearizable reads, then stale
 * reads), for each round (default 2), for each target in turn (store, etcd,
 * ceiling): start the target fresh, preload if the workload reads, run one
 * phase, stop the target. So the targets alternate (machine noise hits them
 * alike) and only one target's processes run at a time (2 cores).
 *
 * Prints a markdown table per target and workload (ops/s = mean over rounds,
 * latency percentiles over all rounds' requests together), the ratios
 * store/etcd and store/ceiling, and one JSON line (the last line).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { COMMON_HELP, defaultCommonArgs, num, parseCommonFlag, stderrWriters, type CommonArgs } from './args.ts';
import { cleanupAll, installSignalHandlers, startReaper, startWatchdog, type StopSignal } from './cleanup.ts';
import { mergeHistograms, percentileCurve, summarize, type Histogram, type LatencySummary } from './hist.ts';
import { PALETTE, barChart, esc, lineChart, page, table } from './html.ts';
import { errorSummary, finishMachine, fmtMs, fmtRate, gitInfo, machineInfo } from './report.ts';
import { preloadLimitMs, runSession } from './session.ts';
import { TARGETS, type TargetKind } from './targets/target.ts';
import { judgeTargets, targetsMarkdown } from './issue-targets.ts';
import { WORKLOADS, defaultDistribution, type Consistency, type WorkloadName } from './workload.ts';

const HELP = `usage: npm run bench:compare -- [flags]

  --targets LIST       targets in the order they alternate (default store,etcd,ceiling,ceiling3;
                       ceiling3 = the ceiling server as three processes, shaped like the cluster;
                       also floor = ceiling3 whose writes are durable on two of the three before
                       they are answered: the least a replicated write costs here)
  --workloads LIST     workloads, each WORKLOAD[-lin|-stale|-stale-one] with WORKLOAD in ${WORKLOADS.join('|')}
                       (default write,read-lin,read-stale; -lin is the default consistency of reads;
                       -stale-one: stale reads all to the first node or member, as clients reading
                       from the replica next to them; ceiling3 keeps each partition on its process)
  --rounds N           phases per target and workload (default 2)
  --pause S            idle seconds between phases (default 1)
${COMMON_HELP}
Each phase starts its target fresh and stops it afterwards; only one target runs at a time.
Output: progress on stderr; on stdout markdown tables, then one JSON line (the last line).
`;

interface WorkloadSpec { name: string; workload: WorkloadName; consistency: Consistency; staleReadsTo: 'spread' | 'one' }

interface CompareArgs extends CommonArgs {
  targets: TargetKind[];
  workloads: WorkloadSpec[];
  rounds: number;
  pauseS: number;
}

function parseWorkload(tok: string): WorkloadSpec {
  const m = /^([a-z]+?)(?:-(lin|linearizable|stale|stale-one))?$/.exec(tok);
  const w = m?.[1];
  if (m === null || w === undefined || !(WORKLOADS as readonly string[]).includes(w)) {
    throw new Error(`--workloads: '${tok}' is not WORKLOAD[-lin|-stale|-stale-one] with WORKLOAD in ${WORKLOADS.join('|')}`);
  }
  const one = m[2] === 'stale-one';
  const consistency: Consistency = m[2] === 'stale' || one ? 'stale' : 'linearizable';
  const wl = w as WorkloadName;
  const name = wl === 'write' ? 'write' : `${wl} ${consistency === 'stale' ? (one ? 'stale one node' : 'stale') : 'lin'}`;
  return { name, workload: wl, consistency, staleReadsTo: one ? 'one' : 'spread' };
}

function parseArgs(argv: string[]): CompareArgs {
  const a: CompareArgs = {
    ...defaultCommonArgs(),
    targets: TARGETS.filter((t) => t !== 'floor'),
    workloads: ['write', 'read-lin', 'read-stale'].map(parseWorkload),
    rounds: 2,
    pauseS: 1,
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i] as string;
    const value = (): string | undefined => argv[++i];
    if (parseCommonFlag(a, f, value)) continue;
    switch (f) {
      case '--targets': {
        const list = (value() ?? '').split(',').map((s) => s.trim()).filter(Boolean);
        for (const t of list) if (!(TARGETS as readonly string[]).includes(t)) throw new Error(`--targets: unknown target '${t}' (${TARGETS.join(', ')})`);
        if (list.length === 0) throw new Error('--targets needs at least one target');
        a.targets = list as TargetKind[];
        break;
      }
      case '--workloads': {
        const list = (value() ?? '').split(',').map((s) => s.trim()).filter(Boolean);
        if (list.length === 0) throw new Error('--workloads needs at least one workload');
        a.workloads = list.map(parseWorkload);
        break;
      }
      case '--rounds': a.rounds = num(f, value(), 1, 20); break;
      case '--pause': a.pauseS = num(f, value(), 0, 600, false); break;
      case '--help': case '-h': process.stdout.write(HELP); process.exit(0);
      // falls through (unreachable)
      default: throw new Error(`unknown flag '${f}' (see --help)`);
    }
  }
  if (a.replicas > a.nodes) a.replicas = a.nodes;
  return a;
}

interface PhaseRecord {
  workload: string;
  target: TargetKind;
  round: number;
  ok: boolean;
  failure?: string;
  opsPerSec?: number;
  latency?: LatencySummary;
  errors?: number;
  errorCodes?: Record<string, number>;
  serverCpuPct?: number;
  clientCpuPct?: number;
  machineCpuPct?: number;
  dropped?: number;
  preloadS?: number;
  startMs?: number;
}

interface Cell {
  workload: string;
  target: TargetKind;
  rounds: number[];
  opsPerSec: number;
  latency: LatencySummary;
  errors: number;
  errorCodes: Record<string, number>;
  serverCpuPct?: number;
  /** The target's processes' CPU per successful op (µs), the mean over rounds: steadier than ops/s on a shared machine. */
  serverCpuUsPerOp?: number;
  clientCpuPct: number;
  /** CPU of every other process on the machine during the measured windows (% of one core). */
  otherCpuPct?: number;
  percentiles: Array<[number, number]>;
}

const mean = (xs: number[]): number => (xs.length === 0 ? 0 : xs.reduce((s, x) => s + x, 0) / xs.length);
const ratio = (a: number | undefined, b: number | undefined): string => (a === undefined || b === undefined || b === 0 ? 'n/a' : `${(a / b).toFixed(2)}×`);
const ratioNum = (a: number | undefined, b: number | undefined): number | null => (a === undefined || b === undefined || b === 0 ? null : a / b);

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const a = parseArgs(argv);
  const { log, progress } = stderrWriters(a.quiet);
  const stop: StopSignal = { stopped: false };
  const workDir = mkdtempSync(join(tmpdir(), 'shardkv-compare-'));
  installSignalHandlers(stop, log, 20_000, () => log(`logs of the processes started: ${workDir}`));
  startReaper(workDir);
  const phases = a.workloads.length * a.rounds * a.targets.length;
  const perPhaseMs = 150_000 + preloadLimitMs(a.keys) + (a.warmupS + a.durationS + a.pauseS) * 1000 + a.timeoutMs;
  startWatchdog(phases * perPhaseMs, stop, log);
  const machine = machineInfo();
  const git = gitInfo();
  const time = new Date().toISOString();
  const records: PhaseRecord[] = [];
  const hists = new Map<string, Histogram[]>();
  const cpuOf = new Map<string, { server: number[]; perOp: number[]; client: number[]; other: number[]; errors: number; codes: Record<string, number> }>();
  let anyFailure = false;
  let n = 0;

  try {
    for (const w of a.workloads) {
      for (let round = 1; round <= a.rounds; round++) {
        for (const target of a.targets) {
          if (stop.stopped) break;
          n++;
          const label = `${target} ${w.name} r${round}`;
          log(`--- phase ${n}/${phases}: ${label}`);
          const rec: PhaseRecord = { workload: w.name, target, round, ok: false };
          records.push(rec);
          try {
            const s = await runSession(a, {
              target, workload: w.workload, consistency: w.consistency, distribution: defaultDistribution(w.workload), preload: true, label,
              staleReadsTo: w.staleReadsTo,
            }, { workDir, stop, log, ...(progress !== undefined ? { progress } : {}) });
            if (typeof s.targetInfo['startMs'] === 'number') rec.startMs = s.targetInfo['startMs'];
            if (s.preload !== undefined) rec.preloadS = Math.round(s.preload.elapsedMs / 100) / 10;
            const out = s.output;
            if (out === undefined) throw new Error('interrupted');
            const r = out.result;
            rec.ok = true;
            rec.opsPerSec = r.opsPerSec;
            rec.latency = r.latency;
            rec.errors = r.errors;
            rec.errorCodes = r.errorCodes;
            if (r.serverCpuPct !== undefined) rec.serverCpuPct = r.serverCpuPct;
            rec.clientCpuPct = r.clientCpuPct;
            if (r.machineCpuPct !== undefined) rec.machineCpuPct = r.machineCpuPct;
            if (r.offered !== undefined) rec.dropped = r.dropped;
            const key = `${w.name}|${target}`;
            const hs = hists.get(key) ?? [];
            hs.push(...Object.values(out.hists).filter((h): h is Histogram => h !== undefined));
            hists.set(key, hs);
            const c = cpuOf.get(key) ?? { server: [], perOp: [], client: [], other: [], errors: 0, codes: {} };
            if (r.serverCpuPct !== undefined) c.server.push(r.serverCpuPct);
            if (r.serverCpuPct !== undefined && r.opsPerSec > 0) c.perOp.push((r.serverCpuPct / 100) * 1e6 / r.opsPerSec);
            if (r.serverCpuPct !== undefined && r.machineCpuPct !== undefined) c.other.push(Math.max(0, r.machineCpuPct - r.serverCpuPct - r.clientCpuPct));
            c.client.push(r.clientCpuPct);
            c.errors += r.errors;
            for (const [k, v] of Object.entries(r.errorCodes)) c.codes[k] = (c.codes[k] ?? 0) + v;
            cpuOf.set(key, c);
            log(`${label}: ${fmtRate(r.opsPerSec)} ops/s, p50 ${fmtMs(r.latency.p50Ms)} ms, p99 ${fmtMs(r.latency.p99Ms)} ms, ${r.errors} errors`);
          } catch (e) {
            anyFailure = true;
            rec.failure = (e as Error).message;
            log(`${label}: FAILED: ${rec.failure}`);
          }
          if (!stop.stopped && a.pauseS > 0) await sleep(a.pauseS * 1000);
        }
      }
    }
  } finally {
    await cleanupAll(log);
  }

  // ---- aggregate
  const cells: Cell[] = [];
  for (const w of a.workloads) {
    for (const target of a.targets) {
      const key = `${w.name}|${target}`;
      const okRecs = records.filter((r) => r.workload === w.name && r.target === target && r.ok);
      if (okRecs.length === 0) continue;
      const merged = mergeHistograms(hists.get(key) ?? []);
      const c = cpuOf.get(key);
      cells.push({
        workload: w.name,
        target,
        rounds: okRecs.map((r) => r.opsPerSec ?? 0),
        opsPerSec: mean(okRecs.map((r) => r.opsPerSec ?? 0)),
        latency: summarize(merged),
        errors: c?.errors ?? 0,
        errorCodes: c?.codes ?? {},
        ...(c !== undefined && c.server.length > 0 ? { serverCpuPct: mean(c.server) } : {}),
        ...(c !== undefined && c.perOp.length > 0 ? { serverCpuUsPerOp: mean(c.perOp) } : {}),
        clientCpuPct: mean(c?.client ?? []),
        ...(c !== undefined && c.other.length > 0 ? { otherCpuPct: mean(c.other) } : {}),
        percentiles: percentileCurve(merged),
      });
    }
  }
  const cell = (w: string, t: TargetKind): Cell | undefined => cells.find((c) => c.workload === w && c.target === t);

  // ---- markdown
  const L: string[] = [];
  L.push(`## bench:compare — ${time}`);
  L.push('');
  L.push(`\`npm run bench:compare${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}\`: targets ${a.targets.join(', ')} alternating, ${a.rounds} round(s) each; ` +
    `${a.rate === undefined ? `closed loop, ${a.concurrency} clients` : `open loop, ${a.rate} req/s`}; ${a.valueBytes}-byte values; ` +
    `${fmtRate(a.keys)} keys (${a.tenants} tenants × ${a.buckets} buckets), uniform; ${a.warmupS} s warm-up + ${a.durationS} s measured per phase; ` +
    `store and etcd with ${a.nodes} nodes/members${a.targets.includes('store') ? ` (store: ${a.shards} shards × ${a.replicas} replicas, client ${a.storeClient})` : ''}` +
    `${a.targets.includes('etcd') ? `; etcd puts ${a.etcdPutRoute === 'leader' ? 'to the leader' : 'round-robin'}` : ''}.`);
  L.push('');
  L.push('| workload | target | ops/s (mean) | ops/s per round | p50 ms | p99 ms | p99.9 ms | max ms | errors | server CPU | server CPU µs/op | loadgen CPU | other CPU |');
  L.push('| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |');
  for (const w of a.workloads) {
    for (const t of a.targets) {
      const c = cell(w.name, t);
      const failed = records.filter((r) => r.workload === w.name && r.target === t && !r.ok);
      if (c === undefined) {
        L.push(`| ${w.name} | ${t} | failed | | | | | | ${failed.map((f) => f.failure ?? '').join('; ').slice(0, 200)} | | | | |`);
        continue;
      }
      const l = c.latency;
      L.push(`| ${w.name} | ${t} | ${fmtRate(c.opsPerSec)} | ${c.rounds.map(fmtRate).join(', ')}${failed.length > 0 ? ` (+${failed.length} failed)` : ''} | ` +
        `${fmtMs(l.p50Ms)} | ${fmtMs(l.p99Ms)} | ${fmtMs(l.p999Ms)} | ${fmtMs(l.maxMs)} | ${c.errors === 0 ? '0' : `${c.errors}: ${errorSummary(c.errorCodes)}`} | ` +
        `${c.serverCpuPct === undefined ? 'n/a' : `${c.serverCpuPct.toFixed(0)}%`} | ${c.serverCpuUsPerOp === undefined ? 'n/a' : c.serverCpuUsPerOp.toFixed(0)} | ${c.clientCpuPct.toFixed(0)}% | ${c.otherCpuPct === undefined ? 'n/a' : `${c.otherCpuPct.toFixed(0)}%`} |`);
    }
  }
  L.push('');
  const ratioRows: Array<Record<string, unknown>> = [];
  if (a.targets.includes('store') && (a.targets.includes('etcd') || a.targets.includes('ceiling'))) {
    const c3 = a.targets.includes('ceiling3');
    const fl = a.targets.includes('floor');
    L.push(`| workload | store ops/s | etcd ops/s | ceiling ops/s |${c3 ? ' ceiling3 ops/s |' : ''}${fl ? ' floor ops/s |' : ''} store/etcd ops/s | store/ceiling ops/s |${c3 ? ' store/ceiling3 ops/s |' : ''}${fl ? ' store/floor ops/s | floor/etcd ops/s |' : ''} store/etcd p99 | store/ceiling p99 | store/etcd server CPU per op |`);
    L.push(`| --- | ---: | ---: | ---: |${c3 ? ' ---: |' : ''}${fl ? ' ---: |' : ''} ---: | ---: |${c3 ? ' ---: |' : ''}${fl ? ' ---: | ---: |' : ''} ---: | ---: | ---: |`);
    for (const w of a.workloads) {
      const s = cell(w.name, 'store');
      const e = cell(w.name, 'etcd');
      const c = cell(w.name, 'ceiling');
      const k3 = cell(w.name, 'ceiling3');
      const fc = cell(w.name, 'floor');
      const f = (x: Cell | undefined): string => (x === undefined ? 'n/a' : fmtRate(x.opsPerSec));
      L.push(`| ${w.name} | ${f(s)} | ${f(e)} | ${f(c)} |${c3 ? ` ${f(k3)} |` : ''}${fl ? ` ${f(fc)} |` : ''} ${ratio(s?.opsPerSec, e?.opsPerSec)} | ${ratio(s?.opsPerSec, c?.opsPerSec)} |${c3 ? ` ${ratio(s?.opsPerSec, k3?.opsPerSec)} |` : ''}` +
        `${fl ? ` ${ratio(s?.opsPerSec, fc?.opsPerSec)} | ${ratio(fc?.opsPerSec, e?.opsPerSec)} |` : ''} ` +
        `${ratio(s?.latency.p99Ms, e?.latency.p99Ms)} | ${ratio(s?.latency.p99Ms, c?.latency.p99Ms)} | ${ratio(s?.serverCpuUsPerOp, e?.serverCpuUsPerOp)} |`);
      ratioRows.push({
        workload: w.name,
        storeOverEtcdOps: ratioNum(s?.opsPerSec, e?.opsPerSec),
        storeOverCeilingOps: ratioNum(s?.opsPerSec, c?.opsPerSec),
        ...(c3 ? { storeOverCeiling3Ops: ratioNum(s?.opsPerSec, k3?.opsPerSec) } : {}),
        ...(fl ? { storeOverFloorOps: ratioNum(s?.opsPerSec, fc?.opsPerSec), floorOverEtcdOps: ratioNum(fc?.opsPerSec, e?.opsPerSec) } : {}),
        storeOverEtcdP99: ratioNum(s?.latency.p99Ms, e?.latency.p99Ms),
        storeOverCeilingP99: ratioNum(s?.latency.p99Ms, c?.latency.p99Ms),
        storeOverEtcdCpuPerOp: ratioNum(s?.serverCpuUsPerOp, e?.serverCpuUsPerOp),
      });
    }
    L.push('');
  }
  const targetLines = judgeTargets(a.workloads.map((w) => {
    const pick = (t: TargetKind) => {
      const c = cell(w.name, t);
      return c === undefined ? undefined : { opsPerSec: c.opsPerSec, p99Ms: c.latency.p99Ms };
    };
    return { workload: w, store: pick('store'), etcd: pick('etcd'), ceiling: pick('ceiling') };
  }));
  L.push(...targetsMarkdown(targetLines));
  const m = finishMachine(machine);
  L.push(`- ops/s ratios above 1× favour the store (floor/etcd compares the floor with etcd: what any design of that kind could reach here); p99 ratios below 1× do. CPU columns are % of one core (of ${m.cores * 100}%) over the measured ` +
    'windows: server = the target\'s processes (µs/op: their CPU per successful op, below 1× in the ratio favours the store), loadgen = this process (same cores), other = every other process on the machine (a shared machine: ' +
    'where "other" is large, every number of that row is lower than the machine can do).');
  L.push(`- machine: ${m.cores} cores (${m.cpuModel}), ${m.memGiB} GiB, Node ${m.node}, data dirs in ${m.tmpDir} (${m.tmpFs}); load average ${m.loadavgStart.join(' ')} at start, ` +
    `${(m.loadavgEnd ?? []).join(' ')} at end; git ${git.commit.slice(0, 12)}${git.dirty ? ' (dirty)' : ''} on ${git.branch}.`);
  if (stop.stopped) L.push('- **stopped early**: partial results.');
  if (anyFailure) L.push(`- some phases failed; logs of the processes started are in ${workDir}.`);

  const json = {
    kind: 'shardkv-bench-compare',
    time,
    command: `npm run bench:compare${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
    params: {
      targets: a.targets, workloads: a.workloads, rounds: a.rounds, nodes: a.nodes, shards: a.shards, replicas: a.replicas,
      keys: a.keys, valueBytes: a.valueBytes, tenants: a.tenants, buckets: a.buckets,
      ...(a.rate === undefined ? { concurrency: a.concurrency } : { rate: a.rate, maxOutstanding: a.maxOutstanding }),
      warmupS: a.warmupS, durationS: a.durationS, seed: a.seed, timeoutMs: a.timeoutMs, storeClient: a.storeClient, etcdPutRoute: a.etcdPutRoute,
    },
    machine: m,
    git,
    results: cells.map(({ percentiles: _p, ...c }) => c),
    ratios: ratioRows,
    targets: targetLines,
    phases: records,
  };

  if (a.html !== undefined) {
    writeFileSync(a.html, renderCompareHtml(a, cells, L.join('\n'), json.command, time));
    log(`HTML report: ${resolve(a.html)}`);
  }
  process.stdout.write(`${L.join('\n')}\n\n${JSON.stringify(json)}\n`);
  if (anyFailure || a.keepLogs) log(`logs of the processes started: ${workDir}`);
  else rmSync(workDir, { recursive: true, force: true });
  process.exitCode = stop.stopped ? 130 : anyFailure ? 1 : 0;
}

function renderCompareHtml(a: CompareArgs, cells: Cell[], markdown: string, command: string, time: string): string {
  const color = (t: TargetKind): string => PALETTE[a.targets.indexOf(t) % PALETTE.length] ?? '#333';
  const b: string[] = [];
  b.push('<h1>bench:compare</h1>');
  b.push(`<p>${esc(time)} — <code>${esc(command)}</code></p>`);
  b.push(barChart('throughput (mean over rounds)', 'ops/s', a.workloads.map((w) => ({
    name: w.name,
    bars: a.targets.flatMap((t) => {
      const c = cells.find((x) => x.workload === w.name && x.target === t);
      return c === undefined ? [] : [{ name: t, value: c.opsPerSec, color: color(t) }];
    }),
  }))));
  for (const w of a.workloads) {
    const cs = cells.filter((c) => c.workload === w.name);
    b.push(`<h2>${esc(w.name)}</h2>`);
    b.push(table(['target', 'ops/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'errors'],
      cs.map((c) => [c.target, fmtRate(c.opsPerSec), fmtMs(c.latency.p50Ms), fmtMs(c.latency.p99Ms), fmtMs(c.latency.p999Ms), fmtMs(c.latency.maxMs), String(c.errors)])));
    b.push(lineChart({
      title: `${w.name}: latency at each percentile (all rounds)`, xLabel: 'percentile', yLabel: 'ms (log)', xScale: 'percentile', yLog: true,
      lines: cs.map((c) => ({ name: c.target, color: color(c.target), points: c.percentiles })),
    }));
  }
  b.push('<h2>Markdown summary</h2>');
  b.push(`<pre>${esc(markdown)}</pre>`);
  return page('bench:compare', b.join('\n'));
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:compare: ${(e as Error).message}\n`);
  void cleanupAll().finally(() => process.exit(1));
});
