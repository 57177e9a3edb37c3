/**
 * The client's copy of the server's consistent-hash ring (shard/ring.ts,
 * shard/keys.ts, node/hash.ts): it must agree with it exactly; a test checks
 * it on thousands of random partition keys.
 */
import xxhash from 'xxhash-wasm';

/** High 32 bits of xxHash64, seed 0. */
export type Hash32 = (data: Uint8Array) => number;

/** The static bucket (records written without an event time). */
export const STATIC_BUCKET = -1;

const utf8 = new TextEncoder();

let hashPromise: Promise<Hash32> | null = null;

/** The ring's hash: the high 32 bits of xxHash64 (seed 0), via xxhash-wasm (loaded once). */
export function loadHash32(): Promise<Hash32> {
  hashPromise ??= xxhash().then(({ h64Raw }) => (data: Uint8Array) => Number(h64Raw(data) >> 32n));
  return hashPromise;
}

/** bucket = floor(t / bucketMs), or the static bucket when t is absent. */
export function bucketOf(t: number | undefined, bucketMs: number): number {
  return t === undefined ? STATIC_BUCKET : Math.floor(t / bucketMs);
}

/** The bytes hashed onto the ring: `${tenant}\0${bucket}`, or `${tenant}\0s` for the static bucket. */
export function partitionKeyBytes(tenant: string, bucket: number): Uint8Array {
  return utf8.encode(bucket === STATIC_BUCKET ? `${tenant}\u0000s` : `${tenant}\u0000${bucket}`);
}

/** Consistent-hash ring: `vnodes` points per shard; a key belongs to the first point >= its hash, wrapping. */
export class ClientRing {
  private readonly points: Uint32Array;
  private readonly owners: Int32Array;

  constructor(shards: readonly number[], readonly vnodes: number, private readonly hash: Hash32) {
    const pts: Array<{ p: number; s: number }> = [];
    for (const s of shards) {
      for (let v = 0; v < vnodes; v++) pts.push({ p: hash(utf8.encode(`shard-${s}-vnode-${v}`)) >>> 0, s });
    }
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
    return this.shardForHash(this.hash(partitionKeyBytes(tenant, bucket)) >>> 0);
  }
}
