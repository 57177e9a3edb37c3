/**
 * What a node's Raft logs hold in memory: the byte count RaftLog keeps, the
 * compaction plan that bounds it (node/log-budget.ts), and the copies that
 * keep an entry from pinning the buffer it was decoded from (shard/codec.ts).
 */
import test from 'ava';
import { EntryType, type Entry, type Snapshot } from '../raft/index.ts';
import { RaftLog } from '../raft/log.ts';
import { coalesce, pack, unpack } from '../shard/codec.ts';
import { fromWireMessage, toWireMessage } from '../shard/raft-codec.ts';
import { compactionPlan, logMemoryOf, ENTRY_OVERHEAD_BYTES, type LogUse } from '../node/log-budget.ts';
import { Prng } from './sim/prng.ts';
import { MemCluster, enc } from './raft/mem-cluster.ts';
import { encodeBatch, foldWal } from '../node/wal-codec.ts';

const entry = (index: number, term: number, bytes: number): Entry => ({ term, index, type: EntryType.Normal, data: new Uint8Array(bytes), change: null });
const snap = (index: number, term: number): Snapshot => ({ meta: { index, term, conf: { voters: [1], learners: [] } }, data: new Uint8Array(0) });
const sum = (l: RaftLog): number => l.entries.reduce((n, e) => n + e.data.byteLength, 0);

test('RaftLog.dataBytes is the sum of its entries\' data through appends, truncations, compactions, restores and loads', (t) => {
  for (let seed = 1; seed <= 200; seed++) {
    const rng = new Prng(seed);
    const log = new RaftLog();
    let term = 1;
    for (let step = 0; step < 60; step++) {
      const op = rng.int(10);
      if (op < 5) {
        // Append after commit, possibly replacing a suffix (a new leader's entries).
        const lo = Math.max(log.firstIndex(), log.committed + 1);
        const at = lo + rng.int(log.lastIndex() + 2 - lo);
        if (rng.chance(0.3)) term++;
        const n = 1 + rng.int(5);
        log.append(Array.from({ length: n }, (_, k) => entry(at + k, term, rng.int(300))));
      } else if (op < 7) {
        log.stableIndex = log.inProgressIndex = log.lastIndex();
        log.commitTo(log.committed + rng.int(log.lastIndex() - log.committed + 1));
        log.appliedTo(log.committed);
      } else if (op < 9) {
        if (log.applied > log.snapIndex) {
          const idx = log.snapIndex + 1 + rng.int(log.applied - log.snapIndex);
          log.compact(snap(idx, log.term(idx)));
        }
      } else if (rng.chance(0.5)) {
        log.restore(snap(log.lastIndex() + 1 + rng.int(5), ++term));
      } else {
        const from = log.snapIndex + 1;
        const fresh = new RaftLog();
        fresh.snapIndex = log.snapIndex;
        fresh.load(log.entries.map((e, k) => entry(from + k, e.term, e.data.byteLength)));
        t.is(fresh.dataBytes, log.dataBytes, `seed ${seed}: load`);
      }
      if (log.dataBytes !== sum(log)) {
        t.fail(`seed ${seed} step ${step} (op ${op}): dataBytes ${log.dataBytes}, entries hold ${sum(log)}`);
        return;
      }
    }
  }
  t.pass();
});

const use = (shard: number, entries: number, dataBytes: number, held = 0, needed = 0): LogUse => ({ shard, entries, dataBytes, held, needed });
const opts = { everyEntries: 20_000, keepEntries: 5_000, budgetBytes: 64 << 20 };

test('compaction plan: the count rule alone while the logs fit the memory budget', (t) => {
  t.deepEqual(compactionPlan([use(1, 19_999, 2e6), use(2, 20_000, 2e6), use(3, 30_000, 3e6, 30_000)], opts), [{ shard: 2, keep: 5_000 }]);
  t.deepEqual(compactionPlan([], opts), []);
});

test('compaction plan: over the budget, the largest logs first, each to a quarter, until 3/4 of the budget', (t) => {
  // 8 shards of 10,000 entries of ≈ 1,000 B: ≈ 12 MB each with the overhead, 93 MB together, over 64 MiB.
  const logs = Array.from({ length: 8 }, (_, i) => use(i, 10_000, 10_000_000 - i * 100_000));
  const per = logs.map(logMemoryOf);
  const plan = compactionPlan(logs, opts);
  // The largest first (shards 0, 1, ...), cut to a quarter (2,500 entries) until under 48 MiB.
  t.true(plan.length >= 2 && plan.length < 8, `${plan.length} cut`);
  t.deepEqual(plan.map((p) => p.shard), Array.from({ length: plan.length }, (_, i) => i));
  for (const p of plan) t.is(p.keep, 2_500);
  let left = per.reduce((a, b) => a + b, 0);
  for (const p of plan) left -= (per[p.shard] as number) * 0.75;
  t.true(left <= (opts.budgetBytes * 3) / 4, `${left} left`);
  // One fewer would not have been enough.
  t.true(left + (per[plan.length - 1] as number) * 0.75 > (opts.budgetBytes * 3) / 4);
});

test('compaction plan: a shard whose snapshot stream holds all its log is left alone; count-rule cuts go lower when over budget', (t) => {
  const budget = { ...opts, budgetBytes: 1 << 20 };
  const plan = compactionPlan([use(1, 40_000, 4e6, 40_000), use(2, 20_000, 1e6), use(3, 100, 10)], budget);
  const keep = new Map(plan.map((p) => [p.shard, p.keep]));
  t.false(keep.has(1));
  t.is(keep.get(2), 5_000, 'a quarter of 20,000 is the count rule\'s 5,000 already');
  t.is(keep.get(3), 25);
  const tiny = compactionPlan([use(1, 30_000, 0)], { ...opts, budgetBytes: 1 });
  t.deepEqual(tiny, [{ shard: 1, keep: 5_000 }], 'the count rule and the budget: the smaller keep');
  t.is(logMemoryOf({ entries: 2, dataBytes: 10 }), 10 + 2 * ENTRY_OVERHEAD_BYTES);
});

test('compaction plan: a snapshot stream holds only the entries after its index, past twice the budget too', (t) => {
  // A stream at the index 12,000 entries back: the 28,000 before it may go, the 12,000 after it stay.
  t.deepEqual(compactionPlan([use(1, 40_000, 4e6, 12_000)], opts), [{ shard: 1, keep: 12_000 }]);
  // Holding all of a log leaves nothing to cut, whatever the budget.
  t.deepEqual(compactionPlan([use(1, 40_000, 4e6, 40_000)], { ...opts, budgetBytes: 1 }), []);
  // Past twice the budget a follower's need gives way, a stream's hold does not.
  const hard = compactionPlan([use(1, 10_000, 60 << 20, 3_000, 6_000)], { ...opts, budgetBytes: 10 << 20 });
  t.deepEqual(hard, [{ shard: 1, keep: 3_000 }]);
});

test('compaction plan: a leader keeps what a live follower still needs, within a count window and up to twice the budget', (t) => {
  // Count rule: a follower 8,000 entries behind keeps 8,000, not 5,000.
  t.deepEqual(compactionPlan([use(1, 20_000, 2e6, 0, 8_000)], opts), [{ shard: 1, keep: 8_000 }]);
  // One 16,000 behind: a cut to 16,000 would free less than a quarter; it waits for a later pass.
  t.deepEqual(compactionPlan([use(1, 20_000, 2e6, 0, 16_000)], opts), []);
  // One further behind than a whole count window gets a snapshot: the usual cut.
  t.deepEqual(compactionPlan([use(1, 30_000, 3e6, 0, 25_000)], opts), [{ shard: 1, keep: 5_000 }]);
  // Over the budget but under twice it: the follower's need holds (the other shards are cut instead).
  const mb = 1 << 20;
  const budget = { ...opts, budgetBytes: 10 * mb };
  const logs = [use(1, 10_000, 8 * mb, 0, 6_000), use(2, 10_000, 4 * mb), use(3, 100, 1_000)];
  const soft = new Map(compactionPlan(logs, budget).map((p) => [p.shard, p.keep]));
  t.is(soft.get(1), 6_000, 'shard 1 keeps its follower\'s 6,000');
  t.is(soft.get(2), 2_500);
  // A follower too far behind takes no protection from another: the store reports the largest need
  // within the window (Store.logMemory), so here only one need arrives; the hard limit is checked next.
  // Past twice the budget: cut regardless.
  const hard = new Map(compactionPlan([use(1, 10_000, 60 * mb, 0, 6_000), use(2, 10_000, 4 * mb)], budget).map((p) => [p.shard, p.keep]));
  t.is(hard.get(1), 2_500, 'past twice the budget the follower\'s need gives way');
});

test('a leader reports the matches of followers it heard from lately; a restarted one keeps its match from before (log retention)', (t) => {
  const c = new MemCluster([1, 2, 3]);
  const l = c.electLeader();
  const [f, g] = [1, 2, 3].filter((x) => x !== l) as [number, number];
  const L = c.node(l).raft;
  for (let i = 0; i < 50; i++) {
    L.propose(enc(`x${i}`));
    c.stabilize();
  }
  c.tickAll(2);
  const last = L.status().lastIndex;
  t.deepEqual(L.followerMatchesHeardWithin(100), [last, last]);
  t.deepEqual(c.node(f).raft.followerMatchesHeardWithin(100), [], 'a follower reports none');
  // f restarts: its leader forgets its progress (match 0 until the probe settles), but f still holds
  // what it had acknowledged, so retention goes on counting that.
  L.forgetProgress(f);
  t.deepEqual(L.followerMatchesHeardWithin(100).sort(), [last, last]);
  // g goes silent: after the window it no longer counts.
  c.isolate(g);
  c.tickAll(5);
  t.deepEqual(L.followerMatchesHeardWithin(3).length, 1, 'only the follower heard from within 3 ticks');
});

test('coalesce: copies in one exact-size buffer, independent of their sources', (t) => {
  const big = Buffer.alloc(65_536, 7);
  const parts = [big.subarray(10, 110), big.subarray(500, 501), big.subarray(0, 0), big.subarray(1000, 1250)];
  const out = coalesce(parts);
  t.is(out.length, 4);
  const ab = (out[0] as Buffer).buffer;
  t.is(ab.byteLength, 351, 'one buffer of exactly the bytes copied');
  for (const [i, o] of out.entries()) {
    t.is(o.buffer, ab);
    t.deepEqual([...o], [...(parts[i] as Buffer)]);
  }
  big.fill(0);
  t.is((out[3] as Buffer)[0], 7, 'not a view of the source');
});

test('entries decoded from a peer message do not keep the socket read they came in alive', (t) => {
  const m = toWireMessage({
    type: 3, from: 1, to: 2, term: 4, logTerm: 4, index: 9, commit: 9, reject: false, rejectHint: 0, context: 0, snapshot: null,
    entries: [entry(10, 4, 40), entry(11, 4, 50)].map((e, k) => ({ ...e, data: pack({ k, v: 'x'.repeat(30) }) })),
  });
  // As the transport sees it: the frame inside a 64 KiB socket read.
  const read = Buffer.alloc(65_536);
  const frame = Buffer.from(pack(m));
  frame.copy(read, 1000);
  const got = fromWireMessage(unpack(read.subarray(1000, 1000 + frame.length)));
  t.is(got.entries.length, 2);
  for (const e of got.entries) t.true(e.data.buffer.byteLength < 200, `entry data lives in a ${e.data.buffer.byteLength}-byte buffer`);
  t.deepEqual(unpack(got.entries[1]?.data as Uint8Array), { k: 1, v: 'x'.repeat(30) });
});

test('unpack adds nothing to the buffer it reads (msgpackr caches a DataView on it otherwise)', (t) => {
  const b = Buffer.from(pack([1, 'two', new Uint8Array([3])]));
  const before = Object.getOwnPropertyNames(b).length;
  unpack(b);
  t.is(Object.getOwnPropertyNames(b).length, before);
  t.false('dataView' in b);
});

test('entries replayed from the WAL do not keep the segment read alive', (t) => {
  const rec = Buffer.from(encodeBatch([{ shard: 3, hardState: { term: 2, vote: 1, commit: 5 }, entries: [entry(5, 2, 60), entry(6, 2, 70)], snapshot: null }]));
  const segment = Buffer.alloc(1 << 20);
  rec.copy(segment, 4096);
  const s = foldWal([segment.subarray(4096, 4096 + rec.length)]).get(3);
  t.is(s?.entries.length, 2);
  for (const e of s?.entries ?? []) t.is(e.data.buffer.byteLength, 130, 'the two entries share one exact-size copy');
});
