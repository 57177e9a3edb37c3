/**
 * Host model for one replica: a RaftNode, its durable storage (hard state,
 * snapshot, entries), the register state machine, and the client ops that
 * are waiting on this replica.
 *
 * The host follows the core's persistence contract exactly. With a
 * synchronous disk (diskDelay 0), for each Ready it (1) persists snapshot,
 * hard state and entries, (2) sends messages, (3) installs the snapshot /
 * applies committed entries / serves reads, (4) calls advance(). With an
 * asynchronous disk it pipelines like the storage node: it applies committed
 * entries and sends the messages the contract allows at once, queues the
 * Ready's writes, and keeps stepping; a write completes 0..diskDelay steps
 * later, in order, and only then are the Ready's other messages sent and
 * persisted(rd) called. A crash happens between two simulation events, so it
 * loses exactly what is not in the durable fields below, including every
 * queued write.
 */
import {
  LOST_VOTE, MsgType, RaftNode, Role,
  type ConfState, type Entry, type HardState, type Message, type NodeId, type Persisted,
  type RaftConfig, type Ready, type Snapshot,
} from '../../raft/index.ts';
import { entryFingerprint, type Invariants } from './invariants.ts';
import type { Envelope } from './network.ts';
import { RegisterSM, decodeCmd, encodeCmd, type Cmd, type PendingOp, type Workload } from './workload.ts';

export interface NodeHost {
  readonly now: number;
  readonly inv: Invariants;
  readonly workload: Workload;
  readonly keys: number;
  /** Full config for a (re)start of node `id`, with a fresh seeded random. */
  makeConfig(id: NodeId, initialConf: ConfState): RaftConfig;
  send(from: SimNode, m: Message): void;
  /** A node applied command `cmd` at `index` (first-apply bookkeeping). */
  onApplied(who: SimNode, cmd: Cmd, index: number, casOk: boolean): void;
  /** This node just became leader (fault injection hook). */
  onLeader(n: SimNode): void;
  trace(line: string): void;
  readonly verbose: boolean;
  /** Check protocol rules directly (not only their end-to-end consequences). */
  readonly protocolChecks: boolean;
  /** Steps a write takes (0: the synchronous host; else drawn per write, 0..max). */
  diskDelay(): number;
  readonly asyncDisk: boolean;
  /** Planted host bug: send every message before its Ready is durable. */
  readonly earlyAcks: boolean;
  /** Like the node: a snapshot sent to a follower is a fresh cut at applied that leaves the log whole. */
  readonly freshSnapshots: boolean;
}

/** A Ready whose writes are in flight on an asynchronous disk. */
interface PendingWrite {
  rd: Ready;
  /** Messages that may go out only once rd is durable. */
  late: Message[];
  /** Role when the Ready was handed out (for the §5.4.2 check). */
  role: Role;
  due: number;
}

export class SimNode {
  raft: RaftNode | null = null;
  /** Bumped on every start; messages/reports from an older incarnation are stale. */
  incarnation = 0;
  paused = false;
  pausedUntil = 0;
  /** Messages that arrived while paused. */
  held: Envelope[] = [];
  restartAt = 0;
  /** Scheduled crash step (0 = none). */
  crashAt = 0;
  /** Scheduled step at which a partition cuts this node off (0 = none). */
  isolateAt = 0;
  /** Slow-clock episode: until this step the node ticks with probability tickRate. */
  slowUntil = 0;
  tickRate = 1;
  /** Lost its storage in some crash (see Simulation.mayLoseDisk). */
  lostDisk = false;
  /** Ever been in a configuration (ids are never reused after removal). */
  everMember: boolean;

  // ---- durable storage
  private hasPersisted = false;
  hardState: HardState = { term: 0, vote: 0, commit: 0 };
  /** Hard state as of the last synced write: a Ready with mustSync=false (a
   *  commit-only change) may be written without fsync and lost in a crash. */
  private syncedHardState: HardState = { term: 0, vote: 0, commit: 0 };
  snapshot: Snapshot | null = null;
  /** Persisted entries after the snapshot, contiguous. */
  entries: Entry[] = [];

  // ---- volatile host state
  sm: RegisterSM;
  applied = 0;
  /** Commit index last reported by this incarnation. */
  commit = 0;
  role: Role = Role.Follower;
  leader: NodeId = 0;
  /** Writes in flight (asynchronous disk), in order. */
  private writes: PendingWrite[] = [];
  /** Term and vote of the latest hard state handed out (durable or not). */
  private handedHard: HardState = { term: 0, vote: 0, commit: 0 };
  private pendingByIndex = new Map<number, PendingOp>();
  private pendingReads = new Map<number, PendingOp>();
  private waitingReads: PendingOp[] = [];

  crashes = 0;
  oldTermCommits = 0;
  compactions = 0;
  snapshotsInstalled = 0;

  constructor(
    readonly id: NodeId,
    readonly initialConf: ConfState,
    private host: NodeHost,
  ) {
    this.sm = new RegisterSM(host.keys);
    this.everMember = initialConf.voters.includes(id) || initialConf.learners.includes(id);
  }

  get alive(): boolean {
    return this.raft !== null;
  }

  get name(): string {
    return `n${this.id}`;
  }

  get snapIndex(): number {
    return this.snapshot === null ? 0 : this.snapshot.meta.index;
  }

  get lastPersistedIndex(): number {
    return this.snapIndex + this.entries.length;
  }

  private fail(kind: string, message: string): never {
    return this.host.inv.fail(kind, `${this.name}: ${message}`);
  }

  /** Start (first boot or restart from exactly what was persisted). */
  boot(): void {
    const host = this.host;
    const snap = this.snapshot;
    const persisted: Persisted | null = this.hasPersisted
      ? { hardState: { ...this.hardState }, snapshot: snap, entries: this.entries.slice() }
      : null;
    const applied = snap === null ? 0 : snap.meta.index;
    const cfg: RaftConfig = { ...host.makeConfig(this.id, this.initialConf), applied };
    this.sm = snap === null ? new RegisterSM(host.keys) : this.restoreImage(snap);
    this.applied = applied;
    if (snap !== null) host.inv.state(this.name, applied, this.sm.fingerprint(), host.now, 'restart from snapshot');
    this.incarnation++;
    this.paused = false;
    this.held = [];
    this.writes = [];
    this.handedHard = { ...this.hardState };
    this.raft = new RaftNode(cfg, persisted);
    const st = this.raft.status();
    this.commit = st.commit;
    this.role = st.role;
    this.leader = st.leader;
    if (st.commit < this.hardState.commit) {
      this.fail('commit-regress', `restarted with commit ${st.commit} < persisted ${this.hardState.commit}`);
    }
    if (st.applied !== applied) this.fail('applied-mismatch', `restarted with applied ${st.applied}, host passed ${applied}`);
    host.trace(`${this.name} boot#${this.incarnation} term=${st.term} commit=${st.commit} last=${st.lastIndex} snap=${applied}`);
    this.processReady();
  }

  /** `loseUnsynced`: the crash also loses hard-state writes that were not synced. */
  crash(loseUnsynced = false): void {
    if (loseUnsynced && this.hardState.commit !== this.syncedHardState.commit) {
      this.host.trace(`${this.name} loses unsynced commit ${this.hardState.commit} -> ${this.syncedHardState.commit}`);
      this.hardState = { ...this.syncedHardState };
    }
    const wl = this.host.workload;
    const now = this.host.now;
    for (const p of this.pendingByIndex.values()) wl.unknown(p, `crash of ${this.name}`, now);
    for (const p of this.pendingReads.values()) wl.drop(p, 'crash', now);
    for (const p of this.waitingReads) wl.drop(p, 'crash', now);
    this.pendingByIndex.clear();
    this.pendingReads.clear();
    this.waitingReads = [];
    this.raft = null;
    this.writes = [];
    this.crashAt = 0;
    this.paused = false;
    this.held = [];
    this.crashes++;
    this.host.trace(`${this.name} CRASH (persisted term=${this.hardState.term} vote=${this.hardState.vote} ` +
      `commit=${this.hardState.commit} last=${this.lastPersistedIndex} snap=${this.snapIndex})`);
  }

  /** After crash(): the whole storage is gone (a lost data directory); the next boot is a first start. */
  loseDisk(): void {
    this.hasPersisted = false;
    this.hardState = { term: 0, vote: 0, commit: 0 };
    this.syncedHardState = { term: 0, vote: 0, commit: 0 };
    this.snapshot = null;
    this.entries = [];
    this.lostDisk = true;
    this.host.trace(`${this.name} LOSES ITS DISK`);
  }

  private restoreImage(s: Snapshot): RegisterSM {
    try {
      return RegisterSM.fromImage(s.data, this.host.keys);
    } catch (e) {
      return this.fail('bad-snapshot', `snapshot at ${s.meta.index}: ${(e as Error).message}`);
    }
  }

  tick(): void {
    (this.raft as RaftNode).tick();
    this.processReady();
  }

  receive(m: Message): void {
    (this.raft as RaftNode).step(m);
    this.processReady();
  }

  /** Client request arriving at this node. Returns nothing; the outcome is
   *  recorded through the workload (now or when applied). */
  submit(p: PendingOp): void {
    const raft = this.raft as RaftNode;
    const wl = this.host.workload;
    const now = this.host.now;
    if (p.kind === 'read') {
      const r = raft.readIndex(p.ctx);
      if (!r.ok) {
        p.client.target = raft.status().leader;
        wl.drop(p, r.code, now);
        return;
      }
      // Everything known committed now must be visible to this read.
      p.minIndex = this.host.inv.maxCommitted;
      this.pendingReads.set(p.ctx, p);
    } else {
      const r = raft.propose(encodeCmd(p.cmd as Cmd));
      if (!r.ok) {
        p.client.target = raft.status().leader;
        if (p.kind === 'mut') wl.fail(p, r.code, now);
        else wl.drop(p, r.code, now);
        return;
      }
      p.index = r.index;
      const old = this.pendingByIndex.get(r.index);
      if (old !== undefined) wl.unknown(old, 'index reused', now);
      this.pendingByIndex.set(r.index, p);
    }
    p.client.target = this.id;
    this.processReady();
  }

  /** Host-driven compaction at the applied index. */
  compact(): boolean {
    const raft = this.raft as RaftNode;
    // Like the storage node, compact only with no writes in flight.
    if (this.applied <= this.snapIndex || this.writes.length > 0) return false;
    raft.compact(this.applied, this.sm.image());
    const s = raft.currentSnapshot();
    if (s === null || s.meta.index !== this.applied) {
      this.fail('compact', `compact(${this.applied}) left snapshot at ${s?.meta.index ?? 'none'}`);
    }
    const t = this.host.inv.committedTerm(s.meta.index);
    if (t !== undefined && t !== s.meta.term) {
      this.fail('compact', `snapshot term ${s.meta.term} at ${s.meta.index} but committed entry has term ${t}`);
    }
    // Persist the snapshot and drop the persisted prefix.
    const drop = s.meta.index - this.snapIndex;
    this.entries = this.entries.slice(drop);
    this.snapshot = s;
    this.hasPersisted = true;
    this.compactions++;
    this.host.trace(`${this.name} compact at ${s.meta.index}`);
    this.processReady();
    return true;
  }

  processReady(): void {
    const raft = this.raft;
    if (raft === null) return;
    while (raft.hasReady()) {
      const rd = raft.ready();
      if (this.host.asyncDisk) {
        this.handOut(raft, rd);
        continue;
      }
      this.persist(rd, null);
      for (const m of rd.messages) this.sendOut(m);
      if (rd.snapshot !== null) this.installSnapshot(rd.snapshot);
      if (rd.committedEntries.length > 0) this.applyEntries(rd.committedEntries);
      this.afterApply(rd);
      raft.advance(rd);
    }
  }

  private sendOut(m: Message): void {
    const raft = this.raft;
    if (m.type === MsgType.Snap && this.host.freshSnapshots && raft !== null) {
      // The node streams a cut of its state at applied, not the core's last compaction.
      const snapshot = raft.snapshotAt(this.applied, this.sm.image());
      this.host.trace(`${this.name} fresh snapshot at ${snapshot.meta.index} for ${m.to} (core's at ${m.snapshot?.meta.index ?? 'none'})`);
      this.host.send(this, { ...m, snapshot });
      return;
    }
    this.host.send(this, m);
  }

  /** Asynchronous disk: everything that need not wait for the write, then queue it. */
  private handOut(raft: RaftNode, rd: Ready): void {
    const role = this.role;
    if (rd.hardState !== null) {
      this.handedHard = rd.hardState;
      if (rd.hardState.commit > this.commit) this.commit = rd.hardState.commit;
    }
    const durable = this.hardState;
    const termDurable = this.handedHard.term === durable.term && this.handedHard.vote === durable.vote;
    const late: Message[] = [];
    for (const m of rd.messages) {
      const early = this.host.earlyAcks || termDurable && (m.type === MsgType.App || m.type === MsgType.Heartbeat || m.type === MsgType.HeartbeatResp);
      if (early) this.sendOut(m);
      else late.push(m);
    }
    if (rd.committedEntries.length > 0) this.applyEntries(rd.committedEntries);
    this.afterApply(rd);
    raft.applied(rd);
    const last = this.writes[this.writes.length - 1];
    const due = Math.max(this.host.now + this.host.diskDelay(), last === undefined ? 0 : last.due);
    this.writes.push({ rd, late, role, due });
  }

  /** Asynchronous disk: complete the writes that are due, in order. */
  flushDisk(): void {
    const raft = this.raft;
    if (raft === null || this.paused || this.writes.length === 0) return;
    while (this.writes.length > 0 && (this.writes[0] as PendingWrite).due <= this.host.now) {
      const w = this.writes.shift() as PendingWrite;
      this.persist(w.rd, w.role);
      if (w.rd.snapshot !== null) this.installSnapshot(w.rd.snapshot);
      for (const m of w.late) this.sendOut(m);
      raft.persisted(w.rd);
    }
    this.processReady();
  }

  /** Writes in flight (asynchronous disk). */
  pendingWrites(): number {
    return this.writes.length;
  }

  private afterApply(rd: Ready): void {
    if (rd.readStates.length > 0) {
      for (const rs of rd.readStates) {
        const p = this.pendingReads.get(rs.context);
        if (p === undefined) continue;
        this.pendingReads.delete(rs.context);
        if (rs.index < p.minIndex && this.host.protocolChecks) {
          this.fail('stale-read-index',
            `ReadIndex for ${p.rec.label} answered with index ${rs.index}, but index ${p.minIndex} was ` +
            `already committed when the read arrived (leader term ${this.hardState.term})`);
        }
        p.readIndex = rs.index;
        this.waitingReads.push(p);
      }
    }
    if (this.waitingReads.length > 0) this.serveReads();
    if (rd.softState !== null) {
      this.role = rd.softState.role;
      this.leader = rd.softState.leader;
      if (this.role === Role.Leader) this.becameLeader();
      else if (this.host.verbose) this.host.trace(`${this.name} role=${this.role} leader=${this.leader} term=${this.hardState.term}`);
    }
  }

  /** Make rd durable. `asyncRole`: the role when rd was handed out (asynchronous disk), else null. */
  private persist(rd: Ready, asyncRole: Role | null): void {
    const oldCommit = this.hardState.commit;
    if (rd.snapshot !== null) {
      this.snapshot = rd.snapshot;
      this.entries = [];
      this.hasPersisted = true;
    }
    if (rd.entries.length > 0) this.appendEntries(rd.entries, oldCommit);
    if (rd.hardState !== null) {
      const hs = rd.hardState;
      const prev = this.hardState;
      // The synchronous host reports commit when it persists; the asynchronous one when it hands out.
      const reported = asyncRole === null ? this.commit : prev.commit;
      const role = asyncRole ?? this.role;
      if (hs.term < prev.term) this.fail('term-regress', `hard state term ${hs.term} < persisted ${prev.term}`);
      if (hs.commit < reported) this.fail('commit-regress', `commit went from ${reported} to ${hs.commit}`);
      // LOST_VOTE (a replica recovering lost state, see raft-node.ts) is no vote: it is replaced once recovered.
      if (hs.term === prev.term && prev.vote !== 0 && prev.vote !== LOST_VOTE && hs.vote !== prev.vote) {
        this.fail('vote-change', `vote changed from ${prev.vote} to ${hs.vote} within term ${hs.term}`);
      }
      if (hs.commit > this.lastPersistedIndex) {
        this.fail('commit-beyond-log', `commit ${hs.commit} beyond persisted last index ${this.lastPersistedIndex}`);
      }
      if (hs.commit > reported && role === Role.Leader && hs.term === prev.term &&
        (rd.softState === null || rd.softState.role === Role.Leader)) {
        // §5.4.2: a leader only advances its commit index to an entry of its own term.
        const e = this.entries[hs.commit - this.snapIndex - 1];
        if (e !== undefined && e.term !== hs.term) {
          this.oldTermCommits++;
          if (this.host.protocolChecks) {
            this.fail('commit-old-term', `leader of term ${hs.term} advanced commit to ${hs.commit}, an entry of term ${e.term}`);
          }
        }
      }
      this.hardState = { term: hs.term, vote: hs.vote, commit: hs.commit };
      if (asyncRole === null) this.commit = hs.commit;
      this.hasPersisted = true;
      if (!rd.mustSync && (hs.term !== prev.term || hs.vote !== prev.vote)) {
        this.fail('must-sync', `term/vote changed (${prev.term}/${prev.vote} -> ${hs.term}/${hs.vote}) in a Ready with mustSync=false`);
      }
    }
    if (rd.mustSync) this.syncedHardState = { ...this.hardState };
    else if (rd.entries.length > 0 || rd.snapshot !== null) {
      this.fail('must-sync', 'entries or snapshot in a Ready with mustSync=false');
    }
  }

  private appendEntries(ents: Entry[], oldCommit: number): void {
    const base = this.snapIndex;
    const first = (ents[0] as Entry).index;
    const last = this.lastPersistedIndex;
    if (first <= base || first > last + 1) {
      this.fail('log-gap', `ready entries start at ${first}, persisted log is (${base}, ${last}]`);
    }
    // Overwriting an entry at or below our own persisted commit index must not change it.
    for (let i = first; i <= Math.min(last, oldCommit, first + ents.length - 1); i++) {
      const old = this.entries[i - base - 1] as Entry;
      const neu = ents[i - first] as Entry;
      if (entryFingerprint(old) !== entryFingerprint(neu)) {
        this.fail('committed-truncated',
          `overwrote committed entry ${i} [${entryFingerprint(old)}] with [${entryFingerprint(neu)}] (commit ${oldCommit})`);
      }
    }
    this.entries.length = first - base - 1;
    let expect = first;
    for (const e of ents) {
      if (e.index !== expect) this.fail('log-gap', `ready entries not contiguous at ${expect} (got ${e.index})`);
      expect++;
      this.entries.push({ term: e.term, index: e.index, type: e.type, data: e.data, change: e.change });
    }
  }

  private installSnapshot(s: Snapshot): void {
    const host = this.host;
    const idx = s.meta.index;
    if (idx < this.applied) this.fail('snapshot-regress', `installed snapshot at ${idx} below applied ${this.applied}`);
    const t = host.inv.committedTerm(idx);
    if (t !== undefined && t !== s.meta.term) {
      this.fail('snapshot-term', `snapshot term ${s.meta.term} at ${idx} but the committed entry has term ${t}`);
    }
    this.sm = this.restoreImage(s);
    this.applied = idx;
    this.snapshotsInstalled++;
    host.inv.state(this.name, idx, this.sm.fingerprint(), host.now, 'snapshot install');
    host.trace(`${this.name} install snapshot at ${idx} term ${s.meta.term}`);
    for (const [i, p] of [...this.pendingByIndex]) {
      if (i <= idx) {
        this.pendingByIndex.delete(i);
        host.workload.unknown(p, 'covered by snapshot', host.now);
      }
    }
  }

  private applyEntries(ents: Entry[]): void {
    const host = this.host;
    const inv = host.inv;
    const now = host.now;
    const term = (this.raft as RaftNode).status().term;
    for (const e of ents) {
      if (e.index !== this.applied + 1) this.fail('apply-gap', `applying ${e.index} after ${this.applied}`);
      if (e.index > this.commit) this.fail('apply-uncommitted', `applying ${e.index} beyond commit ${this.commit}`);
      inv.committed(this.name, e, term, now);
      let cmd: Cmd | null = null;
      let output: number | null = null;
      let casOk = false;
      if (e.type === 0 && e.data.length > 0) {
        try {
          cmd = decodeCmd(e.data);
        } catch (err) {
          this.fail('bad-entry', `entry ${e.index}: ${(err as Error).message}`);
        }
        if (cmd !== null) {
          const r = this.sm.apply(cmd);
          output = r.output;
          casOk = r.casOk;
          host.onApplied(this, cmd, e.index, casOk);
        }
      }
      this.applied = e.index;
      inv.state(this.name, e.index, this.sm.fingerprint(), now, 'apply');
      if (this.pendingByIndex.size > 0) {
        const p = this.pendingByIndex.get(e.index);
        if (p !== undefined) {
          this.pendingByIndex.delete(e.index);
          if (cmd !== null && p.cmd !== null && cmd.opId === p.cmd.opId) host.workload.complete(p, output, casOk, now);
          else host.workload.unknown(p, `other entry at ${e.index}`, now);
        }
      }
    }
  }

  private serveReads(): void {
    const wl = this.host.workload;
    const keep: PendingOp[] = [];
    for (const p of this.waitingReads) {
      if (p.done) continue;
      if (this.applied >= p.readIndex) {
        wl.complete(p, this.sm.read(p.cmd?.key ?? keyOf(p)), false, this.host.now);
      } else {
        keep.push(p);
      }
    }
    this.waitingReads = keep;
  }

  private becameLeader(): void {
    const host = this.host;
    const term = this.hardState.term;
    host.inv.leader(term, this.id, host.now);
    host.onLeader(this);
    host.trace(`${this.name} LEADER term=${term} last=${this.lastPersistedIndex} commit=${this.commit}`);
    // Leader completeness: every entry known committed in an earlier term is in our log.
    const inv = host.inv;
    const base = this.snapIndex;
    const last = this.lastPersistedIndex;
    for (let i = base + 1; i <= inv.maxCommitted; i++) {
      const ub = inv.commitTermBound(i);
      if (ub === undefined || ub >= term) continue;
      if (i > last) {
        this.fail('leader-completeness',
          `leader of term ${term} lacks entry ${i} committed by term ${ub} (its log ends at ${last})`);
      }
      const mine = (this.entries[i - base - 1] as Entry).term;
      if (mine !== inv.committedTerm(i)) {
        this.fail('leader-completeness',
          `leader of term ${term} has term ${mine} at ${i} but the entry committed there has term ${inv.committedTerm(i)}`);
      }
    }
  }

  /** Pending client work at this node (for stats/debug). */
  pendingCount(): number {
    return this.pendingByIndex.size + this.pendingReads.size + this.waitingReads.length;
  }
}

function keyOf(p: PendingOp): number {
  return p.rec.key.charCodeAt(0) - 97;
}
