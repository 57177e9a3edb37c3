import test from 'ava';
import { TestCluster, putRetry } from './harness.ts';

const SHARDS = 6;

interface Sent { shard: number; peer: number; startedAt: number; time: number }

/** The 'snapshot sent' lines of node i: when each stream started and when it ended. */
function streamsSent(c: TestCluster, i: number): Sent[] {
  return c.logOf(i).split('\n').filter((l) => l.includes('"snapshot sent"')).map((l) => JSON.parse(l) as Sent);
}

test.serial('a leader streams the snapshots one follower needs one after another, not all at once', async (t) => {
  // --log-level info: the 'snapshot sent' lines say when each stream started and ended.
  const c = await TestCluster.start(t, 3, ['--shards', String(SHARDS), '--tick-ms', '50', '--compact-every', '60', '--compact-keep', '5', '--log-level', 'info']);
  await c.waitLeaders();
  await c.kill(3);
  // Past compact-every + compact-keep writes on every shard, so every shard needs a snapshot. 4 KiB
  // values: each stream takes a few chunks, so streams started together would overlap in time.
  const perShard = new Map<number, number>();
  const value = 'v'.repeat(4096);
  for (let i = 0; i < 4000 && [...perShard.values()].filter((n) => n >= 80).length < SHARDS; i++) {
    const r = await putRetry(`${c.url(1 + (i % 2))}/v1/kv/acme/k${i}?t=${i * 3_600_000}`, value);
    t.is(r.status, 200);
    const s = r.json().shard as number;
    perShard.set(s, (perShard.get(s) ?? 0) + 1);
  }
  t.is([...perShard.values()].filter((n) => n >= 80).length, SHARDS, 'every shard written past its compaction');
  c.spawn(3);
  await c.waitReady(3);
  let sent: Sent[] = [];
  for (let k = 0; k < 300; k++) {
    sent = [...streamsSent(c, 1), ...streamsSent(c, 2)].filter((s) => s.peer === 3);
    if (new Set(sent.map((s) => s.shard)).size === SHARDS) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.is(new Set(sent.map((s) => s.shard)).size, SHARDS, 'every shard was streamed to node 3');
  let pairs = 0;
  for (const from of [1, 2]) {
    const mine = streamsSent(c, from).filter((s) => s.peer === 3).sort((a, b) => a.startedAt - b.startedAt);
    for (let k = 1; k < mine.length; k++) {
      const [prev, next] = [mine[k - 1] as Sent, mine[k] as Sent];
      pairs++;
      t.true(next.startedAt >= prev.time, `node ${from}: shard ${next.shard}'s stream began at ${next.startedAt}, before shard ${prev.shard}'s ended at ${prev.time}`);
    }
  }
  // Two leaders share the shards: at least one of them streamed two or more, or nothing was tested.
  t.true(pairs >= 1, `no leader streamed two snapshots to node 3 (${JSON.stringify(sent)})`);
});
