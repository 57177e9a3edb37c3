/**
 * Target `ceiling`: bench/ceiling-server.ts (fastify + a Map, no consensus,
 * no disk) started as a separate process on a free port, driven with the same
 * raw HTTP client as the store (one endpoint, so no routing), stopped by PID.
 * It shows what this machine's HTTP stack and this load generator can do at
 * all: no store can beat it here. `--ceiling-procs N` starts N such processes,
 * each partition (tenant, bucket) on one of them by hash: what N processes
 * sharing the two cores cost per request, the fair yardstick for a 3-node store.
 */
import { join } from 'node:path';
import { registerCleanup } from '../cleanup.ts';
import { ROOT, alive, findFreePorts, killNow, spawnLogged, stopPid, waitFor } from '../proc.ts';
import { HttpKv } from './http-kv.ts';
import type { Target, TargetOptions } from './target.ts';

export const CEILING_BASE_PORT = 17301;

async function healthy(url: string): Promise<boolean> {
  try {
    const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1_000) });
    await r.arrayBuffer();
    return r.ok;
  } catch {
    return false;
  }
}

/**
 * `floor` (kind 'floor'): three such processes that answer a PUT only once its record is durable on the
 * process and one peer (`--replicate`, bench/floor-log.ts): the ceiling plus the least a replicated,
 * fsync'd write needs.
 */
export async function openCeilingTarget(o: TargetOptions, kind: 'ceiling' | 'ceiling3' | 'floor' = 'ceiling'): Promise<Target> {
  const procs = kind === 'floor' ? 3 : o.ceilingProcs ?? 1;
  const ports: number[] = [];
  for (let i = 0; i < procs; i++) ports.push(await findFreePorts(1, (ports.at(-1) ?? CEILING_BASE_PORT - 1) + 1));
  const peerPorts: number[] = [];
  if (kind === 'floor') for (let i = 0; i < procs; i++) peerPorts.push(await findFreePorts(1, (peerPorts.at(-1) ?? (ports.at(-1) as number) + 100) + 1));
  const peers = peerPorts.map((p, i) => `${i + 1}=${p}`).join(',');
  const urls = ports.map((port) => `http://127.0.0.1:${port}`);
  const children = ports.map((port, i) => {
    const logFile = join(o.workDir, `ceiling-${port}.log`);
    const args = ['--import', 'tsx', join(ROOT, 'bench', 'ceiling-server.ts'), '--port', String(port), '--bucket-ms', String(o.keyspace.bucketMs),
      ...(kind === 'floor' ? ['--replicate', '--id', String(i + 1), '--peers', peers, '--dir', join(o.workDir, `floor-${port}`)] : [])];
    const child = spawnLogged(process.execPath, args, { ...process.env }, logFile);
    const pid = child.pid;
    if (pid === undefined) throw new Error(`could not start the ceiling server (see ${logFile})`);
    const unregister = registerCleanup(`ceiling server pid ${pid}`, () => stopPid(pid, 5_000), () => killNow(pid), { pids: () => [pid], dirs: [] });
    o.log(`ceiling: node ${args.join(' ')} (pid ${pid})`);
    return { child, pid, unregister, logFile, url: `http://127.0.0.1:${port}` };
  });
  let http: HttpKv | undefined;
  let closing: Promise<string[]> | null = null;
  const close = (): Promise<string[]> => {
    closing ??= (async () => {
      await http?.close().catch(() => {});
      const notes: string[] = [];
      for (const c of children) {
        const note = await stopPid(c.pid, 5_000);
        c.unregister();
        if (note !== undefined) notes.push(note);
      }
      return notes;
    })();
    return closing;
  };
  try {
    const t0 = performance.now();
    for (const c of children) {
      await waitFor(`the ceiling server on ${c.url} (log ${c.logFile})`, async () => {
        if (!alive(c.pid) || c.child.exitCode !== null) throw new Error(`the ceiling server exited (code ${c.child.exitCode}); see ${c.logFile}`);
        return healthy(c.url);
      }, 30_000, 100);
    }
    const startMs = performance.now() - t0;
    o.log(`ceiling: up in ${(startMs / 1000).toFixed(1)} s`);
    // One process: every request to it. Several: a partition (tenant, bucket) always to the same one.
    http = new HttpKv(urls, o.connections, o.timeoutMs, procs === 1 ? 'spread' : 'partition', undefined, o.verify, o.valueBytes);
    const h = http;
    return {
      kind,
      info: {
        endpoints: urls,
        started: `node --import tsx bench/ceiling-server.ts --port ${ports.join('|')}`,
        startMs: Math.round(startMs),
        routing: procs === 1 ? 'one process, one endpoint' : `${procs} processes, a partition on one of them by hash`,
        what: kind === 'floor'
          ? 'fastify + an in-memory Map; a PUT answered once durable (O_DSYNC append) here and on one of two peers: no terms, elections, log in memory or state on disk'
          : 'fastify + an in-memory Map: no consensus, no disk, no forwarding',
      },
      put: (ref, value) => h.put(ref, value),
      get: (ref, c) => h.get(ref, c),
      scan: (ref, limit, c) => h.scan(ref, limit, c, o.keyspace.bucketMs),
      serverPids: () => children.map((c) => c.pid),
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
