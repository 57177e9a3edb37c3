import { invariant } from './assert.ts';
import type { Entry, Snapshot } from './types.ts';

/**
 * The in-memory Raft log: the latest snapshot (compaction point) followed by
 * the entries after it. Entries above `inProgressIndex` have not been handed
 * to the host yet (they go out in the next Ready.entries); entries in
 * (stableIndex, inProgressIndex] are being persisted by the host; entries up
 * to `stableIndex` are durable.
 */
export class RaftLog {
  /** Index and term of the last entry covered by the snapshot. */
  snapIndex = 0;
  snapTerm = 0;
  /** The latest snapshot, served to followers that are too far behind. */
  snapshot: Snapshot | null = null;
  /** A snapshot received from the leader, not yet handed to the host. */
  pendingSnapshot: Snapshot | null = null;
  /** entries[i].index === snapIndex + 1 + i. Change it only through load/append/compact/restore (they keep dataBytes). */
  entries: Entry[] = [];
  /** Sum of entries[*].data.byteLength: what the log holds in memory, for the host's memory budget. */
  dataBytes = 0;
  /** Durable: the host acknowledged persisting every entry up to here. */
  stableIndex = 0;
  /** Handed to the host in a Ready (stableIndex <= inProgressIndex <= lastIndex). */
  inProgressIndex = 0;
  committed = 0;
  applied = 0;
  /** Committed entries handed to the host for applying (applied <= applying). */
  applying = 0;
  /** Sequence number of the latest Ready handed out, and of the latest one acknowledged persisted. */
  handedSeq = 0;
  persistedSeq = 0;
  /**
   * Entries handed out in Readies that are not acknowledged yet, and then
   * replaced (a new leader's suffix, a snapshot): `after` is the latest Ready
   * handed out when it happened, `index` the first replaced index. An
   * acknowledgement of an earlier Ready covers only what lies below.
   */
  replaced: Array<{ after: number; index: number }> = [];

  firstIndex(): number {
    return this.snapIndex + 1;
  }

  lastIndex(): number {
    return this.snapIndex + this.entries.length;
  }

  lastTerm(): number {
    const n = this.entries.length;
    return n === 0 ? this.snapTerm : (this.entries[n - 1] as Entry).term;
  }

  /** Term of the entry at i, or -1 when it is compacted away or beyond the end. */
  term(i: number): number {
    if (i === this.snapIndex) return this.snapTerm;
    if (i < this.snapIndex) return -1;
    const e = this.entries[i - this.snapIndex - 1];
    return e === undefined ? -1 : e.term;
  }

  entryAt(i: number): Entry | undefined {
    return this.entries[i - this.snapIndex - 1];
  }

  matchTerm(i: number, term: number): boolean {
    return this.term(i) === term;
  }

  /** Raft §5.4.1: is a log ending at (lastIdx, lastTerm) at least as up to date as ours? */
  isUpToDate(lastIdx: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIdx >= this.lastIndex());
  }

  /**
   * Append entries that follow on from index entries[0].index - 1, replacing
   * any suffix from there. Returns the index the log was truncated at
   * (entries[0].index) or 0 when nothing was replaced.
   */
  append(ents: Entry[]): number {
    if (ents.length === 0) return 0;
    const first = (ents[0] as Entry).index;
    if (!(first > this.committed)) invariant(false, `append at ${first} must be after commit ${this.committed}`);
    if (!(first >= this.firstIndex() && first <= this.lastIndex() + 1)) invariant(false, `append at ${first} must touch the log [${this.firstIndex()}, ${this.lastIndex()}]`);
    let truncated = 0;
    if (first <= this.lastIndex()) {
      const keep = first - this.snapIndex - 1;
      for (let i = keep; i < this.entries.length; i++) this.dataBytes -= (this.entries[i] as Entry).data.byteLength;
      this.entries.length = keep;
      truncated = first;
      if (this.stableIndex >= first) this.stableIndex = first - 1;
      if (this.inProgressIndex >= first) {
        this.inProgressIndex = first - 1;
        this.noteReplaced(first);
      }
    }
    let expect = first;
    for (const e of ents) {
      invariant(e.index === expect, 'appended entries are contiguous');
      this.entries.push(e);
      this.dataBytes += e.data.byteLength;
      expect++;
    }
    return truncated;
  }

  /** First index in ents that is not already in our log with the same term, or 0. */
  findConflict(ents: Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * The largest index <= index whose term is <= term (etcd's fast
   * backtracking: skip whole terms that cannot match).
   */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    while (i > this.snapIndex) {
      const t = this.term(i);
      if (t <= term) return i;
      i--;
    }
    return i;
  }

  /** Entries in [lo, hi), at most maxBytes of payload (but at least one). */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    invariant(lo >= this.firstIndex() && hi <= this.lastIndex() + 1, 'slice within the log');
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.entries[i - this.snapIndex - 1] as Entry;
      bytes += e.data.length;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  private noteReplaced(index: number): void {
    if (this.persistedSeq < this.handedSeq) this.replaced.push({ after: this.handedSeq, index });
  }

  /** Entries not yet handed to the host. */
  unstableEntries(): Entry[] {
    if (this.inProgressIndex >= this.lastIndex()) return [];
    return this.entries.slice(this.inProgressIndex - this.snapIndex);
  }

  /**
   * Committed entries may be applied once they are durable here: the host
   * applies them without waiting for the Ready they come in to be persisted.
   */
  private appliableIndex(): number {
    return Math.min(this.committed, this.stableIndex);
  }

  hasNextCommitted(): boolean {
    return this.appliableIndex() > Math.max(this.applying, this.snapIndex);
  }

  nextCommitted(maxBytes: number, breakEvery = 0): Entry[] {
    const lo = Math.max(this.applying, this.snapIndex) + 1;
    let hi = this.appliableIndex();
    if (breakEvery > 0) hi = Math.min(hi, Math.ceil(lo / breakEvery) * breakEvery);
    if (lo > hi) return [];
    return this.slice(lo, hi + 1, maxBytes);
  }

  commitTo(i: number): boolean {
    if (i <= this.committed) return false;
    if (!(i <= this.lastIndex())) invariant(false, `commit ${i} beyond last index ${this.lastIndex()}`);
    this.committed = i;
    return true;
  }

  appliedTo(i: number): void {
    if (!(i <= this.committed)) invariant(false, `applied ${i} <= committed ${this.committed}`);
    if (i > this.applied) this.applied = i;
  }

  /**
   * The host persisted the Ready with sequence number `seq`, whose last entry
   * had index `last` (0: none). Acknowledgements come in order.
   */
  persistedTo(seq: number, last: number): void {
    if (!(seq === this.persistedSeq + 1 && seq <= this.handedSeq)) invariant(false, `persisted Ready ${seq} in order (last acknowledged ${this.persistedSeq}, handed ${this.handedSeq})`);
    this.persistedSeq = seq;
    let cap = last;
    for (const r of this.replaced) if (r.after >= seq && r.index - 1 < cap) cap = r.index - 1;
    if (this.replaced.length > 0) this.replaced = this.replaced.filter((r) => r.after > seq);
    if (cap > this.stableIndex) {
      if (!(cap <= this.inProgressIndex)) invariant(false, `stable ${cap} within what was handed out (${this.inProgressIndex})`);
      this.stableIndex = cap;
    }
  }

  /** Entries loaded from storage at start (contiguous after the snapshot, all durable). */
  load(ents: readonly Entry[]): void {
    this.entries = [...ents];
    this.dataBytes = 0;
    for (const e of ents) this.dataBytes += e.data.byteLength;
  }

  /** Replace the whole log with a snapshot from the leader. */
  restore(s: Snapshot): void {
    invariant(s.meta.index > this.committed, 'restore only ahead of commit');
    this.entries = [];
    this.dataBytes = 0;
    this.snapIndex = s.meta.index;
    this.snapTerm = s.meta.term;
    this.snapshot = s;
    this.pendingSnapshot = s;
    this.committed = s.meta.index;
    if (this.inProgressIndex > s.meta.index) this.noteReplaced(s.meta.index + 1);
    this.stableIndex = s.meta.index;
    this.inProgressIndex = s.meta.index;
  }

  /** Drop entries <= snapshot index, keeping the snapshot for lagging followers. */
  compact(s: Snapshot): void {
    const idx = s.meta.index;
    invariant(idx <= this.applied, `compact at ${idx} <= applied ${this.applied}`);
    invariant(idx <= this.stableIndex, 'compact only persisted entries');
    if (idx <= this.snapIndex) return;
    invariant(this.term(idx) === s.meta.term, 'snapshot term matches the log');
    const drop = idx - this.snapIndex;
    for (let i = 0; i < drop; i++) this.dataBytes -= (this.entries[i] as Entry).data.byteLength;
    this.entries = this.entries.slice(drop);
    this.snapIndex = idx;
    this.snapTerm = s.meta.term;
    this.snapshot = s;
  }
}
