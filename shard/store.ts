import {
  EntryType, MsgType, RaftNode, Role,
  type Entry, type HardState, type Message, type NodeId, type Persisted, type RaftConfig, type Ready, type Snapshot,
} from '../raft/index.ts';
import { invariant } from '../raft/assert.ts';
import { coalesce, pack, unpack } from './codec.ts';
import { KvMachine, decodeCommand, encodeCommand, type KvCommand, type KvResult, type KvStatePort } from './kv-machine.ts';
import { appliedKey, generationKey, snapMetaKey } from './layout.ts';
import { encodeSnapshot } from './raft-codec.ts';

/**
 * How a follower knows, on its own clock, how fresh its leader's word is (for stale reads). Each
 * follower response (AppResp, HeartbeatResp) carries a probe id, whose send time the follower keeps.
 * A leader's appends and heartbeats echo the last probe it received from that follower, with
 * probeDelta = its last quorum-ack time − that probe's arrival (the leader's clock; may be negative),
 * and carry the ack's age (ms, plus 1; 0: none yet) in rejectHint, which the core reads only on AppResp.
 *
 * The probe was sent at S on the follower's clock and arrived later, so the ack happened no earlier
 * than S + probeDelta on the follower's clock, however long either message spent in flight: in a
 * socket buffer while the follower was paused, on a slow link. Arrival less the age bounds it from
 * above (it would count a message's time in flight as fresh); the follower takes the smaller, and
 * counts no contact from a message without a probe it knows.
 */
function stampLeaderContact(m: Message, ackAtMs: number, nowMs: number, heard: { probe: number; atMs: number } | undefined): void {
  m.rejectHint = ackAtMs < 0 ? 0 : Math.max(0, Math.ceil(nowMs - ackAtMs)) + 1;
  if (ackAtMs >= 0 && heard !== undefined) {
    m.probe = heard.probe;
    m.probeDelta = Math.floor(ackAtMs - heard.atMs);
  }
}

/** Ticks whose times a replica keeps: far more than a quorum ack can be old while its leader leads (check-quorum). */
const TICK_RING = 64;
/**
 * Probe send times a follower keeps, and the least time between two probes (ms; responses within it
 * share a probe, timed at its first use: early, so on the safe side). A leader's echo of a probe the
 * ring has moved past, or sent more than PROBE_MAX_AGE_MS ago, counts as no contact: over a long
 * span (a leader that heard nothing from this follower for an hour, then echoes its last probe) the
 * two clocks' rates may differ by up to 500 ppm (NTP slew), which would shift the bound by seconds.
 */
const PROBE_RING = 128;
const PROBE_EVERY_MS = 2;
const PROBE_MAX_AGE_MS = 1000;

export type BatchOp = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array };

/**
 * What one replica's Ready adds to the Raft log on disk (the node's WAL):
 * `entries` replace every earlier entry at or above their first index; a
 * hard state replaces the earlier one; `snapshot` (the index of a snapshot
 * installed in this round) drops every earlier entry of the shard.
 */
export interface WalItem {
  shard: number;
  hardState: HardState | null;
  entries: Entry[];
  snapshot: number | null;
}

export type Outcome = 'not_applied' | 'unknown';

export type ProposeOutcome =
  | { ok: true; result: KvResult; index: number }
  | { ok: false; code: 'not_leader' | 'overloaded' | 'transferring' | 'superseded' | 'snapshot_installed' | 'no_quorum'; outcome: Outcome; leader: NodeId };

export type ReadOutcome = { ok: true; index: number } | { ok: false; code: 'not_leader' | 'overloaded' | 'no_quorum'; leader: NodeId };

export type Done<T> = (r: T) => void;

export interface StoreOptions {
  nodeId: NodeId;
  raft: Omit<RaftConfig, 'id' | 'initialConf' | 'random' | 'applied' | 'trace'>;
  random: () => number;
  idempotencyRetentionMs: number;
  /** Proposals and reads waiting for the next round, per shard. */
  maxQueuedPerShard: number;
  /** Messages from peers waiting for the next round (more are dropped: Raft retries). */
  maxInbox: number;
  /** A leader that has not had a heartbeat round acked by a quorum for this
   *  many ticks fails its waiting requests fast (no_quorum) instead of
   *  letting them hang until their deadline. */
  noQuorumTicks: number;
  /** A leader with no requests for this many ticks quiesces its group (0: never). */
  quiesceAfterTicks: number;
}

/** What a node loaded from disk for one replica (or a fresh one). */
export interface ReplicaBoot {
  shard: number;
  /** null: nothing on disk. */
  persisted: Persisted | null;
  /** Founding members: used only when nothing was persisted. */
  founders: NodeId[];
  applied: number;
  logTime: number;
  gen: number;
  /** Last log index on disk (for the compaction policy). */
  persistedLast: number;
}

/** Snapshot.data of this store: which generation holds the state, and its log time. */
export interface SnapshotDescriptor {
  gen: number;
  logTime: number;
}

export function encodeDescriptor(d: SnapshotDescriptor): Uint8Array {
  return pack([d.gen, d.logTime]);
}

export function decodeDescriptor(b: Uint8Array): SnapshotDescriptor {
  const [gen, logTime] = unpack<[number, number]>(b);
  invariant(Number.isSafeInteger(gen) && Number.isFinite(logTime), 'snapshot descriptor');
  return { gen, logTime };
}

interface Waiter {
  term: number;
  done: Done<ProposeOutcome>;
}

class Replica {
  readonly raft: RaftNode;
  readonly machine: KvMachine;
  persistedFirst: number;
  persistedLast: number;
  applied: number;
  leader: NodeId = 0;
  role: Role = Role.Follower;
  queuedProposals: Array<{ data: Uint8Array; done: Done<ProposeOutcome> }> = [];
  queuedReads: Array<Done<ReadOutcome>> = [];
  waiters = new Map<number, Waiter>();
  readsInRaft = new Map<number, Array<Done<ReadOutcome>>>();
  readsWaitingApply: Array<{ index: number; dones: Array<Done<ReadOutcome>> }> = [];
  /** The applied index whose state has landed in LevelDB (what stale reads see). */
  landedApplied: number;
  /** When we last heard from a leader / the landed state was last known caught up with it (ms). */
  lastLeaderContactMs = -1;
  lastFreshMs = -1;
  /** As leader: the landed state held all it knew committed as of this time, its last quorum ack's then (ms; -1: unknown). */
  leaderLandedFreshMs = -1;
  /** Ticks since this replica last knew a leader. */
  leaderlessTicks = 0;
  /**
   * Tick count at which this leader was first seen without a recent quorum
   * ack (-1: it has one). It counts as cut off only at a later tick, so acks
   * that waited in a socket while the process stalled are read first.
   */
  cutOffSeenAt = -1;
  /** Term and vote as last made durable, and as last handed out in a Ready. */
  durableTerm: number;
  durableVote: NodeId;
  handedTerm: number;
  handedVote: NodeId;
  /** Term and vote in the last hard state put in a batch. */
  writtenTerm: number;
  writtenVote: NodeId;
  writtenRecovered: number;
  /** Store tick at which this replica last had a request. */
  lastActiveTick = 0;
  /**
   * When (host ms) the core's last TICK_RING ticks were first counted: tick t at tickAt[t % TICK_RING]
   * if tickNo[t % TICK_RING] === t. A leader's freshness is the time of the tick its last
   * quorum-acknowledged heartbeat round was sent in, not its age in ticks times the tick length: after a
   * process pause the ticks caught up are capped, and a request may be served before they are counted.
   */
  private readonly tickNo = new Float64Array(TICK_RING).fill(-1);
  private readonly tickAt = new Float64Array(TICK_RING);
  /**
   * As leader: the latest quorum-ack time seen in this leadership (ms; -1: none). Kept across
   * quiescence, which drops the core's (for leases); the age stamped on appends and heartbeats.
   */
  ackSeenMs = -1;
  /** As follower: the probe ids last sent and when (see stampLeaderContact); ids start at random, so an earlier process's never match. */
  private probeId: number;
  private probeAtMs = -Infinity;
  private readonly probeIds = new Float64Array(PROBE_RING).fill(-1);
  private readonly probeSentMs = new Float64Array(PROBE_RING);
  /** As leader: per follower, the last probe received from it and when (host ms). */
  readonly heard = new Map<NodeId, { probe: number; atMs: number }>();

  constructor(readonly shard: number, raft: RaftNode, machine: KvMachine, boot: ReplicaBoot, random: () => number) {
    this.probeId = Math.floor(random() * 2 ** 40) + 1;
    this.raft = raft;
    this.machine = machine;
    this.persistedLast = boot.persistedLast;
    this.persistedFirst = (boot.persisted?.snapshot?.meta.index ?? 0) + 1;
    this.durableTerm = boot.persisted?.hardState.term ?? 0;
    this.durableVote = boot.persisted?.hardState.vote ?? 0;
    this.handedTerm = this.durableTerm;
    this.handedVote = this.durableVote;
    this.writtenTerm = boot.persisted === null ? -1 : this.durableTerm;
    this.writtenVote = this.durableVote;
    this.writtenRecovered = boot.persisted?.hardState.recovered ?? 0;
    this.applied = boot.applied;
    this.landedApplied = boot.applied;
  }

  queued(): number {
    return this.queuedProposals.length + this.queuedReads.length;
  }

  /** After a tick: note when the core's tick count first reached its value (a quiesced core's does not move). */
  noteTick(nowMs: number): void {
    const t = this.raft.tickCount();
    const i = t % TICK_RING;
    if (this.tickNo[i] === t) return;
    this.tickNo[i] = t;
    this.tickAt[i] = nowMs;
  }

  /** Follower: the probe id for a response sent now (a new one at most every PROBE_EVERY_MS). */
  probe(nowMs: number): number {
    if (nowMs - this.probeAtMs >= PROBE_EVERY_MS) {
      this.probeId++;
      this.probeAtMs = nowMs;
      const i = this.probeId % PROBE_RING;
      this.probeIds[i] = this.probeId;
      this.probeSentMs[i] = nowMs;
    }
    return this.probeId;
  }

  /** Follower: when probe was first sent (ms), or -1 if it is not one of the last PROBE_RING or older than PROBE_MAX_AGE_MS. */
  probeSentAt(probe: number, nowMs: number): number {
    const i = probe % PROBE_RING;
    if (this.probeIds[i] !== probe) return -1;
    const sent = this.probeSentMs[i] as number;
    return nowMs - sent > PROBE_MAX_AGE_MS ? -1 : sent;
  }

  /** Leader: ackSeenMs brought up to date (call before the core may drop its ack: quiesce()). */
  leaderAckMs(): number {
    const a = this.quorumAckAtMs();
    if (a > this.ackSeenMs) this.ackSeenMs = a;
    return this.ackSeenMs;
  }

  /**
   * Leader: no later than when the heartbeat round a quorum last acknowledged was sent (ms), so no other
   * leader was elected before then; -1 if unknown (none acknowledged, not leader, or older than the ring).
   */
  quorumAckAtMs(): number {
    const t = this.raft.quorumAckSentTick();
    if (t < 0) return -1;
    const i = t % TICK_RING;
    return this.tickNo[i] === t ? (this.tickAt[i] as number) : -1;
  }
}

/**
 * One replica's part of a round. What applyRound() applied becomes visible to stale reads only when
 * the round's batch lands in LevelDB (they read no overlay): these say how fresh that landed state is.
 */
export interface RoundItem {
  replica: Replica;
  rd: Ready;
  /** The applied index once this round's state lands (-1: not applied yet). */
  appliedTo: number;
  /** A follower that had applied all its leader reported committed: fresh as of this leader contact (ms; -1: not). */
  followerFreshAt: number;
  /** A leader that had applied all it knew committed: fresh as of its last quorum ack then (see quorumAckAtMs; ms; -1: not). */
  leaderFreshAt: number;
}

/**
 * One round: what every replica with work hands out. Rounds may overlap: the
 * node may begin the next round while earlier ones are still being persisted.
 */
export interface Round {
  /** Rounds are persisted (and acknowledged with persistedRound) in this order. */
  seq: number;
  items: RoundItem[];
  /** Raft log and hard state: appended to the WAL (and synced), after every earlier round's. */
  wal: WalItem[];
  /** State writes for LevelDB (a snapshot install), in one batch after every earlier round's, synced when mustSync. */
  persist: BatchOp[];
  /** A snapshot install: its LevelDB batch is synced, and written only once the WAL holds its marker. */
  mustSync: boolean;
  /** Snapshots received from leaders: installed (generation switch) once the batch is durable. */
  installs: Array<{ shard: number; snapshot: Snapshot }>;
  /** Send only once this round's batch — and so every earlier one — is durable. */
  messages: Map<NodeId, Array<[shard: number, m: Message]>>;
  /**
   * Messages that may be sent at once, before the batch is durable: a
   * leader's App and Heartbeat (Raft thesis §10.2.1: the core counts the
   * leader's own entries toward commit only once persistedRound() says they
   * are durable) and a follower's HeartbeatResp (it vouches for no log
   * state) — only while that replica's term and vote are already durable.
   */
  early: Map<NodeId, Array<[shard: number, m: Message]>>;
  /**
   * Replica checks: shards this round leaves applied exactly at a multiple of raft.applyBreakEvery (the
   * core hands out no committed entry past one in the same Ready). Every replica applies the same
   * entries, so their states there must be equal: the node hashes each once its batch lands, before
   * any later round's state does (node/replica-check.ts).
   */
  checkpoints: Array<{ shard: number; index: number }>;
}

/**
 * The multi-raft host of one node: drives every replica in rounds. Pure: the
 * node supplies time, disk reads and writes (through KvStatePort) and does
 * all I/O.
 *
 * A round: beginRound() steps queued messages, proposals and reads, then
 * collects every Ready → the node sends `early` → applyRound() at once
 * applies the committed entries (always durable here already) through the
 * port, completing their requests and the reads they were waiting for → the
 * node persists `persist` in ONE batch (group commit across shards; the
 * applied state may ride in it) → persistedRound(), then the node sends
 * `messages`. The node may begin the next rounds while a batch is being
 * written: their batches follow in order (see KvNode).
 */
export class Store {
  private readonly replicas = new Map<number, Replica>();
  private inbox: Array<[shard: number, m: Message]> = [];
  /** Arrival time (ms) of each inbox message. */
  private inboxAt: number[] = [];
  private pendingTicks = 0;
  /** When the newest pending tick was given (host ms). */
  private pendingTickMs = 0;
  private readSeq = 1;
  private roundSeq = 0;
  private persistedSeq = 0;
  /** A round begun but not yet applied (applyRound must follow beginRound). */
  private unapplied: Round | null = null;
  private reports: Array<{ shard: number; to: NodeId; ok: boolean }> = [];
  private wakeRequests = new Set<NodeId>();
  private restartedPeers = new Set<NodeId>();
  private wakeShards = new Set<number>();
  private tickCount = 0;
  droppedInbound = 0;
  /**
   * Replicas that may have work for the next round: a message stepped, a
   * request queued, a batch persisted or applied, a snapshot reported, a
   * compaction. A round without ticks visits only these (with hundreds of
   * shards, visiting every replica in every round cost ~10 % of a busy
   * node); a round with ticks visits all, and first asserts that every
   * replica left out had nothing to hand out. The check is kept on: without
   * it a missed mark would only show up as latency, up to one tick.
   */
  private readonly dirty = new Set<Replica>();

  constructor(readonly opts: StoreOptions) {}

  addReplica(boot: ReplicaBoot): void {
    invariant(!this.replicas.has(boot.shard), `replica of shard ${boot.shard} added once`);
    const cfg: RaftConfig = {
      ...this.opts.raft,
      id: this.opts.nodeId,
      initialConf: { voters: [...boot.founders], learners: [] },
      random: this.opts.random,
      applied: boot.applied,
    };
    const raft = new RaftNode(cfg, boot.persisted);
    const machine = new KvMachine(boot.shard, boot.gen, this.opts.idempotencyRetentionMs, boot.logTime);
    const r = new Replica(boot.shard, raft, machine, boot, this.opts.random);
    this.replicas.set(boot.shard, r);
    this.dirty.add(r);
  }

  shards(): number[] {
    return [...this.replicas.keys()];
  }

  has(shard: number): boolean {
    return this.replicas.has(shard);
  }

  private replica(shard: number): Replica {
    const r = this.replicas.get(shard);
    invariant(r !== undefined, `replica of shard ${shard} on this node`);
    return r;
  }

  // ------------------------------------------------------------ inputs

  /** One tick of the host's clock, given at `nowMs`. */
  tick(nowMs: number): void {
    this.pendingTicks++;
    this.pendingTickMs = nowMs;
  }

  /** Messages from a peer. Bounded: beyond maxInbox they are dropped (Raft recovers). */
  receive(items: Array<[shard: number, m: Message]>, nowMs: number): void {
    for (const it of items) {
      const r = this.replicas.get(it[0]);
      if (r === undefined || it[1].to !== this.opts.nodeId) {
        this.droppedInbound++;
        continue;
      }
      if (this.inbox.length >= this.opts.maxInbox) {
        this.droppedInbound++;
        continue;
      }
      this.inbox.push(it);
      this.inboxAt.push(nowMs);
    }
  }

  propose(shard: number, cmd: KvCommand, done: Done<ProposeOutcome>): void {
    const r = this.replica(shard);
    if (r.role !== Role.Leader) {
      done({ ok: false, code: 'not_leader', outcome: 'not_applied', leader: r.leader });
      return;
    }
    if (r.queued() >= this.opts.maxQueuedPerShard) {
      done({ ok: false, code: 'overloaded', outcome: 'not_applied', leader: r.leader });
      return;
    }
    r.queuedProposals.push({ data: encodeCommand(cmd), done });
    this.dirty.add(r);
  }

  /** Ask for a linearizable read point; done once this replica has applied up to it. */
  readIndex(shard: number, done: Done<ReadOutcome>): void {
    const r = this.replica(shard);
    if (r.role !== Role.Leader) {
      done({ ok: false, code: 'not_leader', leader: r.leader });
      return;
    }
    if (r.queued() >= this.opts.maxQueuedPerShard) {
      done({ ok: false, code: 'overloaded', leader: r.leader });
      return;
    }
    r.queuedReads.push(done);
    this.dirty.add(r);
  }

  /**
   * Wake one shard's quiesced replica (e.g. a stale read needs fresh proof
   * of how far behind it is). A follower's wake also wakes its leader.
   */
  wakeShard(shard: number): void {
    this.wakeShards.add(shard);
  }

  /** Node-level liveness: `node` went silent or restarted; wake the quiesced groups it led. */
  wakeLedBy(node: NodeId): void {
    this.wakeRequests.add(node);
  }

  /** Node-level liveness: `node` restarted (a new incarnation); groups led here probe it afresh. */
  peerRestarted(node: NodeId): void {
    this.restartedPeers.add(node);
  }

  /** Outcome of a snapshot stream to a follower (applied at the next round). */
  reportSnapshot(shard: number, to: NodeId, ok: boolean): void {
    this.reports.push({ shard, to, ok });
  }

  transferLeadership(shard: number, to: NodeId): boolean {
    const r = this.replica(shard);
    this.dirty.add(r);
    return r.raft.transferLeadership(to);
  }

  // ------------------------------------------------------------ rounds

  hasWork(): boolean {
    if (this.pendingTicks > 0 || this.inbox.length > 0 || this.wakeRequests.size > 0 || this.wakeShards.size > 0 || this.restartedPeers.size > 0) return true;
    for (const r of this.dirty) if (r.queued() > 0 || r.raft.hasReady()) return true;
    return false;
  }

  /** Rounds begun and not yet acknowledged persisted. */
  roundsInFlight(): number {
    return this.roundSeq - this.persistedSeq;
  }

  /** `nowMs`: the host's clock (the one ticks are given on), for the ack age stamped on a leader's messages. */
  beginRound(nowMs: number): Round | null {
    invariant(this.unapplied === null, 'applyRound() before the next beginRound()');
    const ticks = this.pendingTicks;
    this.pendingTicks = 0;
    this.tickCount += ticks;
    const all = ticks > 0 || this.restartedPeers.size > 0;
    if (ticks > 0) {
      for (const r of this.replicas.values()) {
        if (!this.dirty.has(r) && (r.queued() > 0 || r.raft.hasReady())) invariant(false, `shard ${r.shard} had work but was not marked for a round`);
      }
    }
    if (this.wakeRequests.size > 0 || this.wakeShards.size > 0) {
      for (const r of this.replicas.values()) {
        if (r.raft.isQuiesced() && (this.wakeRequests.has(r.leader) || this.wakeShards.has(r.shard))) {
          r.raft.wake();
          this.dirty.add(r);
          r.lastActiveTick = this.tickCount;
        }
      }
      this.wakeRequests.clear();
      this.wakeShards.clear();
    }
    if (this.restartedPeers.size > 0) {
      // A restarted follower's probes start afresh: echo none of the old process's.
      for (const r of this.replicas.values()) {
        for (const n of this.restartedPeers) {
          r.raft.forgetProgress(n);
          r.heard.delete(n);
        }
      }
      this.restartedPeers.clear();
    }
    for (let i = 0; i < ticks; i++) {
      for (const r of this.replicas.values()) {
        r.raft.tick();
        r.noteTick(this.pendingTickMs);
      }
    }
    for (const rep of this.reports.splice(0)) {
      const r = this.replicas.get(rep.shard);
      if (r === undefined) continue;
      r.raft.reportSnapshot(rep.to, rep.ok);
      this.dirty.add(r);
    }
    const inbox = this.inbox;
    const inboxAt = this.inboxAt;
    this.inbox = [];
    this.inboxAt = [];
    for (let i = 0; i < inbox.length; i++) {
      const [shard, m] = inbox[i] as [number, Message];
      const r = this.replicas.get(shard) as Replica;
      const wasQuiesced = r.raft.isQuiesced();
      r.raft.step(m);
      this.dirty.add(r);
      // Leader contact: only a message the core took from the leader it now follows in that term
      // (not one from a deposed leader, which may be cut off from the group).
      // It counts as of its arrival less the leader's quorum-ack age then (stampLeaderContact): a leader cut
      // off from its quorum (a minority side with a follower, or acks lost one way) still heartbeats,
      // but the age grows, and so does its follower's staleness. Unstamped: not counted.
      // And no later than its probe's send time plus probeDelta (see stampLeaderContact). Without a
      // probe this replica sent recently: not counted either.
      const t = m.type;
      if ((t === MsgType.App || t === MsgType.Heartbeat) && m.rejectHint > 0 && m.term === r.raft.currentTerm() && r.raft.currentLeader() === m.from) {
        const sent = (m.probe ?? 0) > 0 ? r.probeSentAt(m.probe as number, inboxAt[i] as number) : -1;
        if (sent >= 0) r.lastLeaderContactMs = Math.min((inboxAt[i] as number) - (m.rejectHint - 1), sent + (m.probeDelta ?? 0));
      } else if ((t === MsgType.AppResp || t === MsgType.HeartbeatResp) && (m.probe ?? 0) > 0 && m.term === r.raft.currentTerm() && r.raft.currentRole() === Role.Leader) {
        r.heard.set(m.from, { probe: m.probe as number, atMs: inboxAt[i] as number });
      }
      // Woken by a peer (a follower that needs fresh proof, a candidate): stay
      // awake for quiesceAfterTicks, or the idle check below would quiesce the
      // group again in this very round, before one heartbeat went out.
      if (wasQuiesced && !r.raft.isQuiesced()) r.lastActiveTick = this.tickCount;
      // A quiescing heartbeat hands out no Ready, but it is leader contact too.
      if (r.raft.isQuiesced()) this.noteFresh(r);
    }
    // After the inbox: acks that arrived with these ticks count before a leader is judged cut off.
    if (ticks > 0) {
      for (const r of this.replicas.values()) {
        r.leaderlessTicks = r.raft.currentLeader() === 0 ? r.leaderlessTicks + ticks : 0;
        const noAcks = r.raft.currentRole() === Role.Leader && r.raft.quorumAckAgeTicks() > this.opts.noQuorumTicks;
        if (!noAcks) r.cutOffSeenAt = -1;
        else if (r.cutOffSeenAt < 0) r.cutOffSeenAt = this.tickCount;
        this.failIfCutOff(r);
      }
    }
    const visit = all ? [...this.replicas.values()] : [...this.dirty];
    this.dirty.clear();
    for (const r of visit) this.submitQueued(r);
    if (ticks > 0 && this.opts.quiesceAfterTicks > 0) {
      for (const r of this.replicas.values()) {
        if (r.role === Role.Leader && !r.raft.isQuiesced() && r.waiters.size === 0 && r.readsInRaft.size === 0 &&
          this.tickCount - r.lastActiveTick >= this.opts.quiesceAfterTicks) {
          r.leaderAckMs();
          r.raft.quiesce();
        }
      }
    }

    const round: Round = {
      seq: 0, items: [], wal: [], persist: [], mustSync: false, installs: [], messages: new Map(), early: new Map(), checkpoints: [],
    };
    for (const r of visit) {
      if (!r.raft.hasReady()) continue;
      const rd = r.raft.ready();
      round.items.push({ replica: r, rd, appliedTo: -1, followerFreshAt: -1, leaderFreshAt: -1 });
      this.collectPersist(r, rd, round);
      if (rd.hardState !== null) {
        r.handedTerm = rd.hardState.term;
        r.handedVote = rd.hardState.vote;
      }
      const termDurable = r.handedTerm === r.durableTerm && r.handedVote === r.durableVote;
      const leads = r.raft.currentRole() === Role.Leader;
      for (const m of rd.messages) {
        if (leads && (m.type === MsgType.App || m.type === MsgType.Heartbeat)) stampLeaderContact(m, r.leaderAckMs(), nowMs, r.heard.get(m.to));
        else if (!leads && (m.type === MsgType.AppResp || m.type === MsgType.HeartbeatResp)) m.probe = r.probe(nowMs);
        const early = termDurable && (m.type === MsgType.App || m.type === MsgType.Heartbeat || m.type === MsgType.HeartbeatResp);
        const into = early ? round.early : round.messages;
        let q = into.get(m.to);
        if (q === undefined) into.set(m.to, (q = []));
        q.push([r.shard, m]);
      }
    }
    if (round.items.length === 0) return null;
    round.seq = ++this.roundSeq;
    this.unapplied = round;
    return round;
  }

  private submitQueued(r: Replica): void {
    if (r.queued() > 0) r.lastActiveTick = this.tickCount;
    if (r.queuedProposals.length > 0) {
      const q = r.queuedProposals;
      r.queuedProposals = [];
      // One allocation per round, not views into msgpackr's shared output buffer (see coalesce).
      const res = r.raft.proposeMany(coalesce(q.map((p) => p.data)));
      if (res.ok) {
        q.forEach((p, i) => r.waiters.set(res.index + i, { term: res.term, done: p.done }));
      } else {
        const code = res.code === 'transferring' || res.code === 'overloaded' ? res.code : 'not_leader';
        for (const p of q) p.done({ ok: false, code, outcome: 'not_applied', leader: r.leader });
      }
    }
    if (r.queuedReads.length > 0) {
      const q = r.queuedReads;
      r.queuedReads = [];
      const ctx = this.readSeq++;
      const res = r.raft.readIndex(ctx);
      if (res.ok) r.readsInRaft.set(ctx, q);
      else {
        const code = res.code === 'overloaded' ? 'overloaded' : 'not_leader';
        for (const d of q) d({ ok: false, code, leader: r.leader });
      }
    }
  }

  /** Requests queued for the next round plus proposals waiting to commit, over all replicas. */
  pendingRequests(): number {
    let n = 0;
    for (const r of this.replicas.values()) n += r.queued() + r.waiters.size + r.readsInRaft.size;
    return n;
  }

  /** Ticks since this replica last knew a leader (0 if it knows one). */
  leaderlessTicks(shard: number): number {
    return this.replica(shard).leaderlessTicks;
  }

  /** Whether this replica leads but has lost touch with a quorum. */
  /**
   * A leader that has heard no quorum for more than noQuorumTicks, seen so at
   * two different ticks (a stalled process catching up on its ticks must get
   * to read the acks waiting in its sockets first): it fails requests fast.
   */
  cutOff(shard: number): boolean {
    const r = this.replica(shard);
    return r.raft.currentRole() === Role.Leader && r.cutOffSeenAt >= 0 && this.tickCount > r.cutOffSeenAt;
  }

  private failIfCutOff(r: Replica): void {
    if (!this.cutOff(r.shard)) return;
    const leader = r.leader;
    // Proposed entries may still commit if the quorum comes back: unknown.
    for (const w of r.waiters.values()) w.done({ ok: false, code: 'no_quorum', outcome: 'unknown', leader });
    r.waiters.clear();
    for (const p of r.queuedProposals) p.done({ ok: false, code: 'no_quorum', outcome: 'not_applied', leader });
    r.queuedProposals = [];
    for (const dones of r.readsInRaft.values()) for (const d of dones) d({ ok: false, code: 'no_quorum', leader });
    r.readsInRaft.clear();
    for (const d of r.queuedReads) d({ ok: false, code: 'no_quorum', leader });
    r.queuedReads = [];
  }

  private collectPersist(r: Replica, rd: Ready, round: Round): void {
    const shard = r.shard;
    let item: WalItem | null = null;
    if (rd.snapshot !== null) {
      // The state was streamed into generation desc.gen before the Snap
      // message was delivered; switching to it, the snapshot meta and the
      // applied index are one atomic (synced) LevelDB batch. The WAL marker
      // (drop the shard's old log) goes first: the node writes this batch only
      // once the marker is durable, so LevelDB never holds a snapshot whose
      // marker the WAL lacks (a restart would keep a stale log suffix after it).
      const idx = rd.snapshot.meta.index;
      const desc = decodeDescriptor(rd.snapshot.data);
      round.installs.push({ shard, snapshot: rd.snapshot });
      round.persist.push({ type: 'put', key: snapMetaKey(shard), value: encodeSnapshot(rd.snapshot) });
      round.persist.push({ type: 'put', key: generationKey(shard), value: pack(desc.gen) });
      round.persist.push({ type: 'put', key: appliedKey(shard), value: pack([idx, desc.logTime]) });
      item = { shard, hardState: null, entries: [], snapshot: idx };
      r.persistedFirst = idx + 1;
      r.persistedLast = idx;
      round.mustSync = true;
    }
    // Commit is volatile in Raft: a restart recovers it as max(persisted commit,
    // applied index), and applied is written with the state. So the hard state is
    // written only when term, vote or the recovery index change — not on every
    // commit move of every busy shard in every round.
    const hs = rd.hardState;
    if (hs !== null && (hs.term !== r.writtenTerm || hs.vote !== r.writtenVote || (hs.recovered ?? 0) !== r.writtenRecovered)) {
      item ??= { shard, hardState: null, entries: [], snapshot: null };
      item.hardState = hs;
      r.writtenTerm = hs.term;
      r.writtenVote = hs.vote;
      r.writtenRecovered = hs.recovered ?? 0;
    }
    if (rd.entries.length > 0) {
      item ??= { shard, hardState: null, entries: [], snapshot: null };
      item.entries = rd.entries;
      r.persistedLast = (rd.entries[rd.entries.length - 1] as Entry).index;
    }
    if (item !== null) round.wal.push(item);
  }

  /**
   * Right after beginRound(), before the batch is written: apply the
   * committed entries through the port (they are durable here already; the
   * node makes the port's writes visible to reads at once and persists them
   * with a later batch), and complete what they were waited for.
   */
  applyRound(round: Round, port: (shard: number) => KvStatePort): void {
    invariant(this.unapplied === round, 'applyRound() right after its beginRound()');
    this.unapplied = null;
    const done: Array<() => void> = [];
    for (const item of round.items) {
      const { replica: r, rd } = item;
      if (rd.softState !== null) this.onSoftState(r, rd.softState.role, rd.softState.leader, done);
      for (const rs of rd.readStates) {
        const dones = r.readsInRaft.get(rs.context);
        if (dones === undefined) continue;
        r.readsInRaft.delete(rs.context);
        r.readsWaitingApply.push({ index: rs.index, dones });
      }
      if (rd.committedEntries.length > 0) {
        const p = port(r.shard);
        for (const e of rd.committedEntries) this.applyEntry(r, e, p, done);
        // The applied index is written in the same batch as the state it covers.
        p.put(appliedKey(r.shard), pack([r.applied, r.machine.logTime]));
        const every = this.opts.raft.applyBreakEvery ?? 0;
        if (every > 0 && r.applied % every === 0) round.checkpoints.push({ shard: r.shard, index: r.applied });
      }
      r.raft.applied(rd);
      this.dirty.add(r);
      this.noteApplied(item);
    }
    for (const c of done) c();
    for (const { replica: r } of round.items) this.afterProgress(r);
  }

  /** How fresh this round's state will be once it lands (see RoundItem). */
  private noteApplied(item: RoundItem): void {
    const r = item.replica;
    item.appliedTo = r.applied;
    if (r.applied < r.raft.commitIndex()) return;
    if (r.raft.currentRole() === Role.Leader) {
      const ackAt = r.quorumAckAtMs();
      if (ackAt >= 0 && r.raft.commitInCurrentTerm()) item.leaderFreshAt = ackAt;
    } else if (r.lastLeaderContactMs >= 0 && r.applied >= r.raft.leaderCommit() && r.raft.commitInCurrentTerm()) {
      item.followerFreshAt = r.lastLeaderContactMs;
    }
  }

  private applyEntry(r: Replica, e: Entry, port: KvStatePort, done: Array<() => void>): void {
    if (!(e.index === r.applied + 1)) invariant(false, `apply in order: ${e.index} after ${r.applied} (shard ${r.shard})`);
    r.applied = e.index;
    let result: KvResult | null = null;
    if (e.type === EntryType.Normal && e.data.length > 0) result = r.machine.apply(e.index, decodeCommand(e.data), port);
    const w = r.waiters.get(e.index);
    if (w === undefined) return;
    r.waiters.delete(e.index);
    if (w.term === e.term && result !== null) {
      const res = result;
      done.push(() => w.done({ ok: true, result: res, index: e.index }));
    } else {
      // Another entry won this index: ours can never commit anywhere.
      done.push(() => w.done({ ok: false, code: 'superseded', outcome: 'not_applied', leader: r.leader }));
    }
  }

  /**
   * The round's batch (and every earlier round's) is durable: tell the cores,
   * install received snapshots. The node sends round.messages after this.
   */
  persistedRound(round: Round): void {
    invariant(this.unapplied !== round, 'applyRound() before persistedRound()');
    if (!(round.seq === this.persistedSeq + 1)) invariant(false, `rounds persisted in order: ${round.seq} after ${this.persistedSeq}`);
    this.persistedSeq = round.seq;
    const done: Array<() => void> = [];
    for (const { replica: r, rd, appliedTo, followerFreshAt, leaderFreshAt } of round.items) {
      r.raft.persisted(rd);
      this.dirty.add(r);
      // This round's state has landed with it: stale reads now see it.
      if (appliedTo > r.landedApplied) r.landedApplied = appliedTo;
      if (followerFreshAt > r.lastFreshMs) r.lastFreshMs = followerFreshAt;
      if (leaderFreshAt > r.leaderLandedFreshMs && r.raft.currentRole() === Role.Leader) r.leaderLandedFreshMs = leaderFreshAt;
      if (rd.hardState !== null) {
        r.durableTerm = rd.hardState.term;
        r.durableVote = rd.hardState.vote;
      }
      if (rd.snapshot !== null) this.afterInstall(r, rd.snapshot, done);
    }
    for (const c of done) c();
    for (const { replica: r } of round.items) this.afterProgress(r);
  }

  private afterInstall(r: Replica, s: Snapshot, done: Array<() => void>): void {
    r.applied = s.meta.index;
    r.landedApplied = s.meta.index;
    const desc = decodeDescriptor(s.data);
    r.machine.gen = desc.gen;
    r.machine.logTime = desc.logTime;
    // Proposals at or below the snapshot may or may not be in it.
    for (const [idx, w] of r.waiters) {
      if (idx > s.meta.index) continue;
      r.waiters.delete(idx);
      done.push(() => w.done({ ok: false, code: 'snapshot_installed', outcome: 'unknown', leader: r.leader }));
    }
  }

  private onSoftState(r: Replica, role: Role, leader: NodeId, done: Array<() => void>): void {
    const wasLeader = r.role === Role.Leader;
    if (role !== r.role) {
      r.leaderLandedFreshMs = -1;
      r.ackSeenMs = -1;
      r.heard.clear();
    }
    r.role = role;
    r.leader = leader;
    if (wasLeader && role !== Role.Leader) {
      // Reads handed to the core are dropped on step-down; queued ones never started.
      for (const dones of r.readsInRaft.values()) for (const d of dones) done.push(() => d({ ok: false, code: 'not_leader', leader }));
      r.readsInRaft.clear();
      for (const p of r.queuedProposals) done.push(() => p.done({ ok: false, code: 'not_leader', outcome: 'not_applied', leader }));
      for (const d of r.queuedReads) done.push(() => d({ ok: false, code: 'not_leader', leader }));
      r.queuedProposals = [];
      r.queuedReads = [];
    }
  }

  /** Serve the reads this replica's applied index now covers; note when a follower is known caught up. */
  private afterProgress(r: Replica): void {
    if (r.readsWaitingApply.length > 0) {
      const still: typeof r.readsWaitingApply = [];
      for (const w of r.readsWaitingApply) {
        if (r.applied >= w.index) for (const d of w.dones) d({ ok: true, index: w.index });
        else still.push(w);
      }
      r.readsWaitingApply = still;
    }
    this.noteFresh(r);
  }

  /** A follower whose landed state holds all it knows committed is as fresh as its last leader contact. */
  private noteFresh(r: Replica): void {
    // Commit in the current term: the commits the leader reports are the cluster's (see commitInCurrentTerm).
    if (r.lastLeaderContactMs >= 0 && r.raft.currentRole() !== Role.Leader && r.landedApplied >= r.raft.commitIndex() &&
      r.landedApplied >= r.raft.leaderCommit() && r.raft.commitInCurrentTerm()) {
      r.lastFreshMs = r.lastLeaderContactMs;
    }
  }

  // ------------------------------------------------------------ queries

  isQuiesced(shard: number): boolean {
    return this.replica(shard).raft.isQuiesced();
  }

  /**
   * For stale reads: how far behind the leader this replica may be (ms), or
   * Infinity if unknown. A quiesced replica hears nothing, so its bound only
   * grows: a bounded read wakes the group to get fresh proof (see http.ts).
   */
  /** This replica must not serve reads: it recovers lost state, or its landed state has not reached where that ended (RaftNode.lostStateUnserved). */
  lostStateUnserved(shard: number): boolean {
    const r = this.replica(shard);
    // Stale reads see landed state, which lags the core's applied index by a batch or more.
    return r.raft.lostStateUnserved(r.landedApplied);
  }

  stalenessMs(shard: number, nowMs: number): number {
    const r = this.replica(shard);
    if (r.raft.currentRole() === Role.Leader) {
      const ackAt = r.quorumAckAtMs();
      // A new leader may lack entries its predecessor committed until it commits one of its own.
      if (ackAt < 0 || !r.raft.commitInCurrentTerm()) return Infinity;
      // Committed (even acknowledged) state still in the overlay is not what a stale read sees.
      if (r.landedApplied >= r.raft.commitIndex()) return Math.max(0, nowMs - ackAt);
      return r.leaderLandedFreshMs < 0 ? Infinity : Math.max(0, nowMs - Math.min(ackAt, r.leaderLandedFreshMs));
    }
    return r.lastFreshMs < 0 ? Infinity : Math.max(0, nowMs - r.lastFreshMs);
  }

  /** This replica's role (cheap, for the request path). */
  roleOf(shard: number): Role {
    return this.replica(shard).raft.currentRole();
  }

  /** The leader this replica knows (0: none). */
  leaderOf(shard: number): NodeId {
    return this.replica(shard).raft.currentLeader();
  }

  status(shard: number): ReturnType<RaftNode['status']> & { applied: number; logTime: number; gen: number } {
    const r = this.replica(shard);
    return { ...r.raft.status(), applied: r.applied, logTime: r.machine.logTime, gen: r.machine.gen };
  }

  /** State generation in use (stale reads and scans read this one). */
  generation(shard: number): number {
    return this.replica(shard).machine.gen;
  }

  /**
   * Entries the replica's Raft log holds in memory and their data bytes (for the memory budget), and
   * how many of its latest applied entries a follower heard from within `graceTicks` still needs
   * (leader only): the most any such follower at most `windowEntries` behind needs (0: none). One
   * further behind will get a snapshot anyway; it takes no protection from the others. And the
   * applied index (what compact(shard, keep) counts back from).
   */
  logMemory(shard: number, graceTicks: number, windowEntries: number): { entries: number; dataBytes: number; needed: number; applied: number } {
    const r = this.replica(shard);
    let needed = 0;
    for (const m of r.raft.followerMatchesHeardWithin(graceTicks)) {
      const behind = r.applied - m;
      if (behind > needed && behind <= windowEntries) needed = behind;
    }
    return { entries: r.raft.logEntryCount(), dataBytes: r.raft.logDataBytes(), needed, applied: r.applied };
  }

  /** For logs: the leader's view of its followers' progress ('' if not the leader). */
  progressSummary(shard: number): string {
    return this.replica(shard).raft.progressSummary();
  }

  /** logMemory over all replicas, and the most entries one holds (allocates nothing per replica). */
  logMemoryTotals(): { entries: number; dataBytes: number; most: number } {
    let entries = 0;
    let dataBytes = 0;
    let most = 0;
    for (const r of this.replicas.values()) {
      const n = r.raft.logEntryCount();
      entries += n;
      dataBytes += r.raft.logDataBytes();
      if (n > most) most = n;
    }
    return { entries, dataBytes, most };
  }

  /**
   * Compact a replica's log at applied − keep (between rounds): the node
   * persists `snapshot` and then deletes log entries below `below`. Null when
   * there is nothing below that to cut. (Snapshot streams take
   * snapshotForSend(), which cuts nothing.)
   */
  compact(shard: number, keep = 0): { snapshot: Snapshot; below: number } | null {
    invariant(this.unapplied === null && this.roundsInFlight() === 0, 'compact only with no round in flight');
    const r = this.replica(shard);
    const index = r.applied - keep;
    if (index < r.persistedFirst) return null;
    r.raft.compact(index, encodeDescriptor({ gen: r.machine.gen, logTime: r.machine.logTime }));
    this.dirty.add(r);
    const snapshot = r.raft.currentSnapshot();
    invariant(snapshot !== null, 'compaction made a snapshot');
    r.persistedFirst = snapshot.meta.index + 1;
    return { snapshot, below: r.persistedFirst };
  }

  /**
   * A snapshot of the shard at its applied index, to stream to a follower, that leaves the log whole
   * (compact() would cut it, and other followers a little behind would need snapshots too). Only with no
   * round in flight: the applied state has landed, so an iterator opened now reads exactly it.
   */
  snapshotForSend(shard: number): Snapshot | null {
    invariant(this.unapplied === null && this.roundsInFlight() === 0, 'snapshot only with no round in flight');
    const r = this.replica(shard);
    if (r.applied === 0) return null;
    return r.raft.snapshotAt(r.applied, encodeDescriptor({ gen: r.machine.gen, logTime: r.machine.logTime }));
  }
}
