/**
 * Target `ceiling`: bench/ceiling-server.ts (fastify + a Map, no consensus,
 * no disk) started as a separate process on a free port, driven with the same
 * raw HTTP client as the store (one endpoint, so no routing), stopped by PID.
 * It shows what this machine's HTTP stack and this load generator can do at
 * all: no store can beat it here.
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

export async function openCeilingTarget(o: TargetOptions): Promise<Target> {
  const port = await findFreePorts(1, CEILING_BASE_PORT);
  const url = `http://127.0.0.1:${port}`;
  const logFile = join(o.workDir, `ceiling-${port}.log`);
  const args = ['--import', 'tsx', join(ROOT, 'bench', 'ceiling-server.ts'), '--port', String(port), '--bucket-ms', String(o.keyspace.bucketMs)];
  const child = spawnLogged(process.execPath, args, { ...process.env }, logFile);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start the ceiling server (see ${logFile})`);
  const unregister = registerCleanup(`ceiling server pid ${pid}`, () => stopPid(pid, 5_000), () => killNow(pid), { pids: () => [pid], dirs: [] });
  let http: HttpKv | undefined;
  let closing: Promise<string[]> | null = null;
  const close = (): Promise<string[]> => {
    closing ??= (async () => {
      await http?.close().catch(() => {});
      const note = await stopPid(pid, 5_000);
      unregister();
      return note === undefined ? [] : [note];
    })();
    return closing;
  };
  try {
    o.log(`ceiling: node ${args.join(' ')} (pid ${pid})`);
    const t0 = performance.now();
    await waitFor(`the ceiling server on ${url} (log ${logFile})`, async () => {
      if (!alive(pid) || child.exitCode !== null) throw new Error(`the ceiling server exited (code ${child.exitCode}); see ${logFile}`);
      return healthy(url);
    }, 30_000, 100);
    const startMs = performance.now() - t0;
    o.log(`ceiling: up in ${(startMs / 1000).toFixed(1)} s`);
    http = new HttpKv([url], o.connections, o.timeoutMs, 'spread', undefined, o.verify, o.valueBytes);
    const h = http;
    return {
      kind: 'ceiling',
      info: {
        endpoints: [url],
        started: `node --import tsx bench/ceiling-server.ts --port ${port}`,
        startMs: Math.round(startMs),
        routing: 'one process, one endpoint',
        what: 'fastify + an in-memory Map: no consensus, no disk, no forwarding',
      },
      put: (ref, value) => h.put(ref, value),
      get: (ref, c) => h.get(ref, c),
      scan: (ref, limit, c) => h.scan(ref, limit, c, o.keyspace.bucketMs),
      serverPids: () => [pid],
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
