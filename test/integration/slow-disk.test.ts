/**
 * A slow disk on one node, end to end (--fault-slow-wal-ms: every WAL append of node 3 waits first).
 *
 * Node 3 persists its log late, so its replica trails the leader and its applied state lands in
 * LevelDB (which stale reads serve) only with its slow appends. A bounded stale read on it
 * (maxStalenessMs) must answer with a value at most that old, or 503 too_stale, never an older value
 * with 200; writes go on through the other two meanwhile; and node 3 catches up. Writes to other keys
 * keep node 3's WAL busy while it applies (its state then lands only after an append in flight).
 *
 * Shown to catch a broken bound: with the staleness that http.ts reports forced to 0, this test
 * fails (bounded reads served the previous value 400+ ms after the next was acknowledged).
 */
import test from 'ava';
import { TestCluster, http, leadAllQuiesced, putRetry } from './harness.ts';

const SLOW_MS = 700;
const BOUND_MS = 250;
/** Slack for the time between a write's acknowledgement and what "now" means on node 3 (one machine, one clock). */
const SLACK_MS = 150;

test.serial('a bounded stale read on a node with a slow disk never serves a value older than its bound', async (t) => {
  const c = await TestCluster.startWithSlowNode3(t, SLOW_MS);

  const acks: Array<{ v: number; at: number }> = [];
  const served = { fresh: 0, tooStale: 0, other: 0 };
  const violations: string[] = [];
  for (let v = 1; v <= 3; v++) {
    const w = await putRetry(`${c.url(1)}/v1/kv/slow/k`, `v${v}`, { deadlineMs: 20_000 });
    t.is(w.status, 200, w.body);
    acks.push({ v, at: Date.now() });
    // Writes to other keys keep node 3's WAL busy: it learns that v is committed and applies it (its Raft
    // state is then as fresh as the leader's commit) while an append of later entries is in flight, so
    // the state of v lands only after that slow append.
    const others = Promise.all([1, 2, 3].map((j) => putRetry(`${c.url(1)}/v1/kv/slow/other-${v}-${j}`, 'x', { deadlineMs: 20_000 })));
    const until = Date.now() + 4 * SLOW_MS;
    while (Date.now() < until) {
      const sent = Date.now();
      const r = await http('GET', `${c.url(3)}/v1/kv/slow/k?consistency=stale&maxStalenessMs=${BOUND_MS}`, undefined, {}, 5000);
      if (r.status === 200) {
        served.fresh++;
        const got = Number(r.body.slice(1));
        // The newest write acknowledged more than BOUND_MS (+ slack) before this read was sent must be visible.
        const due = acks.filter((a) => a.at < sent - BOUND_MS - SLACK_MS).at(-1);
        if (due !== undefined && got < due.v) {
          violations.push(`read sent ${sent - due.at} ms after v${due.v} was acknowledged served v${got} (x-staleness-ms ${r.headers.get('x-staleness-ms')}, bound ${BOUND_MS})`);
        }
      } else if (r.status === 503 && r.json().error?.code === 'too_stale') served.tooStale++;
      else if (r.status === 404 && v === 1) served.other++; // not landed anywhere yet: the key did not exist before v1
      else {
        served.other++;
        t.log(`unexpected answer ${r.status}: ${r.body}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const o of await others) t.is(o.status, 200, o.body);
  }
  t.log(`node 3 answered ${served.fresh} reads within the bound, ${served.tooStale} too_stale, ${served.other} other`);
  t.deepEqual(violations.slice(0, 5), [], `${violations.length} bounded stale reads served a value older than the bound`);
  // The node still serves: an unbounded stale read eventually sees the last write.
  const deadline = Date.now() + 15_000;
  let last = '';
  while (Date.now() < deadline && last !== 'v3') {
    const r = await http('GET', `${c.url(3)}/v1/kv/slow/k?consistency=stale`, undefined, {}, 5000);
    last = r.status === 200 ? r.body : `${r.status}`;
    if (last !== 'v3') await new Promise((r) => setTimeout(r, 50));
  }
  t.is(last, 'v3', 'node 3 caught up with the last write');
  // The slow disk is explained where an operator looks: node 3 warned that a batch was slow, and
  // that its WAL part was the slow one; its counter says how many were.
  const warned = c.logOf(3).split('\n').filter((l) => l.includes('slow persist')).map((l) => JSON.parse(l) as { walMs: number; leveldbMs: number });
  t.true(warned.length > 0, 'node 3 logged no slow persist');
  t.true(warned.some((w) => w.walMs >= SLOW_MS), JSON.stringify(warned.slice(0, 3)));
  const m = /kv_slow_persists_total\{node="3"\} (\d+)/.exec((await http('GET', `${c.url(3)}/metrics`)).body);
  t.true(Number(m?.[1] ?? 0) >= warned.length, `kv_slow_persists_total ${m?.[1]} < ${warned.length} warnings`);
});

test.serial('a node whose disk stalls stops claiming it is alive: the idle shards it led elect elsewhere, and it rejoins once the disk is back', async (t) => {
  // Node 3 leads 4 quiesced shards; then each of its WAL appends waits 12 s (a stuck fsync). Its rounds
  // stop (after --mid-flight-rounds more, which still heartbeat the group it was writing for), so the
  // shards it leads can neither commit nor answer. Its liveness pings stop after four election timeouts
  // of one batch in flight, so the followers wake the idle groups and elect: all four shards within 9 s
  // (4.3–4.9 s here unloaded), before the stall ends. With the pings going on (tried by hand), the idle
  // shards kept node 3 as their leader for as long as the stall lasted.
  const c = await TestCluster.start(t, 3, ['--shards', '4', '--tick-ms', '50', '--quiesce-after-ticks', '10'], (i) => (i === 3 ? ['--fault-slow-wal-ms', '1'] : []));
  await leadAllQuiesced(c, 3, 4);
  t.is((await http('POST', `${c.url(3)}/v1/debug/fault-slow-wal?ms=12000`)).status, 200);
  const stalled = Date.now();
  const write = http('PUT', `${c.url(3)}/v1/kv/stall/k`, 'v', {}, 20_000).catch(() => null);
  await c.waitLeaders(9_000, [3], true);
  t.log(`every shard led by node 1 or 2 ${Date.now() - stalled} ms after node 3's disk stalled`);
  // The disk is back: node 3 rejoins, and the cluster takes writes through it.
  t.is((await http('POST', `${c.url(3)}/v1/debug/fault-slow-wal?ms=1`)).status, 200);
  await write;
  const r = await putRetry(`${c.url(3)}/v1/kv/stall/after`, 'ok', { deadlineMs: 20_000 });
  t.is(r.status, 200, r.body);
  await c.waitLeaders(20_000, [], true);
});
