/**
 * `npx tsx bench/leveldb-layout.ts [--keys N] [--value-bytes B] [--shards S] [--streams K] [--no-meta] [--meta-first] [--stats] [--pairs P]`:
 * what a snapshot catch-up costs LevelDB under two key layouts, in one process, no cluster.
 *
 * A fresh database is loaded with N records spread over S shards (generation 0, written in
 * small batches in random shard order, as live writes land), and left to settle. Then the
 * catch-up: every shard's records are written again as a new generation, two shards at a
 * time (`--streams`, default 2: two senders, one stream each), each in key order in ~1 MB
 * batches, with the install's three meta keys (r <shard> s|g|a) written when a shard's stream
 * ends (`--no-meta`: not written). `--stats` prints LevelDB's own table of levels. Measured:
 * wall time and CPU (every thread: LevelDB's compactions included) of the catch-up, and the
 * CPU of the compactions it leaves behind (until LevelDB is quiet).
 *
 *  - `shard-first` (today's layout): d <shard> <gen> <tenant> 00 <bucket> <key>. A new
 *    generation lies between the shard's old records and the next shard's, so every table
 *    flushed during the catch-up overlaps tables already there, and is merged into them.
 *  - `gen-first`: d <gen> <shard> ... with generations numbered node-wide, so a new one sorts
 *    after every record already there, and meta keys under 0xff, after every record
 *    (`--meta-first`: under 0x30, before every record).
 *
 * What it showed (bench/README, session 13): gen-first takes the compactions out of a catch-up
 * only while nothing else is written; the install's meta keys, written in the same memtables
 * as the streams, bring most of them back.
 *
 * The two alternate, P pairs, each on a fresh database in a temp dir.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BulkPuts } from '../node/bulk-write.ts';
import { openDb, type Db } from '../node/db.ts';
import { num } from './args.ts';

type Layout = 'shard-first' | 'gen-first';

const TENANT = Buffer.from('bench');

function dataKey(layout: Layout, shard: number, gen: number, i: number): Uint8Array {
  const k = Buffer.from(`k${String(i).padStart(9, '0')}`);
  const b = Buffer.alloc(9 + TENANT.length + 1 + 8 + k.length);
  b[0] = 0x64;
  b.writeUInt32BE(layout === 'shard-first' ? shard : gen, 1);
  b.writeUInt32BE(layout === 'shard-first' ? gen : shard, 5);
  TENANT.copy(b, 9);
  b[9 + TENANT.length] = 0;
  b.writeUInt32BE(0, 10 + TENANT.length);
  b.writeUInt32BE(480_000 + (i % 8), 14 + TENANT.length);
  k.copy(b, 18 + TENANT.length);
  return b;
}

/** gen-first: meta keys after every record (0xff), or before (`--meta-first`: 0x30). */
let genFirstMetaTag = 0xff;

function metaKey(layout: Layout, shard: number, kind: string): Uint8Array {
  const b = Buffer.alloc(6);
  b[0] = layout === 'gen-first' ? genFirstMetaTag : 0x72;
  b.writeUInt32BE(shard, 1);
  b[5] = kind.charCodeAt(0);
  return b;
}

const cpuS = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** LevelDB's own account of its compactions: MB read and written, summed over levels. */
async function compactionMb(db: Db): Promise<{ read: number; written: number }> {
  const stats = await db.getProperty('leveldb.stats');
  let read = 0;
  let written = 0;
  for (const line of stats.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length === 6 && /^\d+$/.test(f[0] as string)) {
      read += Number(f[4]);
      written += Number(f[5]);
    }
  }
  return { read, written };
}

/** Wait until LevelDB's compaction counters stop moving for `quietMs`. */
async function settle(db: Db, quietMs: number): Promise<void> {
  let last = -1;
  let since = Date.now();
  for (let n = 0; n < 600; n++) {
    const w = (await compactionMb(db)).written;
    if (w !== last) {
      last = w;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface RunOpts { keys: number; valueBytes: number; shards: number; streams: number; meta: boolean; showStats: boolean }

async function run(layout: Layout, o: RunOpts): Promise<string> {
  const { keys, valueBytes, shards, streams, meta, showStats } = o;
  const dir = mkdtempSync(join(tmpdir(), 'kv-layout-'));
  // The node's own LevelDB options and batch writer (the snapshot receiver's).
  const db = await openDb(dir);
  try {
    const perShard = Math.ceil(keys / shards);
    // Values as the load generator's writes make them: random hex (snappy gains nothing on them).
    const pool = Buffer.from(randomBytes(1 << 16).toString('hex'), 'latin1');
    const value = (i: number): Buffer => pool.subarray((i * 131) % (pool.length - valueBytes), (i * 131) % (pool.length - valueBytes) + valueBytes);
    // Load: batches of 64 records of one shard each, shards in a shuffled round-robin, plus the applied key.
    let seed = 12345;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const next = new Array<number>(shards).fill(0);
    let left = perShard * shards;
    while (left > 0) {
      const s = Math.floor(rnd() * shards);
      if ((next[s] as number) >= perShard) continue;
      const b = new BulkPuts(db);
      for (let j = 0; j < 64 && (next[s] as number) < perShard; j++) {
        const i = next[s] as number;
        // Keys in a random order within the shard, as live writes come.
        const scrambled = (i * 7919) % perShard;
        b.put(dataKey(layout, s, layout === 'shard-first' ? 0 : 1, scrambled), value(scrambled));
        next[s] = i + 1;
        left--;
      }
      b.put(metaKey(layout, s, 'a'), Buffer.from([1, 2, 3]));
      await b.write(false);
    }
    await settle(db, 1500);
    const before = await compactionMb(db);
    const statsBefore = await db.getProperty('leveldb.stats');
    // Catch-up: two streams at a time, each shard's records in key order, ~1 MB batches.
    const c0 = cpuS();
    const w0 = performance.now();
    let gen = 1;
    const stream = async (s: number): Promise<void> => {
      const g = layout === 'shard-first' ? 1 : ++gen;
      const ks: Array<[Uint8Array, number]> = [];
      for (let i = 0; i < perShard; i++) ks.push([dataKey(layout, s, g, i), i]);
      ks.sort((x, y) => Buffer.compare(x[0], y[0]));
      let b = new BulkPuts(db);
      let bytes = 0;
      for (const [k, i] of ks) {
        b.put(k, value(i));
        bytes += k.length + valueBytes;
        if (bytes >= 1 << 20) {
          await b.write(false);
          b = new BulkPuts(db);
          bytes = 0;
        }
      }
      if (meta) for (const kind of ['s', 'g', 'a']) b.put(metaKey(layout, s, kind), Buffer.from([g]));
      await b.write(true);
    };
    const per = Math.ceil(shards / streams);
    await Promise.all(Array.from({ length: streams }, async (_, side) => {
      for (let s = side * per; s < Math.min(shards, (side + 1) * per); s++) await stream(s);
    }));
    const wall = (performance.now() - w0) / 1000;
    const cpu = cpuS() - c0;
    const during = await compactionMb(db);
    if (showStats) process.stdout.write(`${layout} before catch-up:\n${statsBefore}\nafter:\n${await db.getProperty('leveldb.stats')}\n`);
    await settle(db, 1500);
    const after = await compactionMb(db);
    const cpuAfter = cpuS() - c0 - cpu;
    const mb = (perShard * shards * (dataKey(layout, 0, 1, 0).length + valueBytes)) / 1e6;
    return `${layout.padEnd(11)}: ${mb.toFixed(0)} MB in ${wall.toFixed(2)} s = ${(mb / wall).toFixed(1)} MB/s; CPU ${cpu.toFixed(2)} s (${(cpu / mb * 1000).toFixed(1)} ms/MB) ` +
      `+ ${cpuAfter.toFixed(2)} s after; compaction written ${(during.written - before.written).toFixed(0)} MB during, ${(after.written - before.written).toFixed(0)} MB in all`;
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  let keys = 400_000;
  let valueBytes = 256;
  let shards = 16;
  let pairs = 2;
  let streams = 2;
  let meta = true;
  let showStats = false;
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    if (f === '--keys') keys = num(f, argv[++i], 1);
    else if (f === '--value-bytes') valueBytes = num(f, argv[++i], 1, 1 << 20);
    else if (f === '--shards') shards = num(f, argv[++i], 2, 1024);
    else if (f === '--pairs') pairs = num(f, argv[++i], 1, 100);
    else if (f === '--streams') streams = num(f, argv[++i], 1, 64);
    else if (f === '--no-meta') meta = false;
    else if (f === '--stats') showStats = true;
    else if (f === '--meta-first') genFirstMetaTag = 0x30;
    else throw new Error(`unknown flag ${f}`);
  }
  process.stdout.write(`leveldb-layout: ${keys} records of ${valueBytes} B over ${shards} shards, ${streams} streams at a time, ${meta ? 'install metas written' : 'no install metas'}, ${pairs} pairs\n`);
  for (let p = 1; p <= pairs; p++) {
    for (const layout of (p % 2 === 1 ? ['shard-first', 'gen-first'] : ['gen-first', 'shard-first']) as Layout[]) {
      process.stdout.write(`pair ${p} ${await run(layout, { keys, valueBytes, shards, streams, meta, showStats })}\n`);
    }
  }
}

await main();
