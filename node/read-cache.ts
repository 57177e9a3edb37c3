/**
 * Values as they are in LevelDB, for the API's single-key reads.
 *
 * A stale or linearizable GET reads one data record with `getSync`: about
 * 4 µs of the main thread per read on this machine (bench/README, session 15),
 * a tenth of what a node spends on a stale read. A hit here costs a Map
 * lookup on the key's latin1 string, which the overlay needs anyway.
 *
 * What it holds is exactly what LevelDB holds:
 *  - it is filled only from `getSync` (synchronously, so nothing is written
 *    to LevelDB in between);
 *  - every key a persist batch writes is dropped as the batch goes to
 *    LevelDB (KvNode.submit: LevelDB may show it to getSync before it lands),
 *    and a key with a write staged or in flight (in the overlay) is not
 *    filled, so no cached value is from either side of a batch that is
 *    being written. (Dropped only when it landed, a key cached earlier would
 *    read old while the batch's other keys, read from LevelDB, read new.)
 *  - a snapshot install (a new state generation; the old one is then cleared)
 *    drops everything.
 * Writes that bypass persist batches touch no key filled here: idempotency
 * collection deletes `i` keys, generation clears old generations' keys, and
 * snapshot streams write a generation no read uses before its install.
 *
 * Bounded by bytes (value + key + a fixed overhead per entry); the oldest
 * entry goes first (insertion order: a hit does not move it, so a hit costs
 * no Map write). Once full, only one miss in `admitEvery` is cached: reads
 * spread over more keys than it holds would otherwise pay an eviction and a
 * fill per read for hits they rarely get (`bench:ab`, a 1 MiB cache over 10k
 * keys: 8 % more node CPU per read than none), while a hot key still gets in
 * within a few reads. `maxBytes` 0 turns it off.
 */
export class ReadCache {
  private readonly map = new Map<string, Uint8Array>();
  private bytes = 0;
  hits = 0;
  misses = 0;
  private fullMisses = 0;

  constructor(readonly maxBytes: number, private readonly admitEvery = 8) {}

  get enabled(): boolean {
    return this.maxBytes > 0;
  }

  get size(): number {
    return this.map.size;
  }

  get usedBytes(): number {
    return this.bytes;
  }

  /** The value LevelDB holds for `k` (latin1 of the key), if cached. */
  get(k: string): Uint8Array | undefined {
    const v = this.map.get(k);
    if (v === undefined) this.misses++;
    else this.hits++;
    return v;
  }

  /** Remember what getSync just returned for `k`. */
  fill(k: string, v: Uint8Array): void {
    const cost = entryBytes(k, v);
    if (cost > this.maxBytes) return;
    if (this.bytes + cost > this.maxBytes && ++this.fullMisses % this.admitEvery !== 0) return;
    const old = this.map.get(k);
    if (old !== undefined) {
      this.bytes -= entryBytes(k, old);
      this.map.delete(k);
    }
    while (this.bytes + cost > this.maxBytes) {
      const first = this.map.entries().next();
      if (first.done === true) break;
      const [fk, fv] = first.value;
      this.map.delete(fk);
      this.bytes -= entryBytes(fk, fv);
    }
    this.map.set(k, v);
    this.bytes += cost;
  }

  /** A batch that writes these keys is going to LevelDB (KvNode.submit). */
  drop(keys: Iterable<string>): void {
    if (this.map.size === 0) return;
    for (const k of keys) {
      const v = this.map.get(k);
      if (v === undefined) continue;
      this.map.delete(k);
      this.bytes -= entryBytes(k, v);
    }
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }
}

const ENTRY_OVERHEAD = 96;
const entryBytes = (k: string, v: Uint8Array): number => v.byteLength + k.length + ENTRY_OVERHEAD;
