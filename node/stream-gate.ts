import { invariant } from '../raft/assert.ts';

/**
 * At most `limit` tasks running at a time per key (here: snapshot streams per
 * destination peer); the others wait, first come first served. Used so that a
 * leader streams the shards a follower needs one after another rather than
 * all at once: interleaved streams make every LevelDB table the receiver
 * flushes span many shards' key ranges, so each overlaps the data already
 * there and must be merged into it, where one stream at a time writes tables
 * over one fresh range that LevelDB places without merging. Measured in
 * bench/README.md ("Snapshot streams one at a time").
 */
export class KeyedGate {
  private readonly running = new Map<number, number>();
  private readonly waiting = new Map<number, Array<() => void>>();

  constructor(private readonly limit: number) {
    invariant(Number.isInteger(limit) && limit >= 1, `gate limit ${limit} must be a positive integer`);
  }

  /** Run `task` once fewer than `limit` tasks of `key` run; settles as the task does. */
  run<T>(key: number, task: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const start = (): void => {
        this.running.set(key, (this.running.get(key) ?? 0) + 1);
        // A task that throws at once still frees its place; the place is free before the caller hears.
        Promise.resolve().then(task).then(
          (v) => { this.done(key); resolve(v); },
          (e: unknown) => { this.done(key); reject(e); },
        );
      };
      if (this.active(key) < this.limit) start();
      else {
        let q = this.waiting.get(key);
        if (q === undefined) this.waiting.set(key, (q = []));
        q.push(start);
      }
    });
  }

  active(key: number): number {
    return this.running.get(key) ?? 0;
  }

  queued(key: number): number {
    return this.waiting.get(key)?.length ?? 0;
  }

  /** Tasks waiting, over all keys. */
  totalQueued(): number {
    let n = 0;
    for (const q of this.waiting.values()) n += q.length;
    return n;
  }

  private done(key: number): void {
    const n = this.active(key) - 1;
    invariant(n >= 0, `gate: more tasks done than started for ${key}`);
    if (n === 0) this.running.delete(key);
    else this.running.set(key, n);
    const q = this.waiting.get(key);
    const next = q?.shift();
    if (q !== undefined && q.length === 0) this.waiting.delete(key);
    next?.();
  }
}
