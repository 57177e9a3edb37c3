/**
 * Real clusters for integration tests: separate node processes over real
 * LevelDB directories, on loopback ports picked free, stopped by PID in the
 * test's teardown. Every wait is for an event (a port, a leader), bounded.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, openSync, closeSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import { LinkProxy } from '../netproxy/link-proxy.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** Nodes run as cluster.sh starts them: two libuv pool threads unless the environment says otherwise. */
const NODE_ENV: NodeJS.ProcessEnv = { ...process.env, UV_THREADPOOL_SIZE: process.env['UV_THREADPOOL_SIZE'] ?? '2' };

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * A free port for a node to bind a moment later. Picked below the ephemeral
 * range (32768+ here): a port the OS hands out for listen(0) can be taken by
 * any outbound connection (peer links, HTTP clients of other tests) before
 * the node binds it, and a node that cannot bind exits — its cluster never
 * looks whole. Random, so parallel test workers rarely pick the same one;
 * start() retries with new ports if a node still could not bind.
 */
async function freePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (await canListen(port)) return port;
  }
  throw new Error('no free port in 20000-31999');
}

/** Whether a start failed only because some node could not bind its port (then start afresh). */
function bindFailure(c: TestCluster): boolean {
  for (let i = 1; i <= c.n; i++) {
    try {
      if (readFileSync(join(c.dir, `node-${i}.log`), 'utf8').includes('EADDRINUSE')) return true;
    } catch { /* no log */ }
  }
  return false;
}

export interface ClusterMapView {
  shards: Array<{ id: number; replicas: number[]; leader: number | null; term: number | null; commitIndex: number | null; appliedIndex: number | null }>;
}

class PortClash extends Error {}

export class TestCluster {
  procs = new Map<number, ChildProcess>();
  urls = new Map<number, string>();
  peers = '';
  /** With startWithProxy: every node-to-node link goes through this fault-injecting proxy. */
  proxy: LinkProxy | null = null;
  /** Per-node peers spec (through the proxy); falls back to `peers`. */
  peersFor: ((i: number) => string) | null = null;
  /** Extra environment per node process (e.g. libfaketime for clock faults). */
  envFor: ((i: number) => Record<string, string>) | null = null;
  /** Extra node flags per node, after the cluster's own (e.g. a fault injected into one node). */
  argsFor: ((i: number) => string[]) | null = null;
  dir: string;
  constructor(readonly n: number, readonly args: string[]) {
    this.dir = mkdtempSync(join(tmpdir(), 'kv-it-'));
  }

  static async start(t: ExecutionContext, n = 3, args: string[] = [], argsFor: ((i: number) => string[]) | null = null): Promise<TestCluster> {
    return TestCluster.retryPortClash(t, () => TestCluster.startOnce(t, n, args, argsFor));
  }

  /** Start afresh on new ports (at most 3 attempts) when a node could not bind its port. */
  private static async retryPortClash(t: ExecutionContext, once: () => Promise<TestCluster>): Promise<TestCluster> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await once();
      } catch (e) {
        if (attempt >= 3 || !(e instanceof PortClash)) throw e;
        t.log(`cluster start attempt ${attempt}: a node could not bind its port; starting again on new ports`);
      }
    }
  }

  private static async startOnce(t: ExecutionContext, n: number, args: string[], argsFor: ((i: number) => string[]) | null = null): Promise<TestCluster> {
    const c = new TestCluster(n, args);
    c.argsFor = argsFor;
    t.teardown(() => c.destroy());
    const parts: string[] = [];
    for (let i = 1; i <= n; i++) {
      const http = await freePort();
      const peer = await freePort();
      parts.push(`${i}=127.0.0.1:${http}:${peer}`);
      c.urls.set(i, `http://127.0.0.1:${http}`);
    }
    c.peers = parts.join(',');
    for (let i = 1; i <= n; i++) c.spawn(i);
    await c.waitStarted();
    return c;
  }

  /** waitLeaders() after a fresh start; a node that exited because its port was taken means: start again. */
  private async waitStarted(): Promise<void> {
    try {
      // Every replica of a shard must know its leader, not only some: a replica still in a split vote
      // (candidate, leader unknown) would answer a test's first requests with 503 no_leader.
      await this.waitLeaders(30_000, [], true);
    } catch (e) {
      if (bindFailure(this)) {
        this.destroy();
        throw new PortClash((e as Error).message);
      }
      throw e;
    }
  }

  /**
   * Like start(), but every node dials its peers through a LinkProxy
   * (c.proxy) so tests can partition, blackhole and delay links.
   */
  /**
   * Three nodes, one shard, 50 ms ticks; node 3 then restarted with every WAL append delayed by `slowWalMs`
   * (a slow disk: its batches sit in LevelDB, visible, long before they land). Resolves with leaders known.
   */
  static async startWithSlowNode3(t: ExecutionContext, slowWalMs: number): Promise<TestCluster> {
    const c = await TestCluster.start(t, 3, ['--shards', '1', '--tick-ms', '50']);
    await c.kill(3);
    c.argsFor = (i) => (i === 3 ? ['--fault-slow-wal-ms', String(slowWalMs)] : []);
    c.spawn(3);
    await c.waitReady(3);
    await c.waitLeaders();
    return c;
  }

  static async startWithProxy(t: ExecutionContext, n = 3, args: string[] = [], envFor: ((i: number) => Record<string, string>) | null = null): Promise<TestCluster> {
    return TestCluster.retryPortClash(t, () => TestCluster.startWithProxyOnce(t, n, args, envFor));
  }

  private static async startWithProxyOnce(t: ExecutionContext, n: number, args: string[], envFor: ((i: number) => Record<string, string>) | null): Promise<TestCluster> {
    const c = new TestCluster(n, args);
    c.envFor = envFor;
    t.teardown(async () => {
      c.destroy();
      await c.proxy?.close();
    });
    const http = new Map<number, number>();
    const real = new Map<number, number>();
    for (let i = 1; i <= n; i++) {
      http.set(i, await freePort());
      real.set(i, await freePort());
      c.urls.set(i, `http://127.0.0.1:${http.get(i)}`);
    }
    const proxy = await LinkProxy.start(real);
    c.proxy = proxy;
    c.peersFor = (i) => [...http.keys()].map((j) => `${j}=127.0.0.1:${http.get(j)}:${j === i ? real.get(i) : proxy.dialPort(i, j)}`).join(',');
    c.peers = c.peersFor(1);
    for (let i = 1; i <= n; i++) c.spawn(i);
    await c.waitStarted();
    return c;
  }

  spawn(i: number): void {
    const log = openSync(join(this.dir, `node-${i}.log`), 'a');
    const peers = this.peersFor === null ? this.peers : this.peersFor(i);
    const p = spawn(process.execPath, ['--import', 'tsx', 'node/main.ts', '--id', String(i), '--peers', peers,
      '--data', join(this.dir, `node-${i}`), '--log-level', 'warn',
      // Small WAL segments: less zeroing per node start, and roll-overs and segment deletion happen in every test.
      '--wal-segment-bytes', String(4 << 20), ...this.args, ...(this.argsFor === null ? [] : this.argsFor(i))], {
      cwd: ROOT, stdio: ['ignore', log, log], env: { ...NODE_ENV, ...(this.envFor === null ? {} : this.envFor(i)) },
    });
    closeSync(log);
    this.procs.set(i, p);
  }

  url(i: number): string {
    return this.urls.get(i) as string;
  }

  /** Everything node i has logged so far (all its runs: the file is appended to on a restart). */
  logOf(i: number): string {
    return readFileSync(join(this.dir, `node-${i}.log`), 'utf8');
  }

  async map(i: number): Promise<ClusterMapView> {
    const r = await fetch(`${this.url(i)}/v1/cluster`, { signal: AbortSignal.timeout(2000) });
    return (await r.json()) as ClusterMapView;
  }

  /**
   * Wait until every shard has a leader that the live nodes agree on. With everyNode, each
   * live replica of a shard must also know that leader itself (a node that has not heard of it yet, say
   * one still campaigning in a split vote, makes the wait go on).
   */
  async waitLeaders(timeoutMs = 30_000, except: number[] = [], everyNode = false): Promise<Map<number, number>> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const leaders = new Map<number, number>();
      let shards = 0;
      let ok = true;
      for (const i of this.urls.keys()) {
        if (except.includes(i)) continue;
        try {
          const m = await this.map(i);
          shards = m.shards.length;
          for (const s of m.shards) {
            if (s.leader === null || except.includes(s.leader)) {
              // (a node that holds no replica of the shard need not know its leader)
              if (everyNode && s.replicas.includes(i)) ok = false;
              continue;
            }
            const prev = leaders.get(s.id);
            if (prev !== undefined && prev !== s.leader) ok = false;
            leaders.set(s.id, s.leader);
          }
        } catch {
          ok = false;
        }
      }
      if (ok && shards > 0 && leaders.size === shards) return leaders;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`not every shard had a leader within ${timeoutMs} ms`);
  }

  async waitReady(i: number, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exited: number | null = null;
    while (Date.now() < deadline) {
      try {
        const r = await fetch(`${this.url(i)}/ready`, { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) return;
      } catch { /* not up yet */ }
      // A node that exited (a fatal error at start) will not become ready: say so now, not at the deadline.
      exited = this.procs.get(i)?.exitCode ?? null;
      if (exited !== null) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    let tail = '';
    try {
      tail = this.logOf(i).split('\n').slice(-15).join('\n');
    } catch { /* no log yet */ }
    throw new Error(`node ${i} ${exited === null ? `not ready within ${timeoutMs} ms` : `exited (code ${exited}) before it was ready`}; its log ends:\n${tail}`);
  }

  async kill(i: number): Promise<void> {
    const p = this.procs.get(i);
    if (p === undefined || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
    this.procs.delete(i);
  }

  signal(i: number, sig: NodeJS.Signals): void {
    this.procs.get(i)?.kill(sig);
  }

  async restart(i: number): Promise<void> {
    await this.kill(i);
    this.spawn(i);
    await this.waitReady(i);
  }

  destroy(): void {
    for (const p of this.procs.values()) {
      try {
        p.kill('SIGCONT');
        p.kill('SIGKILL');
      } catch { /* already gone */ }
    }
    this.procs.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface HttpResult {
  status: number;
  headers: Headers;
  body: string;
  json: () => any;
}

export async function http(method: string, url: string, body?: string | Uint8Array, headers: Record<string, string> = {}, timeoutMs = 10_000): Promise<HttpResult> {
  const r = await fetch(url, { method, body, headers, signal: AbortSignal.timeout(timeoutMs) });
  const text = await r.text();
  return { status: r.status, headers: r.headers, body: text, json: () => JSON.parse(text) };
}

/**
 * A write that rides out elections, as a client would: 503s that are
 * certainly not applied are retried, and so are unknown outcomes — with the
 * same idempotency key, so a retry never applies twice. Bounded by a deadline.
 */
export async function putRetry(url: string, body: string, opts: { idem?: string; deadlineMs?: number } = {}): Promise<HttpResult> {
  return withRetry('PUT', url, body, opts.idem ?? `it-${Math.random().toString(36).slice(2)}`, opts.deadlineMs ?? 15_000);
}

/** A read that rides out elections: 503s are retried until the deadline. */
export async function getRetry(url: string, deadlineMs = 15_000): Promise<HttpResult> {
  return withRetry('GET', url, undefined, undefined, deadlineMs);
}

async function withRetry(method: string, url: string, body: string | undefined, idem: string | undefined, deadlineMs: number): Promise<HttpResult> {
  const deadline = Date.now() + deadlineMs;
  let last: HttpResult | null = null;
  while (Date.now() < deadline) {
    try {
      last = await http(method, url, body, idem === undefined ? {} : { 'idempotency-key': idem }, 5000);
      if (last.status !== 503 && last.status !== 504) return last;
    } catch {
      // connection trouble: retry (same idempotency key)
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  if (last !== null) return last;
  throw new Error(`${method} ${url} did not complete within ${deadlineMs} ms`);
}

/** A sample from node i's /metrics: the first capture group of `re` (0 if absent). */
export async function metricOf(c: TestCluster, i: number, re: RegExp): Promise<number> {
  return Number(re.exec((await http('GET', `${c.url(i)}/metrics`)).body)?.[1] ?? 0);
}

/** Snapshots node i received and installed. */
export const snapshotsReceived = (c: TestCluster, i: number): Promise<number> =>
  metricOf(c, i, /kv_snapshots_total\{direction="received",result="ok",node="\d+"\} (\d+)/);

/** The term of the first shard as node i knows it (from /v1/cluster: the kv_raft_term gauge is updated once a second). */
export async function firstShardTerm(c: TestCluster, i: number): Promise<number> {
  return (await http('GET', `${c.url(i)}/v1/cluster`)).json().shards[0].term as number;
}

/**
 * Writes v<n> to key k<n % 500> of tenant acme through `url`, for n from where the last call stopped up
 * to the count given, 16 at a time, each retried (putRetry); every one must be acknowledged.
 */
export function numberedWriter(t: ExecutionContext, url: () => string): (upTo: number) => Promise<void> {
  let next = 0;
  return async (upTo) => {
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < upTo) {
        const i = next++;
        const r = await putRetry(`${url()}/v1/kv/acme/k${i % 500}`, `v${i}`, { deadlineMs: 20_000 });
        t.is(r.status, 200, r.body);
      }
    }));
  };
}

/** Wait (50 ms polls, up to deadlineMs) until node i's stale read of acme/<key> returns `value`. */
export async function waitStaleValue(c: TestCluster, i: number, key: string, value: string, deadlineMs = 30_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const r = await http('GET', `${c.url(i)}/v1/kv/acme/${key}?consistency=stale`);
    if (r.status === 200 && r.body === value) return;
    if (Date.now() > deadline) throw new Error(`node ${i} did not read ${value} at ${key} within ${deadlineMs} ms (last: ${r.status} ${r.body.slice(0, 80)})`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/**
 * Move every shard's leadership to node `to` (POST /v1/debug/transfer-leader, asked again while a
 * transfer has not finished: one times out under load) and wait until every shard is quiesced there.
 */
export async function leadAllQuiesced(c: TestCluster, to: number, shards: number, deadlineMs = 40_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const others = (await c.map(1)).shards.filter((s) => s.leader !== to);
    let quiet = 0;
    for (let s = 1; s <= shards; s++) quiet += await metricOf(c, to, new RegExp(`kv_raft_quiesced\\{shard="${s}"[^}]*\\} (\\d+)`));
    if (others.length === 0 && quiet === shards) return;
    if (Date.now() > deadline) throw new Error(`node ${to} leads ${shards - others.length} of ${shards} shards, ${quiet} quiesced`);
    for (const s of others) if (s.leader !== null) await http('POST', `${c.url(s.leader)}/v1/debug/transfer-leader?shard=${s.id}&to=${to}`).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
  }
}
