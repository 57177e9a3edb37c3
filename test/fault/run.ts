/**
 * Jepsen-style fault test of a real cluster (issue 5, first step).
 *
 * Starts real node processes with TestCluster, runs C concurrent client loops of register operations
 * (write, compare-and-set, linearizable read, stale read) on a few hot keys over raw HTTP, while a
 * nemesis kills (-9) or pauses (SIGSTOP) nodes or shard leaders on a seeded schedule. Every fault is
 * healed before the end; then the cluster settles, every key gets a final linearizable read, and the
 * history is checked for linearizability (test/lincheck/checker.ts).
 *
 * Register model: every write / CAS writes a unique integer. A CAS is `PUT ?ifVersion=V` where V is the
 * latest version we learned for the key together with its value X (from an ok read, write or CAS):
 * because values are unique and there are no deletes, "current version ≠ V" is the same as
 * "current value ≠ X", so a 409 version_mismatch is recorded as cas(X → new) executed with a failed
 * compare (status ok, casOk false). ifVersion=0 ⇔ expect null (absent).
 *
 * Outcomes: 200 → ok; 404 on a read → ok, output null; 409 version_mismatch on a CAS → ok, casOk false;
 * an error whose outcome is `not_applied` → fail; anything else (`unknown`, 5xx without an outcome,
 * timeouts, network errors) → info for writes / CAS (end = Infinity), dropped for reads.
 *
 * Stale reads are not linearizable and stay out of the history: they are only checked to return a
 * value that some write / CAS was invoked with (or absent), and a (version, value) pair consistent with
 * every pair learned elsewhere.
 *
 * Only the workload and the fault schedule are seeded; timing is real, so a seed does not replay a
 * history exactly, but it replays the same kind of run.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import type { ExecutionContext } from 'ava';
import { TestCluster } from '../integration/harness.ts';
import { checkLinearizable, formatHistory, type CheckResult, type RegisterOp } from '../lincheck/checker.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export type Nemesis = 'kill' | 'kill-leader' | 'pause' | 'pause-leader' | 'partition' | 'isolate-leader' | 'bridge' | 'delay';
export const NEMESES: readonly Nemesis[] = ['kill', 'kill-leader', 'pause', 'pause-leader', 'partition', 'isolate-leader', 'bridge', 'delay'];
/** Faults of the network between nodes, made by the link proxy (silent blackholes, delays). */
const NETWORK: readonly Nemesis[] = ['partition', 'isolate-leader', 'bridge', 'delay'];

/**
 * Planted client-side bugs (teeth: the checker must catch them).
 * - `stale-reads`: "linearizable" reads are sent with `consistency=stale` (served from whichever
 *   replica gets them, possibly behind the leader) but recorded as linearizable reads.
 * - `corrupt-reads`: after the run, one ok read that started after an acknowledged write W (itself
 *   preceded by an acknowledged write W0) is recorded as returning W0's value instead of W's.
 */
export type Plant = 'stale-reads' | 'corrupt-reads';

export interface FaultOptions {
  nodes: 3 | 5;
  seconds: number;
  seed: number;
  nemesis: Nemesis[];
  /** concurrent client loops (default 8) */
  clients?: number;
  /** hot keys, all in one tenant without `t` (default 4) */
  keys?: number;
  /** extra node flags (default `--shards 4 --tick-ms 50`) */
  args?: string[];
  plant?: Plant;
  /** ava context: the cluster is also destroyed in its teardown */
  t?: ExecutionContext;
  /** progress lines (default: none) */
  log?: (line: string) => void;
  /** faults at once (default 1; capped at a minority: 1 of 3, 2 of 5) */
  maxConcurrentFaults?: number;
  /** checker budget per key (default 2,000,000; an unknown verdict is retried once with 10×) */
  maxStates?: number;
  /** write the history to .sim-failures/ on failure (default true) */
  writeFailure?: boolean;
}

export interface OpCounts {
  ok: number;
  fail: number;
  info: number;
  /** reads dropped (unknown outcome: timeouts, 5xx) */
  droppedReads: number;
  byKind: Record<'write' | 'cas' | 'read', { ok: number; fail: number; info: number }>;
  casOk: number;
  casFailed: number;
  staleReads: number;
  staleReadsDropped: number;
  /** error codes of fail / info / dropped replies (`network` = timeout or connection error) */
  codes: Record<string, number>;
}

export interface FaultResult {
  ok: boolean;
  /** why it failed (checker verdict, stale-read anomaly, settle failure) */
  problems: string[];
  verdict: CheckResult;
  checkMs: number;
  history: RegisterOp[];
  counts: OpCounts;
  faults: string[];
  durationMs: number;
  opsPerSec: number;
  finalValues: Record<string, number | null>;
  replay: string;
  failureFile: string | null;
  summary: string;
}

/** mulberry32: small seeded PRNG (32-bit state). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let z = a;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
}

const DEFAULT_ARGS = ['--shards', '4', '--tick-ms', '50'];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Reply {
  status: number;
  body: string;
  version: number | null;
  shard: number | null;
}

async function request(method: 'GET' | 'PUT', url: string, body?: string, timeoutMs = 2000): Promise<Reply> {
  const r = await fetch(url, { method, body, signal: AbortSignal.timeout(timeoutMs), headers: body === undefined ? {} : { 'content-type': 'application/octet-stream' } });
  const text = await r.text();
  const v = r.headers.get('x-version');
  const s = r.headers.get('x-shard');
  return { status: r.status, body: text, version: v === null ? null : Number(v), shard: s === null ? null : Number(s) };
}

function errorOf(body: string): { code?: string; outcome?: string } {
  try {
    const j = JSON.parse(body) as { error?: { code?: string; outcome?: string } };
    return j.error ?? {};
  } catch {
    return {};
  }
}

export function replayCommand(o: Pick<FaultOptions, 'seed' | 'nodes' | 'nemesis' | 'seconds' | 'clients' | 'keys' | 'plant' | 'maxConcurrentFaults' | 'args'>): string {
  let cmd = `npm run fault -- --seed ${o.seed} --nodes ${o.nodes} --nemesis ${o.nemesis.length === 0 ? 'none' : o.nemesis.join(',')} --seconds ${o.seconds}`;
  if (o.clients !== undefined && o.clients !== 8) cmd += ` --clients ${o.clients}`;
  if (o.keys !== undefined && o.keys !== 4) cmd += ` --keys ${o.keys}`;
  if (o.maxConcurrentFaults !== undefined && o.maxConcurrentFaults > 1) cmd += ` --faults ${o.maxConcurrentFaults}`;
  const extra = (o.args ?? DEFAULT_ARGS).join(' ').replace(DEFAULT_ARGS.join(' '), '').trim();
  if (extra !== '') cmd += ` --node-args "${extra}"`;
  if (o.plant !== undefined) cmd += ` --plant ${o.plant}`;
  return cmd;
}

export async function runFaultTest(opts: FaultOptions): Promise<FaultResult> {
  const teardowns: Array<() => unknown> = [];
  const fakeT = { teardown: (fn: () => unknown) => void teardowns.push(fn) } as unknown as ExecutionContext;
  try {
    return await run(opts, fakeT);
  } finally {
    for (const fn of teardowns.reverse()) {
      try {
        await fn();
      } catch { /* best effort */ }
    }
  }
}

async function run(opts: FaultOptions, fakeT: ExecutionContext): Promise<FaultResult> {
  const n = opts.nodes;
  const clients = opts.clients ?? 8;
  const nKeys = opts.keys ?? 4;
  const log = opts.log ?? (() => {});
  const nemRand = mulberry32(opts.seed ^ 0x5bd1e995);
  const args = opts.args ?? DEFAULT_ARGS;
  const tenant = `fault${opts.seed >>> 0}`;
  const keys = Array.from({ length: nKeys }, (_, i) => `k${i}`);

  const withProxy = opts.nemesis.some((x) => NETWORK.includes(x));
  const c = withProxy ? await TestCluster.startWithProxy(fakeT, n, args) : await TestCluster.start(fakeT, n, args);
  opts.t?.teardown(async () => {
    c.destroy();
    await c.proxy?.close();
  });
  log(`cluster of ${n} up (${args.join(' ')})`);

  const history: RegisterOp[] = [];
  const stale: Array<{ key: string; value: number | null; version: number | null; label: string }> = [];
  const counts: OpCounts = {
    ok: 0, fail: 0, info: 0, droppedReads: 0,
    byKind: { write: { ok: 0, fail: 0, info: 0 }, cas: { ok: 0, fail: 0, info: 0 }, read: { ok: 0, fail: 0, info: 0 } },
    casOk: 0, casFailed: 0, staleReads: 0, staleReadsDropped: 0, codes: {},
  };
  const code = (status: number | 'network', body = '') => {
    const k = status === 'network' ? 'network' : `${status} ${errorOf(body).code ?? '?'}/${errorOf(body).outcome ?? '-'}`;
    counts.codes[k] = (counts.codes[k] ?? 0) + 1;
  };
  const problems: string[] = [];
  /** latest (version, value) learned per key from ok replies */
  const known = new Map<string, { version: number; value: number }>();
  /** every (version → value) pair learned, per key: a pair seen twice must agree */
  const pairs = new Map<string, Map<number, number>>();
  const invokedValues = new Set<number>();
  const hotShards = new Set<number>();
  const down = new Set<number>(); // killed: clients avoid
  const paused = new Set<number>(); // stopped: clients still hit them (realistic)
  const faults: string[] = [];
  let nextValue = 1;
  const t0 = performance.now();
  const now = () => performance.now() - t0;

  const learn = (key: string, version: number | null, value: number, where: string) => {
    if (version === null || !Number.isFinite(version)) return;
    let m = pairs.get(key);
    if (m === undefined) pairs.set(key, (m = new Map()));
    const prev = m.get(version);
    if (prev !== undefined && prev !== value) problems.push(`${key}: version ${version} seen with value ${prev} and with ${value} (${where})`);
    m.set(version, value);
    const k = known.get(key);
    if (k === undefined || version > k.version) known.set(key, { version, value });
  };

  const record = (op: RegisterOp) => {
    history.push(op);
    counts[op.status]++;
    counts.byKind[op.kind][op.status]++;
    if (op.kind === 'cas' && op.status === 'ok') {
      if (op.casOk) counts.casOk++;
      else counts.casFailed++;
    }
  };

  const pickNode = (r: () => number): number => {
    const live = [];
    for (let i = 1; i <= n; i++) if (!down.has(i)) live.push(i);
    return live[Math.floor(r() * live.length)] ?? 1;
  };

  const endAt = Date.now() + opts.seconds * 1000;

  async function clientLoop(id: number): Promise<void> {
    const r = mulberry32((opts.seed * 7919 + id * 104729) >>> 0);
    let seq = 0;
    const errors = () => counts.fail + counts.info + counts.droppedReads + counts.staleReadsDropped;
    while (Date.now() < endAt) {
      const errorsBefore = errors();
      const x = r();
      const key = keys[Math.floor(r() * keys.length)] as string;
      const node = pickNode(r);
      const base = `${c.url(node)}/v1/kv/${tenant}/${key}`;
      const label = `c${id}#${seq++}@n${node}`;
      if (x < 0.3) {
        // write
        const value = nextValue++;
        invokedValues.add(value);
        const start = now();
        const op: RegisterOp = { key, kind: 'write', value, expect: null, output: null, casOk: false, start, end: Infinity, status: 'info', label };
        try {
          const rep = await request('PUT', base, String(value));
          if (rep.status === 200) {
            op.end = now();
            op.status = 'ok';
            const j = JSON.parse(rep.body) as { version: number; shard: number };
            hotShards.add(j.shard);
            learn(key, j.version, value, label);
          } else {
            code(rep.status, rep.body);
            if (errorOf(rep.body).outcome === 'not_applied') {
              op.end = now();
              op.status = 'fail';
            }
          }
        } catch {
          code('network'); // timeout / network: info
        }
        record(op);
      } else if (x < 0.55) {
        // compare-and-set against the latest (version, value) we know
        const k = known.get(key);
        const value = nextValue++;
        invokedValues.add(value);
        const expect = k === undefined ? null : k.value;
        const ifVersion = k === undefined ? 0 : k.version;
        const start = now();
        const op: RegisterOp = { key, kind: 'cas', value, expect, output: null, casOk: false, start, end: Infinity, status: 'info', label };
        try {
          const rep = await request('PUT', `${base}?ifVersion=${ifVersion}`, String(value));
          const err = rep.status === 200 ? {} : errorOf(rep.body);
          if (rep.status === 200) {
            op.end = now();
            op.status = 'ok';
            op.casOk = true;
            const j = JSON.parse(rep.body) as { version: number; shard: number };
            hotShards.add(j.shard);
            learn(key, j.version, value, label);
          } else if (rep.status === 409 && err.code === 'version_mismatch') {
            // executed, compare failed: current version ≠ ifVersion ⇔ current value ≠ expect (unique values, no deletes)
            op.end = now();
            op.status = 'ok';
            op.casOk = false;
          } else {
            code(rep.status, rep.body);
            if (err.outcome === 'not_applied') {
              op.end = now();
              op.status = 'fail';
            }
          }
        } catch {
          code('network');
        }
        record(op);
      } else if (x < 0.9) {
        // linearizable read (or, with the planted bug, a stale read recorded as linearizable)
        const start = now();
        const q = opts.plant === 'stale-reads' ? '?consistency=stale' : '';
        try {
          const rep = await request('GET', base + q);
          const end = now();
          if (rep.status === 200 || rep.status === 404) {
            let output: number | null = null;
            if (rep.status === 200) {
              output = Number(rep.body);
              if (!Number.isInteger(output)) problems.push(`${label}: read ${key} returned a non-integer body ${JSON.stringify(rep.body.slice(0, 40))}`);
              else learn(key, rep.version, output, label);
            }
            if (rep.shard !== null) hotShards.add(rep.shard);
            record({ key, kind: 'read', value: null, expect: null, output, casOk: false, start, end, status: 'ok', label });
          } else if ((code(rep.status, rep.body), errorOf(rep.body).outcome === 'not_applied')) {
            record({ key, kind: 'read', value: null, expect: null, output: null, casOk: false, start, end, status: 'fail', label });
          } else {
            counts.droppedReads++;
          }
        } catch {
          code('network');
          counts.droppedReads++;
        }
      } else {
        // stale read: checked separately
        try {
          const rep = await request('GET', `${base}?consistency=stale`);
          if (rep.status === 200 || rep.status === 404) {
            counts.staleReads++;
            const value = rep.status === 200 ? Number(rep.body) : null;
            stale.push({ key, value, version: rep.version, label });
          } else counts.staleReadsDropped++;
        } catch {
          counts.staleReadsDropped++;
        }
      }
      // a client that got an error backs off a little instead of spinning on 503s
      if (errors() > errorsBefore) await sleep(10 + r() * 40);
    }
  }

  async function leaderOfHotShard(): Promise<number | null> {
    const shards = [...hotShards];
    const shard = shards[Math.floor(nemRand() * shards.length)];
    for (let i = 1; i <= n; i++) {
      if (down.has(i) || paused.has(i)) continue;
      try {
        const m = await c.map(i);
        const s = m.shards.find((x) => x.id === shard) ?? m.shards[0];
        if (s !== undefined && s.leader !== null && !down.has(s.leader) && !paused.has(s.leader)) return s.leader;
      } catch { /* try another node */ }
    }
    return null;
  }

  /** leader and term of each hot shard, as a healthy node sees it (for the fault log) */
  async function hotLeaders(exclude: number): Promise<string> {
    const out: string[] = [];
    for (const shard of hotShards) {
      let view = `s${shard}:?`;
      for (const i of replicas.get(shard) ?? []) {
        if (down.has(i) || paused.has(i) || i === exclude) continue;
        try {
          const x = (await c.map(i)).shards.find((y) => y.id === shard);
          if (x !== undefined) view = `s${shard}:${x.leader === null ? 'none' : `n${x.leader}`}@t${x.term ?? '?'}`;
          break;
        } catch { /* try another replica */ }
      }
      out.push(view);
    }
    return out.join(',');
  }

  // Up to a minority of nodes faulty at once: one nemesis worker per node of that minority, each
  // injecting one fault at a time on a node no other worker holds.
  const busy = new Set<number>();
  const replicas = new Map<number, number[]>();
  for (const s of (await c.map(1)).shards) replicas.set(s.id, s.replicas);
  /** a node may fail if it is not failed already and every hot shard keeps a majority of its replicas */
  const allowed = (i: number): boolean => {
    if (busy.has(i)) return false;
    for (const shard of hotShards) {
      const reps = replicas.get(shard) ?? [];
      if (!reps.includes(i)) continue;
      const faulty = reps.filter((x) => busy.has(x)).length + 1;
      if (faulty > Math.floor((reps.length - 1) / 2)) return false;
    }
    return true;
  };
  const bag: Nemesis[] = [];
  async function nemesis(worker: number): Promise<void> {
    if (opts.nemesis.length === 0) return;
    if (worker > 0) await sleep(700 * worker);
    while (true) {
      await sleep(1000 + nemRand() * 1000);
      if (Date.now() >= endAt - 500) return;
      // each enabled fault once per round, in a seeded order: every kind shows up in a short run
      if (bag.length === 0) {
        bag.push(...opts.nemesis);
        for (let i = bag.length - 1; i > 0; i--) {
          const j = Math.floor(nemRand() * (i + 1));
          [bag[i], bag[j]] = [bag[j] as Nemesis, bag[i] as Nemesis];
        }
      }
      const kind = bag.pop() as Nemesis;
      if (NETWORK.includes(kind)) {
        await networkFault(kind);
        continue;
      }
      let victim: number | null = null;
      if (kind === 'kill-leader' || kind === 'pause-leader') victim = await leaderOfHotShard();
      let label: string = kind;
      if (victim === null || !allowed(victim)) {
        if (kind === 'kill-leader' || kind === 'pause-leader') label = `${kind === 'kill-leader' ? 'kill' : 'pause'} (leader not available)`;
        const free = [];
        for (let i = 1; i <= n; i++) if (allowed(i)) free.push(i);
        victim = free[Math.floor(nemRand() * free.length)] ?? null;
        if (victim === null) continue;
      }
      busy.add(victim);
      const at = ((Date.now() - (endAt - opts.seconds * 1000)) / 1000).toFixed(1);
      if (kind === 'kill' || kind === 'kill-leader') {
        const ms = Math.round(500 + nemRand() * 1500);
        const before = await hotLeaders(victim);
        const idx = faults.push(`${at}s ${label} n${victim} for ${ms}ms`) - 1;
        log(`nemesis: ${faults[idx]}`);
        down.add(victim);
        await c.kill(victim);
        await sleep(ms);
        c.spawn(victim);
        try {
          await c.waitReady(victim);
        } catch (e) {
          problems.push(`n${victim} did not come back after kill: ${(e as Error).message}`);
        }
        down.delete(victim);
        busy.delete(victim);
        faults[idx] += ` [${before} → ${await hotLeaders(victim)}]`;
      } else {
        const ms = Math.round(500 + nemRand() * 2500);
        const before = await hotLeaders(victim);
        const idx = faults.push(`${at}s ${label} n${victim} for ${ms}ms`) - 1;
        log(`nemesis: ${faults[idx]}`);
        paused.add(victim);
        c.signal(victim, 'SIGSTOP');
        await sleep(ms);
        c.signal(victim, 'SIGCONT');
        paused.delete(victim);
        busy.delete(victim);
        faults[idx] += ` [${before} → ${await hotLeaders(victim)}]`;
      }
    }
  }

  /**
   * One network fault, alone (no node fault at the same time): a random
   * minority cut off, the hot shard's leader isolated, a bridge (one node
   * sees both sides, which do not see each other), or every link delayed.
   * Blackholes are silent: connections stay open and nothing flows.
   */
  async function networkFault(kind: Nemesis): Promise<void> {
    const proxy = c.proxy;
    if (proxy === null || busy.size > 0) return;
    const nodes = Array.from({ length: n }, (_, i) => i + 1);
    for (let i = nodes.length - 1; i > 0; i--) {
      const j = Math.floor(nemRand() * (i + 1));
      [nodes[i], nodes[j]] = [nodes[j] as number, nodes[i] as number];
    }
    const ms = Math.round(1000 + nemRand() * 2000);
    const at = ((Date.now() - (endAt - opts.seconds * 1000)) / 1000).toFixed(1);
    const before = await hotLeaders(0);
    let what = '';
    for (const i of nodes) busy.add(i);
    if (kind === 'delay') {
      const d = Math.round(10 + nemRand() * 90);
      proxy.delayAll(d);
      what = `delay all links ${d}ms`;
    } else if (kind === 'bridge' && n >= 3) {
      const bridge = nodes[0] as number;
      const rest = nodes.slice(1);
      const left = rest.slice(0, Math.floor(rest.length / 2));
      const right = rest.slice(Math.floor(rest.length / 2));
      proxy.bridge(left, bridge, right);
      what = `bridge n${bridge} between [${left.join(',')}] and [${right.join(',')}]`;
    } else {
      let minority = nodes.slice(0, Math.floor((n - 1) / 2));
      if (kind === 'isolate-leader') {
        const l = await leaderOfHotShard();
        if (l !== null) minority = [l];
      }
      const majority = nodes.filter((x) => !minority.includes(x));
      proxy.partition([minority, majority]);
      what = `${kind} [${minority.join(',')}] | [${majority.join(',')}]`;
    }
    const idx = faults.push(`${at}s ${what} for ${ms}ms`) - 1;
    log(`nemesis: ${faults[idx]}`);
    await sleep(ms);
    proxy.heal();
    busy.clear();
    faults[idx] += ` [${before} → ${await hotLeaders(0)}]`;
  }

  const loadStart = Date.now();
  const workers = Math.max(1, Math.min(opts.maxConcurrentFaults ?? 1, Math.floor((n - 1) / 2)));
  const nem = Promise.all(Array.from({ length: workers }, (_, w) => nemesis(w)));
  await Promise.all(Array.from({ length: clients }, (_, i) => clientLoop(i)));
  await nem; // every fault heals
  const durationMs = Date.now() - loadStart;
  const loadOps = history.length + counts.droppedReads + counts.staleReads + counts.staleReadsDropped;
  log(`load done: ${loadOps} ops in ${durationMs} ms; settling`);

  // settle, then a final linearizable read of every key (in the history)
  try {
    await c.waitLeaders(30_000);
  } catch (e) {
    problems.push(`cluster did not settle: ${(e as Error).message}`);
  }
  const finalValues: Record<string, number | null> = {};
  for (const key of keys) {
    const deadline = Date.now() + 30_000;
    let done = false;
    for (let attempt = 0; !done && Date.now() < deadline; attempt++) {
      const node = 1 + (attempt % n);
      const start = now();
      try {
        const rep = await request('GET', `${c.url(node)}/v1/kv/${tenant}/${key}`, undefined, 5000);
        if (rep.status === 200 || rep.status === 404) {
          const output = rep.status === 200 ? Number(rep.body) : null;
          if (output !== null) learn(key, rep.version, output, 'final');
          history.push({ key, kind: 'read', value: null, expect: null, output, casOk: false, start, end: now(), status: 'ok', label: `final@n${node}` });
          finalValues[key] = output;
          done = true;
          break;
        }
      } catch { /* retry */ }
      await sleep(100);
    }
    if (!done) problems.push(`final read of ${key} did not succeed within 30 s`);
  }

  if (opts.plant === 'corrupt-reads') corruptOneRead(history, problems);

  // stale reads: a value some write was invoked with, or absent
  let staleBad = 0;
  for (const s of stale) {
    if (s.value === null) continue;
    const pairOk = s.version === null || pairs.get(s.key)?.get(s.version) === undefined || pairs.get(s.key)?.get(s.version) === s.value;
    if (!Number.isInteger(s.value) || !invokedValues.has(s.value) || !pairOk) {
      if (staleBad++ < 5) problems.push(`stale read ${s.label} of ${s.key} returned ${s.value} (version ${s.version}), never written${pairOk ? '' : ' at that version'}`);
    }
  }

  const c0 = performance.now();
  const verdict = checkHistory(history, opts.maxStates, log);
  const checkMs = Math.round(performance.now() - c0);
  if (verdict.ok === false) problems.push(`not linearizable on key ${verdict.key}: ${verdict.message}`);
  else if (verdict.ok === 'unknown') problems.push(`checker gave up (unknown) on key ${verdict.key}: ${verdict.message}`);

  const ok = problems.length === 0;
  const replay = replayCommand(opts);
  let failureFile: string | null = null;
  if (!ok && opts.writeFailure !== false) {
    const dir = join(ROOT, '.sim-failures');
    mkdirSync(dir, { recursive: true });
    failureFile = join(dir, `fault-${opts.seed}${opts.plant ? `-${opts.plant}` : ''}.txt`);
    const offending = verdict.ok === false ? `\n\nhistory of the offending key ${verdict.key}:\n${formatHistory(verdict.ops)}\n` : '';
    writeFileSync(failureFile.replace(/\.txt$/, '.json'), historyToJson(history));
    writeFileSync(failureFile, `replay: ${replay}\n\n${problems.join('\n')}\n\nfaults:\n${faults.join('\n')}${offending}\n\nfull history:\n${formatHistory(history)}\n`);
  }
  const opsPerSec = Math.round((loadOps / durationMs) * 1000);
  const kindLine = (k: 'write' | 'cas' | 'read') => `${k} ${counts.byKind[k].ok}/${counts.byKind[k].fail}/${counts.byKind[k].info}`;
  const verdictText = verdict.ok === true ? 'linearizable' : verdict.ok === false ? `NOT linearizable (key ${verdict.key})` : `unknown (key ${verdict.key})`;
  const summary = [
    `fault run: ${n} nodes, ${clients} clients, ${nKeys} keys, ${opts.seconds}s, nemesis ${opts.nemesis.join(',') || 'none'}, seed ${opts.seed}${opts.plant ? `, PLANTED ${opts.plant}` : ''}`,
    `ops: ${loadOps} in ${(durationMs / 1000).toFixed(1)}s (${opsPerSec} ops/s); history ok ${counts.ok}, fail ${counts.fail}, info ${counts.info}; reads dropped ${counts.droppedReads}`,
    `by kind ok/fail/info: ${kindLine('write')}, ${kindLine('cas')} (compare ok ${counts.casOk}, failed ${counts.casFailed}), ${kindLine('read')}; stale reads ${counts.staleReads} (dropped ${counts.staleReadsDropped}, bad ${staleBad})`,
    `errors: ${Object.entries(counts.codes).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ×${v}`).join(', ') || 'none'}`,
    `faults (${faults.length}): ${faults.join('; ') || 'none'}`,
    `final: ${keys.map((k) => `${k}=${finalValues[k] ?? 'absent'}`).join(' ')}`,
    `checker: ${verdictText} in ${checkMs} ms (${history.length} ops)`,
    ok ? 'PASS' : `FAIL: ${problems.join(' | ')}`,
    ...(ok ? [] : [`replay: ${replay}`, ...(failureFile ? [`history: ${failureFile} (re-check: npm run fault -- --check ${failureFile.replace(/\.txt$/, '.json')})`] : [])]),
  ].join('\n');
  return { ok, problems, verdict, checkMs, history, counts, faults, durationMs, opsPerSec, finalValues, replay, failureFile, summary };
}

/**
 * checkLinearizable with an escalating budget: a long history of hot keys with info ops can run past
 * the default 2M states per key; `unknown` is retried once with 10× the budget before it counts.
 */
export function checkHistory(history: RegisterOp[], maxStates = 2_000_000, log: (l: string) => void = () => {}): CheckResult {
  const first = checkLinearizable(history, { maxStates });
  if (first.ok !== 'unknown') return first;
  log(`checker: unknown with ${maxStates} states per key; retrying with ${maxStates * 10}`);
  return checkLinearizable(history, { maxStates: maxStates * 10 });
}

/** A history as JSON (info ops: end = null), for `npm run fault -- --check FILE.json`. */
export function historyToJson(history: RegisterOp[]): string {
  return JSON.stringify(history.map((o) => ({ ...o, end: o.end === Infinity ? null : o.end })));
}

export function historyFromJson(text: string): RegisterOp[] {
  return (JSON.parse(text) as Array<Omit<RegisterOp, 'end'> & { end: number | null }>).map((o) => ({ ...o, end: o.end === null ? Infinity : o.end }));
}

/**
 * The `corrupt-reads` plant: find an ok read R of value X written by an acknowledged write W
 * (W.end < R.start), where an acknowledged write W0 of value Y completed before W started
 * (W0.end < W.start); record R as having read Y. Y is unique to W0, so Y cannot be current after W:
 * the history is certainly not linearizable.
 */
export function corruptOneRead(history: RegisterOp[], problems: string[]): void {
  const writers = history.filter((o) => o.status === 'ok' && (o.kind === 'write' || (o.kind === 'cas' && o.casOk)));
  for (const r of history) {
    if (r.kind !== 'read' || r.status !== 'ok' || r.output === null) continue;
    const w = writers.find((o) => o.key === r.key && o.value === r.output && o.end < r.start);
    if (w === undefined) continue;
    const w0 = writers.find((o) => o.key === r.key && o.end < w.start && o.value !== w.value);
    if (w0 === undefined) continue;
    r.output = w0.value;
    r.label = `${r.label ?? ''} [planted: read ${w.value}]`;
    return;
  }
  problems.push('corrupt-reads: found no read to corrupt');
}
