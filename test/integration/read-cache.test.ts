/**
 * The read cache (node/read-cache.ts) across real processes: single-key reads of every node, after
 * each write and delete, see the new value, linearizable ones at once and stale ones once the node has
 * it, although every earlier value had been read (and so cached) on every node. With the cache keeping
 * overwritten values (--plant-bug stale-read-cache) the stale reads never move on: the teeth test.
 * And a replica's stale reads never go back across keys while a batch is being written (LevelDB shows
 * it before it lands): a key written after another is never seen new while the other is seen old.
 */
import test, { type ExecutionContext } from 'ava';
import { TestCluster, getRetry, http, metricOf, putRetry } from './harness.ts';

const SLOW_WAL_MS = 700;

const KEYS = 6;
const ROUNDS = 4;

/** Poll (20 ms) node i's stale read of acme/key until it answers `want` (a body, or 404 for null); false after deadlineMs. */
async function staleReaches(c: TestCluster, i: number, key: string, want: string | null, deadlineMs: number): Promise<boolean> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const r = await http('GET', `${c.url(i)}/v1/kv/acme/${key}?consistency=stale`);
    if (want === null ? r.status === 404 : r.status === 200 && r.body === want) return true;
    if (Date.now() > deadline) return false;
    await new Promise((res) => setTimeout(res, 20));
  }
}

/** Overwrite and delete keys that every node has read; the problems seen (empty: none). Stops at the first. */
async function overwriteReadKeys(t: ExecutionContext, c: TestCluster, staleDeadlineMs: number): Promise<string[]> {
  for (let round = 1; round <= ROUNDS + 1; round++) {
    for (let k = 0; k < KEYS; k++) {
      const key = `c${k}`;
      const del = round === ROUNDS + 1;
      const want = del ? null : `r${round}-${key}`;
      const w = del ? await http('DELETE', `${c.url(1)}/v1/kv/acme/${key}`) : await putRetry(`${c.url(1)}/v1/kv/acme/${key}`, want as string);
      t.is(w.status, 200, w.body);
      for (let i = 1; i <= 3; i++) {
        const lin = await getRetry(`${c.url(i)}/v1/kv/acme/${key}`);
        const got = lin.status === 404 ? null : lin.body;
        if (got !== want) return [`round ${round}: linearizable read of ${key} at node ${i} gave ${got}, not ${want}`];
        if (!(await staleReaches(c, i, key, want, staleDeadlineMs))) {
          return [`round ${round}: node ${i}'s stale reads of ${key} did not reach ${want} within ${staleDeadlineMs} ms`];
        }
      }
    }
  }
  return [];
}

test('reads see every overwrite and delete of keys they had cached, on every node', async (t) => {
  const c = await TestCluster.start(t, 3, ['--shards', '4', '--tick-ms', '50']);
  t.deepEqual(await overwriteReadKeys(t, c, 10_000), []);
  let hits = 0;
  for (let i = 1; i <= 3; i++) hits += await metricOf(c, i, /kv_read_cache_hits_total\{node="\d+"\} (\d+)/);
  t.true(hits > 0, 'the reads went through the cache');
});

test('teeth: a cache that keeps overwritten values is caught', async (t) => {
  const c = await TestCluster.start(t, 3, ['--shards', '4', '--tick-ms', '50', '--plant-bug', 'stale-read-cache']);
  const problems = await overwriteReadKeys(t, c, 3_000);
  t.log(problems.join('\n'));
  t.is(problems.length, 1);
});

test('a replica\'s stale reads do not go back across keys while a batch is being written', async (t) => {
  // Node 3's WAL appends take 700 ms: each of its batches is in LevelDB (unsynced, visible) long before it lands.
  const c = await TestCluster.startWithSlowNode3(t, SLOW_WAL_MS);
  let stop = false;
  // Background writes keep a batch in flight on node 3 most of the time.
  const background = (async () => {
    for (let n = 0; !stop; n++) {
      await putRetry(`${c.url(1)}/v1/kv/acme/bg${n % 20}`, 'b', { deadlineMs: 20_000 });
      await new Promise((r) => setTimeout(r, 30));
    }
  })();
  const stale = (key: string) => http('GET', `${c.url(3)}/v1/kv/acme/${key}?consistency=stale`);
  const problems: string[] = [];
  let checked = 0;
  for (let trial = 1; trial <= 3; trial++) {
    const before = `x${trial - 1}`;
    t.is((await putRetry(`${c.url(1)}/v1/kv/acme/x`, before, { deadlineMs: 20_000 })).status, 200);
    // Node 3 reads x once it has it (and caches it), then after its batch has surely landed.
    for (let r = await stale('x'); !(r.status === 200 && r.body === before); r = await stale('x')) await new Promise((res) => setTimeout(res, 50));
    await new Promise((res) => setTimeout(res, 3 * SLOW_WAL_MS));
    t.is((await stale('x')).body, before);
    // x is overwritten, then y written: on node 3, y new must not come with x old.
    const after = `x${trial}`;
    t.is((await putRetry(`${c.url(1)}/v1/kv/acme/x`, after, { deadlineMs: 20_000 })).status, 200);
    const y = `y${trial}`;
    t.is((await putRetry(`${c.url(1)}/v1/kv/acme/${y}`, 'after-x', { deadlineMs: 20_000 })).status, 200);
    const until = Date.now() + 4 * SLOW_WAL_MS;
    while (Date.now() < until) {
      if ((await stale(y)).status === 200) {
        const rx = await stale('x');
        checked++;
        if (rx.body !== after) problems.push(`trial ${trial}: node 3 served ${y}, written after x=${after} was acknowledged, then x=${rx.body}`);
        break;
      }
      await new Promise((res) => setTimeout(res, 5));
    }
  }
  stop = true;
  await background;
  t.deepEqual(problems, []);
  t.true(checked >= 2, `node 3 served y in time in ${checked} of 3 trials`);
});
