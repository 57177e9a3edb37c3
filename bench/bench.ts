/**
 * `npm run bench -- [flags]`: one workload against one target (the store,
 * etcd, or the HTTP ceiling), with a progress line a second on stderr and, at
 * the end, a markdown table and one JSON line on stdout (the JSON line is the
 * last line). See bench/README.md; `npm run bench -- --help` lists the flags.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { COMMON_HELP, defaultCommonArgs, oneOf, parseCommonFlag, stderrWriters, type CommonArgs } from './args.ts';
import { cleanupAll, installSignalHandlers, startReaper, startWatchdog, type StopSignal } from './cleanup.ts';
import { renderBenchHtml } from './html.ts';
import { finishMachine, gitInfo, jsonLine, machineInfo, markdownReport, type BenchReport } from './report.ts';
import { preloadLimitMs, runSession } from './session.ts';
import { TARGETS, type TargetKind } from './targets/target.ts';
import { DISTRIBUTIONS, WORKLOADS, defaultDistribution, type Consistency, type Distribution, type WorkloadName } from './workload.ts';

const HELP = `usage: npm run bench -- [flags]

  --target store|etcd|ceiling|ceiling3|floor   what to load (default store)
      store    shardkv over HTTP: --endpoints of a running cluster, or a throwaway cluster started with
               ./cluster.sh in a temp dir on free ports (--nodes, --shards, --replicas)
      etcd     a local etcd cluster (/usr/bin/etcd, --nodes members, fsync on) via its JSON gateway
      ceiling  a trivial in-memory fastify server (bench/ceiling-server.ts): the HTTP ceiling here
      ceiling3 the same server as three processes (= --target ceiling --ceiling-procs 3)
      floor    ceiling3 whose PUTs are durable on two of the three before they are answered
  --endpoints URL[,URL...]      store only: use this running cluster (nothing is started or stopped)
  --workload write|read|a|b|c|scan   (default write)
      write write only | read read only | a YCSB A 50/50 read/update | b YCSB B 95/5 | c YCSB C 100% read
      scan  scans of one tenant's time bucket (--scan-limit)
  --consistency linearizable|stale   reads and scans (default linearizable); writes are always linearizable
  --distribution uniform|zipfian     key choice (default: zipfian for a, b, c as in YCSB; else uniform);
                                     zipfian: theta 0.99, hot keys scattered by a seeded permutation
  --no-preload                  do not write the keyspace before a reading workload
${COMMON_HELP}
Output: progress on stderr once a second; on stdout a markdown table, then one JSON line (the last line).
`;

interface BenchArgs extends CommonArgs {
  target: TargetKind;
  endpoints?: string[];
  workload: WorkloadName;
  consistency: Consistency;
  distribution?: Distribution;
  preload: boolean;
}

function parseArgs(argv: string[]): BenchArgs {
  const a: BenchArgs = { ...defaultCommonArgs(), target: 'store', workload: 'write', consistency: 'linearizable', preload: true };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i] as string;
    const value = (): string | undefined => argv[++i];
    if (parseCommonFlag(a, f, value)) continue;
    switch (f) {
      case '--target': a.target = oneOf(f, value(), TARGETS); break;
      case '--endpoints': a.endpoints = (value() ?? '').split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--workload': a.workload = oneOf(f, value(), WORKLOADS); break;
      case '--consistency': {
        const v = value();
        a.consistency = oneOf(f, v === 'lin' ? 'linearizable' : v, ['linearizable', 'stale'] as const);
        break;
      }
      case '--distribution': a.distribution = oneOf(f, value(), DISTRIBUTIONS); break;
      case '--no-preload': a.preload = false; break;
      case '--help': case '-h': process.stdout.write(HELP); process.exit(0);
      // falls through (unreachable)
      default: throw new Error(`unknown flag '${f}' (see --help)`);
    }
  }
  if (a.endpoints !== undefined && a.target !== 'store') throw new Error('--endpoints is for --target store only');
  if (a.endpoints?.length === 0) throw new Error('--endpoints needs at least one URL');
  if (a.replicas > a.nodes) a.replicas = a.nodes;
  return a;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const a = parseArgs(argv);
  const { log, progress } = stderrWriters(a.quiet);
  const stop: StopSignal = { stopped: false };
  const workDir = mkdtempSync(join(tmpdir(), 'shardkv-bench-'));
  installSignalHandlers(stop, log, 20_000, () => log(`logs of the processes started: ${workDir}`));
  startReaper(workDir);
  const distribution = a.distribution ?? defaultDistribution(a.workload);
  const watchdogMs = 240_000 + preloadLimitMs(a.keys) + (a.warmupS + a.durationS) * 1000 + a.timeoutMs;
  startWatchdog(watchdogMs, stop, log);
  const machine = machineInfo();
  const git = gitInfo();
  const time = new Date().toISOString();
  let failed = false;
  try {
    const s = await runSession(a, {
      target: a.target, workload: a.workload, consistency: a.consistency, distribution,
      ...(a.endpoints !== undefined ? { endpoints: a.endpoints } : {}),
      preload: a.preload, label: `${a.target} ${a.workload}`,
    }, { workDir, stop, log, ...(progress !== undefined ? { progress } : {}) });
    if (s.output === undefined) throw new Error('interrupted before the measured phase');
    const rep: BenchReport = {
      kind: 'shardkv-bench',
      time,
      command: `npm run bench -- ${argv.join(' ')}`.trim(),
      params: {
        target: a.target, workload: a.workload, consistency: a.consistency, distribution,
        keys: a.keys, valueBytes: a.valueBytes, tenants: a.tenants, buckets: a.buckets, scanLimit: a.scanLimit,
        ...(a.rate === undefined ? { concurrency: a.concurrency } : { rate: a.rate, maxOutstanding: a.maxOutstanding }),
        warmupS: a.warmupS, durationS: a.durationS, seed: a.seed, timeoutMs: a.timeoutMs,
        connections: a.connections ?? a.concurrency, nodes: a.endpoints?.length ?? (a.target === 'ceiling' ? a.ceilingProcs : a.target === 'ceiling3' || a.target === 'floor' ? 3 : a.nodes),
        ...(a.target === 'store' && a.endpoints === undefined ? { shards: a.shards, replicas: a.replicas } : {}),
        ...(a.endpoints !== undefined ? { endpoints: a.endpoints } : {}),
        ...(a.target === 'store' ? { storeClient: a.storeClient } : {}),
        ...(a.target === 'etcd' ? { etcdPutRoute: a.etcdPutRoute } : {}),
        preload: a.preload,
      },
      machine: finishMachine(machine),
      git,
      target: s.targetInfo,
      ...(s.preload !== undefined ? { preload: s.preload } : {}),
      result: s.output.result,
      notes: s.notes,
    };
    if (a.html !== undefined) {
      writeFileSync(a.html, renderBenchHtml(rep));
      log(`HTML report: ${resolve(a.html)}`);
    }
    process.stdout.write(`${markdownReport(rep)}\n\n${jsonLine(rep)}\n`);
    if (rep.result.stoppedEarly) process.exitCode = 130;
  } catch (e) {
    failed = true;
    log(`bench: FAILED: ${(e as Error).message}`);
    process.exitCode = 1;
  } finally {
    await cleanupAll(log);
    if (failed || a.keepLogs) log(`logs of the processes started: ${workDir}`);
    else rmSync(workDir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${(e as Error).message}\n`);
  void cleanupAll().finally(() => process.exit(1));
});
