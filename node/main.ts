import { mkdirSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import pino from 'pino';
import { loadConfig, USAGE } from './config.ts';
import { buildApp } from './http.ts';
import { KvNode } from './runtime.ts';
import { PEER_PROTOCOL } from '../shard/raft-codec.ts';

/** Entry point of one storage node: `tsx node/main.ts --id 1 --peers ...` (see README). */
async function main(): Promise<void> {
  let cfg;
  try {
    cfg = loadConfig(process.argv.slice(2), process.env);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    process.exit(2);
  }
  const log = pino({ level: cfg.logLevel, base: { node: cfg.id } });
  mkdirSync(cfg.dataDir, { recursive: true });
  const node = new KvNode(cfg, log);
  await node.start();
  // V8 grows its heap by up to 4x the live size after a full GC when allocation is fast (a write load):
  // 300 MiB of RSS for 60-100 MiB live. A smaller factor keeps RSS near the data (see --heap-growing-percent).
  // Only once started: replaying the WAL allocates fast with a growing live set, and a smaller factor's
  // extra full GCs made a restart at 400k keys 0.5 s slower. Off by default: 2x cost linearizable reads
  // 10-17 % more CPU, and 1.5x made a snapshot catch-up 25 % slower (bench/README.md, "Session 8").
  if (cfg.heapGrowingPercent > 0) setFlagsFromString(`--heap-growing-percent=${cfg.heapGrowingPercent}`);
  const app = buildApp(node, log);
  const [host, port] = [cfg.listen.slice(0, cfg.listen.lastIndexOf(':')), Number(cfg.listen.slice(cfg.listen.lastIndexOf(':') + 1))];
  await app.listen({ host, port });
  log.info({ listen: cfg.listen, peer: cfg.peerListen, data: cfg.dataDir, uvThreadpoolSize: process.env['UV_THREADPOOL_SIZE'] ?? 'default (4)' }, 'serving');
  if (cfg.peerProtocol < PEER_PROTOCOL) log.warn({ peerProtocol: cfg.peerProtocol }, 'speaking an older peer protocol (--peer-protocol): followers count no leader contact from probes, bounded stale reads here answer too_stale more');
  if (cfg.faultSlowWalMs > 0) log.warn({ faultSlowWalMs: cfg.faultSlowWalMs }, 'FAULT INJECTED (--fault-slow-wal-ms): every WAL append is delayed, for tests only');
  if (cfg.plantBug !== null) log.warn({ plantBug: cfg.plantBug }, 'PLANTED BUG ENABLED (--plant-bug): this node is deliberately incorrect, for testing the fault suite only');

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'draining in-flight requests, then closing LevelDB');
    const force = setTimeout(() => {
      log.error('shutdown took longer than 10 s; exiting');
      process.exit(1);
    }, 10_000);
    force.unref();
    void (async () => {
      await app.close();
      await node.stop();
      log.info('stopped cleanly');
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((e: unknown) => {
  process.stderr.write(`fatal: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
