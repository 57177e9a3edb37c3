/**
 * A rolling upgrade (or rollback): a node speaking an older peer protocol
 * (--peer-protocol 1: messages without the leader-contact probes, as nodes
 * before them) in a cluster of newer ones. Peers must speak to it in its
 * version: it refuses anything longer, as an old node does, and each refusal
 * is a bad frame and a dropped link.
 */
import test from 'ava';
import { TestCluster, http, metricOf, putRetry } from './harness.ts';

const badFrames = (c: TestCluster, i: number): Promise<number> => metricOf(c, i, /kv_transport_bad_frames_total\{node="\d+"\} (\d+)/);
const leaders = async (c: TestCluster): Promise<Map<number, number>> => {
  const shards = (await http('GET', `${c.url(1)}/v1/cluster`)).json().shards as Array<{ id: number; leader: number }>;
  return new Map(shards.map((s) => [s.id, s.leader]));
};

test.serial('a node of the older peer protocol replicates both ways in a newer cluster, and gets the probes once upgraded', async (t) => {
  const c = await TestCluster.start(t, 3, ['--shards', '8', '--tick-ms', '50'], (i) => (i === 3 ? ['--peer-protocol', '1'] : []));
  // Node 3 must lead a shard (it then sends version-1 messages to newer followers) and follow others.
  for (let attempt = 0; attempt < 6; attempt++) {
    const led = [...(await leaders(c)).values()];
    if (led.includes(3) && led.some((l) => l !== 3)) break;
    // Node 3 leading every shard: restart it to hand some over; else restart the busiest of the others.
    const busiest = led.every((l) => l === 3) ? 3
      : [1, 2].sort((a, b) => led.filter((l) => l === b).length - led.filter((l) => l === a).length)[0] as number;
    await c.restart(busiest);
    await c.waitLeaders(30_000, [], true);
  }
  const led = await leaders(c);
  t.true([...led.values()].includes(3), `node 3 leads a shard: ${JSON.stringify([...led])}`);

  // Writes to every shard (a shard holds whole tenants' buckets: one tenant per write), through each node:
  // shards led by node 3 and shards it follows.
  const keysByShard = new Map<number, string>();
  for (let k = 0; keysByShard.size < 8 && k < 400; k++) {
    const r = await putRetry(`${c.url(1 + (k % 3))}/v1/kv/t${k}/key`, `v${k}`);
    t.is(r.status, 200, r.body);
    keysByShard.set(r.json().shard as number, `t${k}`);
  }
  t.is(keysByShard.size, 8);
  // Every replica has each value (node 3 replicated them in or out).
  for (const [shard, tenant] of keysByShard) {
    for (const i of [1, 2, 3]) {
      const deadline = Date.now() + 10_000;
      let r = await http('GET', `${c.url(i)}/v1/kv/${tenant}/key?consistency=stale`);
      while (!(r.status === 200 && r.body === `v${tenant.slice(1)}`) && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, 50));
        r = await http('GET', `${c.url(i)}/v1/kv/${tenant}/key?consistency=stale`);
      }
      t.is(r.body, `v${tenant.slice(1)}`, `node ${i}, shard ${shard}: ${r.status}`);
    }
  }
  // Not one message the old node could not read, on any link.
  for (const i of [1, 2, 3]) t.is(await badFrames(c, i), 0, `bad frames on node ${i}`);

  // Without probes, node 3's follower replicas cannot show how fresh they are: a bounded stale read there is
  // refused (too_stale), never answered from state of unknown age.
  const followed = [...keysByShard].find(([shard]) => led.get(shard) !== 3);
  t.truthy(followed);
  const [, ftenant] = followed as [number, string];
  const bounded = `${c.url(3)}/v1/kv/${ftenant}/key?consistency=stale&maxStalenessMs=5000`;
  const before = await http('GET', bounded);
  t.is(before.status, 503, before.body);
  t.is(before.json().error.code, 'too_stale');

  // The upgrade: node 3 restarts speaking the newest version. Its followers now see probes and serve the bounded read.
  c.argsFor = null;
  await c.restart(3);
  const deadline = Date.now() + 15_000;
  let after = await http('GET', bounded);
  while (after.status !== 200 && Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 100));
    after = await http('GET', bounded);
  }
  t.is(after.status, 200, after.body);
  for (const i of [1, 2, 3]) t.is(await badFrames(c, i), 0, `bad frames on node ${i} after the upgrade`);
});
