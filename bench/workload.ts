/**
 * What the load generators ask for: the keyspace (key i -> tenant, key, event
 * time), seeded randomness, key choice (uniform or YCSB's zipfian) and the
 * operation mix of each workload.
 */

// ------------------------------------------------------------------ keyspace

export interface Keyspace {
  /** Number of distinct keys (key i belongs to tenant i % tenants). */
  keys: number;
  tenants: number;
  /** Event times spread over this many hourly buckets, so a tenant's data spreads over shards. */
  buckets: number;
  /** Event time of bucket 0 (ms). */
  baseT: number;
  bucketMs: number;
  tenantPrefix: string;
}

export const DEFAULT_KEYSPACE: Keyspace = {
  keys: 4096,
  tenants: 64,
  buckets: 24,
  baseT: Date.UTC(2025, 0, 1),
  bucketMs: 3_600_000,
  tenantPrefix: 'bench',
};

export interface KeyRef {
  tenant: string;
  key: string;
  t: number;
  /** Partition key as the server sees it: tenant + bucket. */
  pk: string;
}

/** Key i: tenant i % tenants, bucket (i / tenants) % buckets, so every tenant has data in every bucket. */
export function keyRef(ks: Keyspace, i: number): KeyRef {
  const tenant = `${ks.tenantPrefix}${i % ks.tenants}`;
  const bucket = Math.floor(i / ks.tenants) % ks.buckets;
  // A deterministic offset inside the bucket, so t differs per key but stays in its bucket.
  const within = (Math.imul(i, 2654435761) >>> 0) % ks.bucketMs;
  const t = ks.baseT + bucket * ks.bucketMs + within;
  return { tenant, key: `k${i}`, t, pk: `${tenant}\u0000${Math.floor(t / ks.bucketMs)}` };
}

/** The bucket number (floor(t / bucketMs)) and its inclusive event-time range. */
export function bucketRange(ks: Keyspace, t: number): { bucket: number; from: number; to: number } {
  const bucket = Math.floor(t / ks.bucketMs);
  return { bucket, from: bucket * ks.bucketMs, to: (bucket + 1) * ks.bucketMs - 1 };
}

// ------------------------------------------------------------------ randomness

/** xorshift32: cheap randomness in [0, 1), reproducible from the seed. */
export function rng(seed: number): () => number {
  let x = (seed | 0) || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/** A well-mixed 32-bit seed for stream `stream` of run seed `seed` (splitmix-style finalizer). */
export function streamSeed(seed: number, stream: number): number {
  let z = (Math.imul(seed | 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0 || 1;
}

// ------------------------------------------------------------------ key choice

export const DISTRIBUTIONS = ['uniform', 'zipfian'] as const;
export type Distribution = (typeof DISTRIBUTIONS)[number];

/** YCSB's zipfian constant. */
export const ZIPF_THETA = 0.99;

/**
 * YCSB's ZipfianGenerator (Gray et al., "Quickly generating billion-record
 * synthetic databases", SIGMOD 1994): rank 0 is the most popular item; the
 * probability of rank r is proportional to 1 / (r + 1)^theta.
 */
export class Zipfian {
  private readonly zetan: number;
  private readonly eta: number;
  private readonly alpha: number;
  private readonly secondCut: number;

  constructor(readonly n: number, readonly theta = ZIPF_THETA) {
    if (!(n >= 1) || !Number.isInteger(n)) throw new Error(`zipfian needs an item count >= 1, got ${n}`);
    if (!(theta > 0 && theta < 1)) throw new Error(`zipfian theta must be in (0, 1), got ${theta}`);
    let zetan = 0;
    for (let i = 1; i <= n; i++) zetan += 1 / Math.pow(i, theta);
    const zeta2 = 1 + 1 / Math.pow(2, theta);
    this.zetan = zetan;
    this.alpha = 1 / (1 - theta);
    this.eta = n < 2 ? 0 : (1 - Math.pow(2 / n, 1 - theta)) / (1 - zeta2 / zetan);
    this.secondCut = 1 + Math.pow(0.5, theta);
  }

  /** The rank (0 .. n-1) for a uniform u in [0, 1). */
  rank(u: number): number {
    const uz = u * this.zetan;
    if (uz < 1 || this.n === 1) return 0;
    if (uz < this.secondCut) return 1;
    const r = Math.floor(this.n * Math.pow(this.eta * u - this.eta + 1, this.alpha));
    return Math.min(this.n - 1, Math.max(0, r));
  }
}

/**
 * Picks key indexes 0 .. keys-1. Zipfian ranks are mapped through a seeded
 * random permutation of the keys, so the hot keys are scattered over tenants,
 * buckets and shards (YCSB scrambles ranks with a hash for the same reason;
 * a permutation keeps the distribution exact).
 */
export class KeyChooser {
  private readonly zipf: Zipfian | undefined;
  private readonly perm: Uint32Array | undefined;

  constructor(readonly keys: number, readonly distribution: Distribution, seed: number) {
    if (distribution === 'zipfian') {
      this.zipf = new Zipfian(keys);
      const perm = new Uint32Array(keys);
      for (let i = 0; i < keys; i++) perm[i] = i;
      const r = rng(streamSeed(seed, 0x7a1bf));
      for (let i = keys - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        const tmp = perm[i] as number;
        perm[i] = perm[j] as number;
        perm[j] = tmp;
      }
      this.perm = perm;
    }
  }

  next(u: number): number {
    if (this.zipf === undefined || this.perm === undefined) return Math.min(this.keys - 1, Math.floor(u * this.keys));
    return this.perm[this.zipf.rank(u)] as number;
  }
}

// ------------------------------------------------------------------ workloads

export type OpType = 'read' | 'write' | 'scan';
export const OP_TYPES: readonly OpType[] = ['write', 'read', 'scan'];
export type Consistency = 'linearizable' | 'stale';

export const WORKLOADS = ['write', 'read', 'a', 'b', 'c', 'scan'] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

export interface Mix { read: number; write: number; scan: number }

/** Fractions of each operation type. YCSB: A = 50/50 read/update, B = 95/5, C = read only. */
export const MIXES: Record<WorkloadName, Mix> = {
  write: { read: 0, write: 1, scan: 0 },
  read: { read: 1, write: 0, scan: 0 },
  a: { read: 0.5, write: 0.5, scan: 0 },
  b: { read: 0.95, write: 0.05, scan: 0 },
  c: { read: 1, write: 0, scan: 0 },
  scan: { read: 0, write: 0, scan: 1 },
};

export const WORKLOAD_DESCRIPTIONS: Record<WorkloadName, string> = {
  write: 'write only (put of an existing or new key)',
  read: 'read only (get of a preloaded key)',
  a: 'YCSB A: 50% read, 50% update',
  b: 'YCSB B: 95% read, 5% update',
  c: 'YCSB C: 100% read',
  scan: "scan of one tenant's time bucket, with a limit",
};

/** YCSB's core workloads A, B and C ask for zipfian keys; the others default to uniform. */
export function defaultDistribution(w: WorkloadName): Distribution {
  return w === 'a' || w === 'b' || w === 'c' ? 'zipfian' : 'uniform';
}

/** Every workload but write-only reads keys, so they are written (unmeasured) first. */
export function needsPreload(w: WorkloadName): boolean {
  return MIXES[w].read > 0 || MIXES[w].scan > 0;
}

export function opTypesOf(w: WorkloadName): OpType[] {
  return OP_TYPES.filter((o) => MIXES[w][o] > 0);
}

/** Maps a uniform u in [0, 1) to an operation type by the mix. */
export function opPicker(mix: Mix): (u: number) => OpType {
  const r = mix.read;
  const w = r + mix.write;
  return (u) => (u < r ? 'read' : u < w ? 'write' : 'scan');
}
