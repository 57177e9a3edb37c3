import test from 'ava';
import { MsgType, type Message } from '../raft/index.ts';
import { MemCluster, enc, normalData } from './raft/mem-cluster.ts';

test('flow control: at most maxInflightMsgs Apps of at most maxMsgBytes go out unacknowledged', (t) => {
  const c = new MemCluster([1, 2, 3], { maxInflightMsgs: 4, maxMsgBytes: 100 });
  c.node(1).raft.campaign();
  c.stabilize();
  // Hold every App from the leader: count what it sends without acks.
  const held: Message[] = [];
  c.filter = (m) => {
    if (m.type === MsgType.App && m.from === 1) {
      held.push(m);
      return false;
    }
    return true;
  };
  for (let i = 0; i < 100; i++) c.node(1).raft.propose(new Uint8Array(40));
  c.stabilize();
  for (const to of [2, 3]) {
    const apps = held.filter((m) => m.to === to);
    t.is(apps.length, 4, `window of 4 to node ${to}`);
    for (const m of apps) t.true(m.entries.reduce((s, e) => s + e.data.length, 0) <= 100);
  }
  c.heal();
  c.tickAll(3);
  t.is(c.node(2).raft.status().commit, c.node(1).raft.status().commit);
  t.is(c.node(2).applied.filter((e) => e.data.length === 40).length, 100);
});

test('fast backtracking repairs a long divergent log in a few round trips', (t) => {
  const c = new MemCluster([1, 2, 3]);
  c.node(1).raft.campaign();
  c.stabilize();
  // Node 1 appends 200 entries that reach nobody, then is cut off.
  c.isolate(1);
  for (let i = 0; i < 200; i++) c.node(1).raft.propose(enc(`lost${i}`));
  c.stabilize();
  c.tickAll(30);
  const lead = c.leader();
  t.true(lead === 2 || lead === 3);
  for (let i = 0; i < 50; i++) c.node(lead).raft.propose(enc(`kept${i}`));
  c.stabilize();
  // A fresh leader starts probing node 1 at its own last index, far from the divergence.
  const other = lead === 2 ? 3 : 2;
  t.true(c.node(lead).raft.transferLeadership(other));
  c.stabilize();
  t.is(c.leader(), other);
  // Count the App/AppResp exchanges with node 1 after healing.
  let rejections = 0;
  c.heal();
  c.filter = (m) => {
    if (m.type === MsgType.AppResp && m.from === 1 && m.reject) rejections++;
    return true;
  };
  c.tickAll(5);
  t.true(rejections <= 3, `rejections: ${rejections}`);
  const vals = c.node(1).applied.map(normalData).filter((x) => x !== null);
  t.false(vals.some((v) => v.startsWith('lost')));
  t.is(vals.filter((v) => v.startsWith('kept')).length, 50);
});

test('lease reads: served without a message round while the lease holds, refused after isolation', (t) => {
  const c = new MemCluster([1, 2, 3], { readOnly: 'lease' });
  c.node(1).raft.campaign();
  c.stabilize();
  c.tickAll(1); // a heartbeat round confirms the lease
  const before = c.delivered;
  t.true(c.node(1).raft.readIndex(1).ok);
  c.stabilize();
  t.is(c.node(1).readsDone.length, 1);
  t.is(c.delivered, before, 'no messages for a lease read');
  c.isolate(1);
  c.tickAll(9); // electionTicks 10, drift 2: the lease has run out
  t.true(c.node(1).raft.readIndex(2).ok);
  c.stabilize();
  t.is(c.node(1).readsDone.length, 1, 'an expired lease needs a quorum round');
});

test('proposals are refused with overloaded beyond maxUncommittedBytes', (t) => {
  const c = new MemCluster([1, 2, 3], { maxUncommittedBytes: 1000 });
  c.node(1).raft.campaign();
  c.stabilize();
  c.isolate(1);
  t.true(c.node(1).raft.propose(new Uint8Array(600)).ok);
  t.deepEqual(c.node(1).raft.propose(new Uint8Array(600)), { ok: false, code: 'overloaded' });
  c.heal();
  c.tickAll(2);
  t.true(c.node(1).raft.propose(new Uint8Array(600)).ok, 'room again once committed');
});

test('a restarted node recovers its term, vote, log and commit from what was persisted', (t) => {
  const c = new MemCluster([1, 2, 3]);
  c.node(1).raft.campaign();
  c.stabilize();
  for (let i = 0; i < 10; i++) c.node(1).raft.propose(enc(`v${i}`));
  c.stabilize();
  c.tickAll(1);
  const before = c.node(2).raft.status();
  c.crash(2);
  c.node(2).restart();
  const after = c.node(2).raft.status();
  t.is(after.term, before.term);
  t.is(after.vote, before.vote);
  t.is(after.lastIndex, before.lastIndex);
  t.is(after.commit, before.commit);
});

test('a follower that lost entries it had acknowledged (a storage fault) is stuck until the leader forgets its progress, then catches up', (t) => {
  const c = new MemCluster([1, 2, 3]);
  c.node(1).raft.campaign();
  c.stabilize();
  for (let i = 0; i < 20; i++) c.node(1).raft.propose(enc(`v${i}`));
  c.stabilize();
  const commit = c.node(1).raft.status().commit;
  t.is(c.node(3).raft.status().commit, commit);
  // Node 3 restarts having lost the last 10 entries of its log, all acknowledged.
  c.crash(3);
  const st = c.node(3).storage;
  st.entries.length -= 10;
  st.hardState = { ...st.hardState, commit: Math.min(st.hardState.commit, st.entries.length) };
  c.node(3).restart();
  for (let i = 0; i < 5; i++) c.node(1).raft.propose(enc(`w${i}`));
  // Without help the leader never goes below what it believes node 3 holds:
  // it takes the rejections as stale (bounded, in case of a regression to a loop).
  try {
    c.stabilize(2000);
  } catch {
    c.queue = [];
  }
  t.true(c.node(3).raft.status().lastIndex < c.node(1).raft.status().lastIndex, 'node 3 cannot catch up on its own');
  c.node(1).raft.forgetProgress(3);
  c.tickAll(5);
  t.is(c.node(3).raft.status().lastIndex, c.node(1).raft.status().lastIndex);
  t.is(c.node(3).raft.status().commit, c.node(1).raft.status().commit);
});

test('applyBreakEvery: no Ready hands out committed entries past a multiple of it (the node hashes the state there)', (t) => {
  const spans = (every: number): { spanning: number[][]; applied: number } => {
    const c = new MemCluster([1, 2, 3], every === 0 ? {} : { applyBreakEvery: every });
    c.node(1).raft.campaign();
    c.stabilize();
    for (let i = 0; i < 40; i++) c.node(1).raft.propose(enc(`v${i}`));
    c.stabilize();
    c.tickAll(3);
    const all = [1, 2, 3].flatMap((id) => c.node(id).applyBatches);
    return { spanning: all.filter((b) => b.slice(0, -1).some((i) => i % 5 === 0)), applied: Math.min(...[1, 2, 3].map((id) => c.node(id).appliedIndex)) };
  };
  const on = spans(5);
  t.deepEqual(on.spanning, [], 'a batch ran past a multiple of 5');
  t.true(on.applied >= 41, `every entry applied (${on.applied})`);
  // The same load without it hands out batches across multiples: the check above can fail.
  t.true(spans(0).spanning.length > 0);
});
