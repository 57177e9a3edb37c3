import type { NodeId, ReadState } from './types.ts';

interface PendingRead {
  context: number;
  index: number;
  round: number;
}

interface Round {
  id: number;
  sentTick: number;
  acks: Set<NodeId>;
}

/**
 * ReadIndex bookkeeping on the leader. Every read joins the next heartbeat
 * round; a round acknowledged by a quorum confirms that the leader was still
 * leader when it was sent, which releases every read queued before it. Many
 * reads therefore share one round of messages. Heartbeat rounds double as
 * lease renewals.
 */
export class ReadOnly {
  private queue: PendingRead[] = [];
  private rounds: Round[] = [];
  private nextRound = 1;
  /** Reads waiting for the first commit of the leader's term. */
  private beforeCommit: number[] = [];
  /** A round must be sent because reads are waiting for one. */
  roundNeeded = false;
  /** Tick at which the newest quorum-confirmed round was sent. */
  confirmedSentTick = -1;

  add(context: number, index: number): void {
    this.queue.push({ context, index, round: this.nextRound });
    this.roundNeeded = true;
  }

  deferUntilCommit(context: number): void {
    this.beforeCommit.push(context);
  }

  takeDeferred(): number[] {
    const out = this.beforeCommit;
    this.beforeCommit = [];
    return out;
  }

  /** Start a round; returns its id, to be carried by the heartbeats. */
  startRound(self: NodeId, tick: number): number {
    const id = this.nextRound++;
    this.rounds.push({ id, sentTick: tick, acks: new Set([self]) });
    this.roundNeeded = false;
    // Bound the rounds kept: an unanswered old round is superseded by newer ones.
    if (this.rounds.length > 64) this.rounds.shift();
    return id;
  }

  /**
   * Record an ack of `round` from `from`. If that gives the round a quorum,
   * returns the reads it releases (all queued at or before it).
   */
  ack(round: number, from: NodeId, isQuorum: (acks: Set<NodeId>) => boolean): ReadState[] | null {
    const r = this.rounds.find((x) => x.id === round);
    if (r === undefined) return null;
    r.acks.add(from);
    if (!isQuorum(r.acks)) return null;
    return this.confirm(r);
  }

  /** Release reads confirmed by round r (used when the quorum is the leader alone). */
  confirm(r: Round): ReadState[] {
    this.confirmedSentTick = Math.max(this.confirmedSentTick, r.sentTick);
    this.rounds = this.rounds.filter((x) => x.id > r.id);
    let n = 0;
    while (n < this.queue.length && (this.queue[n] as PendingRead).round <= r.id) n++;
    const released = this.queue.splice(0, n);
    return released.map((p) => ({ index: p.index, context: p.context }));
  }

  /** Confirm the newest round at once (single-voter group). */
  confirmLatest(): ReadState[] {
    const r = this.rounds[this.rounds.length - 1];
    return r === undefined ? [] : this.confirm(r);
  }

  /** Forget the lease: a quorum must ack a new round before the next lease read. */
  invalidateLease(): void {
    this.confirmedSentTick = -1;
  }

  pendingCount(): number {
    return this.queue.length + this.beforeCommit.length;
  }

  reset(): void {
    this.queue = [];
    this.rounds = [];
    this.beforeCommit = [];
    this.roundNeeded = false;
    this.confirmedSentTick = -1;
  }
}
