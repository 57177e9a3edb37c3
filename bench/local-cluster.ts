/**
 * A throwaway local shardkv cluster driven through ./cluster.sh (start, stop,
 * clean) in its own KV_DATA_DIR and ports. Used by bench:quick and by the
 * `store` target of `npm run bench` when no --endpoints are given.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, alive, killNow, portOpen, readPid, run, waitFor } from './proc.ts';

const CLUSTER_SH = join(ROOT, 'cluster.sh');

export interface LocalClusterOptions {
  nodes: number;
  shards: number;
  /** Replicas per shard (cluster.sh default: min(3, nodes)). */
  replicas?: number;
  /** HTTP port of node 1 (node i listens on basePort + i - 1). */
  basePort: number;
  /** Peer port of node 1 (cluster.sh default: basePort + 1000). */
  peerBasePort?: number;
  tickMs?: number;
  /** Extra node flags (KV_NODE_ARGS). */
  nodeArgs?: string;
  /** Limit for `cluster.sh start` (ms). */
  startTimeoutMs?: number;
}

export class LocalCluster {
  private started = false;
  private pids: number[] = [];
  private tearing: Promise<string[]> | null = null;

  /** logsOut: where teardown copies the node logs before cleaning (none when undefined). */
  constructor(readonly dataDir: string, readonly opts: LocalClusterOptions, readonly logsOut?: string) {}

  get peerBasePort(): number {
    return this.opts.peerBasePort ?? this.opts.basePort + 1000;
  }

  env(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KV_')) env[k] = v;
    for (const [k, v] of Object.entries(this.vars())) env[k] = v;
    return env;
  }

  private vars(): Record<string, string> {
    const o = this.opts;
    const v: Record<string, string> = { KV_DATA_DIR: this.dataDir, KV_BASE_PORT: String(o.basePort), KV_SHARDS: String(o.shards) };
    if (o.peerBasePort !== undefined) v['KV_PEER_BASE_PORT'] = String(o.peerBasePort);
    if (o.replicas !== undefined) v['KV_REPLICAS'] = String(o.replicas);
    if (o.tickMs !== undefined) v['KV_TICK_MS'] = String(o.tickMs);
    if (o.nodeArgs !== undefined && o.nodeArgs !== '') v['KV_NODE_ARGS'] = o.nodeArgs;
    return v;
  }

  /** The shell command that starts this cluster (for reports). */
  command(): string {
    const vars = Object.entries(this.vars()).map(([k, v]) => `${k}=${/\s/.test(v) ? `'${v}'` : v}`).join(' ');
    return `${vars} ./cluster.sh start ${this.opts.nodes}`;
  }

  endpoints(): string[] {
    return Array.from({ length: this.opts.nodes }, (_, i) => `http://127.0.0.1:${this.opts.basePort + i}`);
  }

  /** Start and wait until every shard has a leader; returns how long it took (ms). Throws (after which teardown() must run). */
  async start(): Promise<number> {
    const n = this.opts.nodes;
    for (let i = 0; i < n; i++) {
      for (const p of [this.opts.basePort + i, this.peerBasePort + i]) {
        if (await portOpen(p)) throw new Error(`port ${p} is already in use: is another cluster running there?`);
      }
    }
    const t0 = performance.now();
    this.started = true; // from here on, cleanup must run
    const r = await run(CLUSTER_SH, ['start', String(n)], this.env(), this.opts.startTimeoutMs ?? 90_000);
    this.collectPids();
    if (r.code !== 0) throw new Error(`cluster.sh start failed (exit ${r.code}):\n${r.out}`);
    if (this.pids.length !== n) throw new Error(`expected ${n} pid files in ${this.dataDir}, found ${this.pids.length}`);
    return performance.now() - t0;
  }

  nodePids(): number[] {
    return this.pids;
  }

  private collectPids(): void {
    // pid files may appear after start() gave up (e.g. interrupted during cluster.sh start)
    for (let i = 1; i <= this.opts.nodes; i++) {
      const p = readPid(this.dataDir, i);
      if (p !== undefined && !this.pids.includes(p)) this.pids.push(p);
    }
  }

  /** Stop, copy logs out, clean. Idempotent (a second call waits for the first); never throws. */
  teardown(): Promise<string[]> {
    if (!this.started) return Promise.resolve([]);
    this.tearing ??= this.doTeardown();
    return this.tearing;
  }

  /** Last resort for a process 'exit' handler: SIGKILL the nodes and remove the data dir, synchronously. */
  teardownSync(): void {
    if (!this.started) return;
    this.collectPids();
    for (const pid of this.pids) killNow(pid);
    try { rmSync(this.dataDir, { recursive: true, force: true }); } catch { /* best effort */ }
    this.started = false;
  }

  private async doTeardown(): Promise<string[]> {
    const notes: string[] = [];
    this.collectPids();
    const stop = await run(CLUSTER_SH, ['stop'], this.env(), 30_000);
    if (stop.code !== 0) notes.push(`cluster.sh stop exited ${stop.code}: ${stop.out.trim()}`);
    for (const pid of this.pids) {
      if (alive(pid)) {
        notes.push(`node pid ${pid} still alive after cluster.sh stop: SIGKILL`);
        killNow(pid);
      }
    }
    await waitFor('killed nodes to exit', () => this.pids.every((p) => !alive(p)), 3_000, 50).catch(() => {});
    if (this.logsOut !== undefined) {
      try {
        mkdirSync(this.logsOut, { recursive: true });
        if (existsSync(this.dataDir)) {
          for (const f of readdirSync(this.dataDir)) if (f.endsWith('.log')) copyFileSync(join(this.dataDir, f), join(this.logsOut, f));
        }
      } catch (e) {
        notes.push(`copying logs failed: ${(e as Error).message}`);
      }
    }
    const clean = await run(CLUSTER_SH, ['clean'], this.env(), 30_000);
    if (clean.code !== 0) {
      notes.push(`cluster.sh clean exited ${clean.code}: ${clean.out.trim()}`);
      if (this.pids.every((p) => !alive(p))) rmSync(this.dataDir, { recursive: true, force: true });
    }
    this.started = false;
    return notes;
  }
}
