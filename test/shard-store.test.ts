import test, { type ExecutionContext } from 'ava';
import { Store, type ProposeOutcome, type ReadOutcome, type Round } from '../shard/store.ts';
import { STATIC_BUCKET } from '../shard/keys.ts';
import type { KvCommand, KvStatePort } from '../shard/kv-machine.ts';
import { defaultRaftConfig, MsgType, type Message } from '../raft/index.ts';
import { mulberry32 } from './raft/mem-cluster.ts';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/**
 * A follower in step with its leader claims at most this (ms; one sweep of the rounds below is 1 ms):
 * its leader's quorum-ack age plus the probe's trip to the leader and its 2 ms granularity.
 */
const FOLLOWER_IN_STEP = 8;

/**
 * Three Stores, two shards each on all three nodes, in memory, messages routed by hand.
 * `pipelined`: like the node, each store begins rounds while earlier rounds' batches are
 * still unwritten; a batch lands (in order) only some sweeps later, and only then are its
 * round's late messages delivered.
 * `holdApplies`: a node in it is a slow disk: from its first round that applies entries on, its
 * batches do not land (the state it applied stays unwritten) until it leaves the set.
 */
function cluster(pipelined = false, seed = 1, quiesceAfterTicks = 0, drop: ((from: number, to: number, m: Message, shard: number) => boolean) | null = null, holdApplies = new Set<number>()) {
  const dbs = new Map<number, Map<string, Uint8Array>>();
  const stores = new Map<number, Store>();
  for (const id of [1, 2, 3]) {
    const { id: _i, initialConf: _c, random: _r, applied: _a, ...raft } = defaultRaftConfig(id, { voters: [], learners: [] }, Math.random);
    const st = new Store({ nodeId: id, raft, random: mulberry32(id), idempotencyRetentionMs: 600_000, maxQueuedPerShard: 100, maxInbox: 10_000, noQuorumTicks: 5, quiesceAfterTicks });
    for (const shard of [1, 2]) st.addReplica({ shard, persisted: null, founders: [1, 2, 3], applied: 0, logTime: 0, gen: 0, persistedLast: 0 });
    stores.set(id, st);
    dbs.set(id, new Map());
  }
  const port = (id: number) => (): KvStatePort => {
    const m = dbs.get(id) as Map<string, Uint8Array>;
    return { get: (k) => m.get(hex(k)), put: (k, v) => void m.set(hex(k), v), del: (k) => void m.delete(hex(k)) };
  };
  const rand = mulberry32(seed);
  const inFlight = new Map<number, Round[]>([[1, []], [2, []], [3, []]]);
  /** Message arrival times (ms) for the stores: one per sweep, never going back. */
  let clock = 0;
  const deliver = (from: number, to: number, items: Array<[number, Message]>, at: number): void => {
    const kept = drop === null ? items : items.filter(([shard, m]) => !drop(from, to, m, shard));
    stores.get(to)?.receive(kept, at);
  };
  const runRounds = (max = 1000): void => {
    for (let n = 0; n < max; n++) {
      const i = ++clock;
      let any = false;
      for (const [id, st] of stores) {
        const round = st.beginRound(i);
        if (round !== null) {
          any = true;
          st.applyRound(round, port(id));
          for (const [to, items] of round.early) deliver(id, to, items, i);
          const held = holdApplies.has(id) && ((inFlight.get(id) as Round[]).length > 0 || round.items.some((it) => it.rd.committedEntries.length > 0));
          if (!pipelined && !held) {
            st.persistedRound(round);
            for (const [to, items] of round.messages) deliver(id, to, items, i);
          } else {
            (inFlight.get(id) as Round[]).push(round);
          }
        }
        const q = inFlight.get(id) as Round[];
        while (q.length > 0 && !holdApplies.has(id) && (!pipelined || rand() < 0.4)) {
          const r = q.shift() as Round;
          st.persistedRound(r);
          for (const [to, items] of r.messages) deliver(id, to, items, i);
        }
        if (q.length > 0 && !holdApplies.has(id)) any = true;
      }
      if (!any) return;
    }
  };
  const tick = (n: number): void => {
    for (let i = 0; i < n; i++) {
      for (const st of stores.values()) st.tick(clock);
      runRounds();
    }
  };
  const leaderOf = (shard: number): number => {
    for (const [id, st] of stores) if (st.status(shard).role === 'leader') return id;
    return 0;
  };
  return { stores, dbs, runRounds, tick, leaderOf, port, now: () => clock, inFlight };
}

const put = (key: string, value: string, over: Partial<KvCommand> = {}): KvCommand => ({
  op: 'put', tenant: 't', bucket: STATIC_BUCKET, key: new TextEncoder().encode(key), t: null,
  value: new TextEncoder().encode(value), ifVersion: null, idem: null, time: 1, ...over,
});

/** The leader writes k = v1 and every replica hears of its commit (two more ticks): the tests' steady state. */
function writeV1(t: ExecutionContext, c: ReturnType<typeof cluster>, L: Store): void {
  const out: ProposeOutcome[] = [];
  L.propose(1, put('k', 'v1'), (r) => out.push(r));
  c.runRounds();
  c.tick(2);
  t.true(out[0]?.ok === true, 'v1 acknowledged');
}

test('store: every shard elects a leader; a put commits and is applied on all replicas; CAS and idempotency hold', (t) => {
  const c = cluster();
  for (let i = 0; i < 100 && (c.leaderOf(1) === 0 || c.leaderOf(2) === 0); i++) c.tick(1);
  const l1 = c.leaderOf(1);
  t.true(l1 > 0 && c.leaderOf(2) > 0);
  const out: ProposeOutcome[] = [];
  const st = c.stores.get(l1) as Store;
  st.propose(1, put('a', 'x', { idem: 'k1' }), (r) => out.push(r));
  st.propose(1, put('b', 'y', { ifVersion: 0 }), (r) => out.push(r));
  c.runRounds();
  t.is(out.length, 2);
  const [a, b] = out;
  t.true(a?.ok === true && a.result.kind === 'put');
  t.true(b?.ok === true && b.result.kind === 'put');
  st.propose(1, put('a', 'z', { idem: 'k1' }), (r) => out.push(r));
  st.propose(1, put('b', 'w', { ifVersion: 0 }), (r) => out.push(r));
  c.runRounds();
  t.deepEqual(out[2], { ...a, index: (out[2] as { index: number }).index }, 'the idempotent retry returns the first outcome');
  t.like(out[3], { ok: true, result: { kind: 'conflict' } });
  c.tick(2);
  const sizes = [...c.dbs.values()].map((m) => m.size);
  t.deepEqual(sizes, [sizes[0], sizes[0], sizes[0]]);
  for (const id of [1, 2, 3]) t.is(c.stores.get(id)?.status(1).applied, st.status(1).applied);
});

test('store: many reads share one ReadIndex; followers refuse with the leader id', (t) => {
  const c = cluster();
  for (let i = 0; i < 100 && c.leaderOf(1) === 0; i++) c.tick(1);
  const l1 = c.leaderOf(1);
  const reads: ReadOutcome[] = [];
  for (let i = 0; i < 50; i++) (c.stores.get(l1) as Store).readIndex(1, (r) => reads.push(r));
  c.runRounds();
  t.is(reads.length, 50);
  t.true(reads.every((r) => r.ok));
  const f = [1, 2, 3].find((x) => x !== l1) as number;
  let refused: ReadOutcome | undefined;
  (c.stores.get(f) as Store).readIndex(1, (r) => (refused = r));
  t.deepEqual(refused, { ok: false, code: 'not_leader', leader: l1 });
});

test('store: pipelined rounds (batches land late, in order) elect, commit, apply everywhere and keep CAS/idempotency', (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const c = cluster(true, seed);
    for (let i = 0; i < 200 && (c.leaderOf(1) === 0 || c.leaderOf(2) === 0); i++) c.tick(1);
    const l1 = c.leaderOf(1);
    t.true(l1 > 0 && c.leaderOf(2) > 0, `seed ${seed}: leaders elected`);
    const st = c.stores.get(l1) as Store;
    const out: ProposeOutcome[] = [];
    for (let k = 0; k < 20; k++) {
      st.propose(1, put(`k${k % 5}`, `v${k}`, { idem: `i${k}` }), (r) => out.push(r));
      if (k % 3 === 0) c.runRounds(1);
    }
    c.runRounds();
    t.is(out.length, 20, `seed ${seed}: every put completed`);
    t.true(out.every((r) => r.ok), `seed ${seed}: every put committed`);
    const versions = out.map((r) => (r.ok && r.result.kind === 'put' ? r.result.version : -1));
    t.deepEqual([...versions].sort((a, b) => a - b), versions, `seed ${seed}: versions follow the order of proposals`);
    const reads: ReadOutcome[] = [];
    st.readIndex(1, (r) => reads.push(r));
    c.runRounds();
    t.true(reads.length === 1 && reads[0]?.ok === true && reads[0].index >= Math.max(...versions), `seed ${seed}: a read after the puts sees them`);
    c.tick(3);
    const states = [...c.dbs.values()].map((m) => [...m.entries()].map(([k, v]) => `${k}=${hex(v)}`).sort().join(';'));
    t.deepEqual(states, [states[0], states[0], states[0]], `seed ${seed}: replicas converge`);
  }
});

test('store: a follower woken to prove freshness gets it even if its leader was idle long (the leader stays awake; a quiescing heartbeat counts as contact)', (t) => {
  const c = cluster(false, 1, 5);
  for (let i = 0; i < 100 && c.leaderOf(1) === 0; i++) c.tick(1);
  const l = c.leaderOf(1);
  const f = ([1, 2, 3].find((id) => id !== l) as number);
  const L = c.stores.get(l) as Store;
  const F = c.stores.get(f) as Store;
  const out: ProposeOutcome[] = [];
  L.propose(1, put('k', 'v'), (r) => out.push(r));
  c.runRounds();
  t.true(out[0]?.ok === true);
  for (let i = 0; i < 50 && !(L.isQuiesced(1) && F.isQuiesced(1)); i++) c.tick(1);
  t.true(L.isQuiesced(1) && F.isQuiesced(1), 'the idle group quiesced');
  c.tick(30); // long idle: the leader's last request is far behind
  const before = c.now();
  t.true(F.stalenessMs(1, before) > 0);
  // The follower wakes (a bounded stale read needs proof) and its wake-up
  // reaches the leader in a round that also carries ticks.
  F.wakeShard(1);
  const r = F.beginRound(c.now());
  t.truthy(r);
  F.applyRound(r as Round, c.port(f));
  F.persistedRound(r as Round);
  for (const [to, items] of [...(r as Round).early, ...(r as Round).messages]) c.stores.get(to)?.receive(items, c.now());
  L.tick(c.now());
  const lr = L.beginRound(c.now());
  if (lr !== null) {
    L.applyRound(lr, c.port(l));
    L.persistedRound(lr);
    for (const [to, items] of [...lr.early, ...lr.messages]) c.stores.get(to)?.receive(items, c.now());
  }
  t.false(L.isQuiesced(1), 'a leader woken by its follower stays awake for quiesceAfterTicks');
  c.runRounds();
  c.tick(3);
  t.true(F.stalenessMs(1, c.now()) < c.now() - before, 'the follower heard its leader after the wake-up');
});

test('store: a follower that hears heartbeats but lags in replication does not claim to be fresh (bounded stale reads)', (t) => {
  let starve = 0;
  const c = cluster(false, 1, 0, (_from, to, m) => to === starve && m.type === MsgType.App);
  for (let i = 0; i < 100 && c.leaderOf(1) === 0; i++) c.tick(1);
  const l = c.leaderOf(1);
  const f = [1, 2, 3].find((id) => id !== l) as number;
  const L = c.stores.get(l) as Store;
  const F = c.stores.get(f) as Store;
  writeV1(t, c, L);
  t.true(F.stalenessMs(1, c.now()) <= FOLLOWER_IN_STEP, `in step with its leader: fresh, its leader's ack age included (${F.stalenessMs(1, c.now())})`);
  // From now on the follower gets heartbeats but no appends: it falls behind.
  starve = f;
  const put2: ProposeOutcome[] = [];
  L.propose(1, put('k', 'v2'), (r) => put2.push(r));
  c.runRounds();
  t.true(put2[0]?.ok === true, 'the other follower makes the quorum');
  const behindSince = c.now();
  c.tick(20);
  t.true(F.status(1).applied < L.status(1).commit, 'the starved follower is behind');
  t.true(F.stalenessMs(1, c.now()) >= c.now() - behindSince, 'and says so, though it hears heartbeats every tick');
  starve = 0;
  c.tick(3);
  t.true(F.stalenessMs(1, c.now()) <= FOLLOWER_IN_STEP, `caught up: fresh again (${F.stalenessMs(1, c.now())})`);
});

/**
 * Stale reads serve only state that has landed in LevelDB, not the overlay a round applies into. A
 * replica whose applied state waits behind a slow batch must count that wait in its staleness: it
 * claimed 0 ms while it served the value before an acknowledged write (the slow-disk integration
 * test caught it in CI, a read 1400 ms after the write).
 */
for (const who of ['follower', 'leader'] as const) {
  test(`store: a ${who} whose applied state has not landed yet does not claim to be fresh (bounded stale reads)`, (t) => {
    const hold = new Set<number>();
    const c = cluster(false, 1, 0, null, hold);
    for (let i = 0; i < 100 && c.leaderOf(1) === 0; i++) c.tick(1);
    const l = c.leaderOf(1);
    const f = [1, 2, 3].find((id) => id !== l) as number;
    const slow = who === 'leader' ? l : f;
    const S = c.stores.get(slow) as Store;
    const L = c.stores.get(l) as Store;
    writeV1(t, c, L);
    t.true(S.stalenessMs(1, c.now()) <= FOLLOWER_IN_STEP, `in step: fresh (a follower's includes its leader's ack age) (${S.stalenessMs(1, c.now())})`);
    // From now on the batches of `slow` that apply entries do not land.
    hold.add(slow);
    const put2: ProposeOutcome[] = [];
    L.propose(1, put('k', 'v2'), (r) => put2.push(r));
    c.runRounds();
    t.true(put2[0]?.ok === true, 'the write is acknowledged');
    const ackedAt = c.now();
    c.tick(20);
    t.true(S.status(1).applied >= L.status(1).commit, `the ${who} applied it (its state waits in an unwritten batch)`);
    t.true((c.inFlight.get(slow) as Round[]).length > 0, 'its batches wait');
    t.true(S.stalenessMs(1, c.now()) >= c.now() - ackedAt, `its staleness counts from before the write: ${S.stalenessMs(1, c.now())} ms, ${c.now() - ackedAt} ms since the ack`);
    hold.delete(slow);
    c.runRounds();
    c.tick(3);
    t.true(S.stalenessMs(1, c.now()) <= FOLLOWER_IN_STEP, `landed: fresh again (${S.stalenessMs(1, c.now())})`);
  });
}

/**
 * A new leader knows the cluster's commit only once it has committed an entry of its own term. Until
 * then it may lack a write its predecessor acknowledged (the predecessor died before telling anyone
 * the new commit), and so may a follower that trusts it: neither may claim to be fresh. Before
 * the fix the new leader claimed 0 ms and the follower 14 ms (fresh as of the new leader's first
 * append, which reported the new leader's lagging commit); found by review.
 */
test('store: a new leader that has not committed in its term, and its followers, do not claim to be fresh', (t) => {
  let cut = false;
  let oldLeader = 0;
  const c = cluster(false, 1, 0, (from, to, m) => cut && (from === oldLeader || to === oldLeader || m.type === MsgType.AppResp));
  for (let i = 0; i < 100 && c.leaderOf(1) === 0; i++) c.tick(1);
  oldLeader = c.leaderOf(1);
  const out: ProposeOutcome[] = [];
  // The write is acknowledged; at that moment the old leader is cut off, before its next message
  // tells the others the new commit. From then on no append is acknowledged (the new leader's first
  // entry never commits: say a follower's disk stalls, while heartbeat answers still flow).
  (c.stores.get(oldLeader) as Store).propose(1, put('k', 'v1'), (r) => {
    out.push(r);
    cut = true;
  });
  c.runRounds();
  t.true(out[0]?.ok === true, 'acknowledged');
  const ackedAt = c.now();
  const index = (out[0] as { index: number }).index;
  let nl = 0;
  for (let i = 0; i < 200 && nl === 0; i++) {
    c.tick(1);
    nl = [1, 2, 3].find((id) => id !== oldLeader && c.stores.get(id)?.status(1).role === 'leader') ?? 0;
  }
  t.true(nl > 0, 'a new leader');
  c.tick(3);
  for (const id of [1, 2, 3].filter((x) => x !== oldLeader)) {
    const S = c.stores.get(id) as Store;
    const missing = S.status(1).applied < index;
    const staleness = S.stalenessMs(1, c.now());
    if (missing) t.true(staleness >= c.now() - ackedAt, `node ${id} (${id === nl ? 'new leader' : 'follower'}) lacks the write acknowledged ${c.now() - ackedAt} ms ago but claims ${staleness} ms`);
  }
  t.true([1, 2, 3].some((id) => id !== oldLeader && (c.stores.get(id) as Store).status(1).applied < index), 'the scenario left a replica without the write');
});

/**
 * A leader's freshness is wall time, not ticks: a process paused (SIGSTOP, a long GC, a stalled VM)
 * counts no ticks while the others elect a new leader and commit, and on waking the node may serve a
 * stale read before it counts the ticks it missed — which are capped anyway. Before the fix the
 * resumed leader took its quorum-ack age in ticks times the tick length and claimed 0–1 ms.
 */
test('store: a leader resumed after a pause counts the pause in its staleness (bounded stale reads)', (t) => {
  const c = cluster();
  for (let i = 0; i < 100 && c.leaderOf(1) === 0; i++) c.tick(1);
  const l = c.leaderOf(1);
  const L = c.stores.get(l) as Store;
  writeV1(t, c, L);
  t.true(L.stalenessMs(1, c.now()) <= 3, `in step: fresh (${L.stalenessMs(1, c.now())} ms)`);
  // The leader's process stops: it neither ticks nor reads its sockets; messages to it are lost.
  c.stores.delete(l);
  let nl = 0;
  for (let i = 0; i < 200 && nl === 0; i++) {
    c.tick(1);
    nl = [1, 2, 3].find((id) => id !== l && c.stores.get(id)?.status(1).role === 'leader') ?? 0;
  }
  t.true(nl > 0, 'the others elect a leader');
  const put2: ProposeOutcome[] = [];
  (c.stores.get(nl) as Store).propose(1, put('k', 'v2'), (r) => put2.push(r));
  c.runRounds();
  t.true(put2[0]?.ok === true, 'and commit a write');
  const ackedAt = c.now();
  c.tick(5);
  // It resumes; a stale read is served before any of its ticks or messages are handled.
  c.stores.set(l, L);
  t.is(L.status(1).role, 'leader', 'it still thinks it leads');
  t.true(L.status(1).applied < (c.stores.get(nl) as Store).status(1).applied, 'and lacks the write');
  const s1 = L.stalenessMs(1, c.now());
  t.true(s1 >= c.now() - ackedAt, `before its ticks: claims ${s1} ms, the write was acknowledged ${c.now() - ackedAt} ms ago`);
  for (let i = 0; i < 3; i++) L.tick(c.now());
  const s2 = L.stalenessMs(1, c.now());
  t.true(s2 >= c.now() - ackedAt, `with ticks pending: claims ${s2} ms`);
});

/**
 * A follower is only as fresh as its leader's last quorum ack. A leader cut off from its quorum still
 * heartbeats a follower that hears it (a minority side of five replicas; here: its acks lost one way,
 * the third node cut off), while the majority may elect another leader and commit. Appends and
 * heartbeats carry the leader's ack age; before, the follower counted each as contact and claimed to be
 * fresh until check-quorum deposed the leader (found by review).
 */
test('store: a follower of a leader that has lost its quorum acks is not fresh (bounded stale reads)', (t) => {
  let cut = false;
  let l = 0;
  let f = 0;
  let a = 0;
  const c = cluster(false, 1, 0, (from, to) => cut && ((from === f && to === l) || (from === a && to === l) || (from === l && to === a)));
  for (let i = 0; i < 100 && c.leaderOf(1) === 0; i++) c.tick(1);
  l = c.leaderOf(1);
  [f, a] = [1, 2, 3].filter((id) => id !== l) as [number, number];
  const F = c.stores.get(f) as Store;
  writeV1(t, c, (c.stores.get(l) as Store));
  t.true(F.stalenessMs(1, c.now()) <= FOLLOWER_IN_STEP, `in step: fresh (${F.stalenessMs(1, c.now())})`);
  cut = true;
  const cutAt = c.now();
  for (let i = 0; i < 6; i++) c.tick(1);
  t.is(F.status(1).role, 'follower');
  t.is(F.status(1).leader, l, 'the follower still hears its leader');
  t.is((c.stores.get(l) as Store).status(1).role, 'leader', 'which still leads (check-quorum has not deposed it yet)');
  const s = F.stalenessMs(1, c.now());
  t.true(s >= c.now() - cutAt - 5, `no ack since ${c.now() - cutAt} ms ago, the follower claims ${s} ms`);
});

/**
 * A follower's contact with its leader is timed by when the leader's word was sent, not when it
 * arrived. A follower process stops (SIGSTOP, a stalled VM) with a heartbeat waiting in its socket;
 * the others commit a write; it resumes and reads that heartbeat long after it was sent. Timed at
 * arrival less the leader's ack age (before the probes), it claimed to be fresh while it lacked the
 * acknowledged write.
 */
test('store: a follower resumed after a pause does not count a heartbeat that waited in its socket as fresh (bounded stale reads)', (t) => {
  let paused = false;
  let l = 0;
  let f = 0;
  const held: Array<[number, Message]> = [];
  const c = cluster(false, 1, 0, (from, to, m, shard) => {
    if (!paused || (from !== f && to !== f)) return false;
    if (to === f && from === l && shard === 1 && held.length === 0 && m.type === MsgType.Heartbeat) held.push([shard, m]);
    return true;
  });
  for (let i = 0; i < 100 && c.leaderOf(1) === 0; i++) c.tick(1);
  l = c.leaderOf(1);
  f = [1, 2, 3].find((id) => id !== l) as number;
  const F = c.stores.get(f) as Store;
  const L = c.stores.get(l) as Store;
  writeV1(t, c, L);
  t.true(F.stalenessMs(1, c.now()) <= FOLLOWER_IN_STEP, `in step: fresh (${F.stalenessMs(1, c.now())})`);
  paused = true;
  c.tick(2);
  t.is(held.length, 1, 'a heartbeat waits in the paused follower\'s socket');
  const out: ProposeOutcome[] = [];
  L.propose(1, put('k', 'v2'), (r) => out.push(r));
  c.runRounds();
  t.true(out[0]?.ok === true, 'the leader and the third replica commit v2');
  const ackedAt = c.now();
  c.tick(20);
  // It resumes and reads the waiting heartbeat before anything newer.
  F.receive(held, c.now());
  c.runRounds();
  t.true(F.status(1).applied < L.status(1).applied, 'the follower lacks v2');
  const s = F.stalenessMs(1, c.now());
  t.true(s >= c.now() - ackedAt, `v2 was acknowledged ${c.now() - ackedAt} ms ago, the follower claims ${s} ms`);
  // Back in touch, it is fresh again.
  paused = false;
  c.tick(4);
  t.true(F.stalenessMs(1, c.now()) <= FOLLOWER_IN_STEP, `in step again: fresh (${F.stalenessMs(1, c.now())})`);
});

/**
 * A leader that has not heard from a follower for long echoes that follower's last probe with a long
 * delta; two clocks' rates may differ by up to 500 ppm, so a bound stretched over an hour could be
 * seconds off. A probe sent more than 1 s ago counts as no contact. (A follower that keeps sending
 * responses that are lost pushes its last heard probe out of its ring of 128 sooner: here after
 * ≈ 256 ms.) Here the follower is cut off both ways for 1.3 s, then hears its leader again while its
 * answers are still lost: the leader can only echo the probe from before the cut.
 */
test('store: a leader\'s echo of a probe sent more than 1 s ago does not count as contact', (t) => {
  let toLeader = false;
  let fromLeader = false;
  let l = 0;
  let f = 0;
  const c = cluster(false, 1, 0, (from, to) => (toLeader && from === f && to === l) || (fromLeader && from === l && to === f));
  for (let i = 0; i < 100 && c.leaderOf(1) === 0; i++) c.tick(1);
  l = c.leaderOf(1);
  f = [1, 2, 3].find((id) => id !== l) as number;
  const F = c.stores.get(f) as Store;
  writeV1(t, c, c.stores.get(l) as Store);
  toLeader = true;
  fromLeader = true;
  const cutAt = c.now();
  while (c.now() - cutAt < 1300) c.tick(1);
  t.is((c.stores.get(l) as Store).status(1).role, 'leader', 'the leader keeps its quorum with the third replica');
  fromLeader = false;
  c.tick(3);
  t.is(F.status(1).leader, l, 'the follower hears its leader again');
  const s = F.stalenessMs(1, c.now());
  t.true(s >= c.now() - cutAt - FOLLOWER_IN_STEP, `its leader's word came ${c.now() - cutAt} ms after its last heard probe; it claims ${s} ms`);
  toLeader = false;
  c.tick(3);
  t.true(F.stalenessMs(1, c.now()) <= FOLLOWER_IN_STEP, `answers reach the leader again: fresh (${F.stalenessMs(1, c.now())})`);
});
