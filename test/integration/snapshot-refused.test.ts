/**
 * A snapshot stream its follower gives up (here its chunk 1 is lost on the way:
 * --fault-drop-snapshot-chunk, as a connection that died with that frame in it) is streamed again at
 * once: the follower says so (an `sx` frame, peer protocol 3), and its leader stops the stream and
 * sends another, instead of waiting out the time a stream sent in full is given to install
 * (--snapshot-timeout-ms, 60 s here) with the follower behind all along. The teeth: a follower that
 * speaks protocol 2 (a node of the release before) cannot say it, and stays behind.
 */
import test, { type ExecutionContext } from 'ava';
import { TestCluster, http, putRetry } from './harness.ts';

const SETTLE_MS = 60_000;
// --log-level info: node 3's log says when it gave a stream up.
const ARGS = ['--log-level', 'info', '--shards', '1', '--tick-ms', '50', '--compact-every', '60', '--compact-keep', '5', '--snapshot-timeout-ms', String(SETTLE_MS)];
const KEYS = 400;

/** Node 3 misses KEYS writes of 8 KiB (a snapshot of 4 chunks of 1 MiB), then restarts. */
async function node3Behind(t: ExecutionContext, node3Args: string[]): Promise<TestCluster> {
  const c = await TestCluster.start(t, 3, ARGS, (i) => (i === 3 ? ['--fault-drop-snapshot-chunk', ...node3Args] : []));
  await c.waitLeaders();
  await c.kill(3);
  const value = 'v'.repeat(8192);
  for (let i = 0; i < KEYS; i++) {
    const r = await putRetry(`${c.url(1 + (i % 2))}/v1/kv/acme/k${i}`, value);
    t.is(r.status, 200, r.body);
  }
  c.spawn(3);
  await c.waitReady(3);
  return c;
}

/** Whether node 3 serves the last write from its own replica within ms (polled every 50 ms). */
async function caughtUp(c: TestCluster, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const r = await http('GET', `${c.url(3)}/v1/kv/acme/k${KEYS - 1}?consistency=stale`).catch(() => ({ status: 0 }));
    if (r.status === 200) return true;
    await new Promise((res) => setTimeout(res, 50));
  }
  return false;
}

/** Wait (bounded) until node 3's log says it gave up the stream that lost its chunk. */
async function gaveUp(c: TestCluster): Promise<boolean> {
  for (let k = 0; k < 200; k++) {
    if (c.logOf(3).includes('snapshot chunk 1 dropped') && c.logOf(3).includes('snapshot stream given up')) return true;
    await new Promise((res) => setTimeout(res, 50));
  }
  return false;
}

test.serial('a stream the follower gave up is streamed again at once, not after the settle time', async (t) => {
  const c = await node3Behind(t, []);
  t.true(await caughtUp(c, 20_000), `node 3 caught up well within the ${SETTLE_MS} ms settle time`);
  t.true(await gaveUp(c), `the first stream lost a chunk and was given up; node 3's log:\n${c.logOf(3).split('\n').filter((l) => l.includes('snapshot')).join('\n')}`);
  t.regex(c.logOf(1) + c.logOf(2), /gave the stream up|refused by the follower/, 'its leader was told');
});

test.serial('teeth: a follower of protocol 2 cannot say it gave the stream up, and stays behind until the settle time', async (t) => {
  const c = await node3Behind(t, ['--peer-protocol', '2']);
  t.true(await gaveUp(c), 'the first stream lost a chunk and was given up');
  t.false(await caughtUp(c, 15_000), 'still behind 15 s later: its leader waits out the settle time');
});
