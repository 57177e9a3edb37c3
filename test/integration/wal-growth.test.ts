/**
 * The Raft WAL stays bounded when shards write little: a shard with a few
 * entries in the oldest segment (never reaching --compact-every) would keep
 * that segment, and every later one, on disk forever. Past
 * --wal-max-segments such shards are compacted so the oldest segment goes.
 */
import test from 'ava';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, http, putRetry } from './harness.ts';

const segments = (c: TestCluster, i: number): number => readdirSync(join(c.dir, `node-${i}`, 'wal')).filter((f) => f.endsWith('.seg')).length;

test('idle shards do not pin WAL segments: the segment count stays bounded under writes to other shards', async (t) => {
  const c = await TestCluster.start(t, 3, ['--shards', '4', '--tick-ms', '50', '--wal-segment-bytes', '65536', '--wal-max-segments', '3', '--compact-every', '1000000']);
  // A few entries on every shard (elections, one put each) land in the first segment.
  for (let k = 0; k < 16; k++) t.is((await putRetry(`${c.url(1)}/v1/kv/acme/idle-${k}`, 'x')).status, 200);
  // Then many writes to one tenant-bucket (one shard): ~1.5 MB of log, ~23 segments' worth.
  const value = 'v'.repeat(2000);
  let peak = 0;
  for (let k = 0; k < 750; k++) {
    const r = await http('PUT', `${c.url(1)}/v1/kv/busy/k${k % 50}`, value);
    if (r.status !== 200) t.is((await putRetry(`${c.url(1)}/v1/kv/busy/k${k % 50}`, value)).status, 200);
    if (k % 50 === 0) for (const i of [1, 2, 3]) peak = Math.max(peak, segments(c, i));
  }
  for (const i of [1, 2, 3]) peak = Math.max(peak, segments(c, i));
  t.log(`peak WAL segment files on a node: ${peak} (64 KiB each; max 3 + the one being written + a spare)`);
  // Without the release every segment would stay (about 20 on each node).
  t.true(peak <= 6, `WAL segments bounded: peak ${peak}`);
  // Every idle key is still there after its shard was compacted.
  for (let k = 0; k < 16; k++) t.is((await http('GET', `${c.url(2)}/v1/kv/acme/idle-${k}`)).status, 200);
});

test('restarts do not pile up WAL segments: past --wal-max-segments the ones with nothing left in them go', async (t) => {
  const c = await TestCluster.start(t, 3, ['--shards', '4', '--tick-ms', '50', '--wal-segment-bytes', '65536', '--wal-max-segments', '3']);
  await c.waitLeaders();
  t.is((await putRetry(`${c.url(1)}/v1/kv/acme/k0`, 'x')).status, 200);
  // Every start after a segment was written begins a new one; each restart also brings an election or two.
  for (let r = 1; r <= 7; r++) {
    await c.kill(3);
    c.spawn(3);
    await c.waitReady(3);
    await c.waitLeaders(30_000, [], true);
    t.is((await putRetry(`${c.url(1)}/v1/kv/acme/k${r}`, 'x')).status, 200);
  }
  // The segments go once a batch has landed in the new one (its header then is on disk): wait for it.
  let n = segments(c, 3);
  for (let k = 0; k < 200 && n > 5; k++) {
    t.is((await putRetry(`${c.url(1)}/v1/kv/acme/k${k % 8}`, 'y')).status, 200);
    n = segments(c, 3);
  }
  t.log(`WAL segment files on node 3 after 7 restarts: ${n}`);
  t.true(n <= 5, `${n} segments: at most 3 + the one being written + a spare`);
});
