/**
 * `npm run bench:quick`: a quick end-to-end benchmark of a fresh local cluster.
 *
 * 1. Starts a 3-node cluster with ./cluster.sh in a temporary KV_DATA_DIR on
 *    KV_BASE_PORT 7401 (override: BENCH_BASE_PORT) with KV_SHARDS=16.
 * 2. Runs bench/load.ts phases of ~10 s each at 64 closed-loop clients: writes,
 *    then (after preloading the keyspace) linearizable reads and stale reads.
 * 3. Samples RSS per node (/proc/<pid>/status VmRSS, VmHWM).
 * 4. Restarts a fresh cluster with KV_SHARDS=64, lets it settle 5 s, and samples
 *    idle CPU per node over 10 s (/proc/<pid>/stat utime+stime, % of one core)
 *    and RSS.
 * 5. Prints a markdown report. The cluster is always stopped and cleaned, also
 *    on error, SIGINT and SIGTERM; node logs are copied out first (path printed).
 *
 * Flags: --duration S (default 10), --clients N (default 64),
 *        --routes spread[,leader] (default spread), --idle-shards N (default 64).
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { clkTck, cpuTicks, machineTicks } from './proc.ts';
import { LocalCluster } from './local-cluster.ts';
import {
  TABLE_HEADER, clusterBucketMs, defaultOptions, errorSummary, formatResult, openEndpoints, preload, runLoad, tableRow,
  type LoadOptions, type LoadResult, type Op, type PreloadResult, type Route,
} from './load.ts';


const NODES = 3;
const BASE_PORT = Number(process.env['BENCH_BASE_PORT'] ?? 7401);
const WATCHDOG_MS = 12 * 60_000;

// ------------------------------------------------------------------ args

function parseQuickArgs(argv: string[]) {
  const a = { durationS: 10, clients: 64, routes: ['spread'] as Route[], idleShards: 64, loadShards: 16 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[++i];
    const n = Number(v);
    if (k === '--duration' && n > 0 && n <= 600) a.durationS = n;
    else if (k === '--clients' && Number.isInteger(n) && n > 0) a.clients = n;
    else if (k === '--idle-shards' && Number.isInteger(n) && n > 0) a.idleShards = n;
    else if (k === '--shards' && Number.isInteger(n) && n > 0) a.loadShards = n;
    else if (k === '--routes' && v !== undefined && v.split(',').every((r) => r === 'spread' || r === 'leader')) a.routes = v.split(',') as Route[];
    else throw new Error(`bad flag ${k ?? ''} ${v ?? ''} (flags: --duration S, --clients N, --routes spread[,leader], --shards N, --idle-shards N)`);
  }
  return a;
}

// ------------------------------------------------------------------ /proc

function statusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

// ------------------------------------------------------------------ logs

interface LogSummary { node: number; lines: number; warn: number; error: number; top: Array<[string, number]> }

function summarizeLogs(dir: string): LogSummary[] {
  const out: LogSummary[] = [];
  for (let i = 1; i <= NODES; i++) {
    const f = join(dir, `node-${i}.log`);
    if (!existsSync(f)) continue;
    const msgs = new Map<string, number>();
    let lines = 0;
    let warn = 0;
    let error = 0;
    for (const line of readFileSync(f, 'utf8').split('\n')) {
      if (line === '') continue;
      lines++;
      let level = 0;
      let msg = line.slice(0, 160);
      try {
        const j = JSON.parse(line) as { level?: number; msg?: string; err?: { message?: string } | string; code?: string; status?: number };
        level = j.level ?? 0;
        const detail = typeof j.err === 'string' ? j.err : j.err?.message;
        msg = `${j.msg ?? ''}${j.status !== undefined ? ` status=${j.status}` : ''}${detail !== undefined ? `: ${detail.slice(0, 120)}` : ''}`;
      } catch {
        level = /error|exception/i.test(line) ? 50 : 0; // non-JSON line (e.g. a crash trace)
      }
      if (level >= 50) error++;
      else if (level >= 40) warn++;
      if (level >= 40) msgs.set(msg, (msgs.get(msg) ?? 0) + 1);
    }
    out.push({ node: i, lines, warn, error, top: [...msgs].sort((a, b) => b[1] - a[1]).slice(0, 5) });
  }
  return out;
}

// ------------------------------------------------------------------ main

const mib = (kb: number | undefined): string => (kb === undefined ? 'n/a' : (kb / 1024).toFixed(0));

async function main(): Promise<void> {
  const args = parseQuickArgs(process.argv.slice(2));
  const tmp = mkdtempSync(join(tmpdir(), 'kv-bench-'));
  const stopSignal = { stopped: false };
  const clusters: LocalCluster[] = [];
  const teardownNotes: string[] = [];
  let tornDown: Promise<void> | null = null;
  const teardownAll = (): Promise<void> => {
    tornDown ??= (async () => {
      for (const c of clusters) teardownNotes.push(...(await c.teardown()));
    })();
    return tornDown;
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopSignal.stopped) return;
    stopSignal.stopped = true;
    process.stderr.write(`\n${sig}: stopping the load, then the cluster (${tmp})\n`);
    void teardownAll().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const watchdog = setTimeout(() => {
    process.stderr.write(`\nbench:quick: watchdog (${WATCHDOG_MS / 60_000} min): stopping the cluster\n`);
    stopSignal.stopped = true;
    void teardownAll().finally(() => process.exit(1));
  }, WATCHDOG_MS);

  const started = new Date();
  const loadStart = loadavg();
  const log = (s: string) => process.stderr.write(`[bench:quick ${((Date.now() - started.getTime()) / 1000).toFixed(0)}s] ${s}\n`);
  const results: Array<{ label: string; r: LoadResult; loadavg: string }> = [];
  let pre: PreloadResult | undefined;
  const rss16: Array<{ pid: number; rss?: number; hwm?: number }> = [];
  const idle: Array<{ pid: number; cpuPct?: number; rss?: number; hwm?: number }> = [];
  let idleMachinePct: number | undefined;
  let idleLoad = '';
  let startMs16 = 0;
  let startMs64 = 0;
  const logs16 = join(tmp, `logs-${args.loadShards}-shards`);
  const logs64 = join(tmp, `logs-${args.idleShards}-shards`);
  const c16 = new LocalCluster(join(tmp, 'cluster-load'), { nodes: NODES, shards: args.loadShards, basePort: BASE_PORT }, logs16);
  const c64 = new LocalCluster(join(tmp, 'cluster-idle'), { nodes: NODES, shards: args.idleShards, basePort: BASE_PORT }, logs64);
  let failure: Error | undefined;

  try {
    // ---- load phases on a fresh 16-shard cluster
    clusters.push(c16);
    log(`starting: ${c16.command()}`);
    startMs16 = await c16.start();
    log(`cluster up in ${(startMs16 / 1000).toFixed(1)} s, pids ${c16.nodePids().join(' ')}`);
    const opts: LoadOptions = {
      ...defaultOptions(),
      endpoints: Array.from({ length: NODES }, (_, i) => `http://127.0.0.1:${BASE_PORT + i}`),
      clients: args.clients,
      connectionsPerNode: args.clients,
      durationMs: args.durationS * 1000,
      warmupMs: 1000,
      stopSignal,
    };
    opts.keyspace.bucketMs = (await clusterBucketMs(opts.endpoints[0] as string)) ?? opts.keyspace.bucketMs;
    for (const route of args.routes) {
      const eps = openEndpoints({ ...opts, route });
      try {
        for (const op of ['put', 'get-lin', 'get-stale'] as Op[]) {
          if (stopSignal.stopped) break;
          if (op === 'get-lin' && pre === undefined) {
            log(`preloading ${opts.keyspace.keys} keys`);
            pre = await preload({ ...opts, route }, 120_000, eps);
            log(`preload: ${pre.written} written, ${pre.failed} failed in ${(pre.elapsedMs / 1000).toFixed(1)} s`);
          }
          log(`${op} (${route}): ${args.clients} clients, 1 s warm-up + ${args.durationS} s`);
          const r = await runLoad({ ...opts, op, route }, eps);
          results.push({ label: op, r, loadavg: loadavg() });
          process.stderr.write(formatResult(r) + '\n');
        }
      } finally {
        await eps.close();
      }
    }
    for (const pid of c16.nodePids()) rss16.push({ pid, rss: statusKb(pid, 'VmRSS'), hwm: statusKb(pid, 'VmHWM') });
    teardownNotes.push(...(await c16.teardown()));

    // ---- idle CPU and RSS on a fresh 64-shard cluster
    if (!stopSignal.stopped) {
      clusters.push(c64);
      log(`starting: ${c64.command()}`);
      startMs64 = await c64.start();
      log(`cluster up in ${(startMs64 / 1000).toFixed(1)} s; settling 5 s, then sampling CPU for 10 s`);
      await sleep(5_000);
      const pids = c64.nodePids();
      const tck = clkTck();
      const before = pids.map(cpuTicks);
      const m0 = machineTicks();
      const t0 = performance.now();
      await sleep(10_000);
      const after = pids.map(cpuTicks);
      const m1 = machineTicks();
      const secs = (performance.now() - t0) / 1000;
      idleLoad = loadavg();
      idleMachinePct = ((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * 100 * cpus().length;
      pids.forEach((pid, i) => {
        const b = before[i];
        const a = after[i];
        idle.push({
          pid,
          cpuPct: a === undefined || b === undefined ? undefined : ((a - b) / tck / secs) * 100,
          rss: statusKb(pid, 'VmRSS'),
          hwm: statusKb(pid, 'VmHWM'),
        });
      });
      teardownNotes.push(...(await c64.teardown()));
    }
  } catch (e) {
    failure = e as Error;
    log(`FAILED: ${failure.message}`);
  } finally {
    await teardownAll();
    clearTimeout(watchdog);
  }

  // ---- report
  const L: string[] = [];
  const w = (s = '') => L.push(s);
  w(`## bench:quick — ${started.toISOString()}`);
  w();
  w('Command: `npm run bench:quick` (= `npx tsx bench/quick.ts' + (process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : '') + '`), which runs:');
  w();
  w('```sh');
  w(c16.command());
  for (const route of args.routes) {
    w(`npx tsx bench/load.ts --base-port ${BASE_PORT} --nodes ${NODES} --op put,get-lin,get-stale --clients ${args.clients} --duration ${args.durationS} --warmup 1 --route ${route}   # preload before get-lin`);
  }
  w(`./cluster.sh stop && ./cluster.sh clean`);
  w(c64.command() + `   # then 5 s settle + 10 s idle CPU sample`);
  w(`./cluster.sh stop && ./cluster.sh clean`);
  w('```');
  w();
  w(`Machine: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), Node ${process.version}. **Shared machine**: other work may be running ` +
    `(load average at start ${loadStart}); the load generator runs on the same 2 cores as the 3 nodes, so absolute numbers are lower bounds ` +
    `and p99s include CPU contention. Keyspace ${defaultOptions().keyspace.keys} keys over ${defaultOptions().keyspace.tenants} tenants × ` +
    `${defaultOptions().keyspace.buckets} hourly buckets (t varied, so keys spread over all shards), 256-byte values, uniform random key choice.`);
  w();
  if (results.length > 0) {
    w(`### Throughput and latency (${NODES} nodes, ${args.loadShards} shards × 3 replicas, ${args.clients} closed-loop clients, ${args.durationS} s measured after 1 s warm-up)`);
    w();
    w(TABLE_HEADER.replace('| loadgen CPU |', '| loadgen CPU | load avg after |').replace(/\| ---: \|$/, '| ---: | --- |'));
    for (const { label, r, loadavg: la } of results) w(`${tableRow(r, label)} ${la} |`);
    w();
    w('"forwarded" = answers whose `X-Served-By` is not the node that was asked. With `--route spread` (round-robin over all nodes) about 2/3 of writes and ' +
      'linearizable reads hit a follower and take one extra hop to the shard leader; stale reads are served locally by any replica.');
    if (pre !== undefined) {
      w();
      w(`Preload before the read phases: ${pre.written} keys written in ${(pre.elapsedMs / 1000).toFixed(1)} s, ${pre.failed} failed` +
        `${Object.keys(pre.errors).length > 0 ? ` (errors, retried: ${errorSummary(pre.errors)})` : ''}.`);
    }
    const warm = results.filter((x) => Object.keys(x.r.warmupErrors).length > 0);
    for (const x of warm) w(`Warm-up errors in ${x.label}/${x.r.route} (not in the table): ${errorSummary(x.r.warmupErrors)}.`);
    w();
  }
  if (rss16.length > 0 || idle.length > 0) {
    w('### Memory and idle CPU per node');
    w();
    w(`| node | RSS after load, ${args.loadShards} shards (MiB) | peak RSS (VmHWM), ${args.loadShards} shards (MiB) | RSS idle, ${args.idleShards} shards (MiB) | peak RSS, ${args.idleShards} shards (MiB) | idle CPU, ${args.idleShards} shards (% of one core) |`);
    w('| ---: | ---: | ---: | ---: | ---: | ---: |');
    for (let i = 0; i < NODES; i++) {
      const a = rss16[i];
      const b = idle[i];
      w(`| ${i + 1} | ${mib(a?.rss)} | ${mib(a?.hwm)} | ${mib(b?.rss)} | ${mib(b?.hwm)} | ${b?.cpuPct === undefined ? 'n/a' : b.cpuPct.toFixed(1)} |`);
    }
    w();
    if (idleMachinePct !== undefined) {
      const ours = idle.reduce((s, x) => s + (x.cpuPct ?? 0), 0);
      w(`Idle CPU sampled over 10 s after a 5 s settle (utime+stime from /proc/<pid>/stat). During the sample the whole machine was busy ` +
        `${idleMachinePct.toFixed(0)}% of one core (of ${cpus().length * 100}%), of which the 3 nodes ${ours.toFixed(0)}%: the rest is other work on the shared machine ` +
        `(load average ${idleLoad}).`);
    }
    w(`Cluster start (until every shard has a leader): ${(startMs16 / 1000).toFixed(1)} s with ${args.loadShards} shards` +
      `${startMs64 > 0 ? `, ${(startMs64 / 1000).toFixed(1)} s with ${args.idleShards} shards` : ''}.`);
    w();
  }
  w('### Node logs (warn/error lines)');
  w();
  for (const [name, dir] of [[`${args.loadShards} shards (load)`, logs16], [`${args.idleShards} shards (idle)`, logs64]] as const) {
    const s = summarizeLogs(dir);
    if (s.length === 0) continue;
    w(`- ${name}: ` + s.map((x) => `node ${x.node}: ${x.warn} warn, ${x.error} error of ${x.lines} lines`).join('; '));
    for (const x of s) for (const [m, n] of x.top) w(`  - node ${x.node} ×${n}: ${m}`);
  }
  w(`- copies of the node logs: ${tmp}/logs-*/ (the cluster data dirs were removed)`);
  for (const n of teardownNotes) w(`- teardown: ${n}`);
  if (failure !== undefined) {
    w();
    w(`**FAILED**: ${failure.message}`);
  }
  if (stopSignal.stopped) w('\n**Interrupted**: results are partial.');
  console.log(L.join('\n'));
  process.exitCode = failure !== undefined || stopSignal.stopped ? 1 : 0;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
