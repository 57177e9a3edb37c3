/**
 * Public types of the Raft core. The core is a pure, deterministic state
 * machine: no I/O, no clock, no ambient randomness (a seeded source is injected), no async. The host feeds it
 * ticks, messages and proposals, and drains `ready()` for what to persist,
 * send and apply (see persistence contract in raft-node.ts).
 */

/** Numeric replica id, > 0. 0 means "none". */
export type NodeId = number;
export const NONE: NodeId = 0;
/** The persisted vote of a replica that started without its state and has not recovered yet (see
 *  "Lost state" in raft-node.ts). Never a node id: while it is the vote, the replica grants no vote. */
export const LOST_VOTE = -1;

export const EntryType = { Normal: 0, ConfChange: 1 } as const;
export type EntryType = (typeof EntryType)[keyof typeof EntryType];

/** One server at a time membership change (Raft thesis §4.1 with the
 * "leader must commit an entry of its own term first" fix). */
export type ConfChangeType = 'addVoter' | 'addLearner' | 'remove' | 'bootstrap';
export interface ConfChange {
  type: ConfChangeType;
  node: NodeId;
  /** 'bootstrap' only: the whole initial configuration. It is entry 1 of
   *  every group's log, so a node that joins later and replays the log from
   *  the start learns the founding members too. Never proposed. */
  conf?: ConfState;
}

export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Opaque payload. An empty payload of type Normal is the leader's no-op. */
  data: Uint8Array;
  /** Set iff type === ConfChange. */
  change: ConfChange | null;
}

export interface HardState {
  term: number;
  vote: NodeId;
  commit: number;
  /**
   * The last log index when this replica last recovered lost state (absent: 0, never): its state is
   * not served until the applied state reaches it (RaftNode.lostStateUnserved). Persisted with the
   * vote that ended the recovery, so a crash before the state lands keeps the guard.
   */
  recovered?: number;
}

export interface SnapshotMeta {
  index: number;
  term: number;
  conf: ConfState;
}

export interface Snapshot {
  meta: SnapshotMeta;
  /** Opaque state-machine image at meta.index. */
  data: Uint8Array;
}

export const MsgType = {
  App: 1,
  AppResp: 2,
  Vote: 3,
  VoteResp: 4,
  PreVote: 5,
  PreVoteResp: 6,
  Heartbeat: 7,
  HeartbeatResp: 8,
  Snap: 9,
  TimeoutNow: 10,
  /** From a replica recovering lost state (see "Lost state" in raft-node.ts): "what is your term?"
   *  (context: this incarnation's nonce, >= 2, echoed in the answer); with context = 1 and its floor
   *  in `index`: "if you lead a term at or below it, step down and campaign". */
  LostState: 11,
  /** Answer to LostState: `term` is the answering node's current term, `context` the probe's nonce. */
  LostStateResp: 12,
} as const;
export type MsgType = (typeof MsgType)[keyof typeof MsgType];

/**
 * One wire message. Every field is always present (monomorphic objects are
 * faster in V8); unused fields are 0 / false / empty.
 */
export interface Message {
  type: MsgType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** App: term of the entry at `index`. Vote/PreVote: candidate's last log term.
   *  AppResp reject: term of the follower's entry at `rejectHint`. */
  logTerm: number;
  /** App: index preceding `entries`. Vote/PreVote: candidate's last index.
   *  AppResp: follower's last matching index (accept) or probed index (reject).
   *  Heartbeat: the leader's commit index (`commit` is capped at what the
   *  follower is known to hold); tells a follower how far behind it is. */
  index: number;
  entries: Entry[];
  commit: number;
  /** AppResp/VoteResp/PreVoteResp: refused. Heartbeat: the leader asks the
   *  follower to quiesce (all hold the whole log; stop ticking until woken).
   *  HeartbeatResp: a woken follower asks a quiesced leader to wake. */
  reject: boolean;
  /** AppResp reject: the follower's hint. App/Heartbeat: the core sends 0 and never reads it; the
   *  host may stamp it (shard/store.ts stamps the leader's quorum-ack age for stale reads). */
  rejectHint: number;
  /** Heartbeat / HeartbeatResp: ReadIndex round id being confirmed (0 = none).
   *  Vote: 1 when the campaign is a leadership transfer (ignore leases). */
  context: number;
  snapshot: Snapshot | null;
  /**
   * Host-owned: the core never sets or reads these (shard/store.ts times leader contact with them).
   * AppResp/HeartbeatResp: the follower's probe id. App/Heartbeat: the last probe id the leader
   * received from that follower, and probeDelta (ms) = the leader's quorum-ack time − that probe's arrival.
   */
  probe?: number;
  probeDelta?: number;
}

export const Role = {
  Follower: 'follower',
  PreCandidate: 'pre-candidate',
  Candidate: 'candidate',
  Leader: 'leader',
} as const;
export type Role = (typeof Role)[keyof typeof Role];

export interface SoftState {
  leader: NodeId;
  role: Role;
}

/** A linearizable read may be served once `applied >= index`. */
export interface ReadState {
  index: number;
  context: number;
}

export interface Ready {
  /** Sequence number: Readies are persisted and acknowledged in this order. */
  seq: number;
  /** Set when leader or role changed since the last ready. Not persisted. */
  softState: SoftState | null;
  /** Set when term, vote or commit changed: persist before sending messages. */
  hardState: HardState | null;
  /** Append to stable storage. Any previously persisted entry with
   *  index >= entries[0].index is replaced (delete the old suffix). */
  entries: Entry[];
  /** Install (persist, then restore the state machine from it) before
   *  appending `entries`. Replaces the whole persisted log. */
  snapshot: Snapshot | null;
  /** Apply in order. Already durable here (see the contract in raft-node.ts):
   *  may be applied before this Ready is persisted. */
  committedEntries: Entry[];
  /** Send after persisting hardState, entries and snapshot. */
  messages: Message[];
  /** Completed ReadIndex requests. */
  readStates: ReadState[];
  /** True if hardState (term/vote), entries or snapshot must be synced. */
  mustSync: boolean;
}

/** What the host loaded from stable storage at start. */
export interface Persisted {
  hardState: HardState;
  snapshot: Snapshot | null;
  /** Entries after the snapshot, contiguous. */
  entries: Entry[];
}

/** Deliberately planted bugs, for tests that prove the checkers have teeth.
 *  Never set in production. */
export interface PlantedBugs {
  /** Count entries of old terms toward commit (Figure 8 bug). */
  commitOldTerm?: boolean;
  /** Report vote = none in Ready.hardState, so votes are never persisted. */
  skipVotePersist?: boolean;
  /** Answer ReadIndex at once, without confirming leadership. */
  readIndexNoConfirm?: boolean;
  /** Grant votes without the up-to-date log check. */
  voteIgnoresLog?: boolean;
}

export interface RaftConfig {
  id: NodeId;
  /** Founding members, used only when nothing was persisted: a node with a
   *  non-empty initialConf bootstraps the group by writing it as committed
   *  entry 1 (term 0) of its log — identical on every founding member. A
   *  node that joins an existing group passes an empty ConfState and learns
   *  the configuration from the leader's log or snapshot. */
  initialConf: ConfState;
  electionTicks: number;
  heartbeatTicks: number;
  /** Seeded random source in [0, 1). */
  random: () => number;
  preVote: boolean;
  checkQuorum: boolean;
  /** 'safe': ReadIndex confirms leadership with a heartbeat round.
   *  'lease': serve from the lease (needs checkQuorum; assumes clock drift
   *  below leaseDriftTicks over an election timeout). */
  readOnly: 'safe' | 'lease';
  leaseDriftTicks: number;
  /** Max bytes of entry payload per App message. */
  maxMsgBytes: number;
  /** Max App messages in flight to one follower in replicate state. */
  maxInflightMsgs: number;
  /** Max payload bytes proposed but not committed; beyond it proposals fail. */
  maxUncommittedBytes: number;
  /** Max payload bytes of committed entries handed out per ready. */
  maxApplyBytes: number;
  /**
   * When > 0, a Ready's committed entries never run past a multiple of it: the host can act on the state
   * exactly at such an index (the node's replica checks hash each replica's state there). 0: off.
   */
  applyBreakEvery?: number;
  /** A founding voter that starts with nothing persisted recovers before it votes (see "Lost state"
   *  in raft-node.ts). Off only in scripted unit tests of other features (test/raft/mem-cluster.ts)
   *  and, in the simulator, to show what it guards against: then such a node votes at once, as on a
   *  first start, and after a lost data directory may vote twice in a term. */
  recoverLostState: boolean;
  /** Index already applied to the state machine at start (restarts). */
  applied: number;
  bugs?: PlantedBugs;
  /** Optional trace sink for golden transcripts and debugging. */
  trace?: (line: string) => void;
}

export type ProposeError =
  | 'not_leader'
  | 'transferring'
  | 'overloaded'
  | 'conf_change_pending'
  | 'invalid_conf_change';

export type ProposeResult =
  | { ok: true; index: number; term: number }
  | { ok: false; code: ProposeError };

export interface Status {
  id: NodeId;
  term: number;
  vote: NodeId;
  role: Role;
  leader: NodeId;
  commit: number;
  applied: number;
  lastIndex: number;
  firstIndex: number;
  conf: ConfState;
  leadTransferee: NodeId;
  /** Leader only: ticks since the newest heartbeat round that a quorum
   *  acknowledged was sent (-1: none yet, or not leader). Hosts use it to
   *  fail fast when the leader has lost its quorum. */
  quorumAckAgeTicks: number;
  /** Quiesced: an idle group whose members all hold the whole log; ticks
   *  are ignored until a message, proposal or wake() arrives. */
  quiesced: boolean;
  /** Lost-state recovery: 'probing' (asking every voter its term), 'catching-up' (waiting to hold
   *  an entry of a leader whose term is above every term it could have voted in), null: none. */
  recovery: 'probing' | 'catching-up' | null;
}
