/**
 * The read cache (node/read-cache.ts) across real processes: single-key reads of every node, after
 * each write and delete, see the new value, linearizable ones at once and stale ones once the node has
 * it, although every earlier value had been read (and so cached) on every node. With the cache keeping
 * overwritten values (--plant-bug stale-read-cache) the stale reads never move on: the teeth test.
 */
import test, { type ExecutionContext } from 'ava';
import { TestCluster, getRetry, http, metricOf, putRetry } from './harness.ts';

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
