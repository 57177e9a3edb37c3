/**
 * Helpers of `npm run bench:scaling` (bench/scaling.ts): a store client on a
 * running cluster (the store target's raw client, leader routing), /proc
 * sampling (RSS, CPU), the nodes' own views (GET /v1/cluster, /metrics, the
 * pino logs cluster.sh writes into the data dir) and a fast bulk loader.
 * Every network call has a timeout; every loop is bounded.
 */
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClientRing, bucketOf, loadHash32, type ClusterMapWire } from '../client/index.ts';
import type { StopSignal } from './cleanup.ts';
import { clkTck, cpuTicks } from './proc.ts';
import { HttpKv } from './targets/http-kv.ts';
import type { OpResult, Target } from './targets/target.ts';
import { keyRef, type Keyspace } from './workload.ts';

// ------------------------------------------------------------------ cluster views

export type ShardView = ClusterMapWire['shards'][number];

/** GET /v1/cluster of one node (undefined when it does not answer 200 within timeoutMs). */
export async function clusterView(url: string, timeoutMs = 1_000): Promise<ClusterMapWire | undefined> {
  try {
    const r = await fetch(`${url}/v1/cluster`, { signal: AbortSignal.timeout(timeoutMs) });
    if (r.status !== 200) {
      await r.body?.cancel().catch(() => {});
      return undefined;
    }
    return (await r.json()) as ClusterMapWire;
  } catch {
    return undefined;
  }
}

/** Every shard's applied index on `url` is at least target[shard]. */
export async function caughtUp(url: string, target: Map<number, number>): Promise<boolean> {
  const v = await clusterView(url, 1_000);
  if (v === undefined) return false;
  for (const [id, t] of target) {
    const s = v.shards.find((x) => x.id === id);
    if (s === undefined || s.appliedIndex === null || s.appliedIndex < t) return false;
  }
  return true;
}

/** GET <path> answered 200 within timeoutMs; the body, when asked for. */
export async function get200(url: string, timeoutMs = 1_000): Promise<{ ok: boolean; status: number; body?: Buffer }> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const body = Buffer.from(await r.arrayBuffer());
    return { ok: r.status === 200, status: r.status, body };
  } catch {
    return { ok: false, status: 0 };
  }
}

/**
 * Per shard, the leader's view (leader id, its commit index) from the views of
 * the given nodes: the view with the highest term that names a leader, and
 * that leader's own commit index when its node answered.
 */
export function leadersOf(views: Array<ClusterMapWire | undefined>): Map<number, { leader: number; term: number; commit: number | null }> {
  const byNode = new Map<number, ClusterMapWire>();
  for (const v of views) if (v?.nodeId !== undefined) byNode.set(v.nodeId, v);
  const out = new Map<number, { leader: number; term: number; commit: number | null }>();
  for (const v of views) {
    for (const s of v?.shards ?? []) {
      if (s.leader === null) continue;
      const cur = out.get(s.id);
      const term = s.term ?? 0;
      if (cur !== undefined && cur.term >= term) continue;
      out.set(s.id, { leader: s.leader, term, commit: null });
    }
  }
  for (const [id, l] of out) {
    const own = byNode.get(l.leader)?.shards.find((s) => s.id === id);
    if (own !== undefined && own.leader === l.leader) l.commit = own.commitIndex;
  }
  return out;
}

/** Sum of a Prometheus metric's samples whose labels include every given label=value. */
export async function metricSum(url: string, name: string, labels: Record<string, string> = {}, timeoutMs = 2_000): Promise<number | undefined> {
  const r = await get200(`${url}/metrics`, timeoutMs);
  if (!r.ok || r.body === undefined) return undefined;
  let sum = 0;
  for (const line of r.body.toString('utf8').split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== '{' && line[name.length] !== ' ')) continue;
    const sp = line.lastIndexOf(' ');
    const lab = line.slice(name.length, sp);
    if (!Object.entries(labels).every(([k, v]) => lab.includes(`${k}="${v}"`))) continue;
    const v = Number(line.slice(sp + 1));
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

// ------------------------------------------------------------------ /proc

/** VmRSS (or VmHWM: the peak) of a process in MiB, from /proc/<pid>/status. */
export function memMiB(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? undefined : Number(m[1]) / 1024;
  } catch {
    return undefined;
  }
}

/** CPU of each process over windowMs (utime + stime from /proc/<pid>/stat), % of one core. */
export async function cpuOver(pids: number[], windowMs: number, stop: StopSignal): Promise<Array<number | undefined>> {
  const a = pids.map(cpuTicks);
  const t0 = performance.now();
  while (!stop.stopped && performance.now() - t0 < windowMs) await sleep(Math.min(200, windowMs - (performance.now() - t0) + 1));
  const b = pids.map(cpuTicks);
  const secs = (performance.now() - t0) / 1000;
  return pids.map((_, i) => {
    const x = a[i];
    const y = b[i];
    return x === undefined || y === undefined ? undefined : ((y - x) / clkTck() / secs) * 100;
  });
}

export const loadAvg = (): number[] => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);

// ------------------------------------------------------------------ node logs

/** Bytes in a file now (0 when it does not exist): read the log from there later. */
export function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** The pino JSON lines of a log file from byte `offset` on (other lines skipped). */
export function logLinesFrom(path: string, offset: number): Array<Record<string, unknown>> {
  let text = '';
  try {
    const size = statSync(path).size;
    if (size <= offset) return [];
    const fd = openSync(path, 'r');
    try {
      const buf = Buffer.alloc(size - offset);
      readSync(fd, buf, 0, buf.length, offset);
      text = buf.toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch {
    return [];
  }
  const out: Array<Record<string, unknown>> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try { out.push(JSON.parse(line) as Record<string, unknown>); } catch { /* not JSON */ }
  }
  return out;
}

// ------------------------------------------------------------------ store client

export interface StoreClient {
  http: HttpKv;
  ring: ClientRing;
  map: ClusterMapWire;
  target: Target;
  /** Shard of key i of the keyspace. */
  shardOfKey(ks: Keyspace, i: number): number;
}

/**
 * The store target's raw client (HttpKv, `leader` routing: writes and
 * linearizable reads straight to the shard leader) on a running cluster whose
 * processes are `pids()` (for the CPU figures of runPhase).
 */
export async function storeClient(urls: string[], connections: number, timeoutMs: number, valueBytes: number, pids: () => number[]): Promise<StoreClient> {
  let map: ClusterMapWire | undefined;
  for (const u of urls) if ((map = await clusterView(u, 2_000)) !== undefined) break;
  if (map === undefined) throw new Error(`no node answered GET /v1/cluster (${urls.join(' ')})`);
  const bucketMs = map.bucketMs;
  const ring = new ClientRing(map.shards.map((s) => s.id), map.ring.vnodes, await loadHash32());
  const http = new HttpKv(urls, connections, timeoutMs, 'leader', { ring, bucketMs }, true, valueBytes);
  await http.init();
  const target: Target = {
    kind: 'store',
    info: { endpoints: urls, shards: map.shards.length, routing: 'writes and linearizable reads to the shard leader (as the store target)' },
    put: (ref, value) => http.put(ref, value),
    get: (ref, c) => http.get(ref, c),
    scan: (ref, limit, c) => http.scan(ref, limit, c, bucketMs),
    serverPids: pids,
    counters: () => ({ ...http.counters }),
    close: async () => { await http.close().catch(() => {}); return []; },
  };
  return {
    http, ring, map, target,
    shardOfKey: (ks, i) => {
      const r = keyRef(ks, i);
      return ring.shardFor(r.tenant, bucketOf(r.t, bucketMs));
    },
  };
}

// ------------------------------------------------------------------ bulk load

export interface LoadProgress { written: number; failed: number; elapsedMs: number }

export interface BulkLoadResult extends LoadProgress {
  errorCodes: Record<string, number>;
  /** Ended by the time limit (or a stop) before every key was written. */
  cut: boolean;
}

/**
 * Write keys `from` .. `to`-1 of the keyspace once each (ascending, so the
 * written set is a prefix), `concurrency` writers, each key retried up to 5
 * times, bounded by limitMs. `each` runs once a second; `checkpoint(n)` runs
 * (awaited, writers paused) when the written count first reaches each of
 * `checkpoints`.
 */
export async function bulkLoad(o: {
  put: (i: number) => Promise<OpResult>;
  from: number; to: number; concurrency: number; limitMs: number; stop: StopSignal;
  each?: (p: LoadProgress, perSec: number) => void;
  checkpoints?: number[];
  checkpoint?: (p: LoadProgress) => Promise<void>;
}): Promise<BulkLoadResult> {
  const t0 = performance.now();
  const errorCodes: Record<string, number> = {};
  let next = o.from;
  let written = 0;
  let failed = 0;
  let last = 0;
  let gate: Promise<void> | null = null;
  const pending = [...(o.checkpoints ?? [])].sort((a, b) => a - b);
  const prog = (): LoadProgress => ({ written, failed, elapsedMs: performance.now() - t0 });
  const ticker = setInterval(() => {
    o.each?.(prog(), written - last);
    last = written;
  }, 1_000);
  const timeUp = (): boolean => o.stop.stopped || performance.now() - t0 > o.limitMs;
  const worker = async (): Promise<void> => {
    while (!timeUp() && next < o.to) {
      if (gate !== null) { await gate; continue; }
      const i = next++;
      let done = false;
      for (let attempt = 0; attempt < 5 && !done && !timeUp(); attempt++) {
        const r = await o.put(i).catch((e: unknown): OpResult => ({ ok: false, code: `ERR ${(e as Error).message}` }));
        if (r.ok) done = true;
        else {
          const c = r.code ?? 'unknown';
          errorCodes[c] = (errorCodes[c] ?? 0) + 1;
          await sleep(50 * (attempt + 1));
        }
      }
      if (done) written++;
      else failed++;
      if (pending.length > 0 && written >= (pending[0] as number) && gate === null && o.checkpoint !== undefined) {
        pending.shift();
        const cp = o.checkpoint;
        gate = (async () => { await cp(prog()).catch(() => {}); })().finally(() => { gate = null; });
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(o.concurrency, o.to - o.from)) }, () => worker()));
    if (gate !== null) await gate;
  } finally {
    clearInterval(ticker);
  }
  return { ...prog(), errorCodes, cut: written + failed < o.to - o.from };
}
