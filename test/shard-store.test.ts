import test from 'ava';
import { Store, type ProposeOutcome, type ReadOutcome, type Round } from '../shard/store.ts';
import { STATIC_BUCKET } from '../shard/keys.ts';
import type { KvCommand, KvStatePort } from '../shard/kv-machine.ts';
import { defaultRaftConfig } from '../raft/index.ts';
import { mulberry32 } from './raft/mem-cluster.ts';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * Three Stores, two shards each on all three nodes, in memory, messages routed by hand.
 * `pipelined`: like the node, each store begins rounds while earlier rounds' batches are
 * still unwritten; a batch lands (in order) only some sweeps later, and only then are its
 * round's late messages delivered.
 */
function cluster(pipelined = false, seed = 1) {
  const dbs = new Map<number, Map<string, Uint8Array>>();
  const stores = new Map<number, Store>();
  for (const id of [1, 2, 3]) {
    const { id: _i, initialConf: _c, random: _r, applied: _a, ...raft } = defaultRaftConfig(id, { voters: [], learners: [] }, Math.random);
    const st = new Store({ nodeId: id, raft, random: mulberry32(id), idempotencyRetentionMs: 600_000, maxQueuedPerShard: 100, maxInbox: 10_000, noQuorumTicks: 5, quiesceAfterTicks: 0 });
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
  const runRounds = (max = 1000): void => {
    for (let i = 0; i < max; i++) {
      let any = false;
      for (const [id, st] of stores) {
        const round = st.beginRound();
        if (round !== null) {
          any = true;
          st.applyRound(round, port(id));
          for (const [to, items] of round.early) stores.get(to)?.receive(items, i);
          if (!pipelined) {
            st.persistedRound(round);
            for (const [to, items] of round.messages) stores.get(to)?.receive(items, i);
          } else {
            (inFlight.get(id) as Round[]).push(round);
          }
        }
        const q = inFlight.get(id) as Round[];
        while (q.length > 0 && rand() < 0.4) {
          const r = q.shift() as Round;
          st.persistedRound(r);
          for (const [to, items] of r.messages) stores.get(to)?.receive(items, i);
        }
        if (q.length > 0) any = true;
      }
      if (!any) return;
    }
  };
  const tick = (n: number): void => {
    for (let i = 0; i < n; i++) {
      for (const st of stores.values()) st.tick();
      runRounds();
    }
  };
  const leaderOf = (shard: number): number => {
    for (const [id, st] of stores) if (st.status(shard).role === 'leader') return id;
    return 0;
  };
  return { stores, dbs, runRounds, tick, leaderOf };
}

const put = (key: string, value: string, over: Partial<KvCommand> = {}): KvCommand => ({
  op: 'put', tenant: 't', bucket: STATIC_BUCKET, key: new TextEncoder().encode(key), t: null,
  value: new TextEncoder().encode(value), ifVersion: null, idem: null, time: 1, ...over,
});

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
