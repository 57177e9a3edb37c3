/**
 * A node whose data directory is lost (a replaced disk, a deleted directory) and that is started again
 * under the same id. Its replicas know nothing, not even whom they voted for, so each one recovers
 * before it votes ("Lost state" in raft/raft-node.ts): it asks every other replica its term, then
 * waits to follow a leader of a newer term, and the shard's leader, asked by it, steps down and
 * campaigns to give it one. The simulator checks that this keeps elections safe (test/sim, diskLoss);
 * this test checks it works across real processes and disks:
 *  - every shard elects a leader of a newer term after the node returns (the sign of the recovery:
 *    a replica that voted at once would rejoin under the old leader);
 *  - the node catches up: its stale reads return the last values written before and while it was away;
 *    until then it serves none from its empty replica (they go to another replica, or 503 not_ready);
 *  - no replica stays recovering (kv_raft_recovering), and the cluster keeps taking writes.
 *
 * With the guard off on the returning node (--plant-bug unguarded-lost-state) no shard's term moves:
 * the first check fails (the teeth test below).
 */
import test, { type ExecutionContext } from 'ava';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readSegment } from '../../node/wal.ts';
import { WalFold } from '../../node/wal-codec.ts';
import { TestCluster, http, metricOf, numberedWriter, waitStaleValue } from './harness.ts';

const SHARDS = 4;

async function shardTerms(c: TestCluster, i: number): Promise<number[]> {
  const shards = (await http('GET', `${c.url(i)}/v1/cluster`)).json().shards as Array<{ term: number | null }>;
  return shards.map((s) => s.term ?? 0);
}

/** Poll (100 ms) until every shard's term at node i is above its term in `before`; false after deadlineMs. */
async function termsRise(c: TestCluster, i: number, before: number[], deadlineMs: number): Promise<boolean> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const now = await shardTerms(c, i);
    if (now.every((term, s) => term > (before[s] ?? 0))) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stale reads of acme/k399 at node 3, every 5 ms until stopped: what came back, by "status value-or-code". */
function pollStale(c: TestCluster): { stop: () => Promise<Map<string, number>> } {
  const seen = new Map<string, number>();
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      try {
        const r = await http('GET', `${c.url(3)}/v1/kv/acme/k399?consistency=stale`, undefined, {}, 2000);
        const what = `${r.status} ${r.status === 200 ? r.body : (r.json().error?.code as string)}`;
        seen.set(what, (seen.get(what) ?? 0) + 1);
      } catch { /* not listening yet */ }
      await new Promise((res) => setTimeout(res, 5));
    }
  })();
  return { stop: async () => { stopped = true; await loop; return seen; } };
}

/** Node 3 loses its data directory after 300 writes; returns whether every shard's term rose once it was back. */
async function loseNode3(t: ExecutionContext, plant: boolean, riseDeadlineMs: number): Promise<{ c: TestCluster; rose: boolean; reads: Map<string, number> }> {
  const c = await TestCluster.start(t, 3, ['--shards', String(SHARDS), '--tick-ms', '50'],
    plant ? (i) => (i === 3 ? ['--plant-bug', 'unguarded-lost-state'] : []) : null);
  const writeUpTo = numberedWriter(t, () => c.url(1));
  await writeUpTo(300);
  await c.kill(3);
  await writeUpTo(400);
  rmSync(join(c.dir, 'node-3'), { recursive: true, force: true });
  const before = await shardTerms(c, 1);
  c.spawn(3);
  const poll = pollStale(c);
  await c.waitReady(3);
  const rose = await termsRise(c, 1, before, riseDeadlineMs);
  await waitStaleValue(c, 3, 'k399', 'v399');
  const reads = await poll.stop();
  return { c, rose, reads };
}

test('a node back with an empty data directory recovers before it votes, then catches up', async (t) => {
  const { c, rose, reads } = await loseNode3(t, false, 20_000);
  t.true(rose, 'every shard elects a leader of a newer term once node 3 is back');
  // From its first answer on, node 3 never served what it lost: the read went to another replica, or was refused.
  t.log(`stale reads of k399 at node 3 from its restart: ${[...reads].map(([k, n]) => `${k} x${n}`).join(', ')}`);
  for (const what of reads.keys()) t.true(what === '200 v399' || what === '503 not_ready' || what === '503 no_leader', what);
  for (let k = 400 - 16; k < 400; k++) await waitStaleValue(c, 3, `k${k % 500}`, `v${k}`);
  const deadline = Date.now() + 15_000;
  let recovering = -1;
  while (recovering !== 0 && Date.now() < deadline) {
    recovering = 0;
    for (let s = 1; s <= SHARDS; s++) recovering += await metricOf(c, 3, new RegExp(`kv_raft_recovering\\{shard="${s}"[^}]*\\} (\\d+)`));
    if (recovering !== 0) await new Promise((r) => setTimeout(r, 200));
  }
  t.is(recovering, 0, 'no replica of node 3 is still recovering');
  // Still taking writes, and node 3 follows them.
  const more = numberedWriter(t, () => c.url(3));
  await more(50);
  await waitStaleValue(c, 3, 'k49', 'v49');
  await waitStaleValue(c, 1, 'k49', 'v49');
  // Where each replica's recovery ended is durable, in its WAL with the vote (HardState.recovered): a
  // crash before the state lands keeps it from serving the state it lost.
  await c.kill(3);
  const fold = new WalFold();
  const walDir = join(c.dir, 'node-3', 'wal');
  for (const f of readdirSync(walDir).filter((x) => x.endsWith('.seg')).sort()) await readSegment(join(walDir, f), (p) => fold.add(p));
  for (let s = 1; s <= SHARDS; s++) t.true((fold.shards.get(s)?.hardState?.recovered ?? 0) > 0, `shard ${s}: ${JSON.stringify(fold.shards.get(s)?.hardState)}`);
  c.spawn(3);
  await c.waitReady(3);
  await waitStaleValue(c, 3, 'k49', 'v49');
});

test('teeth: with the guard off on the returning node, no shard changes term', async (t) => {
  const { rose } = await loseNode3(t, true, 5_000);
  // (Its stale reads are not checked here: a replica without the recovery serves what it has.)
  t.false(rose, 'a replica that votes at once rejoins under the old leader');
});
