/**
 * Disk faults on one node of a real cluster.
 *
 * Full disk: node 3's data directory is a small tmpfs (mounted by the test; root only). When LevelDB
 * cannot write, the node stops serving (503 not_ready, outcome not_applied; /ready 503) instead of
 * acknowledging anything it did not persist, while the other two keep the shard available. Once space
 * is freed and the node restarted, it catches up and every replica holds the same data.
 *
 * Torn log tail: node 3 is killed with -9 during writes and the tail of its newest LevelDB log file
 * is cut off, as a crash in the middle of a write leaves it. LevelDB drops the torn record, the
 * replica reloads a consistent prefix of its Raft log, catches up from the leader, and no
 * acknowledged write is lost.
 *
 * Torn WAL tail: the same with the tail of node 3's Raft WAL (small segments, frequent compaction, so
 * segments roll and are deleted, and a restarted node may need a snapshot): the last record of its
 * newest segment is damaged, as a power loss in the middle of a write leaves it.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, truncateSync, writeFileSync, writeSync, rmSync, cpSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import test from 'ava';
import { awaitConvergence } from '../fault/checks.ts';
import { parseSegment } from '../../node/wal.ts';
import { TestCluster, getRetry, http, leadAllQuiesced } from './harness.ts';

const ARGS = ['--shards', '2', '--tick-ms', '50'];
const canMount = process.getuid?.() === 0 && spawnSync('sh', ['-c', 'd=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs "$d" && umount "$d" && rmdir "$d"']).status === 0;
/** CI runs as root and must run this test; elsewhere it needs root (mount). */
const rootTest = canMount || process.env['CI'] === 'true' ? test.serial : test.serial.skip;

/**
 * Per key: the last acknowledged value, then the values written after it whose outcome is
 * unknown (a failed write may still have been applied: e.g. a leader killed after its
 * append reached a follower) — the key must hold one of them.
 */
type Acked = Map<string, string[]>;

async function writeMany(c: TestCluster, via: number[], from: number, count: number, bytes: number, acked: Acked): Promise<number> {
  let failed = 0;
  for (let i = from; i < from + count; i++) {
    const v = `${i}:`.padEnd(bytes, 'x');
    const k = `k${i % 64}`;
    let certainlyNot = false;
    try {
      const r = await http('PUT', `${c.url(via[i % via.length] as number)}/v1/kv/disk/${k}`, v, { 'idempotency-key': `d-${i}` }, 5000);
      if (r.status === 200) {
        acked.set(k, [v]);
        continue;
      }
      try {
        certainlyNot = r.json().error?.outcome === 'not_applied';
      } catch { /* not JSON: unknown */ }
    } catch { /* network error: unknown */ }
    failed++;
    if (!certainlyNot) acked.get(k)?.push(v);
  }
  return failed;
}

/** Every replica converges; if not, the test log gets node 3's last lines (the node each test hurts). */
async function assertConverged(t: import('ava').ExecutionContext, c: TestCluster): Promise<void> {
  const conv = await awaitConvergence(c, [1, 2, 3], 30_000);
  if (conv.problems.length > 0) t.log(`node 3's log, last lines:\n${c.logOf(3).split('\n').slice(-25).join('\n')}`);
  t.deepEqual(conv.problems, []);
}

async function checkAcked(t: import('ava').ExecutionContext, c: TestCluster, acked: Acked): Promise<void> {
  for (const [k, vs] of acked) {
    const r = await getRetry(`${c.url(1 + (k.length % 3))}/v1/kv/disk/${k}`);
    const got = r.body.slice(0, 16);
    t.true(vs.some((v) => v.slice(0, 16) === got), `acknowledged write of ${k} lost: holds ${got}, acknowledged ${(vs[0] as string).slice(0, 16)}${vs.length > 1 ? ` (or one of ${vs.length - 1} later writes with unknown outcome)` : ''}`);
  }
}

/** Node 3 moved onto a 64 MiB tmpfs with about 3 MiB left free (a `filler` file), restarted; returns its directory. */
async function onSmallDisk(t: import('ava').ExecutionContext, c: TestCluster): Promise<string> {
  const dir = join(c.dir, 'node-3');
  await c.kill(3);
  const saved = join(c.dir, 'node-3.saved');
  cpSync(dir, saved, { recursive: true });
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  // Room, once the filler is gone, for a restarted node's WAL (up to --wal-max-segments + the one being
  // written + a fresh one after the restart + a spare, 4 MiB each here) beside LevelDB: at 24 MiB a node
  // stopped with several segments could fill the disk again on restart (the suspected cause of one failure
  // under load, whose logs were not kept: the convergence check below now logs node 3's tail).
  t.is(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', dir]).status, 0, 'mount tmpfs');
  t.teardown(async () => {
    await c.kill(3);
    spawnSync('umount', ['-l', dir]);
  });
  cpSync(saved, dir, { recursive: true });
  // leave about 3 MiB free
  writeFileSync(join(dir, 'filler'), Buffer.alloc(Math.max(0, freeBytes(dir) - 3 * 1024 * 1024)));
  c.spawn(3);
  return dir;
}

const freeBytes = (dir: string): number => Number(spawnSync('df', ['-B1', '--output=avail', dir]).stdout.toString().trim().split('\n')[1]);

rootTest('full disk on one node: it stops serving instead of acknowledging, the others keep the shard available, and it catches up once space is freed', async (t) => {
  const c = await TestCluster.start(t, 3, ARGS);
  const dir = await onSmallDisk(t, c);
  await c.waitReady(3);
  await c.waitLeaders();

  const acked: Acked = new Map();
  let full = false;
  for (let round = 0; round < 40 && !full; round++) {
    await writeMany(c, [1, 2], round * 20, 20, 32 * 1024, acked);
    full = (await http('GET', `${c.url(3)}/ready`).catch(() => ({ status: 0 }))).status !== 200;
  }
  t.true(full, 'node 3 noticed its disk was full');
  const r3 = await http('PUT', `${c.url(3)}/v1/kv/disk/probe`, 'x', {}, 5000);
  t.is(r3.status, 503);
  t.is(r3.json().error.code, 'not_ready');
  t.is(r3.json().error.outcome, 'not_applied');
  // the shard stays available on the other two: once they have a leader (node 3 may have led it when its
  // disk filled; a write in that election's window fails fast, not_applied, and is not retried here)
  await c.waitLeaders(30_000, [3], true);
  const failedAfter = await writeMany(c, [1, 2], 10_000, 20, 1024, acked);
  t.is(failedAfter, 0, 'writes through nodes 1 and 2 keep succeeding');

  // free space, restart node 3: it catches up
  rmSync(join(dir, 'filler'));
  await c.kill(3);
  c.spawn(3);
  await c.waitReady(3);
  await assertConverged(t, c);
  await checkAcked(t, c, acked);
});

rootTest('a node stopped by a full disk stops claiming it is alive: the idle (quiesced) shards it led elect new leaders', async (t) => {
  // Before the fix its liveness pings went on after it stopped serving, so the followers of the quiesced
  // groups it led never woke, and those shards had no leader until the node was killed (the full-disk
  // test above failed once under load that way: "not every shard had a leader").
  const c = await TestCluster.start(t, 3, ['--shards', '4', '--tick-ms', '50', '--quiesce-after-ticks', '10']);
  const dir = await onSmallDisk(t, c);
  await c.waitReady(3);
  await c.waitLeaders(30_000, [], true);
  await leadAllQuiesced(c, 3, 4);
  // The disk full and a write: node 3 stops serving.
  writeFileSync(join(dir, 'filler2'), Buffer.alloc(Math.max(0, freeBytes(dir) - 4096)));
  for (let i = 0; i < 40; i++) {
    await http('PUT', `${c.url(3)}/v1/kv/disk/full?t=0`, 'x'.repeat(64 * 1024), {}, 5000).catch(() => undefined);
    if ((await http('GET', `${c.url(3)}/ready`).catch(() => ({ status: 0 }))).status !== 200) break;
  }
  t.not((await http('GET', `${c.url(3)}/ready`)).status, 200, 'node 3 stopped serving on its full disk');
  t.regex(c.logOf(3), /persisting a batch failed|round loop failed/);
  // Every shard elects a leader among nodes 1 and 2, the idle ones included.
  await c.waitLeaders(15_000, [3], true);
});

test.serial('torn tail of a LevelDB log after kill -9: the node restarts on a consistent prefix, catches up, and no acknowledged write is lost', async (t) => {
  const c = await TestCluster.start(t, 3, ARGS);
  const acked: Acked = new Map();
  let stop = false;
  const writer = (async () => {
    for (let i = 0; !stop && i < 100_000; i += 10) await writeMany(c, [1, 2], i, 10, 512, acked);
  })();
  await new Promise((r) => setTimeout(r, 1500));
  await c.kill(3);
  stop = true;
  await writer;
  const dir = join(c.dir, 'node-3');
  const logs = readdirSync(dir).filter((f) => f.endsWith('.log')).map((f) => join(dir, f)).sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  const newest = logs[0];
  t.truthy(newest, 'LevelDB has a log file');
  const size = statSync(newest as string).size;
  t.true(size > 200, `the log holds records (${size} bytes)`);
  truncateSync(newest as string, size - 137); // cut into the last record(s)
  t.true(existsSync(newest as string));
  c.spawn(3);
  await c.waitReady(3);
  await writeMany(c, [1, 2, 3], 200_000, 30, 512, acked);
  await assertConverged(t, c);
  await checkAcked(t, c, acked);
});

test.serial('torn tail of the Raft WAL after a crash: the node restarts on a consistent prefix, catches up, and no acknowledged write is lost', async (t) => {
  const c = await TestCluster.start(t, 3, [...ARGS, '--wal-segment-bytes', String(256 << 10), '--compact-every', '300', '--compact-keep', '100']);
  const acked: Acked = new Map();
  let stop = false;
  let written = 0;
  const writer = (async () => {
    for (let i = 0; !stop && i < 100_000; i += 10) {
      await writeMany(c, [1, 2], i, 10, 512, acked);
      written += 10;
    }
  })();
  const walDir = join(c.dir, 'node-3', 'wal');
  const segsWithData = (): Array<{ path: string; records: Buffer[]; end: number }> => readdirSync(walDir).filter((f) => f.endsWith('.seg')).sort()
    .map((f) => ({ path: join(walDir, f), ...parseSegment(readFileSync(join(walDir, f))) })).filter((s) => s.records.length > 0);
  // until node 3's WAL has rolled over at least twice
  while (segsWithData().length < 3 && written < 20_000) await new Promise((r) => setTimeout(r, 100));
  await c.kill(3);
  stop = true;
  await writer;
  const segs = segsWithData();
  t.true(segs.length >= 3, `node 3's WAL rolled over (${segs.length} segments with data, ${written} writes)`);
  // A power loss during the next append leaves part of it behind the last record: a header whose
  // payload is cut short (the rest still the segment's zeros) — replay must stop at the torn record.
  // (A kill -9 alone cannot tear a write that reached the page cache. Damage to a record that was
  // synced is not a crash: the node refuses to start on it, test/integration/wal-corruption.test.ts.)
  const last = segs[segs.length - 1] as { path: string; records: Buffer[]; end: number };
  const before = last.records.length;
  const old = last.records[last.records.length > 1 ? 1 : 0] as Buffer;
  const validCopy = Buffer.alloc(8 + old.length);
  validCopy.writeUInt32LE(old.length, 0);
  validCopy.writeUInt32LE(crc32(old), 4);
  old.copy(validCopy, 8);
  const torn = Buffer.alloc(8 + 64, 0x5a);
  torn.writeUInt32LE(300, 0); // claims 300 bytes, CRC of bytes never written
  const fd = openSync(last.path, 'r+');
  writeSync(fd, torn, 0, torn.length, last.end);
  closeSync(fd);
  const parsed = parseSegment(readFileSync(last.path));
  t.is(parsed.records.length, before, 'the torn append does not replay');
  t.true(parsed.torn, 'it is judged torn, not corrupt');
  // A spare segment (never written) with stray bytes deep inside is not reused for appends.
  const spares = readdirSync(walDir).filter((f) => f.endsWith('.seg')).sort().map((f) => join(walDir, f)).filter((p) => p > last.path);
  for (const p of spares) {
    const fd2 = openSync(p, 'r+');
    writeSync(fd2, validCopy, 0, validCopy.length, 8192);
    closeSync(fd2);
  }
  c.spawn(3);
  await c.waitReady(3).catch((e: unknown) => {
    t.log(c.logOf(3).slice(-3000));
    throw e;
  });
  t.regex(c.logOf(3), /torn tail dropped/);
  await writeMany(c, [1, 2, 3], 200_000, 30, 512, acked);
  await assertConverged(t, c);
  await checkAcked(t, c, acked);
});
