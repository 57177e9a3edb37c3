import test from 'ava';
import { MemCluster, enc, normalData } from './raft/mem-cluster.ts';

function idleCluster(opts = {}): { c: MemCluster; lead: number } {
  const c = new MemCluster([1, 2, 3], opts);
  c.node(1).raft.campaign();
  c.stabilize();
  c.node(1).raft.propose(enc('a'));
  c.stabilize();
  c.tickAll(2);
  return { c, lead: 1 };
}

test('an idle group quiesces: no messages flow while it ticks', (t) => {
  const { c } = idleCluster();
  t.true(c.node(1).raft.quiesce());
  c.stabilize();
  for (const id of [1, 2, 3]) t.true(c.node(id).raft.status().quiesced, `node ${id} quiesced`);
  const before = c.delivered;
  c.tickAll(100);
  t.is(c.delivered, before);
  t.is(c.leader(), 1);
});

test('a group does not quiesce while a follower lags', (t) => {
  const c = new MemCluster([1, 2, 3]);
  c.node(1).raft.campaign();
  c.stabilize();
  c.filter = (m) => m.to !== 3;
  c.node(1).raft.propose(enc('a'));
  c.stabilize();
  t.false(c.node(1).raft.quiesce());
});

test('a proposal wakes a quiesced group and commits everywhere', (t) => {
  const { c } = idleCluster();
  c.node(1).raft.quiesce();
  c.stabilize();
  c.tickAll(20);
  t.true(c.node(1).raft.propose(enc('b')).ok);
  c.stabilize();
  c.tickAll(2);
  for (const id of [1, 2, 3]) {
    t.false(c.node(id).raft.status().quiesced);
    t.deepEqual(c.node(id).applied.map(normalData).filter((x) => x !== null), ['a', 'b']);
  }
});

test('when the leader of a quiesced group dies, followers woken by the host elect a new one', (t) => {
  const { c } = idleCluster();
  c.node(1).raft.quiesce();
  c.stabilize();
  c.crash(1);
  c.tickAll(50);
  t.is(c.leader(), 0, 'quiesced followers do not notice by themselves');
  // The host's node-level liveness notices node 1 is gone and wakes the groups it led.
  for (const id of [2, 3]) c.node(id).raft.wake();
  c.tickAll(60);
  const lead = c.leader();
  t.true(lead === 2 || lead === 3);
  t.true(c.node(lead).raft.propose(enc('c')).ok);
  c.stabilize();
  t.deepEqual(c.node(lead === 2 ? 3 : 2).applied.map(normalData).filter((x) => x !== null).slice(-1), ['c']);
});

test('a node that restarts while its followers are quiesced still gets a leader elected', (t) => {
  const { c } = idleCluster();
  c.node(1).raft.quiesce();
  c.stabilize();
  c.crash(1);
  c.node(1).restart();
  // Node 1 comes back as a follower; its campaign messages wake the others.
  c.tickAll(100);
  t.true(c.leader() !== 0);
  t.true(c.node(c.leader()).raft.propose(enc('d')).ok);
  c.stabilize();
});

test('a woken leader serves no lease read until a quorum acks a new round', (t) => {
  const { c } = idleCluster({ readOnly: 'lease' });
  c.node(1).raft.quiesce();
  c.stabilize();
  c.isolate(1);
  t.true(c.node(1).raft.readIndex(5).ok);
  c.stabilize();
  t.deepEqual(c.node(1).readsDone.filter((r) => r.context === 5), []);
});
