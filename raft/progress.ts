import { invariant } from './assert.ts';

/** Replication state of one follower, as seen by the leader (etcd's tracker). */
export const ProgressState = { Probe: 0, Replicate: 1, Snapshot: 2 } as const;
export type ProgressState = (typeof ProgressState)[keyof typeof ProgressState];

/** Bounded ring of the last index of each App message in flight. */
export class Inflights {
  private readonly buf: number[];
  private start = 0;
  count = 0;

  constructor(readonly capacity: number) {
    invariant(capacity > 0, 'inflight capacity > 0');
    this.buf = new Array<number>(capacity).fill(0);
  }

  full(): boolean {
    return this.count === this.capacity;
  }

  add(lastIndex: number): void {
    invariant(!this.full(), 'inflights not full on add');
    this.buf[(this.start + this.count) % this.capacity] = lastIndex;
    this.count++;
  }

  /** Free every message whose last index is <= index. */
  freeLE(index: number): void {
    while (this.count > 0 && (this.buf[this.start] ?? 0) <= index) {
      this.start = (this.start + 1) % this.capacity;
      this.count--;
    }
  }

  freeFirst(): void {
    if (this.count === 0) return;
    this.start = (this.start + 1) % this.capacity;
    this.count--;
  }

  reset(): void {
    this.start = 0;
    this.count = 0;
  }
}

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = ProgressState.Probe;
  /** Probe: an App was sent and no answer came yet. */
  probeSent = false;
  /** Snapshot: index of the snapshot being sent, and the tick it was sent at. */
  pendingSnapshot = 0;
  snapshotSentTick = 0;
  /** Heard from since the last check-quorum. */
  recentActive = false;
  /** The leader's tick when it last heard from this follower (-1: never in this term). */
  lastHeardTick = -1;
  /** The match it had before the leader forgot it on a restart: entries it still holds (for log retention). */
  matchBeforeRestart = 0;
  readonly inflights: Inflights;

  constructor(next: number, maxInflight: number, public isLearner: boolean) {
    this.next = next;
    this.inflights = new Inflights(maxInflight);
  }

  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.probeSent;
      case ProgressState.Replicate:
        return this.inflights.full();
      default:
        return true;
    }
  }

  private resetState(state: ProgressState): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    if (this.state === ProgressState.Snapshot) {
      const pending = this.pendingSnapshot;
      this.resetState(ProgressState.Probe);
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState(ProgressState.Probe);
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState(ProgressState.Replicate);
    this.next = this.match + 1;
  }

  becomeSnapshot(index: number, tick: number): void {
    this.resetState(ProgressState.Snapshot);
    this.pendingSnapshot = index;
    this.snapshotSentTick = tick;
  }

  /** An accepting AppResp for `index` arrived. Returns false if it was stale. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * A rejection of the App whose previous index was `rejected` arrived; the
   * follower's log may match up to `matchHint`. Returns false if stale.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    // A rejection at or below match is stale — or from a follower that lost
    // entries it had acknowledged: re-probing the same index at once would
    // loop at network speed (the host calls forgetProgress on a restart).
    if (this.next - 1 !== rejected || rejected <= this.match) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }
}
