/**
 * The leader's record of snapshot streams per (shard, follower): running, or
 * finished and settling — sent in full, but the follower may still be
 * writing its backlog of chunks and installing, so its Raft answer is not in
 * yet. Used to stream a snapshot once, not again while one is running or
 * settling (the core asks again: its retry timer, a probe below the log),
 * and to hold the shard's log compaction above the streamed index meanwhile
 * (a compaction past it would make the follower need yet another snapshot
 * once it installs this one).
 *
 * A failed stream is forgotten at once (the core retries); a settled one
 * after settleMs, so a snapshot the follower never installed is streamed
 * again then — or soon when the follower says it gave the stream up
 * (refused: peer protocol 3): after 250 ms, doubling while refusals keep
 * coming (a follower whose disk fails every stream's writes), up to settleMs.
 */
const FIRST_BACKOFF_MS = 250;

export class SnapshotLedger {
  private readonly streams = new Map<string, { shard: number; index: number; id: string; settledAt: number | null }>();

  /** Per (shard, follower): refusals in a row, and no new stream before `until`. */
  private readonly backoff = new Map<string, { n: number; until: number }>();

  constructor(private readonly settleMs: number, private readonly now: () => number = () => performance.now()) {}

  private key(shard: number, to: number): string {
    return `${shard}/${to}`;
  }

  private live(k: string): { shard: number; index: number; id: string; settledAt: number | null } | undefined {
    const e = this.streams.get(k);
    if (e !== undefined && e.settledAt !== null && this.now() - e.settledAt >= this.settleMs) {
      this.streams.delete(k);
      return undefined;
    }
    return e;
  }

  /** Whether a stream of `shard` to `to` may start now (none running or settling). */
  mayStart(shard: number, to: number): boolean {
    const k = this.key(shard, to);
    return this.live(k) === undefined && !((this.backoff.get(k)?.until ?? 0) > this.now());
  }

  started(shard: number, to: number, index: number, id = ''): void {
    this.streams.set(this.key(shard, to), { shard, index, id, settledAt: null });
  }

  /**
   * The follower gave up stream `id` (a chunk lost on the way, too many streams at once, a failed
   * write): forget it if it is the one running or settling for (shard, to). Whether it was.
   */
  refused(shard: number, to: number, id: string): boolean {
    const k = this.key(shard, to);
    if (id === '' || this.live(k)?.id !== id) return false;
    this.streams.delete(k);
    const now = this.now();
    const b = this.backoff.get(k);
    const n = b !== undefined && now - b.until < this.settleMs ? b.n + 1 : 1;
    this.backoff.set(k, { n, until: now + Math.min(this.settleMs, FIRST_BACKOFF_MS * 2 ** Math.min(n - 1, 20)) });
    return true;
  }

  /** Stream `id` (when given: only if it is still the one recorded) ended: sent in full (ok), or failed. */
  finished(shard: number, to: number, ok: boolean, id?: string): void {
    const k = this.key(shard, to);
    const e = this.streams.get(k);
    if (e === undefined || (id !== undefined && e.id !== id)) return;
    if (ok) e.settledAt = this.now();
    else this.streams.delete(k);
  }

  /**
   * The lowest index of the streams of `shard` (to any follower) running or settling: do not compact
   * its log past it (null: none).
   */
  heldIndex(shard: number): number | null {
    let low: number | null = null;
    for (const [k, e] of this.streams) if (e.shard === shard && this.live(k) !== undefined && (low === null || e.index < low)) low = e.index;
    return low;
  }

  /** Streams running or settling (for logs and tests). */
  get size(): number {
    for (const k of [...this.streams.keys()]) this.live(k);
    return this.streams.size;
  }
}
