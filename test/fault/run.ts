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
import { awaitConvergence, checkStaleEvidence, evidenceToJson, type AckedPut, type MaybeDelete, type StaleEvidence, type StaleRead } from './checks.ts';
import { ClockControl } from './clock.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export type Nemesis = 'kill' | 'kill-leader' | 'pause' | 'pause-leader' | 'partition' | 'isolate-leader' | 'bridge' | 'delay' | 'flap' | 'combined' | 'clock';
export const NEMESES: readonly Nemesis[] = ['kill', 'kill-leader', 'pause', 'pause-leader', 'partition', 'isolate-leader', 'bridge', 'delay', 'flap', 'combined', 'clock'];
/**
 * Faults that involve the network between nodes, made by the link proxy (silent blackholes, delays);
 * `combined` adds a node crash or pause during a partition, `clock` slows the leader's clock
 * (libfaketime) and then isolates it.
 */
const NETWORK: readonly Nemesis[] = ['partition', 'isolate-leader', 'bridge', 'delay', 'flap', 'combined', 'clock'];

/**
 * Planted client-side bugs (teeth: the checker must catch them).
 * - `stale-reads`: "linearizable" reads are sent with `consistency=stale` (served from whichever
 *   replica gets them, possibly behind the leader) but recorded as linearizable reads.
 * - `corrupt-reads`: after the run, one ok read that started after an acknowledged write W (itself
 *   preceded by an acknowledged write W0) is recorded as returning W0's value instead of W's.
 * Planted server bug (the nodes run with `--plant-bug`):
 * - `local-lin-reads`: every node serves linearizable reads from its own replica, without ReadIndex.
 * - `stale-read-cache`: stale reads come through a cache that keeps overwritten values (each key's
 *   stale reads stop at the first value a node read); linearizable reads stay right.
 * - `stale-empty-generation`: stale reads look in an empty generation (every one answers 404).
 */
export type Plant = 'stale-reads' | 'corrupt-reads' | 'local-lin-reads' | 'stale-read-cache' | 'stale-empty-generation';
/** Plants that are bugs in the server (node flag `--plant-bug`), not in the test's client. */
const SERVER_PLANTS: readonly Plant[] = ['local-lin-reads', 'stale-read-cache', 'stale-empty-generation'];

export interface FaultOptions {
  nodes: 3 | 5;
  seconds: number;
  seed: number;
  nemesis: Nemesis[];
  /** concurrent client loops (default 8) */
  clients?: number;
  /**
   * hot keys (default 8); keys 2j and 2j+1 live in tenant `fault<seed>-<j>` without `t`: each pair shares
   * a shard (for the cross-key checks), and the 4 tenants spread over shards as the 4 keys of one tenant
   * each did before the pairs
   */
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
  /** kill -9 every node at once after the load and restart them before the final reads (default true) */
  restartAll?: boolean;
  /** use fresh keys every this many seconds, so each key's history stays small enough to check (chaos runs) */
  keyEpochSeconds?: number;
  /** keep the load and the nemesis going past `seconds` (up to 2×) until this many faults were injected */
  minFaults?: number;
  /** rate of the isolated leader's clock in the `clock` nemesis (default 0.2: five times slow) */
  clockRate?: number;
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
  deletes: number;
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
  /** shards compared by digest after healing, and the records they hold */
  converged: { shards: number; records: number };
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
/**
 * How long after a clock fault healed its stale reads are still not judged by their staleness figure:
 * a follower's freshness may rest on what the slow leader said until it hears the new one (ticks).
 */
const CLOCK_AFTERMATH_MS = 5_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Reply {
  status: number;
  body: string;
  version: number | null;
  shard: number | null;
  servedBy: number | null;
  /** X-Staleness-Ms, when a number */
  stalenessMs: number | null;
}

async function request(method: 'GET' | 'PUT' | 'DELETE', url: string, body?: string, timeoutMs = 2000): Promise<Reply> {
  const r = await fetch(url, { method, body, signal: AbortSignal.timeout(timeoutMs), headers: body === undefined ? {} : { 'content-type': 'application/octet-stream' } });
  const text = await r.text();
  const v = r.headers.get('x-version');
  const s = r.headers.get('x-shard');
  const b = r.headers.get('x-served-by');
  const st = r.headers.get('x-staleness-ms');
  const stalenessMs = st !== null && /^\d+$/.test(st) ? Number(st) : null;
  return { status: r.status, body: text, version: v === null ? null : Number(v), shard: s === null ? null : Number(s), servedBy: b === null ? null : Number(b), stalenessMs };
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
  if (o.keys !== undefined && o.keys !== 8) cmd += ` --keys ${o.keys}`;
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
  const nKeys = opts.keys ?? 8;
  const log = opts.log ?? (() => {});
  const nemRand = mulberry32(opts.seed ^ 0x5bd1e995);
  const args = [...(opts.args ?? DEFAULT_ARGS), ...(opts.plant !== undefined && SERVER_PLANTS.includes(opts.plant) ? ['--plant-bug', opts.plant] : [])];
  /**
   * keys 2j and 2j+1 → tenant j: the pairs land on different shards (the ring places each tenant), and the
   * two keys of a pair share one (no time bucket), so stale reads are checked across keys too (checks.ts)
   */
  const tenantOf = (key: string): string => `fault${opts.seed >>> 0}-${Math.floor(Number(key.slice(key.lastIndexOf('k') + 1)) / 2)}`;
  /** keys of the current epoch (fresh names every keyEpochSeconds), and every key used */
  const epochMs = (opts.keyEpochSeconds ?? 0) * 1000;
  const usedKeys = new Set<string>();
  const keyAt = (i: number): string => {
    const k = epochMs > 0 ? `e${Math.floor((Date.now() - loadStart) / epochMs)}k${i}` : `k${i}`;
    usedKeys.add(k);
    return k;
  };

  const withProxy = opts.nemesis.some((x) => NETWORK.includes(x));
  const clock = opts.nemesis.includes('clock') ? ClockControl.create() : null;
  fakeT.teardown(() => clock?.close());
  const c = withProxy ? await TestCluster.startWithProxy(fakeT, n, args, clock === null ? null : (i) => clock.envFor(i)) : await TestCluster.start(fakeT, n, args);
  opts.t?.teardown(async () => {
    c.destroy();
    await c.proxy?.close();
  });
  log(`cluster of ${n} up (${args.join(' ')})`);

  const history: RegisterOp[] = [];
  const stale: StaleRead[] = [];
  const counts: OpCounts = {
    ok: 0, fail: 0, info: 0, droppedReads: 0,
    byKind: { write: { ok: 0, fail: 0, info: 0 }, cas: { ok: 0, fail: 0, info: 0 }, read: { ok: 0, fail: 0, info: 0 } },
    casOk: 0, casFailed: 0, deletes: 0, staleReads: 0, staleReadsDropped: 0, codes: {},
  };
  const code = (status: number | 'network', body = '') => {
    const k = status === 'network' ? 'network' : `${status} ${errorOf(body).code ?? '?'}/${errorOf(body).outcome ?? '-'}`;
    counts.codes[k] = (counts.codes[k] ?? 0) + 1;
  };
  const problems: string[] = [];
  /** latest (version, value) learned per key from ok replies; value null = deleted (a CAS then sends ifVersion=0) */
  const known = new Map<string, { version: number; value: number | null }>();
  /** every (version → value) pair learned, per key: a pair seen twice must agree */
  const pairs = new Map<string, Map<number, number>>();
  /** when each value's write / CAS was invoked (values are unique) */
  const writeStart = new Map<number, number>();
  /** acknowledged puts and CASes that applied: version (the Raft index), shard, when acknowledged */
  const ackedPuts: AckedPut[] = [];
  /** deletes that may have been applied (ok, or of unknown outcome: end Infinity) */
  const maybeDeletes: MaybeDelete[] = [];
  const hotShards = new Set<number>();
  /** when clock faults ran (plus their aftermath): stale reads then are not judged by their staleness figure */
  const clockWindows: Array<[number, number]> = [];
  const down = new Set<number>(); // killed: clients avoid
  const paused = new Set<number>(); // stopped: clients still hit them (realistic)
  const faults: string[] = [];
  let nextValue = 1;
  const t0 = performance.now();
  const now = () => performance.now() - t0;

  const learn = (key: string, version: number | null, value: number | null, where: string) => {
    if (version === null || !Number.isFinite(version)) return;
    if (value === null) {
      // a delete at `version`: the key is absent from there on (until a later write)
      const k = known.get(key);
      if (k === undefined || version > k.version) known.set(key, { version, value: null });
      return;
    }
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
  /**
   * The load runs for `seconds`, and on past that (up to twice as long) until `minFaults` faults were
   * injected: on a loaded machine a fault and its recovery take longer, and a run that injected too
   * few faults proves little. Waiting for the event, not for a fixed time.
   */
  const hardEnd = endAt + opts.seconds * 1000;
  const running = (marginMs = 0): boolean => Date.now() < endAt - marginMs || (faults.length < (opts.minFaults ?? 0) && Date.now() < hardEnd - marginMs);
  const loadStart = Date.now();

  async function clientLoop(id: number): Promise<void> {
    const r = mulberry32((opts.seed * 7919 + id * 104729) >>> 0);
    let seq = 0;
    const errors = () => counts.fail + counts.info + counts.droppedReads + counts.staleReadsDropped;
    while (running()) {
      const errorsBefore = errors();
      const x = r();
      const key = keyAt(Math.floor(r() * nKeys));
      const node = pickNode(r);
      const base = `${c.url(node)}/v1/kv/${tenantOf(key)}/${key}`;
      const label = `c${id}#${seq++}@n${node}`;
      if (x < 0.25) {
        // write
        const value = nextValue++;
        const start = now();
        writeStart.set(value, start);
        const op: RegisterOp = { key, kind: 'write', value, expect: null, output: null, casOk: false, start, end: Infinity, status: 'info', label };
        try {
          const rep = await request('PUT', base, String(value));
          if (rep.status === 200) {
            op.end = now();
            op.status = 'ok';
            const j = JSON.parse(rep.body) as { version: number; shard: number };
            hotShards.add(j.shard);
            learn(key, j.version, value, label);
            ackedPuts.push({ key, shard: j.shard, version: j.version, start: op.start, end: op.end });
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
      } else if (x < 0.3) {
        // delete: a write of "absent" (null) in the register model
        const start = now();
        const op: RegisterOp = { key, kind: 'write', value: null, expect: null, output: null, casOk: false, start, end: Infinity, status: 'info', label: `${label} del` };
        try {
          const rep = await request('DELETE', base);
          if (rep.status === 200) {
            op.end = now();
            op.status = 'ok';
            counts.deletes++;
            const j = JSON.parse(rep.body) as { deleted: boolean; version: number };
            if (j.deleted) learn(key, j.version, null, label);
          } else {
            code(rep.status, rep.body);
            if (errorOf(rep.body).outcome === 'not_applied') {
              op.end = now();
              op.status = 'fail';
            }
          }
        } catch {
          code('network');
        }
        if (op.status !== 'fail') maybeDeletes.push({ key, start, end: op.end });
        record(op);
      } else if (x < 0.55) {
        // compare-and-set against the latest (version, value) we know
        const k = known.get(key);
        const value = nextValue++;
        const expect = k === undefined ? null : k.value;
        const ifVersion = k === undefined || k.value === null ? 0 : k.version;
        const start = now();
        writeStart.set(value, start);
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
            ackedPuts.push({ key, shard: j.shard, version: j.version, start: op.start, end: op.end });
          } else if (rep.status === 409 && err.code === 'version_mismatch') {
            // executed, compare failed: current version ≠ ifVersion ⇔ current value ≠ expect (unique values;
            // version 0 ⇔ absent ⇔ null)
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
      } else if (x < 0.85) {
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
          const start = now();
          const rep = await request('GET', `${base}?consistency=stale`);
          if (rep.status === 200 || rep.status === 404) {
            counts.staleReads++;
            const value = rep.status === 200 ? Number(rep.body) : null;
            stale.push({ key, value, version: rep.version, node: rep.servedBy ?? node, shard: rep.shard, stalenessMs: rep.stalenessMs, start, end: now(), label });
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
      if (!running(500)) return;
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
    // a clock fault needs time: the followers elect a new leader only after their election timeout
    const ms = kind === 'clock' ? Math.round(3000 + nemRand() * 1000) : Math.round(1000 + nemRand() * 2000);
    const at = ((Date.now() - (endAt - opts.seconds * 1000)) / 1000).toFixed(1);
    const before = await hotLeaders(0);
    let what = '';
    for (const i of nodes) busy.add(i);
    /** a random minority | majority split of the shuffled nodes */
    const split = (): [number[], number[]] => {
      const m = Math.max(1, Math.floor(nemRand() * Math.floor((n - 1) / 2)) + 1);
      const shuffled = [...nodes].sort(() => nemRand() - 0.5);
      return [shuffled.slice(0, m), shuffled.slice(m)];
    };
    let during: (() => Promise<void>) | null = null;
    if (kind === 'delay') {
      const d = Math.round(10 + nemRand() * 90);
      proxy.delayAll(d);
      what = `delay all links ${d}ms`;
    } else if (kind === 'flap') {
      // partitions that come and go every 100-500 ms, a different minority each time
      let flips = 0;
      during = async () => {
        const until = Date.now() + ms;
        while (Date.now() < until) {
          if (flips++ % 2 === 0) proxy.partition(split());
          else proxy.heal();
          await sleep(100 + nemRand() * 400);
        }
      };
      what = 'flapping partitions';
    } else if (kind === 'combined') {
      // a partition and, inside it, a crash or a pause of a random node (quorum may be lost for a while)
      const [minority, majority] = split();
      proxy.partition([minority, majority]);
      const victim = nodes[Math.floor(nemRand() * n)] as number;
      const crash = nemRand() < 0.5;
      during = async () => {
        await sleep(ms / 4);
        if (crash) {
          down.add(victim);
          await c.kill(victim);
        } else {
          paused.add(victim);
          c.signal(victim, 'SIGSTOP');
        }
        await sleep(ms / 2);
        if (crash) {
          c.spawn(victim);
          try {
            await c.waitReady(victim);
          } catch (e) {
            problems.push(`n${victim} did not come back after kill: ${(e as Error).message}`);
          }
          down.delete(victim);
        } else {
          c.signal(victim, 'SIGCONT');
          paused.delete(victim);
        }
        await sleep(ms / 4);
      };
      what = `partition [${minority.join(',')}] | [${majority.join(',')}] + ${crash ? 'kill -9' : 'pause'} n${victim}`;
    } else if (kind === 'clock') {
      // The hot shard's leader's clocks slow down (its timers and Raft ticks with them), then it is cut
      // off from its followers. A lease counted on that clock outlives the followers' patience; ReadIndex
      // does not depend on it. The slowdown comes first and the isolation 1.5 s later: the rate changes
      // without a jump back, but may jump forward by the (unknown) delay between our spawn() and
      // libfaketime's start in the child — a few ticks at once, which must not be what ends the lease.
      // At the default rate 0.2 the leader still heartbeats often enough to stay leader meanwhile.
      const l = clock === null ? null : await leaderOfHotShard();
      if (clock === null || l === null) {
        busy.clear();
        return;
      }
      const rate = opts.clockRate ?? 0.2;
      const window: [number, number] = [now(), Infinity];
      clockWindows.push(window);
      clock.setRate(l, rate);
      await sleep(1500);
      proxy.partition([[l], nodes.filter((x) => x !== l)]);
      during = async () => {
        await sleep(ms);
        proxy.heal();
        clock.setRate(l, 1);
        window[1] = now() + CLOCK_AFTERMATH_MS;
      };
      what = `clock of leader n${l} at x${rate}, then n${l} isolated`;
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
    if (during !== null) await during();
    else await sleep(ms);
    proxy.heal();
    busy.clear();
    faults[idx] += ` [${before} → ${await hotLeaders(0)}]`;
  }

  const workers = Math.max(1, Math.min(opts.maxConcurrentFaults ?? 1, Math.floor((n - 1) / 2)));
  const nem = Promise.all(Array.from({ length: workers }, (_, w) => nemesis(w)));
  await Promise.all(Array.from({ length: clients }, (_, i) => clientLoop(i)));
  await nem; // every fault heals
  const durationMs = Date.now() - loadStart;
  const loadOps = history.length + counts.droppedReads + counts.staleReads + counts.staleReadsDropped;
  log(`load done: ${loadOps} ops in ${durationMs} ms; settling`);

  // every node crashes at once and restarts: no acknowledged write may be lost
  const all = Array.from({ length: n }, (_, i) => i + 1);
  if (opts.restartAll !== false) {
    await Promise.all(all.map((i) => c.kill(i)));
    for (const i of all) c.spawn(i);
    for (const i of all) {
      try {
        await c.waitReady(i);
      } catch (e) {
        problems.push(`n${i} did not come back after the final kill -9 of every node: ${(e as Error).message}`);
      }
    }
    faults.push('end: kill -9 of every node at once, then restart');
    log('every node killed and restarted');
  }
  // settle, then a final linearizable read of every key (in the history)
  try {
    await c.waitLeaders(30_000);
  } catch (e) {
    problems.push(`cluster did not settle: ${(e as Error).message}`);
  }
  const finalValues: Record<string, number | null> = {};
  for (const key of usedKeys) {
    const deadline = Date.now() + 30_000;
    let done = false;
    for (let attempt = 0; !done && Date.now() < deadline; attempt++) {
      const node = 1 + (attempt % n);
      const start = now();
      try {
        const rep = await request('GET', `${c.url(node)}/v1/kv/${tenantOf(key)}/${key}`, undefined, 5000);
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

  // every replica of every shard reaches the same state
  const conv = await awaitConvergence(c, all, 30_000);
  problems.push(...conv.problems);
  log(`replicas converged: ${conv.ok} (${conv.shards} shards, ${conv.records} records)`);

  if (opts.plant === 'corrupt-reads') corruptOneRead(history, problems);

  // stale reads: the weaker promise, per key, across the keys of a shard, and against the staleness each
  // answer stated (not during clock faults): checks.ts
  const evidence: StaleEvidence = {
    reads: stale, writeStart: [...writeStart], pairs: [...pairs].map(([k, m]) => [k, [...m]]), acked: ackedPuts, deletes: maybeDeletes,
    clockWindows,
  };
  const staleProblems = checkStaleEvidence(evidence);
  const staleBad = staleProblems.length;
  problems.push(...staleProblems);

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
    writeFileSync(failureFile.replace(/\.txt$/, '.stale.json'), evidenceToJson(evidence));
    writeFileSync(failureFile, `replay: ${replay}\n\n${problems.join('\n')}\n\nfaults:\n${faults.join('\n')}${offending}\n\nfull history:\n${formatHistory(history)}\n`);
  }
  const opsPerSec = Math.round((loadOps / durationMs) * 1000);
  const kindLine = (k: 'write' | 'cas' | 'read') => `${k} ${counts.byKind[k].ok}/${counts.byKind[k].fail}/${counts.byKind[k].info}`;
  const verdictText = verdict.ok === true ? 'linearizable' : verdict.ok === false ? `NOT linearizable (key ${verdict.key})` : `unknown (key ${verdict.key})`;
  const summary = [
    `fault run: ${n} nodes, ${clients} clients, ${nKeys} keys, ${opts.seconds}s, nemesis ${opts.nemesis.join(',') || 'none'}, seed ${opts.seed}${opts.plant ? `, PLANTED ${opts.plant}` : ''}`,
    `ops: ${loadOps} in ${(durationMs / 1000).toFixed(1)}s (${opsPerSec} ops/s); history ok ${counts.ok}, fail ${counts.fail}, info ${counts.info}; reads dropped ${counts.droppedReads}`,
    `by kind ok/fail/info: ${kindLine('write')}, ${kindLine('cas')} (compare ok ${counts.casOk}, failed ${counts.casFailed}), ${kindLine('read')}; deletes ok ${counts.deletes}; stale reads ${counts.staleReads} (dropped ${counts.staleReadsDropped}, bad ${staleBad})`,
    `errors: ${Object.entries(counts.codes).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ×${v}`).join(', ') || 'none'}`,
    faults.length <= 12 ? `faults (${faults.length}): ${faults.join('; ') || 'none'}` : `faults (${faults.length}): ${faultKinds(faults)}; first 6: ${faults.slice(0, 6).join('; ')}`,
    `final (after ${opts.restartAll === false ? 'healing' : 'every node was killed and restarted'}): ${[...usedKeys].slice(0, 8).map((k) => `${k}=${finalValues[k] ?? 'absent'}`).join(' ')}${usedKeys.size > 8 ? ` … (${usedKeys.size} keys)` : ''}; replicas ${conv.ok ? 'converged' : 'DID NOT converge'} (${conv.shards} shards, ${conv.records} records compared by digest)`,
    `checker: ${verdictText} in ${checkMs} ms (${history.length} ops)`,
    ok ? 'PASS' : `FAIL: ${problems.join(' | ')}`,
    ...(ok ? [] : [`replay: ${replay}`, ...(failureFile ? [`history: ${failureFile} (re-check: npm run fault -- --check ${failureFile.replace(/\.txt$/, '.json')})`] : [])]),
  ].join('\n');
  return { ok, problems, verdict, checkMs, history, counts, faults, durationMs, opsPerSec, finalValues, converged: { shards: conv.shards, records: conv.records }, replay, failureFile, summary };
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

/** "kill ×12, pause ×9, …": faults counted by their kind (the words before the node or the list). */
function faultKinds(faults: string[]): string {
  const by = new Map<string, number>();
  for (const f of faults) {
    const kind = f.replace(/^[\d.]+s /, '').replace(/^end: /, '').split(/ n\d| \[| for | all links|,/)[0] ?? f;
    by.set(kind, (by.get(kind) ?? 0) + 1);
  }
  return [...by].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ×${v}`).join(', ');
}
