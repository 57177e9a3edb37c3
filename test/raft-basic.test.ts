import test from 'ava';
import { MemCluster, enc, normalData } from './raft/mem-cluster.ts';

test('a 3-node cluster elects one leader and commits proposals everywhere', (t) => {
  const c = new MemCluster([1, 2, 3]);
  const lead = c.electLeader();
  for (let i = 0; i < 50; i++) {
    const r = c.node(lead).raft.propose(enc(`v${i}`));
    t.true(r.ok);
  }
  c.stabilize();
  c.tickAll(2);
  for (const n of c.nodes.values()) {
    const vals = n.applied.map(normalData).filter((x) => x !== null);
    t.is(vals.length, 50);
    t.is(vals[49], 'v49');
  }
  let leaders = 0;
  for (const n of c.nodes.values()) if (n.raft.status().role === 'leader') leaders++;
  t.is(leaders, 1);
});

test('a single-node group commits on its own', (t) => {
  const c = new MemCluster([1]);
  const lead = c.electLeader();
  t.is(lead, 1);
  const r = c.node(1).raft.propose(enc('x'));
  t.true(r.ok);
  c.stabilize();
  t.deepEqual(c.node(1).applied.map(normalData).filter((x) => x !== null), ['x']);
});

test('followers reject proposals with not_leader', (t) => {
  const c = new MemCluster([1, 2, 3]);
  const lead = c.electLeader();
  const follower = [1, 2, 3].find((x) => x !== lead) as number;
  t.deepEqual(c.node(follower).raft.propose(enc('x')), { ok: false, code: 'not_leader' });
});

test('ReadIndex batches many reads into one heartbeat round', (t) => {
  const c = new MemCluster([1, 2, 3]);
  const lead = c.electLeader();
  c.tickAll(1);
  const before = c.delivered;
  for (let i = 1; i <= 100; i++) t.true(c.node(lead).raft.readIndex(i).ok);
  c.stabilize();
  t.is(c.node(lead).readsDone.length, 100);
  // One heartbeat and one response per follower.
  t.is(c.delivered - before, 4);
});

test('a read is not answered by a leader cut off from its quorum', (t) => {
  const c = new MemCluster([1, 2, 3]);
  const lead = c.electLeader();
  c.tickAll(1);
  c.isolate(lead);
  t.true(c.node(lead).raft.readIndex(7).ok);
  c.stabilize();
  t.is(c.node(lead).readsDone.length, 0);
});

test('check-quorum: an isolated leader steps down; on return it does not depose the new one', (t) => {
  const c = new MemCluster([1, 2, 3]);
  const old = c.electLeader();
  c.isolate(old);
  c.tickAll(40);
  t.not(c.node(old).raft.status().role, 'leader');
  const fresh = c.leader();
  t.true(fresh !== 0 && fresh !== old);
  const term = c.node(fresh).raft.status().term;
  c.heal();
  c.tickAll(40);
  t.is(c.leader(), fresh);
  t.is(c.node(fresh).raft.status().term, term);
});

test('leadership transfer hands over to a caught-up follower', (t) => {
  const c = new MemCluster([1, 2, 3]);
  const lead = c.electLeader();
  const target = [1, 2, 3].find((x) => x !== lead) as number;
  c.node(lead).raft.propose(enc('a'));
  c.stabilize();
  t.true(c.node(lead).raft.transferLeadership(target));
  c.stabilize();
  t.is(c.leader(), target);
});

test('membership: add a learner, promote it, remove a voter', (t) => {
  const c = new MemCluster([1, 2, 3]);
  const lead = c.electLeader();
  c.node(lead).raft.propose(enc('before'));
  c.stabilize();
  c.add(4, { voters: [], learners: [] });
  t.true(c.node(lead).raft.proposeConfChange({ type: 'addLearner', node: 4 }).ok);
  c.stabilize();
  c.tickAll(3);
  t.deepEqual(c.node(4).raft.status().conf, { voters: [1, 2, 3], learners: [4] });
  t.true(c.node(lead).raft.proposeConfChange({ type: 'addVoter', node: 4 }).ok);
  c.stabilize();
  c.tickAll(2);
  t.deepEqual(c.node(lead).raft.status().conf.voters, [1, 2, 3, 4]);
  const victim = [1, 2, 3].find((x) => x !== lead) as number;
  t.true(c.node(lead).raft.proposeConfChange({ type: 'remove', node: victim }).ok);
  c.stabilize();
  c.tickAll(2);
  t.false(c.node(lead).raft.status().conf.voters.includes(victim));
  const vals = c.node(4).applied.map(normalData).filter((x) => x !== null);
  t.deepEqual(vals, ['before']);
  // Removing the leader itself is refused: transfer first.
  t.deepEqual(c.node(lead).raft.proposeConfChange({ type: 'remove', node: lead }), { ok: false, code: 'invalid_conf_change' });
});

test('a follower far behind a compacted log catches up by snapshot', (t) => {
  const c = new MemCluster([1, 2, 3]);
  const lead = c.electLeader();
  const lag = [1, 2, 3].find((x) => x !== lead) as number;
  c.crash(lag);
  for (let i = 0; i < 30; i++) c.node(lead).raft.propose(enc(`v${i}`));
  c.stabilize();
  c.tickAll(1);
  const l = c.node(lead);
  l.raft.compact(l.appliedIndex, enc(`image@${l.appliedIndex}`));
  t.true(l.raft.status().firstIndex > 2);
  c.node(lag).restart();
  c.tickAll(5);
  const s = c.node(lag).storage.snapshot;
  t.truthy(s);
  t.is(new TextDecoder().decode(s?.data), `image@${l.appliedIndex}`);
  t.is(c.node(lag).raft.status().commit, l.raft.status().commit);
});
