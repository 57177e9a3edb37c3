/**
 * Lease reads are only as safe as the rule that keeps a quorum from electing
 * another leader while the lease runs. These are the ways around that rule
 * found in review; each scenario failed before its fix.
 */
import test from 'ava';
import { MsgType, type Message } from '../raft/index.ts';
import { MemCluster, enc } from './raft/mem-cluster.ts';

const lease = { readOnly: 'lease' as const, leaseDriftTicks: 2 };

test('a TimeoutNow delivered after the transfer was abandoned does not leave a stale lease', (t) => {
  const c = new MemCluster([1, 2, 3], lease);
  c.node(1).raft.campaign();
  c.stabilize();
  c.node(1).raft.propose(enc('a'));
  c.stabilize();
  c.tickAll(2);
  const held: Message[] = [];
  c.filter = (m) => (m.type === MsgType.TimeoutNow ? (held.push(m), false) : true);
  t.true(c.node(1).raft.transferLeadership(2));
  c.stabilize();
  t.is(held.length, 1);
  c.tickAll(10); // the transfer times out; heartbeats keep the lease fresh
  t.is(c.node(1).raft.status().leadTransferee, 0);
  t.is(c.node(1).raft.status().role, 'leader');
  c.filter = (m) => m.from !== 1 && m.to !== 1;
  for (const m of held) c.node(m.to).raft.step(m);
  c.stabilize();
  t.is(c.leader(), 2);
  c.node(2).raft.propose(enc('b'));
  c.stabilize();
  c.node(1).raft.readIndex(99);
  c.stabilize();
  t.deepEqual(c.node(1).readsDone, [], 'the deposed leader must not answer from its lease');
});

test('a follower that restarts right after acking a lease round does not vote it away', (t) => {
  const c = new MemCluster([1, 2, 3], lease);
  c.node(1).raft.campaign();
  c.stabilize();
  c.node(1).raft.propose(enc('a'));
  c.stabilize();
  c.tickAll(2);
  // Cut 1<->3: node 3's lease on 1 runs out, node 2 keeps acking.
  c.filter = (m) => !((m.from === 1 && m.to === 3) || (m.from === 3 && m.to === 1));
  c.tickAll(25);
  t.is(c.node(1).raft.status().role, 'leader');
  c.crash(2);
  c.node(2).restart();
  c.filter = (m) => m.from !== 1 && m.to !== 1;
  // While node 1's lease may still run, node 2 (restarted) must refuse 3's campaign.
  for (let i = 0; i < 7; i++) {
    c.node(3).raft.campaign();
    c.tickAll(1);
    c.node(1).raft.readIndex(100 + i);
    c.stabilize();
    if (c.node(3).raft.status().role === 'leader') {
      t.deepEqual(c.node(1).readsDone.filter((r) => r.context >= 100), [], 'no lease read once another leader exists');
    }
  }
  t.not(c.node(3).raft.status().role, 'leader', 'the restarted follower honours the lease it may have acked');
});

test('a restart whose commit-only hard state was not synced still starts (applied implies committed)', (t) => {
  const c = new MemCluster([1, 2, 3]);
  c.node(1).raft.campaign();
  c.stabilize();
  c.node(1).raft.propose(enc('a'));
  c.stabilize();
  c.tickAll(2);
  const f = c.node(3);
  const applied = f.appliedIndex;
  f.storage.hardState = { ...f.storage.hardState, commit: applied - 1 };
  c.crash(3);
  t.notThrows(() => f.raft = new (f.raft.constructor as typeof import('../raft/index.ts').RaftNode)(
    { ...f.cfg, applied }, { hardState: f.storage.hardState, snapshot: null, entries: [...f.storage.entries] }));
  t.is(f.raft.status().commit, applied);
});
