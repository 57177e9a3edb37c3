/**
 * The benchmark tools still run, end to end, at toy sizes (all but bench:scaling and bench:catchup,
 * which take minutes; run them by hand). They are part of the product (issue 6), but
 * nothing else exercises them, and one broke silently once (bench/snapshot-stream.ts's stub transport
 * lacked `protocolOf` after the peer protocol versions). No figure is checked here, only that each tool
 * finishes, reports in its documented shape and counts no errors: performance is measured by hand
 * (bench/README.md), never asserted in tests.
 *
 * Each tool runs as its own process with a deadline; the bench tools stop whatever they started on
 * SIGTERM (bench/cleanup.ts), and the test sends SIGTERM, then SIGKILL, to any still running.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Ran { code: number | null; out: string; err: string }

function run(t: { teardown: (fn: () => void) => void }, script: string, args: string[], deadlineMs: number): Promise<Ran> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(ROOT, script), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const term = setTimeout(() => p.kill('SIGTERM'), deadlineMs);
    const kill = setTimeout(() => p.kill('SIGKILL'), deadlineMs + 15_000);
    t.teardown(() => {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    });
    p.on('exit', (code) => {
      clearTimeout(term);
      clearTimeout(kill);
      resolve({ code, out, err });
    });
  });
}

const lastJson = (out: string): any => {
  const line = out.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (line === undefined) throw new Error(`no JSON line in:\n${out.slice(-2000)}`);
  return JSON.parse(line);
};

test.serial('bench: a YCSB A run against a 3-node store it starts, with the HTML report', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kv-bench-smoke-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const html = join(dir, 'report.html');
  const r = await run(t, 'bench/bench.ts', ['--target', 'store', '--nodes', '3', '--shards', '4', '--workload', 'a', '--duration', '2', '--warmup', '1',
    '--keys', '500', '--concurrency', '8', '--quiet', '--html', html], 120_000);
  t.is(r.code, 0, r.err.slice(-2000));
  const j = lastJson(r.out);
  t.is(j.kind, 'shardkv-bench');
  t.is(j.params.workload, 'a');
  t.true(j.result.ok > 0);
  t.is(j.result.errors, 0, JSON.stringify(j.result.errorCodes));
  for (const op of ['write', 'read']) {
    t.true(j.result.perOp[op].ok > 0, op);
    t.true(j.result.perOp[op].latency.p99Ms > 0, op);
  }
  t.regex(j.git.commit, /^[0-9a-f]{40}$/);
  const page = readFileSync(html, 'utf8');
  t.regex(page, /<svg/);
  t.notRegex(page, /<(script|link|img)[^>]+(src|href)="https?:/, 'the report has no external assets');
});

test.serial('bench: an open-loop scan run against the ceiling server', async (t) => {
  const r = await run(t, 'bench/bench.ts', ['--target', 'ceiling', '--workload', 'scan', '--rate', '300', '--duration', '1', '--warmup', '0.5',
    '--keys', '400', '--quiet'], 60_000);
  t.is(r.code, 0, r.err.slice(-2000));
  const j = lastJson(r.out);
  t.deepEqual(j.result.mode, { kind: 'open', rate: 300, maxOutstanding: 1000 });
  t.true(j.result.perOp.scan.ok > 0);
  t.is(j.result.errors, 0, JSON.stringify(j.result.errorCodes));
});

test.serial('bench: YCSB A against the floor target (three processes, writes durable on two)', async (t) => {
  const r = await run(t, 'bench/bench.ts', ['--target', 'floor', '--workload', 'a', '--duration', '1', '--warmup', '0.5',
    '--keys', '300', '--concurrency', '8', '--quiet'], 60_000);
  t.is(r.code, 0, r.err.slice(-2000));
  const j = lastJson(r.out);
  t.is(j.result.errors, 0, JSON.stringify(j.result.errorCodes));
  for (const op of ['write', 'read']) t.true(j.result.perOp[op].ok > 0, op);
});

test.serial('bench:compare: store and ceiling side by side, with ratios', async (t) => {
  const r = await run(t, 'bench/compare.ts', ['--targets', 'store,ceiling', '--workloads', 'write,read-stale,read-stale-one', '--rounds', '1', '--duration', '1',
    '--warmup', '0.5', '--keys', '300', '--concurrency', '4', '--quiet'], 180_000);
  t.is(r.code, 0, r.err.slice(-2000));
  const j = lastJson(r.out);
  t.is(j.kind, 'shardkv-bench-compare');
  t.is(j.results.length, 6);
  for (const x of j.results) {
    t.true(x.opsPerSec > 0, `${x.workload} ${x.target}`);
    t.is(x.errors, 0, `${x.workload} ${x.target}: ${JSON.stringify(x.errorCodes)}`);
  }
  t.deepEqual(j.ratios.map((x: { workload: string }) => x.workload), ['write', 'read stale', 'read stale one node']);
  for (const x of j.ratios) t.true(x.storeOverCeilingOps > 0);
  t.regex(r.out, /\| workload \| store ops\/s \| etcd ops\/s \| ceiling ops\/s \|/);
  // the targets that a store-and-ceiling run can judge, each with its figure
  t.deepEqual(j.targets.map((x: { target: string }) => x.target.split(':')[0]), ['write', 'read stale', 'read stale one node']);
  t.regex(r.out, /^\| write: writes\/s ≥ 0\.5× the HTTP ceiling \| [\d.]+× \| (yes|\*\*no\*\*) \|$/m);
});

test.serial('bench:ab: this tree against its own HEAD, one pair', async (t) => {
  const r = await run(t, 'bench/ab.ts', ['--a', 'HEAD', '--b', '.', '--pairs', '1', '--ops', 'get-stale', '--shards', '4', '--clients', '8',
    '--duration', '1', '--warmup', '1'], 120_000);
  t.is(r.code, 0, r.err.slice(-2000));
  t.regex(r.out, /^\| get-stale \| A \| \d+ \|/m);
  t.regex(r.out, /^\| get-stale \| B \| \d+ \|/m);
  t.regex(r.out, /get-stale: B used less node CPU per op than A in [01] of 1 pairs; B\/A per pair [\d.]+/);
});

test.serial('the one-process benches: snapshot stream, LevelDB layouts, Store rounds, the disk', async (t) => {
  const stream = await run(t, 'bench/snapshot-stream.ts', ['--records', '3000', '--runs', '1', '--value-bytes', '256'], 60_000);
  t.is(stream.code, 0, stream.err.slice(-2000));
  t.regex(stream.out, /run 1: [\d.]+ MB; sender [\d.]+ CPU ms\/MB .*; receiver [\d.]+ CPU ms\/MB/);

  const layout = await run(t, 'bench/leveldb-layout.ts', ['--keys', '4000', '--shards', '4', '--pairs', '1'], 60_000);
  t.is(layout.code, 0, layout.err.slice(-2000));
  for (const l of ['shard-first', 'gen-first']) t.regex(layout.out, new RegExp(`pair 1 ${l} *: [\\d.]+ MB in [\\d.]+ s`));

  const rounds = await run(t, 'bench/store-rounds.ts', ['--seconds', '1', '--shards', '4', '--inflight', '8'], 60_000);
  t.is(rounds.code, 0, rounds.err.slice(-2000));
  t.regex(rounds.out, /^\s+4 \|\s+\d+ \|\s+[\d.]+ \|\s+[\d.]+$/m);

  const fsync = await run(t, 'bench/fsync.ts', ['--rounds', '1', '--per-round', '20'], 60_000);
  t.is(fsync.code, 0, fsync.err.slice(-2000));
  for (const way of ['leveldb', 'append', 'prewritten', 'wal-2ops', 'wal-dsync']) t.regex(fsync.out, new RegExp(`^\\| ${way} \\| \\d+ \\|`, 'm'), way);
});
