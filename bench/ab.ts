/**
 * `npm run bench:ab`: two builds of the store side by side on this machine,
 * alternately, so that the noise of a shared machine hits both.
 *
 *   npm run bench:ab -- --a main --b . --pairs 3 --ops put,get-lin,get-stale
 *
 * --a / --b name a source tree: a directory (`.` is this checkout, with its
 * uncommitted changes) or a git revision, which is exported with `git archive`
 * into a temporary directory that shares this checkout's node_modules.
 * Each pair starts a fresh 3-node cluster from A, runs the phases (bench/load.ts:
 * closed-loop clients, preload before the first read phase), stops and
 * removes it, then does the same for B. Nodes are started directly
 * (`node --import tsx node/main.ts`), A on --base-port (default: the first
 * block from 7401 free for both sides) and B on base + 100 (peers on +1000).
 *
 * Reported per phase and side: the median over pairs of ops/s, p50 and p99,
 * every run's ops/s, and the nodes' CPU (utime + stime of the three
 * processes, /proc/<pid>/stat) per successful operation — over the whole
 * phase, warm-up included, so it slightly overstates the cost per op, alike
 * for both sides. On a saturated machine that figure is the sturdier one.
 * Then, per phase, the pairs themselves: in how many B used less CPU per op
 * than A, and B/A per pair. On a noisy machine a pair's two sides can differ
 * by 30 % for no reason (two sides of one build, session 5), so read a change
 * by how many pairs it wins, over more than one run, not by one median.
 *
 * Flags: --pairs N (3), --ops LIST (put), --route spread|leader (leader),
 * --shards N (16; --shards-b N for B alone), --clients N (64), --duration S (8), --warmup S (2),
 * --base-port P (default: the first free block from 7401), --node-args-a "...", --node-args-b "..." (extra node
 * flags), --v8-flags-a "...", --v8-flags-b "..." (flags for node itself, e.g. --max-semi-space-size=64),
 * --env-a "K=V ...", --env-b "K=V ..." (environment of that side's nodes, e.g. UV_THREADPOOL_SIZE=4; both
 * sides default to UV_THREADPOOL_SIZE=2 as cluster.sh starts nodes), --keep-logs DIR (copy node logs there).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, findFreePorts, portOpen } from './proc.ts';
import { clusterBucketMs, defaultOptions, openEndpoints, preload, runLoad, type LoadOptions, type Op, type Route } from './load.ts';

interface Args {
  a: string; b: string; pairs: number; ops: Op[]; route: Route; shards: number; shardsB: number | null; clients: number;
  durationS: number; warmupS: number; basePort: number; nodeArgsA: string[]; nodeArgsB: string[]; v8A: string[]; v8B: string[]; envA: Record<string, string>; envB: Record<string, string>; keepLogs: string | null;
}

/** "K=V K2=V2": environment variables for one side's nodes (e.g. UV_THREADPOOL_SIZE=2). */
function parseEnv(flag: string, v: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of v.split(' ').filter(Boolean)) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(kv);
    if (m === null) throw new Error(`${flag}: expected K=V, got ${kv}`);
    out[m[1] as string] = m[2] as string;
  }
  return out;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    a: 'main', b: '.', pairs: 3, ops: ['put'], route: 'leader', shards: 16, shardsB: null, clients: 64, durationS: 8, warmupS: 2,
    basePort: 0, nodeArgsA: [], nodeArgsB: [], v8A: [], v8B: [], envA: {}, envB: {}, keepLogs: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i] as string;
    const v = argv[++i];
    if (v === undefined) throw new Error(`${k} needs a value`);
    const n = Number(v);
    switch (k) {
      case '--a': a.a = v; break;
      case '--b': a.b = v; break;
      case '--pairs': a.pairs = n; break;
      case '--ops': a.ops = v.split(',') as Op[]; break;
      case '--route': a.route = v as Route; break;
      case '--shards': a.shards = n; break;
      case '--shards-b': a.shardsB = n; break;
      case '--clients': a.clients = n; break;
      case '--duration': a.durationS = n; break;
      case '--warmup': a.warmupS = n; break;
      case '--base-port': a.basePort = n; break;
      case '--node-args-a': a.nodeArgsA = v.split(' ').filter(Boolean); break;
      case '--node-args-b': a.nodeArgsB = v.split(' ').filter(Boolean); break;
      case '--v8-flags-a': a.v8A = v.split(' ').filter(Boolean); break;
      case '--v8-flags-b': a.v8B = v.split(' ').filter(Boolean); break;
      case '--env-a': a.envA = parseEnv(k, v); break;
      case '--env-b': a.envB = parseEnv(k, v); break;
      case '--keep-logs': a.keepLogs = v; break;
      default: throw new Error(`unknown flag ${k}`);
    }
  }
  for (const o of a.ops) if (!['put', 'get-lin', 'get-stale'].includes(o)) throw new Error(`unknown op ${o}`);
  if (a.route !== 'leader' && a.route !== 'spread') throw new Error('--route is leader or spread');
  if (![a.pairs, a.shards, a.clients, a.durationS].every((x) => Number.isInteger(x) && x > 0) || !Number.isInteger(a.basePort) || a.basePort < 0) {
    throw new Error('numeric flags must be positive integers');
  }
  return a;
}

const tmpDirs: string[] = [];

/** A directory to run from: as given, or a git revision exported next to this checkout's node_modules. */
function sourceTree(spec: string): { dir: string; label: string } {
  const asDir = resolve(ROOT, spec);
  if (existsSync(join(asDir, 'node', 'main.ts'))) return { dir: asDir, label: spec === '.' ? 'this checkout' : asDir };
  const rev = spawnSync('git', ['rev-parse', '--short', spec], { cwd: ROOT, encoding: 'utf8' });
  if (rev.status !== 0) throw new Error(`${spec} is neither a source tree nor a git revision`);
  const dir = mkdtempSync(join(tmpdir(), 'kv-ab-src-'));
  tmpDirs.push(dir);
  const r = spawnSync('sh', ['-c', `git archive ${spec} | tar -x -C ${dir}`], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git archive ${spec} failed: ${r.stderr}`);
  symlinkSync(realpathSync(join(ROOT, 'node_modules')), join(dir, 'node_modules'));
  return { dir, label: `${spec} (${rev.stdout.trim()})` };
}

function cpuTicks(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return 0;
  }
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

class Cluster {
  readonly procs: ChildProcess[] = [];
  readonly data = mkdtempSync(join(tmpdir(), 'kv-ab-data-'));
  constructor(readonly src: string, readonly base: number, readonly shards: number, readonly extra: string[], readonly v8: string[] = [], readonly env: Record<string, string> = {}) {}

  endpoints(): string[] {
    return [0, 1, 2].map((i) => `http://127.0.0.1:${this.base + i}`);
  }

  async start(): Promise<void> {
    for (let i = 0; i < 3; i++) {
      for (const p of [this.base + i, this.base + 1000 + i]) if (await portOpen(p)) throw new Error(`port ${p} is in use (--base-port)`);
    }
    const peers = [0, 1, 2].map((i) => `${i + 1}=127.0.0.1:${this.base + i}:${this.base + 1000 + i}`).join(',');
    for (let i = 1; i <= 3; i++) {
      const args = [...this.v8, '--import', 'tsx', 'node/main.ts', '--id', String(i), '--peers', peers, '--data', join(this.data, `node-${i}`),
        '--shards', String(this.shards), '--replicas', '3', '--log-level', 'warn', ...this.extra];
      const log = openSync(join(this.data, `node-${i}.log`), 'a');
      this.procs.push(spawn(process.execPath, args, { cwd: this.src, stdio: ['ignore', log, log], env: { ...process.env, UV_THREADPOOL_SIZE: process.env['UV_THREADPOOL_SIZE'] ?? '2', ...this.env } }));
    }
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      try {
        const r = await fetch(`${this.endpoints()[0]}/v1/cluster`, { signal: AbortSignal.timeout(1000) });
        const m = (await r.json()) as { shards: Array<{ leader: number | null }> };
        if (m.shards.length > 0 && m.shards.every((s) => s.leader !== null)) return;
      } catch { /* not up yet */ }
      await sleep(200);
    }
    throw new Error(`cluster from ${this.src} did not elect every leader within 60 s (logs in ${this.data})`);
  }

  cpuSeconds(): number {
    return this.procs.reduce((s, p) => s + (p.pid === undefined ? 0 : cpuTicks(p.pid)), 0) / CLK_TCK;
  }

  async stop(keepLogs: string | null, label: string): Promise<void> {
    for (const p of this.procs) if (p.exitCode === null) p.kill('SIGTERM');
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && this.procs.some((p) => p.exitCode === null && p.signalCode === null)) await sleep(100);
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    if (keepLogs !== null) {
      mkdirSync(keepLogs, { recursive: true });
      for (let i = 1; i <= 3; i++) {
        const f = join(this.data, `node-${i}.log`);
        if (existsSync(f)) copyFileSync(f, join(keepLogs, `${label}-node-${i}.log`));
      }
    }
    rmSync(this.data, { recursive: true, force: true });
  }
}

interface Run { pair: number; ops: number; p50: number; p99: number; cpuUsPerOp: number; errors: number }

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  // Both sides' HTTP and peer ports (base, base + 100, each + 1000), free at start.
  if (args.basePort === 0) args.basePort = await findFreePorts(3, 7401, [0, 100, 1000, 1100]);
  const sides = [
    { name: 'A', ...sourceTree(args.a), base: args.basePort, extra: args.nodeArgsA, v8: args.v8A, env: args.envA, shards: args.shards },
    { name: 'B', ...sourceTree(args.b), base: args.basePort + 100, extra: args.nodeArgsB, v8: args.v8B, env: args.envB, shards: args.shardsB ?? args.shards },
  ];
  const results = new Map<string, Run[]>();
  let current: Cluster | null = null;
  const stopSignal = { stopped: false };
  process.on('SIGINT', () => {
    stopSignal.stopped = true;
    process.stderr.write('\nSIGINT: stopping after this phase\n');
  });
  // SIGTERM (e.g. a time limit): stop the nodes of the running cluster now, never leave them behind.
  process.on('SIGTERM', () => {
    stopSignal.stopped = true;
    for (const p of current?.procs ?? []) if (p.exitCode === null) p.kill('SIGKILL');
    process.exit(143);
  });
  const log = (s: string) => process.stderr.write(`[bench:ab] ${s}\n`);
  try {
    for (let pair = 1; pair <= args.pairs && !stopSignal.stopped; pair++) {
      for (const side of sides) {
        if (stopSignal.stopped) break;
        const load = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
        log(`pair ${pair}, ${side.name} (${side.label}), load average ${load}`);
        const c = new Cluster(side.dir, side.base, side.shards, side.extra, side.v8, side.env);
        current = c;
        try {
          await c.start();
          const opts: LoadOptions = {
            ...defaultOptions(), endpoints: c.endpoints(), clients: args.clients, connectionsPerNode: args.clients,
            durationMs: args.durationS * 1000, warmupMs: args.warmupS * 1000, route: args.route, stopSignal,
          };
          opts.keyspace.bucketMs = (await clusterBucketMs(c.endpoints()[0] as string)) ?? opts.keyspace.bucketMs;
          const eps = openEndpoints(opts);
          let loaded = false;
          try {
            for (const op of args.ops) {
              if (op !== 'put' && !loaded) {
                await preload({ ...opts, op: 'put' }, 120_000, eps);
                loaded = true;
              }
              const cpu0 = c.cpuSeconds();
              const r = await runLoad({ ...opts, op }, eps);
              const cpu = c.cpuSeconds() - cpu0;
              const total = r.okOps * (args.warmupS + args.durationS) / args.durationS;
              const run: Run = { pair, ops: r.opsPerSec, p50: r.latency.p50Ms, p99: r.latency.p99Ms, cpuUsPerOp: (cpu * 1e6) / Math.max(1, total), errors: r.errorOps };
              const key = `${op}|${side.name}`;
              results.set(key, [...(results.get(key) ?? []), run]);
              log(`  ${op}: ${r.opsPerSec.toFixed(0)} ops/s, p50 ${r.latency.p50Ms.toFixed(1)} ms, p99 ${r.latency.p99Ms.toFixed(1)} ms, ` +
                `${run.cpuUsPerOp.toFixed(0)} us node CPU/op${r.errorOps > 0 ? `, ${r.errorOps} errors` : ''}`);
            }
          } finally {
            await eps.close();
          }
        } finally {
          await c.stop(args.keepLogs, `pair${pair}-${side.name}`);
          current = null;
        }
      }
    }
  } finally {
    if (current !== null) await current.stop(null, 'aborted');
    for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
  }
  console.log(`## bench:ab — ${args.pairs} pairs, ${args.clients} clients, route ${args.route}, ${args.shards} shards, ${args.durationS} s (+${args.warmupS} s warm-up)`);
  console.log('');
  const envText = (e: Record<string, string>): string[] => Object.entries(e).map(([k, v]) => `${k}=${v}`);
  console.log(`A = ${sides[0]?.label} ${[...envText(args.envA), ...args.v8A, ...args.nodeArgsA].join(' ')}, ${sides[0]?.shards} shards  \nB = ${sides[1]?.label} ${[...envText(args.envB), ...args.v8B, ...args.nodeArgsB].join(' ')}, ${sides[1]?.shards} shards`);
  console.log('');
  console.log('| phase | side | ops/s (median) | p50 ms | p99 ms | node CPU µs/op | runs (ops/s) | errors |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |');
  for (const op of args.ops) {
    for (const side of sides) {
      const rs = results.get(`${op}|${side.name}`) ?? [];
      console.log(`| ${op} | ${side.name} | ${median(rs.map((r) => r.ops)).toFixed(0)} | ${median(rs.map((r) => r.p50)).toFixed(1)} | ` +
        `${median(rs.map((r) => r.p99)).toFixed(1)} | ${median(rs.map((r) => r.cpuUsPerOp)).toFixed(0)} | ${rs.map((r) => r.ops.toFixed(0)).join(', ')} | ` +
        `${rs.reduce((s, r) => s + r.errors, 0)} |`);
    }
  }
  // On a noisy machine the pairs say more than the medians: in how many did B use less CPU per op?
  console.log('');
  for (const op of args.ops) {
    const a = new Map((results.get(`${op}|A`) ?? []).map((r) => [r.pair, r]));
    const both = (results.get(`${op}|B`) ?? []).flatMap((b) => {
      const x = a.get(b.pair);
      return x === undefined ? [] : [{ a: x, b }];
    });
    const lower = both.filter((p) => p.b.cpuUsPerOp < p.a.cpuUsPerOp).length;
    const ratios = both.map((p) => p.b.cpuUsPerOp / p.a.cpuUsPerOp);
    console.log(`- ${op}: B used less node CPU per op than A in ${lower} of ${both.length} pairs; B/A per pair ${ratios.map((x) => x.toFixed(2)).join(', ')}${ratios.length > 0 ? ` (median ${median(ratios).toFixed(2)})` : ''}`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
