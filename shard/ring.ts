import { partitionKeyString } from './keys.ts';

/** The hash port: 32 bits of xxHash64 (the node and the SDK plug in xxhash-wasm). */
export type Hash32 = (data: Uint8Array) => number;

export interface RingParams {
  /** Virtual nodes per shard. */
  vnodes: number;
  hash: 'xxh64-hi32';
}

const utf8 = new TextEncoder();
/** Partition keys whose shard a ring remembers; past this it forgets them all and starts again. */
const MEMO_MAX = 1 << 16;

/**
 * Consistent-hash ring: each shard owns `vnodes` points; a partition key
 * belongs to the first point at or after its hash (wrapping around). Adding a
 * shard moves only the keys that fall onto its new points.
 */
export class HashRing {
  private readonly points: Uint32Array;
  private readonly owners: Int32Array;
  /**
   * Partition key -> shard, for the request path: a hit skips encoding the key, hashing it and the
   * search (≈ 1.5 µs a request). The ring never changes, so neither does an answer.
   */
  private readonly memo = new Map<string, Map<number, number>>();
  private memoSize = 0;

  constructor(shards: readonly number[], readonly params: RingParams, private readonly hash: Hash32) {
    const pts: Array<{ p: number; s: number }> = [];
    for (const s of shards) {
      for (let v = 0; v < params.vnodes; v++) pts.push({ p: hash(utf8.encode(`shard-${s}-vnode-${v}`)) >>> 0, s });
    }
    // Ties (vanishingly rare) are broken by shard id so every process agrees.
    pts.sort((a, b) => a.p - b.p || a.s - b.s);
    this.points = Uint32Array.from(pts.map((x) => x.p));
    this.owners = Int32Array.from(pts.map((x) => x.s));
  }

  shardForHash(h: number): number {
    const pts = this.points;
    let lo = 0;
    let hi = pts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((pts[mid] as number) < h) lo = mid + 1;
      else hi = mid;
    }
    return this.owners[lo === pts.length ? 0 : lo] as number;
  }

  shardFor(tenant: string, bucket: number): number {
    // By tenant, then bucket: no partition-key string is built for a key asked before.
    let byBucket = this.memo.get(tenant);
    let s = byBucket?.get(bucket);
    if (s === undefined) {
      s = this.shardForHash(this.hash(utf8.encode(partitionKeyString(tenant, bucket))) >>> 0);
      if (this.memoSize >= MEMO_MAX) {
        this.memo.clear();
        this.memoSize = 0;
        byBucket = undefined;
      }
      if (byBucket === undefined) this.memo.set(tenant, (byBucket = new Map()));
      byBucket.set(bucket, s);
      this.memoSize++;
    }
    return s;
  }
}
