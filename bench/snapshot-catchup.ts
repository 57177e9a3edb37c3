/**
 * `npm run bench:catchup -- [--keys N] [--shards S] [--rounds R] ...`: how
 * fast a replica that fell behind catches up by snapshot.
 *
 * One fresh 3-node cluster (./cluster.sh via bench/local-cluster.ts, free
 * ports, temp dir), S shards × 3 replicas, `--compact-every/--compact-keep`
 * small enough that a few thousand writes compact past a stopped node. Load N
 * keys (100 B values unless --value-bytes); then R rounds of: kill -9 node 3, write until every
 * shard's leader committed compact-every + compact-keep + 100 entries past
 * what node 3 had applied (so each leader compacted past it), restart node 3
 * and wait until its applied index reaches the leaders' commit index on every
 * shard (polled every 50 ms).
 *
 * Per round: distinct snapshot bytes (one per shard and snapshot index, from
 * the leaders' 'snapshot sent' log lines) / time from the first stream's start
 * to caught up; streams sent in all (duplicates); CPU seconds of the receiver
 * (from /ready, which comes before the first stream, to caught up) and of the
 * senders (restart to caught up, all their work), per distinct MB. CPU per
 * MB is the sturdier figure on a shared machine. Printed: one line per round,
 * then p50 and totals over the rounds, and the command.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { num } from './args.ts';
import { cleanupAll, installSignalHandlers, registerCleanup, startWatchdog, type StopSignal } from './cleanup.ts';
import { LocalCluster } from './local-cluster.ts';
import { ROOT, alive, clkTck, cpuTicks, findFreePorts, readPid, run } from './proc.ts';
import { makeValue } from './runner.ts';
import { bulkLoad, caughtUp, clusterView, fileSize, get200, leadersOf, logLinesFrom, storeClient, type StoreClient } from './scaling-lib.ts';
import { DEFAULT_KEYSPACE, keyRef, type Keyspace } from './workload.ts';

const NODES = 3;
const VICTIM = 3;

const USAGE = `usage: npm run bench:catchup -- [options]
  --keys N            keys loaded before the rounds (default 200000)
  --value-bytes B     value size of the loaded keys and of the rounds' writes (default 100; the
                      issue's targets are stated for 256)
  --shards S          shards (default 4)
  --rounds R          kill / write / restart / catch-up rounds (default 3)
  --compact-every N   node flag (default 5000)
  --compact-keep N    node flag (default 1000)
  --clients C         concurrent writers (default 64)
  --node-args "..."   extra node flags
  --empty-replica     delete node 3's data directory while it is down, so it restarts empty and
                      catches up into an empty LevelDB (a replica that starts from nothing; not an
                      operation to do in production: see docs/FAILURE-MODES.md, "data directory lost")
  --keep-logs         keep the temp dir with the node logs`;

interface Args {
  keys: number; valueBytes: number; shards: number; rounds: number; compactEvery: number; compactKeep: number; clients: number;
  nodeArgs: string; keepLogs: boolean; emptyReplica: boolean;
}

function parse(argv: string[]): Args {
  const a: Args = { keys: 200_000, valueBytes: 100, shards: 4, rounds: 3, compactEvery: 5_000, compactKeep: 1_000, clients: 64, nodeArgs: '', keepLogs: false, emptyReplica: false };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    const v = (): string | undefined => argv[++i];
    if (f === '--keys') a.keys = num(f, v(), 1);
    else if (f === '--value-bytes') a.valueBytes = num(f, v(), 1, 1 << 20);
    else if (f === '--shards') a.shards = num(f, v(), 1, 1024);
    else if (f === '--rounds') a.rounds = num(f, v(), 1, 100);
    else if (f === '--compact-every') a.compactEvery = num(f, v(), 10);
    else if (f === '--compact-keep') a.compactKeep = num(f, v(), 0);
    else if (f === '--clients') a.clients = num(f, v(), 1, 4096);
    else if (f === '--node-args') a.nodeArgs = v() ?? '';
    else if (f === '--keep-logs') a.keepLogs = true;
    else if (f === '--empty-replica') a.emptyReplica = true;
    else if (f === '--help' || f === '-h') { process.stdout.write(`${USAGE}\n`); process.exit(0); }
    else throw new Error(`unknown flag ${f}\n${USAGE}`);
  }
  return a;
}

interface Round {
  round: number;
  readyMs?: number;
  caughtUpMs?: number;
  streams: number;
  distinct: number;
  distinctBytes: number;
  streamedBytes: number;
  /** Distinct bytes / (caught up − first stream start). */
  mbPerSec?: number;
  receiverCpuS?: number;
  senderCpuS?: number;
  /** Median of the streams' own rates (sender side: bytes / time from first read to the last frame queued). */
  streamMbPerSec?: number;
  /** From the last stream's end to caught up (install, then the entries since the cut). */
  tailMs?: number;
  failure?: string;
}

const log = (s: string): void => { process.stderr.write(`${s}\n`); };
const median = (xs: number[]): number | undefined => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length === 0 ? undefined : s[Math.floor((s.length - 1) / 2)];
};
const f1 = (x: number | undefined): string => (x === undefined ? '—' : x.toFixed(1));
const f2 = (x: number | undefined): string => (x === undefined ? '—' : x.toFixed(2));
const cpuS = (pid: number | undefined): number | undefined => {
  const t = pid === undefined ? undefined : cpuTicks(pid);
  return t === undefined ? undefined : t / clkTck();
};

/** Per shard: leader and its commit index, once every shard has a leader other than `exclude` (bounded). */
async function leaderCommits(urls: string[], exclude: number, stop: StopSignal): Promise<Map<number, number>> {
  const t0 = performance.now();
  while (!stop.stopped && performance.now() - t0 < 60_000) {
    const views = await Promise.all(urls.map((u) => clusterView(u, 1_000)));
    const ids = views.find((v) => v !== undefined)?.shards.map((s) => s.id) ?? [];
    const ls = leadersOf(views);
    const out = new Map<number, number>();
    for (const id of ids) {
      const l = ls.get(id);
      if (l !== undefined && l.commit !== null && l.leader !== exclude) out.set(id, l.commit);
    }
    if (ids.length > 0 && out.size === ids.length) return out;
    await sleep(200);
  }
  throw new Error('no leader on every shard within 60 s');
}

async function oneRound(a: Args, c: LocalCluster, sc: StoreClient, ks: Keyspace, n: number, stop: StopSignal, cursor: { next: number }): Promise<Round> {
  const r: Round = { round: n, streams: 0, distinct: 0, distinctBytes: 0, streamedBytes: 0 };
  const urls = c.endpoints();
  const url = urls[VICTIM - 1] as string;
  const survivors = urls.filter((_, i) => i !== VICTIM - 1);
  const before = await clusterView(url, 2_000);
  if (before === undefined) throw new Error(`node ${VICTIM} does not answer`);
  const applied = new Map(before.shards.map((s) => [s.id, s.appliedIndex ?? 0]));
  const k = await run(join(ROOT, 'cluster.sh'), ['kill', String(VICTIM)], c.env(), 15_000);
  if (k.code !== 0) throw new Error(`cluster.sh kill failed: ${k.out}`);
  let commits = await leaderCommits(survivors, VICTIM, stop);
  await sc.http.eps.refresh();
  const margin = a.compactEvery + a.compactKeep + 100;
  const value = makeValue(a.valueBytes, 2 + n);
  for (let pass = 0; pass < 20 && !stop.stopped; pass++) {
    let worst = 0;
    for (const [s, idx] of applied) worst = Math.max(worst, idx + margin - (commits.get(s) ?? 0));
    if (worst <= 0) break;
    const count = Math.ceil(worst * a.shards * 1.3);
    const from = cursor.next;
    cursor.next += count;
    const w = await bulkLoad({ put: (i) => sc.target.put(keyRef(ks, i % ks.keys), value), from, to: from + count, concurrency: a.clients, limitMs: 120_000, stop });
    log(`round ${n}: pass ${pass + 1}: ${w.written} writes (${w.failed} failed) so the leaders compact past node ${VICTIM}`);
    commits = await leaderCommits(survivors, VICTIM, stop);
  }
  const target = await leaderCommits(survivors, VICTIM, stop);
  const logs = Array.from({ length: NODES }, (_, i) => join(c.dataDir, `node-${i + 1}.log`));
  const offsets = logs.map(fileSize);
  const senders = [1, 2].map((i) => readPid(c.dataDir, i));
  if (a.emptyReplica) rmSync(join(c.dataDir, `node-${VICTIM}`), { recursive: true, force: true });
  const send0 = senders.map(cpuS);
  const wall0 = Date.now();
  const t0 = performance.now();
  const restarting = run(join(ROOT, 'cluster.sh'), ['restart', String(VICTIM)], c.env(), 120_000);
  let recv0: number | undefined;
  let vpid: number | undefined;
  while (!stop.stopped && performance.now() - t0 < 300_000) {
    if (r.readyMs === undefined && (await get200(`${url}/ready`, 500)).ok) {
      r.readyMs = Math.round(performance.now() - t0);
      vpid = readPid(c.dataDir, VICTIM);
      recv0 = cpuS(vpid);
    }
    if (r.readyMs !== undefined && (await caughtUp(url, target))) {
      r.caughtUpMs = Math.round(performance.now() - t0);
      const recv1 = cpuS(vpid);
      if (recv0 !== undefined && recv1 !== undefined) r.receiverCpuS = recv1 - recv0;
      const s1 = senders.map(cpuS);
      r.senderCpuS = s1.reduce<number>((s, x, i) => s + (x ?? 0) - (send0[i] ?? 0), 0);
      break;
    }
    await sleep(50);
  }
  await restarting;
  if (r.caughtUpMs === undefined) r.failure = 'not caught up within 300 s';
  await sleep(500);
  const streams = logs.flatMap((file, i) => (i === VICTIM - 1 ? [] : logLinesFrom(file, offsets[i] ?? 0)))
    .filter((l) => l['msg'] === 'snapshot sent' && l['peer'] === VICTIM && typeof l['time'] === 'number' && (l['time'] as number) >= wall0);
  const distinct = new Map<string, Record<string, unknown>>();
  for (const l of streams) distinct.set(`${String(l['shard'])}:${String(l['index'])}`, l);
  r.streams = streams.length;
  r.distinct = distinct.size;
  r.streamedBytes = streams.reduce((s, l) => s + Number(l['bytes'] ?? 0), 0);
  r.distinctBytes = [...distinct.values()].reduce((s, l) => s + Number(l['bytes'] ?? 0), 0);
  const starts = streams.map((l) => (typeof l['startedAt'] === 'number' ? l['startedAt'] : (l['time'] as number) - Number(l['bytes']) / 1e3 / Math.max(1e-9, Number(l['mbPerSec']))));
  const rates = streams.map((l) => Number(l['mbPerSec'] ?? 0));
  const m = median(rates);
  if (m !== undefined) r.streamMbPerSec = m;
  if (streams.length > 0 && r.caughtUpMs !== undefined) r.tailMs = wall0 + r.caughtUpMs - Math.max(...streams.map((l) => l['time'] as number));
  if (starts.length > 0 && r.caughtUpMs !== undefined) {
    const ms = wall0 + r.caughtUpMs - Math.min(...starts);
    if (ms > 0) r.mbPerSec = r.distinctBytes / 1e6 / (ms / 1000);
  }
  return r;
}

async function main(): Promise<void> {
  const a = parse(process.argv.slice(2));
  const stop: StopSignal = { stopped: false };
  installSignalHandlers(stop, log);
  startWatchdog(30 * 60_000, stop, log);
  const work = mkdtempSync(join(tmpdir(), 'kv-catchup-'));
  const base = await findFreePorts(NODES, 18_501, [0, 1000]);
  const nodeArgs = `--compact-every ${a.compactEvery} --compact-keep ${a.compactKeep}${a.nodeArgs === '' ? '' : ` ${a.nodeArgs}`}`;
  const c = new LocalCluster(join(work, 'cluster'), { nodes: NODES, shards: a.shards, replicas: 3, basePort: base, peerBasePort: base + 1000, nodeArgs, startTimeoutMs: 120_000 },
    a.keepLogs ? join(work, 'logs') : undefined);
  const unregister = registerCleanup(`store cluster ${c.dataDir}`, () => c.teardown(), () => c.teardownSync(), {
    pids: () => Array.from({ length: NODES }, (_, i) => readPid(c.dataDir, i + 1) ?? -1).filter((p) => p > 0 && alive(p)), dirs: [c.dataDir],
  });
  const rounds: Round[] = [];
  let sc: StoreClient | undefined;
  try {
    log(`cluster: ${c.command()}`);
    await c.start();
    sc = await storeClient(c.endpoints(), a.clients, 10_000, a.valueBytes, () => c.nodePids());
    const ks: Keyspace = { ...DEFAULT_KEYSPACE, keys: a.keys, tenants: 64, buckets: 8 };
    const value = makeValue(a.valueBytes, 1);
    const client = sc;
    const t0 = performance.now();
    const l = await bulkLoad({ put: (i) => client.target.put(keyRef(ks, i), value), from: 0, to: a.keys, concurrency: a.clients, limitMs: 600_000, stop });
    log(`load: ${l.written} keys (${l.failed} failed) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const cursor = { next: 0 };
    for (let n = 1; n <= a.rounds && !stop.stopped; n++) {
      const r = await oneRound(a, c, sc, ks, n, stop, cursor);
      rounds.push(r);
      const mb = r.distinctBytes / 1e6;
      log(`round ${n}: ${r.failure ?? 'ok'}; ready ${r.readyMs ?? '?'} ms, caught up ${r.caughtUpMs ?? '?'} ms; ${r.streams} streams (${r.distinct} distinct), ` +
        `${mb.toFixed(1)} MB distinct, ${(r.streamedBytes / 1e6).toFixed(1)} MB streamed; ${f1(r.mbPerSec)} MB/s (streams: p50 ${f1(r.streamMbPerSec)} MB/s; ` +
        `last stream end to caught up ${r.tailMs ?? '?'} ms); ` +
        `CPU s/MB receiver ${f2(r.receiverCpuS !== undefined && mb > 0 ? r.receiverCpuS / mb : undefined)}, senders ${f2(r.senderCpuS !== undefined && mb > 0 ? r.senderCpuS / mb : undefined)}`);
    }
  } finally {
    await sc?.target.close();
    const notes = await c.teardown();
    unregister();
    for (const n of notes) log(`note: ${n}`);
    if (!a.keepLogs) rmSync(work, { recursive: true, force: true });
    else log(`logs kept in ${join(work, 'logs')}`);
  }
  const ok = rounds.filter((r) => r.failure === undefined && r.distinctBytes > 0);
  const mbs = ok.map((r) => r.distinctBytes / 1e6);
  const tot = (f: (r: Round) => number): number => ok.reduce((s, r) => s + f(r), 0);
  const L: string[] = [];
  L.push(`bench:catchup — ${new Date().toISOString()}, ${a.keys} keys of ${a.valueBytes} B, ${a.shards} shards, node flags: ${nodeArgs}`);
  L.push(`command: npm run bench:catchup -- ${process.argv.slice(2).join(' ')}`);
  L.push('round | caught up s | streams (distinct) | MB distinct | MB streamed | MB/s | stream p50 MB/s | tail ms | recv CPU s/MB | send CPU s/MB');
  for (const r of rounds) {
    const mb = r.distinctBytes / 1e6;
    L.push(`${r.round} | ${r.caughtUpMs === undefined ? r.failure ?? '—' : (r.caughtUpMs / 1000).toFixed(2)} | ${r.streams} (${r.distinct}) | ${mb.toFixed(1)} | ${(r.streamedBytes / 1e6).toFixed(1)} | ${f1(r.mbPerSec)} | ${f1(r.streamMbPerSec)} | ${r.tailMs ?? '—'} | ` +
      `${f2(r.receiverCpuS === undefined || mb === 0 ? undefined : r.receiverCpuS / mb)} | ${f2(r.senderCpuS === undefined || mb === 0 ? undefined : r.senderCpuS / mb)}`);
  }
  L.push(`p50: ${f1(median(ok.flatMap((r) => (r.mbPerSec === undefined ? [] : [r.mbPerSec]))))} MB/s; receiver ${f2(median(ok.map((r, i) => (r.receiverCpuS ?? NaN) / (mbs[i] as number))))} CPU s/MB; ` +
    `senders ${f2(median(ok.map((r, i) => (r.senderCpuS ?? NaN) / (mbs[i] as number))))} CPU s/MB`);
  L.push(`totals: ${tot((r) => r.streams)} streams, ${tot((r) => r.distinct)} distinct; ${(tot((r) => r.distinctBytes) / 1e6).toFixed(1)} MB distinct, ${(tot((r) => r.streamedBytes) / 1e6).toFixed(1)} MB streamed; ` +
    `receiver ${f1(tot((r) => r.receiverCpuS ?? 0))} CPU s, senders ${f1(tot((r) => r.senderCpuS ?? 0))} CPU s`);
  process.stdout.write(`${L.join('\n')}\n`);
  if (ok.length < rounds.length || rounds.length === 0) process.exitCode = 1;
}

main().catch(async (e: unknown) => {
  log(`bench:catchup failed: ${(e as Error).stack ?? String(e)}`);
  await cleanupAll(log);
  process.exit(1);
});
