import { invariant } from './assert.ts';
import { RaftLog } from './log.ts';
import { Progress, ProgressState } from './progress.ts';
import { ReadOnly } from './read-only.ts';
import {
  EntryType, LOST_VOTE, MsgType, NONE, Role,
  type ConfChange, type ConfState, type Entry, type HardState, type Message, type MsgType as MsgTypeT,
  type NodeId, type Persisted, type ProposeResult, type RaftConfig, type ReadState, type Ready,
  type Snapshot, type SoftState, type Status,
} from './types.ts';

/*
 * Persistence contract (what must be durable before what goes out):
 *
 *  1. Everything in a Ready — snapshot, hardState, entries — must be durable
 *     (fsync'd) before that Ready's messages are sent (exceptions below). A
 *     vote or a term that is sent but not durable lets a restarted node vote
 *     twice in one term; an AppResp sent before the entries are durable lets
 *     a commit count a copy that a crash then loses.
 *  2. The leader counts its own log toward commit only up to what persisted()
 *     acknowledged, so a leader's App messages may be sent before its own
 *     append is durable (Raft thesis §10.2.1) without weakening rule 1 for
 *     the commit decision.
 *  3. Applying a committed entry and recording the applied index must be one
 *     atomic step in the host, and a restart passes that index as
 *     RaftConfig.applied.
 *  4. Pipelining (like etcd's asynchronous storage writes): the host may
 *     keep stepping, ticking, proposing and call ready() again while earlier
 *     Readies are still being persisted. It persists Readies in the order
 *     they were handed out, sends a Ready's messages only after that Ready
 *     (and so every earlier one) is durable, and acknowledges each with
 *     persisted(rd), in order. The core counts a Ready's entries as durable
 *     only from that acknowledgement, and only those still in the log that
 *     were not replaced meanwhile (a new leader's suffix, a snapshot).
 *  5. Ready.committedEntries are always durable here already, so the host may
 *     apply them at once, before persisting the Ready they come in, and then
 *     acknowledge with applied(rd). A Ready carrying a snapshot has no
 *     committed entries; later entries are handed out only after the
 *     snapshot's Ready is acknowledged, so they follow its install.
 *     advance(rd) = persisted(rd) + applied(rd), for hosts that do one Ready
 *     at a time.
 *
 * Exceptions to rule 1, sendable before their Ready is durable, but only while
 * the sender's term and vote are already durable (an earlier acknowledged
 * Ready): a leader's App and Heartbeat (thesis §10.2.1, safe by rule 2), and
 * a follower's HeartbeatResp, which vouches for no log state, only for the
 * (durable) term it recognizes the leader in.
 */

/*
 * Lost state. Raft needs a voter's term, vote and log to survive restarts. A
 * founding voter that starts with nothing persisted is either new (the group is
 * being founded) or lost its data directory, and it cannot tell which. Before
 * the loss it may have voted in some term T (for a candidate C, which persisted
 * a term >= T before asking) and acknowledged entries that were then committed
 * with its help. Voting again at once could elect two leaders in T, or elect a
 * candidate without those entries. So such a replica (and one that restarts
 * before it recovered: its persisted vote is LOST_VOTE) recovers first, granting
 * no vote and never campaigning until it has:
 *
 *  1. 'probing': asked every other voter of its configuration its term
 *     (LostState, answered whatever the terms: LostStateResp, which echoes
 *     this incarnation's random nonce, so answers to an earlier incarnation's
 *     probes do not count) and heard every one of them. The highest term F
 *     bounds every term it could have voted in for another node (C answered
 *     after the restart) and every term of a leader it acknowledged. All at
 *     term 0 (and itself too): a new group, recovery ends. Meanwhile it
 *     ignores App, Heartbeat and Snap: it may have promised a higher term than
 *     their leader's, and its ack would count toward that stale leader's
 *     commit (or confirm its reads and lease).
 *  2. 'catching-up': followed a leader of a term above F until it holds an
 *     entry of that leader's term (from it). That leader was elected without
 *     this replica's vote, so it holds every entry ever committed with the old
 *     acknowledgements (its voters and every commit quorum meet outside this
 *     replica), and this replica now holds its log up to an entry that follows
 *     all of them. A leader of a term up to F is asked to step down and
 *     campaign (LostState, context 1, F in `index`), which gives a term above
 *     F in one election; a leader above F asked (the replica did not know of
 *     it yet) answers with a heartbeat instead, so no election is wasted.
 *
 * From then on it votes normally, in that term too: as the new replica it has
 * voted in no term, and the old one voted for no other node above F (a vote
 * for itself above F, its requests still in flight, elects nobody else: its
 * old log is no more up to date than the new one). Its last index then is persisted
 * with that vote (HardState.recovered): a host serves no state applied below
 * it (lostStateUnserved), across restarts too, since what it had applied may
 * not have reached its disk when it crashed. Assumes the voters of its
 * initial configuration are the group's voters (the storage node has no
 * membership operation), one replica recovering at a time (two that recover
 * together in a group of three wait for each other, for good: an operator must
 * step in), and at most one lost data directory per quorum.
 * Peers that do not know LostState never answer: the replica stays probing.
 */
const MAX_PENDING_READS = 1 << 16;
const TRANSFER_CONTEXT = 1;
const STEP_DOWN_CONTEXT = 1;

export type ReadIndexResult = { ok: true } | { ok: false; code: 'not_leader' | 'transferring' | 'overloaded' };

interface ConfRecord {
  index: number;
  conf: ConfState;
}

function emptyMessage(type: MsgTypeT, from: NodeId, to: NodeId, term: number): Message {
  return {
    type, from, to, term, logTerm: 0, index: 0, entries: [], commit: 0,
    reject: false, rejectHint: 0, context: 0, snapshot: null,
  };
}

function cloneConf(c: ConfState): ConfState {
  return { voters: [...c.voters], learners: [...c.learners] };
}

/** Apply one single-server change to a configuration. */
export function applyConfChange(c: ConfState, cc: ConfChange): ConfState {
  if (cc.type === 'bootstrap') {
    invariant(cc.conf !== undefined, 'bootstrap carries a configuration');
    return cloneConf(cc.conf);
  }
  const voters = c.voters.filter((v) => v !== cc.node);
  const learners = c.learners.filter((v) => v !== cc.node);
  if (cc.type === 'addVoter') voters.push(cc.node);
  else if (cc.type === 'addLearner') learners.push(cc.node);
  voters.sort((a, b) => a - b);
  learners.sort((a, b) => a - b);
  return { voters, learners };
}

export class RaftNode {
  readonly id: NodeId;
  private readonly cfg: RaftConfig;
  private readonly log = new RaftLog();
  /** maybeCommit's work array (voters' match indexes, highest first). */
  private readonly matchScratch: number[] = [];

  private term = 0;
  private vote: NodeId = NONE;
  private lead: NodeId = NONE;
  private role: Role = Role.Follower;

  /** Configuration = the latest ConfChange in the log (thesis §4.1). */
  private baseConf: ConfState;
  private confHistory: ConfRecord[] = [];
  private conf: ConfState;

  private prs = new Map<NodeId, Progress>();
  private votes = new Map<NodeId, boolean>();
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private ticks = 0;
  private leadTransferee: NodeId = NONE;
  private transferElapsed = 0;
  /** A TimeoutNow went out in this term: a forced election may follow, so the lease no longer holds. */
  private timeoutNowSent = false;
  /** Ticks after a restart during which votes are refused (see step()). */
  private restartLeaseTicks = 0;
  /** Idle and in agreement: ticks are ignored until something wakes the group. */
  private quiesced = false;
  /** Lost-state recovery (see "Lost state" above): 0 none, 1 probing, 2 catching up. */
  private recovery: 0 | 1 | 2 = 0;
  /** Highest term any voter reported while probing: recovery ends under a leader of a higher term. */
  private recoveryFloor = 0;
  private probePending = new Set<NodeId>();
  private probeElapsed = 0;
  private stepDownAskedTick = Number.NEGATIVE_INFINITY;
  /** Sent in this incarnation's probes and echoed in the answers: an answer to an earlier incarnation's probe is stale. */
  private probeNonce = 0;
  /** Last index when lost-state recovery ended (0: there was none): past every entry the lost replica applied. */
  private recoveredAt = 0;
  /**
   * The highest commit index a leader has told this node (App.commit, and
   * Heartbeat.index, which carries the leader's real commit — Heartbeat.commit
   * is capped at what the follower is known to hold). A follower that has
   * applied this far was current at that contact; one that has not is behind,
   * however recently it heard from the leader (bounded stale reads).
   */
  private leaderCommitSeen = 0;
  private uncommittedBytes = 0;
  private needBroadcast = false;

  private readOnly = new ReadOnly();
  private msgs: Message[] = [];
  private readStates: ReadState[] = [];
  private prevHard: HardState;
  private prevSoft: SoftState;

  constructor(config: RaftConfig, persisted: Persisted | null) {
    invariant(config.id > 0, 'id > 0');
    invariant(config.heartbeatTicks > 0, 'heartbeatTicks > 0');
    invariant(config.electionTicks > config.heartbeatTicks, 'electionTicks > heartbeatTicks');
    invariant(config.leaseDriftTicks < config.electionTicks, 'leaseDriftTicks < electionTicks');
    // Tick phases differ between nodes by up to one tick: a lease needs a margin.
    invariant(config.readOnly === 'safe' || config.leaseDriftTicks >= 1, 'lease reads need leaseDriftTicks >= 1');
    invariant(config.readOnly === 'safe' || config.checkQuorum, 'lease reads need checkQuorum');
    invariant(config.maxInflightMsgs > 0 && config.maxMsgBytes > 0, 'positive flow-control limits');
    this.cfg = config;
    this.id = config.id;
    this.baseConf = { voters: [], learners: [] };
    if (persisted !== null) {
      this.load(persisted);
      this.restartLeaseTicks = config.electionTicks;
    }
    else if (config.initialConf.voters.length > 0) this.bootstrap(config.initialConf);
    this.conf = this.latestConf();
    this.prevHard = { term: this.term, vote: this.vote, commit: this.log.committed };
    if (this.recoveredAt > 0) this.prevHard.recovered = this.recoveredAt;
    const lostState = persisted === null
      ? config.initialConf.voters.includes(this.id) && config.initialConf.voters.length > 1
      : persisted.hardState.vote === LOST_VOTE;
    if (lostState && config.recoverLostState) {
      this.recovery = 1;
      this.vote = LOST_VOTE;
    }
    this.becomeFollower(this.term, NONE);
    this.prevSoft = { leader: NONE, role: Role.Follower };
    this.trace(`start term=${this.term} commit=${this.log.committed} last=${this.log.lastIndex()}`);
    if (this.recovery === 1) this.startProbing();
  }

  /** Founding member: entry 1 records the initial configuration, committed. */
  private bootstrap(conf: ConfState): void {
    const e: Entry = {
      term: 0, index: 1, type: EntryType.ConfChange, data: new Uint8Array(0),
      change: { type: 'bootstrap', node: 0, conf: cloneConf(conf) },
    };
    this.log.append([e]);
    this.recordConf(e);
    this.log.committed = 1;
  }

  private load(p: Persisted): void {
    const log = this.log;
    if (p.snapshot !== null) {
      log.snapIndex = p.snapshot.meta.index;
      log.snapTerm = p.snapshot.meta.term;
      log.snapshot = p.snapshot;
      this.baseConf = cloneConf(p.snapshot.meta.conf);
    }
    let expect = log.snapIndex + 1;
    for (const e of p.entries) {
      invariant(e.index === expect, `persisted log contiguous at ${expect}`);
      expect++;
    }
    log.load(p.entries);
    log.stableIndex = log.lastIndex();
    log.inProgressIndex = log.stableIndex;
    for (const e of log.entries) if (e.change !== null) this.recordConf(e);
    this.term = p.hardState.term;
    this.vote = p.hardState.vote;
    this.recoveredAt = p.hardState.recovered ?? 0;
    invariant(p.hardState.commit <= log.lastIndex(), 'persisted commit within the log');
    invariant(this.cfg.applied <= log.lastIndex(), `applied ${this.cfg.applied} within the persisted log`);
    // Applied entries are committed by definition, even if the commit index
    // that said so was not synced (a Ready that only moves commit need not sync).
    log.committed = Math.max(p.hardState.commit, log.snapIndex, this.cfg.applied);
    log.applied = Math.max(this.cfg.applied, log.snapIndex);
    log.applying = log.applied;
    invariant(log.applied <= log.committed, `applied ${log.applied} <= committed ${log.committed} at start`);
  }

  // ---------------------------------------------------------------- helpers

  private trace(line: string): void {
    if (this.cfg.trace !== undefined) this.cfg.trace(`[${this.id}] ${line}`);
  }

  private latestConf(): ConfState {
    const last = this.confHistory[this.confHistory.length - 1];
    return last === undefined ? this.baseConf : last.conf;
  }

  private confAt(index: number): ConfState {
    let c = this.baseConf;
    for (const r of this.confHistory) {
      if (r.index > index) break;
      c = r.conf;
    }
    return c;
  }

  private recordConf(e: Entry): void {
    invariant(e.change !== null, 'conf entry has a change');
    this.confHistory.push({ index: e.index, conf: applyConfChange(this.latestConf(), e.change) });
  }

  private lastConfIndex(): number {
    const last = this.confHistory[this.confHistory.length - 1];
    return last === undefined ? 0 : last.index;
  }

  private isVoter(id: NodeId): boolean {
    return this.conf.voters.includes(id);
  }

  private promotable(): boolean {
    return this.recovery === 0 && this.isVoter(this.id);
  }

  private quorum(): number {
    return (this.conf.voters.length >> 1) + 1;
  }

  private hasQuorum(acks: Set<NodeId>): boolean {
    let n = 0;
    for (const v of this.conf.voters) if (acks.has(v)) n++;
    return n >= this.quorum();
  }

  private send(m: Message): void {
    this.msgs.push(m);
  }

  private committedInTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  /** Append to our log and keep the configuration in step with it. */
  private appendToLog(ents: Entry[]): void {
    const truncated = this.log.append(ents);
    let confChanged = false;
    if (truncated > 0) {
      while (this.confHistory.length > 0 && (this.confHistory[this.confHistory.length - 1] as ConfRecord).index >= truncated) {
        this.confHistory.pop();
        confChanged = true;
      }
    }
    for (const e of ents) {
      if (e.change !== null) {
        this.recordConf(e);
        confChanged = true;
      }
    }
    if (confChanged) this.onConfChanged();
  }

  private onConfChanged(): void {
    this.conf = this.latestConf();
    this.trace(`conf voters=${this.conf.voters.join(',')} learners=${this.conf.learners.join(',')}`);
    if (this.role !== Role.Leader) return;
    const last = this.log.lastIndex();
    const members = [...this.conf.voters, ...this.conf.learners];
    for (const id of members) {
      const pr = this.prs.get(id);
      if (pr === undefined) {
        const p = new Progress(last + 1, this.cfg.maxInflightMsgs, !this.isVoter(id));
        // A new member counts as active until the next check-quorum: else
        // adding a voter just before the check could depose a healthy leader.
        p.recentActive = true;
        this.prs.set(id, p);
      } else {
        pr.isLearner = !this.isVoter(id);
      }
    }
    for (const id of [...this.prs.keys()]) {
      if (!members.includes(id) && id !== this.id) this.prs.delete(id);
    }
    if (this.leadTransferee !== NONE && !this.isVoter(this.leadTransferee)) this.leadTransferee = NONE;
    this.needBroadcast = true;
    if (this.maybeCommit()) this.needBroadcast = true;
  }

  private resetRandomizedElectionTimeout(): void {
    const e = this.cfg.electionTicks;
    this.randomizedElectionTimeout = e + Math.floor(this.cfg.random() * e);
  }

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = this.recovery === 0 ? NONE : LOST_VOTE;
    }
    this.lead = NONE;
    this.quiesced = false;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.leadTransferee = NONE;
    this.transferElapsed = 0;
    this.timeoutNowSent = false;
    this.votes.clear();
    this.prs.clear();
    this.readOnly.reset();
    this.uncommittedBytes = 0;
    this.needBroadcast = false;
  }

  // ---------------------------------------------------------------- roles

  private becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.lead = lead;
    this.role = Role.Follower;
    this.trace(`follower term=${term} lead=${lead}`);
  }

  private becomePreCandidate(): void {
    invariant(this.role !== Role.Leader, 'leader cannot pre-campaign');
    // Term and vote stay unchanged: a pre-vote disturbs nobody.
    this.votes.clear();
    this.lead = NONE;
    this.role = Role.PreCandidate;
    this.trace(`pre-candidate term=${this.term}`);
  }

  private becomeCandidate(): void {
    invariant(this.role !== Role.Leader, 'leader cannot campaign');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
    this.trace(`candidate term=${this.term}`);
  }

  private becomeLeader(): void {
    invariant(this.role === Role.Candidate, 'only a candidate becomes leader');
    this.reset(this.term);
    this.lead = this.id;
    this.role = Role.Leader;
    const last = this.log.lastIndex();
    for (const id of [...this.conf.voters, ...this.conf.learners]) {
      this.prs.set(id, new Progress(last + 1, this.cfg.maxInflightMsgs, !this.isVoter(id)));
    }
    const self = this.prs.get(this.id);
    invariant(self !== undefined, 'leader is a member');
    self.match = this.log.stableIndex;
    self.becomeReplicate();
    // A no-op of the new term lets the leader commit (and learn the commit
    // index) without waiting for a client proposal (§8).
    this.appendToLog([{ term: this.term, index: last + 1, type: EntryType.Normal, data: new Uint8Array(0), change: null }]);
    this.needBroadcast = true;
    this.trace(`leader term=${this.term}`);
  }

  /** Start an election now (skipping pre-vote when `transfer`). */
  campaign(transfer = false): void {
    if (!this.promotable() || this.role === Role.Leader) return;
    this.wake();
    if (this.cfg.preVote && !transfer) {
      this.becomePreCandidate();
      this.requestVotes(MsgType.PreVote, this.term + 1, false);
    } else {
      this.becomeCandidate();
      this.requestVotes(MsgType.Vote, this.term, transfer);
    }
  }

  private requestVotes(type: MsgTypeT, term: number, transfer: boolean): void {
    this.votes.set(this.id, true);
    if (this.tally() === 'won') {
      this.wonElection();
      return;
    }
    for (const v of this.conf.voters) {
      if (v === this.id) continue;
      const m = emptyMessage(type, this.id, v, term);
      m.index = this.log.lastIndex();
      m.logTerm = this.log.lastTerm();
      m.context = transfer ? TRANSFER_CONTEXT : 0;
      this.send(m);
    }
  }

  private tally(): 'won' | 'lost' | 'pending' {
    let granted = 0;
    let rejected = 0;
    for (const v of this.conf.voters) {
      const g = this.votes.get(v);
      if (g === true) granted++;
      else if (g === false) rejected++;
    }
    const q = this.quorum();
    if (granted >= q) return 'won';
    if (rejected > this.conf.voters.length - q) return 'lost';
    return 'pending';
  }

  private wonElection(): void {
    if (this.role === Role.PreCandidate) {
      this.becomeCandidate();
      this.requestVotes(MsgType.Vote, this.term, false);
    } else {
      this.becomeLeader();
    }
  }

  // ---------------------------------------------------------------- ticks

  tick(): void {
    if (this.quiesced) return;
    this.ticks++;
    if (this.recovery === 1 && ++this.probeElapsed >= this.cfg.heartbeatTicks) this.sendProbes();
    else if (this.recovery === 2) this.checkRecovered();
    if (this.role === Role.Leader) this.tickLeader();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.campaign(false);
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum && !this.quorumActive()) {
        this.trace(`lost quorum, stepping down term=${this.term}`);
        this.becomeFollower(this.term, NONE);
        return;
      }
    }
    if (this.leadTransferee !== NONE && ++this.transferElapsed >= this.cfg.electionTicks) {
      this.trace(`transfer to ${this.leadTransferee} timed out`);
      this.leadTransferee = NONE;
      this.transferElapsed = 0;
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat();
    }
    // A snapshot that got lost in transit would otherwise pause the follower forever.
    for (const pr of this.prs.values()) {
      if (pr.state === ProgressState.Snapshot && this.ticks - pr.snapshotSentTick > 2 * this.cfg.electionTicks) {
        pr.becomeProbe();
        pr.next = pr.match + 1;
      }
    }
  }

  private quorumActive(): boolean {
    const active = new Set<NodeId>();
    for (const [id, pr] of this.prs) {
      if (id === this.id || pr.recentActive) active.add(id);
      if (id !== this.id) pr.recentActive = false;
    }
    return this.hasQuorum(active);
  }

  private broadcastHeartbeat(): void {
    const round = this.readOnly.startRound(this.id, this.ticks);
    if (this.hasQuorum(new Set([this.id]))) {
      this.releaseReads(this.readOnly.confirmLatest());
    }
    for (const [id, pr] of this.prs) if (id !== this.id) this.sendHeartbeat(id, pr, round);
  }

  private sendHeartbeat(to: NodeId, pr: Progress, round: number): void {
    const m = emptyMessage(MsgType.Heartbeat, this.id, to, this.term);
    // Never tell a follower about a commit beyond what it is known to hold.
    m.commit = Math.min(pr.match, this.log.committed);
    // The leader's real commit, for the follower's staleness bound only (never committed to).
    m.index = this.log.committed;
    m.context = round;
    this.send(m);
  }

  // ---------------------------------------------------------------- step

  step(m: Message): void {
    if (m.to !== this.id) return;
    if (m.type === MsgType.LostState || m.type === MsgType.LostStateResp) {
      this.stepLostState(m);
      return;
    }
    // Probing: the lost incarnation may have reached a term above this leader's; an ack (or a heartbeat
    // answer, which confirms reads and leases) could count toward a stale leader's commit. Nothing until F is known.
    if (this.recovery === 1 && (m.type === MsgType.App || m.type === MsgType.Heartbeat || m.type === MsgType.Snap)) return;
    if (this.quiesced && this.wakesOnMessage(m)) this.wake();
    if (m.term > this.term) {
      if (m.type === MsgType.Vote || m.type === MsgType.PreVote) {
        const force = m.context === TRANSFER_CONTEXT;
        // Also for electionTicks after a restart: the node forgot whom it heard
        // from, and must not undercut a lease it may have acked just before.
        const inLease = this.cfg.checkQuorum &&
          ((this.lead !== NONE && this.electionElapsed < this.cfg.electionTicks) || this.ticks < this.restartLeaseTicks);
        if (!force && inLease) {
          // We heard from a live leader within the minimum election timeout:
          // a disruptive candidate (e.g. a rejoining partitioned node) is ignored.
          return;
        }
      }
      if (m.type === MsgType.PreVote || (m.type === MsgType.PreVoteResp && !m.reject)) {
        // Pre-votes never change our term.
      } else if (m.type === MsgType.App || m.type === MsgType.Heartbeat || m.type === MsgType.Snap) {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NONE);
      }
    } else if (m.term < this.term) {
      if ((this.cfg.checkQuorum || this.cfg.preVote) && (m.type === MsgType.Heartbeat || m.type === MsgType.App)) {
        // A stale leader: tell it our term so it steps down.
        this.send(emptyMessage(MsgType.AppResp, this.id, m.from, this.term));
      } else if (m.type === MsgType.PreVote) {
        const r = emptyMessage(MsgType.PreVoteResp, this.id, m.from, this.term);
        r.reject = true;
        this.send(r);
      }
      return;
    }

    if (m.type === MsgType.Vote || m.type === MsgType.PreVote) {
      this.handleVoteRequest(m);
      return;
    }
    switch (this.role) {
      case Role.Leader:
        this.stepLeader(m);
        break;
      case Role.Candidate:
      case Role.PreCandidate:
        this.stepCandidate(m);
        break;
      default:
        this.stepFollower(m);
    }
    if (this.recovery === 2) this.checkRecovered();
  }

  private handleVoteRequest(m: Message): void {
    const canVote = this.recovery === 0 && (
      this.vote === m.from ||
      (this.vote === NONE && this.lead === NONE) ||
      (m.type === MsgType.PreVote && m.term > this.term));
    const upToDate = this.cfg.bugs?.voteIgnoresLog === true || this.log.isUpToDate(m.index, m.logTerm);
    const respType = m.type === MsgType.Vote ? MsgType.VoteResp : MsgType.PreVoteResp;
    if (canVote && upToDate) {
      this.send(emptyMessage(respType, this.id, m.from, m.term));
      if (m.type === MsgType.Vote) {
        this.electionElapsed = 0;
        this.vote = m.from;
        this.trace(`voted for ${m.from} term=${m.term}`);
      }
    } else {
      const r = emptyMessage(respType, this.id, m.from, this.term);
      r.reject = true;
      this.send(r);
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MsgType.App:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppend(m);
        break;
      case MsgType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        break;
      case MsgType.Snap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        break;
      case MsgType.TimeoutNow:
        this.trace(`timeout-now from ${m.from}`);
        this.campaign(true);
        break;
      default:
        break;
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case MsgType.App:
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        break;
      case MsgType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        break;
      case MsgType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        break;
      case MsgType.VoteResp:
      case MsgType.PreVoteResp: {
        const mine = this.role === Role.Candidate ? MsgType.VoteResp : MsgType.PreVoteResp;
        if (m.type !== mine) break;
        if (!this.isVoter(m.from) || this.votes.has(m.from)) break;
        this.votes.set(m.from, !m.reject);
        const r = this.tally();
        if (r === 'won') this.wonElection();
        else if (r === 'lost') this.becomeFollower(this.term, NONE);
        break;
      }
      default:
        break;
    }
  }

  private handleAppend(m: Message): void {
    const log = this.log;
    if (m.commit > this.leaderCommitSeen) this.leaderCommitSeen = m.commit;
    const r = emptyMessage(MsgType.AppResp, this.id, m.from, this.term);
    if (m.index < log.committed) {
      r.index = log.committed;
      this.send(r);
      return;
    }
    if (log.matchTerm(m.index, m.logTerm)) {
      const lastNew = m.index + m.entries.length;
      const conflict = log.findConflict(m.entries);
      if (conflict !== 0) {
        invariant(conflict > log.committed, `conflict ${conflict} with committed entry ${log.committed}`);
        this.appendToLog(m.entries.slice(conflict - m.index - 1));
      }
      log.commitTo(Math.min(m.commit, lastNew));
      r.index = lastNew;
      this.send(r);
      return;
    }
    // Reject, with a hint that lets the leader skip a whole term at a time.
    const hintIndex = log.findConflictByTerm(Math.min(m.index, log.lastIndex()), m.logTerm);
    r.index = m.index;
    r.reject = true;
    r.rejectHint = hintIndex;
    r.logTerm = Math.max(log.term(hintIndex), 0);
    this.send(r);
  }

  private handleHeartbeat(m: Message): void {
    const seen = Math.max(m.index, m.commit);
    if (seen > this.leaderCommitSeen) this.leaderCommitSeen = seen;
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    if (m.reject) {
      // The leader is quiescing: follow suit if we hold exactly its log. No
      // answer (it would wake the leader); if we differ, answering wakes it.
      // A replica recovering lost state keeps ticking (it has a step-down to ask for), unless this very
      // heartbeat shows it is done.
      if (this.recovery === 2) this.checkRecovered();
      if (this.recovery === 0 && this.log.lastIndex() === m.commit && this.log.committed === m.commit) {
        this.quiesced = true;
        this.trace(`quiesced (follower of ${m.from})`);
        return;
      }
    }
    const r = emptyMessage(MsgType.HeartbeatResp, this.id, m.from, this.term);
    r.context = m.context;
    this.send(r);
  }

  private handleSnapshot(m: Message): void {
    const s = m.snapshot;
    invariant(s !== null, 'Snap carries a snapshot');
    const r = emptyMessage(MsgType.AppResp, this.id, m.from, this.term);
    const log = this.log;
    if (s.meta.index <= log.committed) {
      r.index = log.committed;
    } else if (log.matchTerm(s.meta.index, s.meta.term)) {
      // We already hold that prefix: just fast-forward the commit.
      log.commitTo(s.meta.index);
      r.index = log.committed;
    } else {
      this.trace(`restore snapshot index=${s.meta.index} term=${s.meta.term}`);
      log.restore(s);
      this.baseConf = cloneConf(s.meta.conf);
      this.confHistory = [];
      this.onConfChanged();
      r.index = log.lastIndex();
    }
    this.send(r);
  }

  private stepLeader(m: Message): void {
    const pr = this.prs.get(m.from);
    if (pr === undefined) return;
    switch (m.type) {
      case MsgType.AppResp:
        pr.recentActive = true;
        pr.lastHeardTick = this.ticks;
        this.handleAppendResponse(m, pr);
        break;
      case MsgType.HeartbeatResp:
        pr.recentActive = true;
        pr.lastHeardTick = this.ticks;
        this.handleHeartbeatResponse(m, pr);
        break;
      default:
        break;
    }
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    if (m.reject) {
      let hint = m.rejectHint;
      if (m.logTerm > 0) hint = this.log.findConflictByTerm(m.rejectHint, m.logTerm);
      if (pr.maybeDecrTo(m.index, hint)) {
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        this.sendAppend(m.from, pr, true);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    const confirmsProbe = pr.state === ProgressState.Probe && m.index === pr.match;
    if (!pr.maybeUpdate(m.index) && !confirmsProbe) {
      // Stale or duplicate; still free the window it may have held.
      if (pr.state === ProgressState.Replicate) pr.inflights.freeLE(m.index);
      return;
    }
    if (pr.state === ProgressState.Probe) {
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Snapshot) {
      if (pr.match >= pr.pendingSnapshot) {
        pr.becomeProbe();
        pr.becomeReplicate();
      }
    } else {
      pr.inflights.freeLE(m.index);
    }
    if (this.maybeCommit()) {
      this.needBroadcast = true;
    } else if (wasPaused) {
      this.sendAppend(m.from, pr, true);
    }
    while (this.sendAppend(m.from, pr, false)) { /* fill the window */ }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.trace(`transfer: ${m.from} caught up, sending timeout-now`);
      this.sendTimeoutNow(m.from);
    }
  }

  private handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.probeSent = false;
    if (pr.state === ProgressState.Replicate && pr.inflights.full()) pr.inflights.freeFirst();
    if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, pr, true);
    if (m.context !== 0 && this.cfg.bugs?.readIndexNoConfirm !== true) {
      const released = this.readOnly.ack(m.context, m.from, (acks) => this.hasQuorum(acks));
      if (released !== null) this.releaseReads(released);
    }
  }

  private releaseReads(reads: ReadState[]): void {
    for (const r of reads) this.readStates.push(r);
  }

  /** Send the next App (or a snapshot) to a follower. Returns whether a message went out. */
  private sendAppend(to: NodeId, pr: Progress, sendIfEmpty: boolean): boolean {
    if (pr.isPaused()) return false;
    const log = this.log;
    const prevIndex = pr.next - 1;
    const prevTerm = log.term(prevIndex);
    if (prevTerm < 0) return this.sendSnapshot(to, pr);
    const last = log.lastIndex();
    const ents = pr.next <= last ? log.slice(pr.next, last + 1, this.cfg.maxMsgBytes) : [];
    if (ents.length === 0 && !sendIfEmpty) return false;
    const m = emptyMessage(MsgType.App, this.id, to, this.term);
    m.index = prevIndex;
    m.logTerm = prevTerm;
    m.entries = ents;
    m.commit = log.committed;
    this.send(m);
    if (ents.length > 0) {
      const lastSent = (ents[ents.length - 1] as Entry).index;
      if (pr.state === ProgressState.Replicate) {
        pr.next = lastSent + 1;
        pr.inflights.add(lastSent);
      } else {
        pr.probeSent = true;
      }
    } else if (pr.state === ProgressState.Probe) {
      pr.probeSent = true;
    }
    return true;
  }

  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    if (!pr.recentActive) return false;
    const s = this.log.snapshot;
    invariant(s !== null, 'a compacted log has a snapshot');
    const m = emptyMessage(MsgType.Snap, this.id, to, this.term);
    m.snapshot = s;
    pr.becomeSnapshot(s.meta.index, this.ticks);
    this.trace(`send snapshot index=${s.meta.index} to ${to}`);
    this.send(m);
    return true;
  }

  private broadcastAppend(): void {
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      // Send what is new; an empty App carries a new commit index.
      let sent = this.sendAppend(id, pr, false);
      while (sent && this.sendAppend(id, pr, false)) { /* fill the window */ }
      if (!sent) this.sendAppend(id, pr, true);
    }
  }

  /** Commit the highest index held by a quorum of voters — if it is of our term (§5.4.2). */
  private maybeCommit(): boolean {
    // Runs for every ack: an insertion sort (descending) into a reused array, not a new array and Array#sort.
    const matches = this.matchScratch;
    let n = 0;
    for (const v of this.conf.voters) {
      const pr = this.prs.get(v);
      const m = pr === undefined ? 0 : pr.match;
      let j = n++;
      while (j > 0 && (matches[j - 1] as number) < m) {
        matches[j] = matches[j - 1] as number;
        j--;
      }
      matches[j] = m;
    }
    if (n === 0) return false;
    const idx = matches[this.quorum() - 1] as number;
    const log = this.log;
    if (idx <= log.committed) return false;
    if (log.term(idx) !== this.term && this.cfg.bugs?.commitOldTerm !== true) return false;
    const old = log.committed;
    log.commitTo(idx);
    for (let i = old + 1; i <= idx; i++) this.uncommittedBytes -= (log.entryAt(i) as Entry).data.length;
    if (this.uncommittedBytes < 0) this.uncommittedBytes = 0;
    if (old < idx && log.term(old) !== this.term && this.committedInTerm()) {
      // First commit of our term: reads that waited for it can now start.
      for (const ctx of this.readOnly.takeDeferred()) this.readOnly.add(ctx, log.committed);
    }
    return true;
  }

  // ---------------------------------------------------------------- quiescence

  /**
   * Leader: quiesce an idle group. Allowed only when every member holds the
   * whole log, everything is committed and durable, and no read or transfer
   * is pending. Followers are told with a quiescing heartbeat; from then on
   * no messages flow and ticks are ignored until wake() or any message.
   * The host must wake followers whose leader's node stops being heard from
   * (node-level liveness), or the group could not elect a new leader.
   */
  quiesce(): boolean {
    if (this.quiesced) return true;
    if (this.role !== Role.Leader || this.leadTransferee !== NONE || this.readOnly.pendingCount() > 0) return false;
    const last = this.log.lastIndex();
    if (this.log.committed !== last || this.log.stableIndex !== last || this.needBroadcast) return false;
    for (const [id, pr] of this.prs) {
      if (id !== this.id && (pr.match !== last || pr.state !== ProgressState.Replicate)) return false;
    }
    for (const id of this.prs.keys()) {
      if (id === this.id) continue;
      const m = emptyMessage(MsgType.Heartbeat, this.id, id, this.term);
      m.commit = last;
      m.index = last;
      m.reject = true;
      this.send(m);
    }
    this.quiesced = true;
    // Ticks stop, so a lease would stop ageing: drop it.
    this.readOnly.invalidateLease();
    this.trace(`quiesced (leader) at ${last}`);
    return true;
  }

  /**
   * Any message wakes a quiesced node, except: the quiescing heartbeat itself,
   * and, at a leader, late answers to rounds sent before it quiesced
   * (HeartbeatResp/AppResp) — a follower that wants the leader awake says so
   * with a HeartbeatResp carrying reject = true.
   */
  private wakesOnMessage(m: Message): boolean {
    if (m.type === MsgType.Heartbeat && m.reject) return false;
    if (this.role === Role.Leader && m.term === this.term) {
      if (m.type === MsgType.AppResp) return false;
      if (m.type === MsgType.HeartbeatResp && !m.reject) return false;
    }
    return true;
  }

  isQuiesced(): boolean {
    return this.quiesced;
  }

  /** Resume ticking. A follower also wakes its leader (one HeartbeatResp). */
  wake(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.readOnly.invalidateLease();
    // Check-quorum must see fresh answers, not ones from before the silence.
    for (const [id, pr] of this.prs) if (id !== this.id) pr.recentActive = false;
    this.trace('woke');
    if (this.role !== Role.Leader && this.lead !== NONE) {
      const m = emptyMessage(MsgType.HeartbeatResp, this.id, this.lead, this.term);
      m.reject = true;
      this.send(m);
    }
  }

  // ---------------------------------------------------------------- client API

  propose(data: Uint8Array): ProposeResult {
    return this.proposeMany([data]);
  }

  proposeMany(data: Uint8Array[]): ProposeResult {
    const err = this.checkCanPropose();
    if (err !== null) return err;
    invariant(data.length > 0, 'propose at least one entry');
    let bytes = 0;
    for (const d of data) bytes += d.length;
    if (this.uncommittedBytes > 0 && this.uncommittedBytes + bytes > this.cfg.maxUncommittedBytes) {
      return { ok: false, code: 'overloaded' };
    }
    const first = this.log.lastIndex() + 1;
    const ents: Entry[] = new Array<Entry>(data.length);
    for (let i = 0; i < data.length; i++) {
      ents[i] = { term: this.term, index: first + i, type: EntryType.Normal, data: data[i] as Uint8Array, change: null };
    }
    this.appendToLog(ents);
    this.uncommittedBytes += bytes;
    this.needBroadcast = true;
    return { ok: true, index: first, term: this.term };
  }

  proposeConfChange(change: ConfChange): ProposeResult {
    const err = this.checkCanPropose();
    if (err !== null) return err;
    // One change at a time, and only after the leader has committed an entry
    // of its own term (the fix to single-server changes, Ongaro 2015).
    if (this.lastConfIndex() > this.log.committed || !this.committedInTerm()) {
      return { ok: false, code: 'conf_change_pending' };
    }
    const isVoter = this.conf.voters.includes(change.node);
    const isLearner = this.conf.learners.includes(change.node);
    const valid =
      change.node > 0 && change.conf === undefined &&
      ((change.type === 'addVoter' && !isVoter) ||
        (change.type === 'addLearner' && !isVoter && !isLearner) ||
        (change.type === 'remove' && (isVoter || isLearner) && change.node !== this.id));
    if (!valid) return { ok: false, code: 'invalid_conf_change' };
    const index = this.log.lastIndex() + 1;
    this.appendToLog([{ term: this.term, index, type: EntryType.ConfChange, data: new Uint8Array(0), change: { type: change.type, node: change.node } }]);
    this.needBroadcast = true;
    return { ok: true, index, term: this.term };
  }

  private checkCanPropose(): ProposeResult | null {
    if (this.role !== Role.Leader) return { ok: false, code: 'not_leader' };
    this.wake();
    if (this.leadTransferee !== NONE) return { ok: false, code: 'transferring' };
    return null;
  }

  readIndex(context: number): ReadIndexResult {
    invariant(context > 0, 'read context > 0');
    if (this.role !== Role.Leader) return { ok: false, code: 'not_leader' };
    this.wake();
    if (this.leadTransferee !== NONE) return { ok: false, code: 'transferring' };
    if (this.readOnly.pendingCount() >= MAX_PENDING_READS) return { ok: false, code: 'overloaded' };
    if (!this.committedInTerm()) {
      // Our commit index may lag the true one until an entry of our term commits.
      this.readOnly.deferUntilCommit(context);
      return { ok: true };
    }
    if (this.cfg.bugs?.readIndexNoConfirm === true || this.leaseValid()) {
      this.readStates.push({ index: this.log.committed, context });
      return { ok: true };
    }
    this.readOnly.add(context, this.log.committed);
    return { ok: true };
  }

  /**
   * Lease reads: a quorum acked a round sent at tick T, so none of them will
   * vote for another leader before T + electionTicks on their clocks
   * (check-quorum's lease rule). Serve until that, less the drift margin.
   */
  private leaseValid(): boolean {
    // A TimeoutNow may be delivered late, after the transfer was abandoned,
    // and its forced election ignores leases: no lease for the rest of the term.
    if (this.cfg.readOnly !== 'lease' || this.timeoutNowSent) return false;
    const since = this.readOnly.confirmedSentTick;
    return since >= 0 && this.ticks - since < this.cfg.electionTicks - this.cfg.leaseDriftTicks;
  }

  transferLeadership(to: NodeId): boolean {
    if (this.role !== Role.Leader || to === this.id || !this.isVoter(to)) return false;
    this.wake();
    if (this.leadTransferee === to) return true;
    const pr = this.prs.get(to);
    if (pr === undefined) return false;
    this.leadTransferee = to;
    this.transferElapsed = 0;
    this.trace(`transfer leadership to ${to}`);
    if (pr.match === this.log.lastIndex()) {
      this.sendTimeoutNow(to);
    } else {
      this.sendAppend(to, pr, true);
    }
    return true;
  }

  private sendTimeoutNow(to: NodeId): void {
    this.timeoutNowSent = true;
    this.send(emptyMessage(MsgType.TimeoutNow, this.id, to, this.term));
  }

  reportUnreachable(id: NodeId): void {
    const pr = this.role === Role.Leader ? this.prs.get(id) : undefined;
    if (pr !== undefined && pr.state === ProgressState.Replicate) pr.becomeProbe();
  }

  /**
   * Member `id` restarted. It may have lost the unsynced tail of its log or —
   * after a storage fault beyond the model (a torn synced record) — entries it
   * had acknowledged; the leader would then wait forever for an index it no
   * longer has (a rejection at or below match is taken as stale). Forget what
   * it was known to hold and probe it afresh from the end of our log. Commit
   * never moves back, so this costs only a probe.
   */
  forgetProgress(id: NodeId): void {
    const pr = this.role === Role.Leader && id !== this.id ? this.prs.get(id) : undefined;
    if (pr === undefined) return;
    pr.matchBeforeRestart = Math.max(pr.matchBeforeRestart, pr.match);
    pr.match = 0;
    pr.becomeProbe();
    pr.next = this.log.lastIndex() + 1;
    this.trace(`forget progress of restarted ${id}`);
  }

  reportSnapshot(id: NodeId, ok: boolean): void {
    const pr = this.role === Role.Leader ? this.prs.get(id) : undefined;
    if (pr === undefined || pr.state !== ProgressState.Snapshot) return;
    if (!ok) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    // Wait for the follower's answer before probing again.
    pr.probeSent = true;
  }

  compact(index: number, data: Uint8Array): void {
    const log = this.log;
    if (index <= log.snapIndex) return;
    const term = log.term(index);
    invariant(term >= 0, `compact index ${index} in the log`);
    const s: Snapshot = { meta: { index, term, conf: cloneConf(this.confAt(index)) }, data };
    log.compact(s);
    this.baseConf = s.meta.conf;
    this.confHistory = this.confHistory.filter((r) => r.index > index);
  }

  currentSnapshot(): Snapshot | null {
    return this.log.snapshot;
  }

  /**
   * A snapshot at `index` (applied) for a follower, without compacting: the entries after it stay, so
   * other followers a little behind still catch up from the log. `data` is the host's state at `index`.
   */
  snapshotAt(index: number, data: Uint8Array): Snapshot {
    const log = this.log;
    invariant(index <= log.applied, `snapshot at ${index} beyond applied ${log.applied}`);
    const term = log.term(index);
    invariant(term >= 0, `snapshot index ${index} in the log (first ${log.firstIndex()})`);
    return { meta: { index, term, conf: cloneConf(this.confAt(index)) }, data };
  }

  /** Entries held in memory (after the snapshot). */
  logEntryCount(): number {
    return this.log.entries.length;
  }

  /** The sum of the data bytes of the entries held in memory. */
  logDataBytes(): number {
    return this.log.dataBytes;
  }

  // ---------------------------------------------------------------- ready

  private flush(): void {
    if (this.role !== Role.Leader) return;
    if (this.needBroadcast) {
      this.needBroadcast = false;
      this.broadcastAppend();
    }
    if (this.readOnly.roundNeeded) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat();
    }
  }

  private hardState(): HardState {
    const vote = this.cfg.bugs?.skipVotePersist === true ? NONE : this.vote;
    const hs: HardState = { term: this.term, vote, commit: this.log.committed };
    if (this.recoveredAt > 0) hs.recovered = this.recoveredAt;
    return hs;
  }

  hasReady(): boolean {
    this.flush();
    const ph = this.prevHard;
    const vote = this.cfg.bugs?.skipVotePersist === true ? NONE : this.vote;
    return (
      this.msgs.length > 0 ||
      this.readStates.length > 0 ||
      this.log.pendingSnapshot !== null ||
      this.log.inProgressIndex < this.log.lastIndex() ||
      this.log.hasNextCommitted() ||
      this.term !== ph.term || vote !== ph.vote || this.log.committed !== ph.commit || this.recoveredAt !== (ph.recovered ?? 0) ||
      this.lead !== this.prevSoft.leader || this.role !== this.prevSoft.role
    );
  }

  /** Hand out what to persist, send and apply (see the contract at the top); rounds may overlap. */
  ready(): Ready {
    this.flush();
    const log = this.log;
    const hs = this.hardState();
    const recoveredChanged = (hs.recovered ?? 0) !== (this.prevHard.recovered ?? 0);
    const hardChanged = hs.term !== this.prevHard.term || hs.vote !== this.prevHard.vote || hs.commit !== this.prevHard.commit || recoveredChanged;
    const softChanged = this.lead !== this.prevSoft.leader || this.role !== this.prevSoft.role;
    const entries = log.unstableEntries();
    const snapshot = log.pendingSnapshot;
    const committedEntries = log.nextCommitted(this.cfg.maxApplyBytes, this.cfg.applyBreakEvery ?? 0);
    const rd: Ready = {
      seq: ++log.handedSeq,
      softState: softChanged ? { leader: this.lead, role: this.role } : null,
      hardState: hardChanged ? hs : null,
      entries,
      snapshot,
      committedEntries,
      messages: this.msgs,
      readStates: this.readStates,
      mustSync: entries.length > 0 || snapshot !== null || hs.term !== this.prevHard.term || hs.vote !== this.prevHard.vote || recoveredChanged,
    };
    invariant(snapshot === null || committedEntries.length === 0, 'a Ready with a snapshot applies nothing else');
    const lastEnt = entries[entries.length - 1];
    if (lastEnt !== undefined) log.inProgressIndex = lastEnt.index;
    const lastCommitted = committedEntries[committedEntries.length - 1];
    if (lastCommitted !== undefined) log.applying = lastCommitted.index;
    log.pendingSnapshot = null;
    if (hardChanged) this.prevHard = hs;
    if (softChanged) this.prevSoft = { leader: this.lead, role: this.role };
    this.msgs = [];
    this.readStates = [];
    return rd;
  }

  /** The host made `rd` durable (acknowledge in the order handed out). */
  persisted(rd: Ready): void {
    const log = this.log;
    const lastEnt = rd.entries[rd.entries.length - 1];
    log.persistedTo(rd.seq, lastEnt === undefined ? 0 : lastEnt.index);
    if (rd.snapshot !== null) {
      // The host installs the snapshot's state right after persisting it.
      log.applied = Math.max(log.applied, rd.snapshot.meta.index);
      log.applying = Math.max(log.applying, rd.snapshot.meta.index);
    }
    invariant(log.committed <= log.lastIndex(), 'committed <= last index');
    if (this.role === Role.Leader) {
      // Our own copy counts toward commit only once it is durable.
      const self = this.prs.get(this.id);
      if (self !== undefined && self.maybeUpdate(log.stableIndex) && this.maybeCommit()) this.needBroadcast = true;
    }
  }

  /** The host applied rd.committedEntries. */
  applied(rd: Ready): void {
    const last = rd.committedEntries[rd.committedEntries.length - 1];
    if (last !== undefined) this.log.appliedTo(last.index);
    invariant(this.log.applied <= this.log.committed, 'applied <= committed');
  }

  /** persisted(rd) and applied(rd): for hosts that handle one Ready at a time. */
  advance(rd: Ready): void {
    this.persisted(rd);
    this.applied(rd);
  }

  // Cheap reads for hot paths (status() copies the configuration).
  currentRole(): Role {
    return this.role;
  }

  currentLeader(): NodeId {
    return this.lead;
  }

  currentTerm(): number {
    return this.term;
  }

  /**
   * The state a host serves, applied up to `served`, may be what a lost data directory left (nothing)
   * rather than a past state of the group: lost-state recovery is under way, or ended at an index (its
   * last then) that `served` has not reached. A host must not serve reads from it then (stale reads
   * included: values would vanish).
   */
  lostStateUnserved(served: number): boolean {
    return this.recovery !== 0 || served < this.recoveredAt;
  }

  commitIndex(): number {
    return this.log.committed;
  }

  /** The highest commit index a leader has reported to this node (see leaderCommitSeen). */
  leaderCommit(): number {
    return this.leaderCommitSeen;
  }

  /**
   * As leader: for each follower it heard from within the last `withinTicks` and is not sending a
   * snapshot, the index up to which its log is known to match (after a restart, the match from
   * before it). Empty for a follower, candidate, or a leader with no such follower. Compacting above
   * one of them would cost a follower that is only a little behind, or briefly away, a snapshot.
   */
  /** As leader, for logs: each follower's match (and from before a restart), state, and ticks since heard (-1: never). */
  progressSummary(): string {
    if (this.role !== Role.Leader) return '';
    const names = ['probe', 'replicate', 'snapshot'];
    const out: string[] = [];
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      out.push(`${id}:match=${pr.match}/${pr.matchBeforeRestart},${names[pr.state] ?? pr.state},heard=${pr.lastHeardTick < 0 ? -1 : this.ticks - pr.lastHeardTick}`);
    }
    return out.join(' ');
  }

  followerMatchesHeardWithin(withinTicks: number): number[] {
    const out: number[] = [];
    if (this.role !== Role.Leader) return out;
    for (const [id, pr] of this.prs) {
      if (id === this.id || pr.state === ProgressState.Snapshot || pr.lastHeardTick < 0) continue;
      if (this.ticks - pr.lastHeardTick > withinTicks) continue;
      const m = Math.max(pr.match, pr.matchBeforeRestart);
      if (m > 0) out.push(m);
    }
    return out;
  }

  /**
   * Whether this node's commit index is at an entry of the current term. A leader knows the
   * cluster's commit only once it has committed an entry of its own term: before that, entries an
   * earlier leader committed (and acknowledged) may lie above its commit, and above the commit it
   * reports to its followers. A follower's commit reaching the current term shows its leader is past
   * that point.
   */
  commitInCurrentTerm(): boolean {
    return this.committedInTerm();
  }

  /** Leader only: ticks since the newest heartbeat round a quorum acknowledged was sent (-1: none, or not leader). */
  quorumAckAgeTicks(): number {
    const sent = this.quorumAckSentTick();
    return sent >= 0 ? this.ticks - sent : -1;
  }

  /** Leader only: the tick at which the newest heartbeat round a quorum acknowledged was sent (-1: none, or not leader). */
  quorumAckSentTick(): number {
    return this.role === Role.Leader ? this.readOnly.confirmedSentTick : -1;
  }

  /** Ticks counted so far (a quiesced node counts none). The host may note when each happened. */
  tickCount(): number {
    return this.ticks;
  }

  status(): Status {
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      role: this.role,
      leader: this.lead,
      commit: this.log.committed,
      applied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      firstIndex: this.log.firstIndex(),
      conf: cloneConf(this.conf),
      leadTransferee: this.leadTransferee,
      quorumAckAgeTicks: this.quorumAckAgeTicks(),
      quiesced: this.quiesced,
      recovery: this.recovery === 1 ? 'probing' : this.recovery === 2 ? 'catching-up' : null,
    };
  }

  // ---------------------------------------------------------------- lost state (see the comment at the top)

  private startProbing(): void {
    this.probeNonce = 2 + Math.floor(this.cfg.random() * 0x3fffffff);
    for (const v of this.conf.voters) if (v !== this.id) this.probePending.add(v);
    this.trace(`lost state: probing ${[...this.probePending].join(',')}`);
    if (this.probePending.size === 0) this.finishProbing();
    else this.sendProbes();
  }

  private sendProbes(): void {
    this.probeElapsed = 0;
    for (const v of this.probePending) {
      const m = emptyMessage(MsgType.LostState, this.id, v, this.term);
      m.context = this.probeNonce;
      this.send(m);
    }
  }

  private stepLostState(m: Message): void {
    if (m.type === MsgType.LostState) {
      if (m.context !== STEP_DOWN_CONTEXT) {
        const r = emptyMessage(MsgType.LostStateResp, this.id, m.from, this.term);
        r.context = m.context;
        this.send(r);
        return;
      }
      // A step-down request carries the floor (index): only a leader at or below it steps down; one
      // above it tells the requester it exists (it may not know yet, e.g. its first App is in flight).
      if (this.role !== Role.Leader || !this.isVoter(m.from)) return;
      if (this.term <= m.index) {
        this.trace(`stepping down: ${m.from} recovers lost state and needs a leader of a term above ${m.index}`);
        this.becomeFollower(this.term, NONE);
        this.campaign(true);
        return;
      }
      const pr = this.prs.get(m.from);
      if (pr !== undefined) this.sendHeartbeat(m.from, pr, 0);
      return;
    }
    if (this.recovery !== 1 || m.context !== this.probeNonce || !this.probePending.delete(m.from)) return;
    this.recoveryFloor = Math.max(this.recoveryFloor, m.term);
    if (m.term > this.term) this.becomeFollower(m.term, NONE);
    if (this.probePending.size === 0) this.finishProbing();
  }

  private finishProbing(): void {
    this.recoveryFloor = Math.max(this.recoveryFloor, this.term);
    if (this.recoveryFloor === 0) {
      this.endRecovery('every voter is at term 0: a new group');
      return;
    }
    this.recovery = 2;
    this.trace(`lost state: waiting for a leader of a term above ${this.recoveryFloor}`);
  }

  /**
   * After a message or a tick, while catching up: done once it holds an entry of the term of a leader
   * above the floor (the leader's no-op at least: its log up to there matches the leader's, which holds
   * every entry committed before its election; that entry need not be known committed, or a leader that
   * crashed before telling would leave the group without a voter here). Else, once per election timeout,
   * ask the leader of too old a term to step down, or every voter when it knows no leader (an idle
   * group's leader is quiesced and sends nothing).
   */
  private checkRecovered(): void {
    const newer = this.role === Role.Follower && this.lead !== NONE && this.term > this.recoveryFloor;
    if (newer && this.log.lastTerm() === this.term) {
      this.endRecovery(`holds entry ${this.log.lastIndex()} of leader ${this.lead}'s term`);
      return;
    }
    if (newer || this.ticks - this.stepDownAskedTick < this.cfg.electionTicks) return;
    this.stepDownAskedTick = this.ticks;
    for (const v of this.lead !== NONE ? [this.lead] : this.conf.voters) {
      if (v === this.id) continue;
      const m = emptyMessage(MsgType.LostState, this.id, v, this.term);
      m.context = STEP_DOWN_CONTEXT;
      m.index = this.recoveryFloor;
      this.send(m);
    }
  }

  private endRecovery(why: string): void {
    this.recovery = 0;
    this.probePending.clear();
    this.vote = NONE;
    this.recoveredAt = this.log.lastIndex();
    // The election clock starts now, at a random point: else every group of a node that waited for its
    // peers would campaign at the first tick after recovery, and that node would lead them all.
    this.electionElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.trace(`lost state: recovered term=${this.term} (${why})`);
  }
}

export function defaultRaftConfig(id: NodeId, conf: ConfState, random: () => number): RaftConfig {
  return {
    id, initialConf: conf, electionTicks: 10, heartbeatTicks: 1, random,
    preVote: true, checkQuorum: true, readOnly: 'safe', leaseDriftTicks: 2,
    maxMsgBytes: 1 << 20, maxInflightMsgs: 256, maxUncommittedBytes: 64 << 20,
    maxApplyBytes: 4 << 20, applied: 0, recoverLostState: true,
  };
}
