/**
 * Golden transcripts of the classic scenarios. Each scenario is scripted
 * message by message; the transcript (every node's trace plus the logs at
 * key points) must match test/golden/<name>.txt exactly, so any change in
 * behaviour shows up as a diff to review. UPDATE_GOLDEN=1 rewrites them.
 * The scenarios also assert the property they are about.
 */
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MsgType, type Message, type NodeId, type PlantedBugs } from '../raft/index.ts';
import { MemCluster, enc, normalData } from './raft/mem-cluster.ts';

function goldenPath(name: string): string {
  return fileURLToPath(new URL(`./golden/${name}.txt`, import.meta.url));
}

function checkGolden(t: import('ava').ExecutionContext, name: string, transcript: string): void {
  if (process.env['UPDATE_GOLDEN'] === '1') {
    writeFileSync(goldenPath(name), transcript);
    t.pass();
    return;
  }
  t.is(transcript, readFileSync(goldenPath(name), 'utf8'));
}

class Script {
  lines: string[] = [];
  c: MemCluster;
  constructor(ids: NodeId[], opts: object, bugs?: PlantedBugs) {
    this.c = new MemCluster(ids, { ...opts, bugs, trace: (l: string) => this.lines.push(`  ${l}`) });
  }
  say(s: string): void {
    this.lines.push(s);
  }
  logs(): void {
    for (const [id, n] of this.c.nodes) {
      const st = n.raft.status();
      const ents = n.storage.entries.map((e) => `${e.index}:t${e.term}${normalData(e) === null ? '' : `=${normalData(e)}`}`);
      this.lines.push(`  S${id} ${n.alive ? '' : '(down) '}term=${st.term} commit=${st.commit} log=[${ents.join(' ')}]`);
    }
  }
  text(): string {
    return `${this.lines.join('\n')}\n`;
  }
}

/** Campaign until `id` wins (a campaign may first lose to votes already cast in that term). */
function win(s: Script, id: NodeId): void {
  for (let i = 0; i < 3 && s.c.node(id).raft.status().role !== 'leader'; i++) {
    s.c.node(id).raft.campaign();
    s.c.stabilize();
  }
}

/**
 * Figure 8 of the Raft paper: an entry of an old term that sits on a majority
 * is still not committed by counting, because a later leader may overwrite it.
 */
function figure8(bugs?: PlantedBugs): { s: Script; overwritten: boolean; committedX: boolean } {
  const s = new Script([1, 2, 3, 4, 5], { preVote: false, checkQuorum: false, maxMsgBytes: 1 }, bugs);
  const c = s.c;
  s.say('(a) S1 becomes leader; its no-op commits everywhere');
  c.node(1).raft.campaign();
  c.stabilize();
  s.say('S1 appends x; it reaches S2 only');
  c.filter = (m) => m.from !== 1 || m.to === 2;
  c.node(1).raft.propose(enc('xxxxxxxxxx'));
  c.stabilize();
  s.logs();
  s.say('(b) S1 crashes; S5 wins with votes of S3, S4 and appends y, which reaches nobody');
  c.crash(1);
  c.filter = (m) => m.type === MsgType.Vote || m.type === MsgType.VoteResp ? m.from !== 2 && m.to !== 2 : m.from !== 5;
  c.node(5).raft.campaign();
  c.stabilize();
  c.node(5).raft.propose(enc('yyyyyyyyyy'));
  c.stabilize();
  s.logs();
  s.say('(c) S5 crashes; S1 restarts, wins, and copies x (not its no-op) to S3 and S4: x is on a majority');
  c.crash(5);
  c.node(1).restart();
  // (Index 1 is the bootstrap configuration; x is index 3.) S1's no-op (index 4)
  // reaches nobody; x reaches S3 and S4 once they have rejected the first probe.
  c.filter = (m: Message) =>
    !(m.from === 1 && m.type === MsgType.App &&
      (m.to === 2 || (m.entries.some((e) => e.index >= 4) && c.node(m.to).raft.status().lastIndex >= 3)));
  win(s, 1);
  s.logs();
  const committedX = c.node(1).raft.status().commit >= 3;
  s.say(`    S1 commit index now ${c.node(1).raft.status().commit} (3 would mean x was counted as committed)`);
  s.say('(d) S1 crashes; S5 restarts and wins with votes of S2, S3, S4; it overwrites x with y');
  c.crash(1);
  c.node(5).restart();
  c.heal();
  c.filter = (m) => m.to !== 1;
  win(s, 5);
  s.logs();
  const overwritten = [2, 3, 4].every((id) => {
    const e = c.node(id).storage.entries.find((x) => x.index === 3);
    return e !== undefined && normalData(e) !== 'xxxxxxxxxx';
  });
  return { s, overwritten, committedX };
}

test('golden: Figure 8 — an old-term entry on a majority is not committed by counting', (t) => {
  const { s, overwritten, committedX } = figure8();
  t.false(committedX, 'x must not be committed by counting replicas of an old term');
  t.true(overwritten, 'S5 may legally overwrite the uncommitted x');
  checkGolden(t, 'figure8', s.text());
});

test('teeth: the Figure 8 script shows the commitOldTerm bug committing x, then losing it', (t) => {
  const { committedX, overwritten } = figure8({ commitOldTerm: true });
  t.true(committedX && overwritten, 'with the bug, a committed entry is overwritten');
});

test('golden: a leader partitioned away steps down, and on return does not disrupt', (t) => {
  const s = new Script([1, 2, 3], {});
  const c = s.c;
  c.node(1).raft.campaign();
  c.stabilize();
  c.node(1).raft.propose(enc('a'));
  c.stabilize();
  s.say('S1 is leader; S1 is cut off from S2 and S3');
  c.isolate(1);
  for (let i = 0; i < 30; i++) c.tickAll();
  s.logs();
  t.not(c.node(1).raft.status().role, 'leader');
  const lead = c.leader();
  t.true(lead === 2 || lead === 3);
  c.node(lead).raft.propose(enc('b'));
  c.stabilize();
  const term = c.node(lead).raft.status().term;
  s.say('the partition heals');
  c.heal();
  for (let i = 0; i < 30; i++) c.tickAll();
  s.logs();
  t.is(c.leader(), lead);
  t.is(c.node(lead).raft.status().term, term);
  t.deepEqual(c.node(1).applied.map(normalData).filter((x) => x !== null), ['a', 'b']);
  checkGolden(t, 'partitioned-leader', s.text());
});

test('golden: a follower far behind a compacted log is sent a snapshot', (t) => {
  const s = new Script([1, 2, 3], {});
  const c = s.c;
  c.node(1).raft.campaign();
  c.stabilize();
  s.say('S3 goes down; 20 entries commit on S1, S2; S1 and S2 compact their logs');
  c.crash(3);
  for (let i = 0; i < 20; i++) c.node(1).raft.propose(enc(`v${i}`));
  c.stabilize();
  c.tickAll();
  for (const id of [1, 2]) {
    const n = c.node(id);
    n.raft.compact(n.appliedIndex, enc(`image@${n.appliedIndex}`));
  }
  s.say('S3 restarts');
  c.node(3).restart();
  for (let i = 0; i < 3; i++) c.tickAll();
  s.logs();
  t.is(c.node(3).storage.snapshot?.meta.index, c.node(1).raft.currentSnapshot()?.meta.index);
  t.is(c.node(3).raft.status().commit, c.node(1).raft.status().commit);
  checkGolden(t, 'snapshot-catch-up', s.text());
});
