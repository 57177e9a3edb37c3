import test from 'ava';
import { TestCluster, getRetry, http, putRetry } from './harness.ts';

const ARGS = ['--shards', '2', '--tick-ms', '50'];

test.serial('a silent partition isolates a leader: the majority elects a new one and serves; the old one fails fast; after healing all converge', async (t) => {
  const c = await TestCluster.startWithProxy(t, 3, ARGS);
  const proxy = c.proxy;
  if (proxy === null) throw new Error('no proxy');
  const first = await putRetry(`${c.url(1)}/v1/kv/acme/p`, 'before');
  t.is(first.status, 200);
  const shard = first.json().shard as number;
  const old = (await c.waitLeaders()).get(shard) as number;
  const rest = [1, 2, 3].filter((i) => i !== old);
  proxy.partition([[old], rest]);
  // The majority side elects a leader and takes writes.
  const w = await putRetry(`${c.url(rest[0] as number)}/v1/kv/acme/p`, 'during', { deadlineMs: 20_000 });
  t.is(w.status, 200, w.body);
  // The old leader, cut off, refuses consistent operations fast and truthfully.
  let r = await http('PUT', `${c.url(old)}/v1/kv/acme/p`, 'lost?');
  for (let k = 0; k < 50 && r.json().error?.code !== 'no_quorum'; k++) {
    await new Promise((res) => setTimeout(res, 100));
    r = await http('PUT', `${c.url(old)}/v1/kv/acme/p`, 'lost?');
  }
  t.is(r.status, 503);
  t.is(r.json().error.code, 'no_quorum');
  const lin = await http('GET', `${c.url(old)}/v1/kv/acme/p`);
  t.is(lin.status, 503, 'no linearizable read from the minority side');
  const stale = await http('GET', `${c.url(old)}/v1/kv/acme/p?consistency=stale`);
  t.is(stale.status, 200, 'stale reads keep working in the minority');
  t.is(stale.body, 'before');
  proxy.heal();
  // After healing, every replica converges on the majority's value.
  for (const i of [1, 2, 3]) {
    let v = await getRetry(`${c.url(i)}/v1/kv/acme/p?consistency=stale`);
    for (let k = 0; k < 100 && v.body !== 'during'; k++) {
      await new Promise((res) => setTimeout(res, 100));
      v = await getRetry(`${c.url(i)}/v1/kv/acme/p?consistency=stale`);
    }
    t.is(v.body, 'during', `node ${i}`);
  }
  const final = await getRetry(`${c.url(old)}/v1/kv/acme/p`);
  t.is(final.body, 'during');
});

test.serial('delayed links slow the cluster down but lose nothing', async (t) => {
  const c = await TestCluster.startWithProxy(t, 3, ARGS);
  c.proxy?.delayAll(30);
  for (let i = 0; i < 10; i++) t.is((await putRetry(`${c.url(1 + (i % 3))}/v1/kv/acme/d${i}`, `v${i}`)).status, 200);
  c.proxy?.heal();
  for (let i = 0; i < 10; i++) t.is((await getRetry(`${c.url(1 + ((i + 1) % 3))}/v1/kv/acme/d${i}`)).body, `v${i}`);
});
