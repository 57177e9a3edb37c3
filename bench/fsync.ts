/**
 * What one durable write costs on this disk, three ways, side by side:
 *
 *  - `leveldb`    — a LevelDB batch with sync (what a node does per persist batch today:
 *                   append to LevelDB's growing log file, then fdatasync);
 *  - `append`     — append a record to a plain file and fdatasync it (the file grows, so
 *                   the file system must commit its size with the data);
 *  - `prewritten` — overwrite the next slot of a file whose blocks were written and
 *                   synced beforehand (a preallocated WAL segment, as etcd's WAL keeps):
 *                   fdatasync has only the data to flush;
 *  - `wal-2ops`   — the same prewritten slots from the event loop as the WAL wrote them
 *                   before: an asynchronous write, then an asynchronous fdatasync (two
 *                   thread-pool round trips);
 *  - `wal-dsync`  — the same with the file opened O_DSYNC, as node/wal.ts writes now: one
 *                   asynchronous write that returns once the data is durable.
 *
 * Each method's CPU (this process: the event loop, the thread pool and the kernel
 * work done on their behalf) is reported per write.
 *
 * The methods alternate in short rounds so a noisy, shared machine weighs on each alike.
 *
 *   npm run bench:fsync -- [--rounds 10] [--per-round 100] [--batch-bytes 5000]
 */
import { closeSync, constants, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { newHistogram, recordMs, summarize, type Histogram } from './hist.ts';

interface Opts { rounds: number; perRound: number; batchBytes: number }

function parse(argv: string[]): Opts {
  const o: Opts = { rounds: 10, perRound: 100, batchBytes: 5000 };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    const v = Number(argv[++i]);
    if (!Number.isInteger(v) || v < 1) throw new Error(`${f} needs a positive integer`);
    if (f === '--rounds') o.rounds = v;
    else if (f === '--per-round') o.perRound = v;
    else if (f === '--batch-bytes') o.batchBytes = v;
    else throw new Error(`unknown flag ${f}`);
  }
  return o;
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'bench-fsync-'));
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  process.on('SIGINT', () => { cleanup(); process.exit(130); });
  const total = o.rounds * o.perRound;
  const rec = Buffer.alloc(o.batchBytes, 7);
  const db = new ClassicLevel<Uint8Array, Uint8Array>(join(dir, 'db'), { keyEncoding: 'view', valueEncoding: 'view' });
  await db.open();
  const appendFd = openSync(join(dir, 'append.log'), 'w');
  // A file with every slot a method will use written (zeros) and synced beforehand, as a WAL segment is.
  const zero = Buffer.alloc(1 << 20);
  const prewrite = (name: string): string => {
    const path = join(dir, name);
    const fd = openSync(path, 'w');
    for (let off = 0; off < total * o.batchBytes; off += zero.length) writeSync(fd, zero, 0, zero.length, off);
    fdatasyncSync(fd);
    closeSync(fd);
    return path;
  };
  const preFd = openSync(prewrite('pre.log'), 'r+');
  const methods = ['leveldb', 'append', 'prewritten', 'wal-2ops', 'wal-dsync'] as const;
  const twoOps = await open(prewrite('two-ops.log'), constants.O_RDWR);
  const dsync = await open(prewrite('dsync.log'), constants.O_RDWR | constants.O_DSYNC);
  const hs = Object.fromEntries(methods.map((m) => [m, newHistogram()])) as Record<string, Histogram>;
  const busy = Object.fromEntries(methods.map((m) => [m, 0])) as Record<string, number>;
  const cpu = Object.fromEntries(methods.map((m) => [m, 0])) as Record<string, number>;
  let n = 0;
  const load0 = loadavg()[0] as number;
  for (let r = 0; r < o.rounds; r++) {
    for (const m of methods) {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      for (let i = 0; i < o.perRound; i++) {
        const s = performance.now();
        const k = r * o.perRound + i;
        if (m === 'leveldb') {
          // ~16 ops like a persist batch of a busy node, same bytes as the file methods.
          const ops = [];
          const per = Math.max(1, Math.floor(o.batchBytes / 16));
          for (let j = 0; j < 16; j++) ops.push({ type: 'put' as const, key: Buffer.from(`k${n++}`), value: rec.subarray(0, per) });
          await db.batch(ops, { sync: true });
        } else if (m === 'append') {
          writeSync(appendFd, rec);
          fdatasyncSync(appendFd);
        } else if (m === 'prewritten') {
          writeSync(preFd, rec, 0, rec.length, k * o.batchBytes);
          fdatasyncSync(preFd);
        } else if (m === 'wal-2ops') {
          await twoOps.write(rec, 0, rec.length, k * o.batchBytes);
          await twoOps.datasync();
        } else {
          await dsync.write(rec, 0, rec.length, k * o.batchBytes);
        }
        recordMs(hs[m] as Histogram, performance.now() - s);
      }
      busy[m] = (busy[m] as number) + (performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu[m] = (cpu[m] as number) + c.user + c.system;
    }
  }
  await db.close();
  closeSync(appendFd);
  closeSync(preFd);
  await twoOps.close();
  await dsync.close();
  cleanup();
  console.log(`## durable write of ${o.batchBytes} B: ${o.rounds} rounds × ${o.perRound} per method, alternating; load average ${load0.toFixed(1)} → ${(loadavg()[0] as number).toFixed(1)}; dir ${tmpdir()}\n`);
  console.log('| method | writes/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | CPU µs/write |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const m of Object.keys(hs)) {
    const s = summarize(hs[m] as Histogram);
    console.log(`| ${m} | ${Math.round(total / ((busy[m] as number) / 1000))} | ${s.p50Ms.toFixed(2)} | ${s.p90Ms.toFixed(2)} | ${s.p99Ms.toFixed(2)} | ${s.p999Ms.toFixed(2)} | ${s.maxMs.toFixed(2)} | ${Math.round((cpu[m] as number) / total)} |`);
  }
}

main().catch((e: unknown) => {
  console.error((e as Error).message);
  process.exit(1);
});
