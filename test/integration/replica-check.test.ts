/**
 * Replica checks on real processes (node/replica-check.ts): every replica hashes its shard's data at
 * each multiple of --check-every of its applied index (the Raft core ends a Ready there, and the
 * node hashes the state the moment it lands), and the nodes fetch and compare each other's hashes.
 *  - A healthy cluster under writes: checkpoints are hashed on every node and compared with both
 *    peers, and every comparison matches (no false alarm: replicas at the same index hold the same
 *    data, though their batches and timing differ). Every WAL append is delayed 20 ms
 *    (--fault-slow-wal-ms), so rounds pile into batches while one is written: with the batch holding a
 *    checkpoint not sealed (a later round of the shard joining it), the hashes come out past their
 *    checkpoints and this test fails (tried by hand: "not within 30000 ms: the three nodes hold the
 *    same checkpoints").
 *  - Teeth: node 3 stores every 10th record with its last byte changed (--plant-bug replica-diverges,
 *    as damage inside its LevelDB files would leave it; its reads would serve the damaged values).
 *    Nodes 1 and 2 find mismatches with node 3, never with each other, and log them.
 */
import test from 'ava';
import { TestCluster, http, numberedWriter } from './harness.ts';

const ARGS = ['--shards', '2', '--tick-ms', '50', '--check-every', '50', '--check-compare-ms', '200', '--fault-slow-wal-ms', '20'];

/** Sum of every sample of a metric at node i whose labels match `labels` (a regex source). */
async function metricSum(c: TestCluster, i: number, name: string, labels = ''): Promise<number> {
  const body = (await http('GET', `${c.url(i)}/metrics`)).body;
  let sum = 0;
  for (const m of body.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\d+)$`, 'gm'))) if (new RegExp(labels).test(m[1] as string)) sum += Number(m[2]);
  return sum;
}

/** Poll (100 ms) until cond() holds; fails the test after deadlineMs. */
async function until(what: string, cond: () => Promise<boolean>, deadlineMs = 30_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`not within ${deadlineMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Node i's replica-check results, as one sorted string per checkpoint. (The writes are one tenant's, one time bucket: one shard.) */
async function checksOf(c: TestCluster, i: number): Promise<string[]> {
  const list = (await http('GET', `${c.url(i)}/v1/debug/checks`)).json().checks as Array<{ shard: number; index: number; records: number; digest: string }>;
  return list.map((k) => `${k.shard}@${k.index}:${k.records}:${k.digest}`).sort();
}

test('replica checks: every node hashes every checkpoint, the same on all three, and every comparison matches', async (t) => {
  const c = await TestCluster.start(t, 3, ARGS);
  const writeUpTo = numberedWriter(t, () => c.url(1));
  await writeUpTo(600);
  // Every replica applies the same entries: once the writes are in, the three hold the same checkpoints, equal.
  let lists: string[][] = [];
  await until('the three nodes hold the same checkpoints', async () => {
    lists = [await checksOf(c, 1), await checksOf(c, 2), await checksOf(c, 3)];
    return lists[0]!.length >= 8 && lists.every((l) => l.join() === lists[0]!.join());
  });
  t.log(`checkpoints: ${lists[0]!.map((k) => k.split(':')[0]).join(' ')}`);
  for (const i of [1, 2, 3]) {
    // Each compared with both peers: 2 matches per checkpoint.
    await until(`node ${i} compared every checkpoint with both peers`, async () => (await metricSum(c, i, 'kv_replica_checks_total', 'result="match"')) >= 2 * lists[0]!.length);
    t.is(await metricSum(c, i, 'kv_replica_checks_total', 'result="skipped"'), 0);
    t.is(await metricSum(c, i, 'kv_replica_check_mismatches_total'), 0, `node ${i} found a mismatch in a healthy cluster`);
    t.is(await metricSum(c, i, 'kv_replica_check_compared_index', 'shard="1"'), Math.max(...lists[0]!.map((k) => Number(k.split('@')[1]!.split(':')[0]))));
  }
  t.notRegex(c.logOf(1) + c.logOf(2) + c.logOf(3), /replica check: (this replica and a peer|the state hashed is not)/);
});

test('teeth: a replica whose stored records diverge (--plant-bug replica-diverges on node 3) is found by both others, and only it', async (t) => {
  const c = await TestCluster.start(t, 3, ARGS, (i) => (i === 3 ? ['--plant-bug', 'replica-diverges'] : []));
  const writeUpTo = numberedWriter(t, () => c.url(1));
  await writeUpTo(600);
  for (const i of [1, 2]) {
    await until(`node ${i} found node 3's replicas differ`, async () => (await metricSum(c, i, 'kv_replica_check_mismatches_total', 'peer="3"')) >= 1);
  }
  await until('nodes 1 and 2 compared checkpoints with each other', async () => (await metricSum(c, 1, 'kv_replica_checks_total', 'result="match"')) >= 2);
  t.is(await metricSum(c, 1, 'kv_replica_check_mismatches_total', 'peer="2"'), 0);
  t.is(await metricSum(c, 2, 'kv_replica_check_mismatches_total', 'peer="1"'), 0);
  t.regex(c.logOf(1), /replica check: this replica and a peer's hold different data at the same applied index/);
});
