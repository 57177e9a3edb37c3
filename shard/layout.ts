/**
 * LevelDB key layout, one database per node. Integers are big-endian so that
 * byte order is numeric order.
 *
 *   r <shard:u32> h                  hard state (term, vote, commit)
 *   r <shard:u32> l <index:u64>      log entry
 *   r <shard:u32> s                  snapshot meta (index, term, conf)
 *   r <shard:u32> a                  applied state (index, log time), written with the data it covers
 *   r <shard:u32> g                  generation of the shard's state in use
 *   d <shard:u32> <gen:u32> <tenant> 00 <bucket+1:u64> <key>   record (version, t, value)
 *   i <shard:u32> <gen:u32> <tenant> 00 <idempotency key>      first outcome and its log time
 *
 * The generation lets a snapshot from the leader be written beside the live
 * state (gen + 1) while stale reads go on, then switched to in one small
 * write; the old generation is cleared in the background.
 */
const utf8 = new TextEncoder();

const R = 0x72; // 'r'
const D = 0x64; // 'd'
/** The first byte of every data record's key. */
export const DATA_KIND = D;
const I = 0x69; // 'i'

function u32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 24) & 0xff;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}

function u64(buf: Uint8Array, off: number, v: number): void {
  u32(buf, off, Math.floor(v / 0x1_0000_0000));
  u32(buf, off + 4, v >>> 0);
}

export function readU64(buf: Uint8Array, off: number): number {
  const hi = ((buf[off] as number) << 24 | (buf[off + 1] as number) << 16 | (buf[off + 2] as number) << 8 | (buf[off + 3] as number)) >>> 0;
  const lo = ((buf[off + 4] as number) << 24 | (buf[off + 5] as number) << 16 | (buf[off + 6] as number) << 8 | (buf[off + 7] as number)) >>> 0;
  return hi * 0x1_0000_0000 + lo;
}

function raftKey(shard: number, kind: string, extra = 0): Uint8Array {
  const b = new Uint8Array(6 + extra);
  b[0] = R;
  u32(b, 1, shard);
  b[5] = kind.charCodeAt(0);
  return b;
}

export const hardStateKey = (shard: number): Uint8Array => raftKey(shard, 'h');
export const snapMetaKey = (shard: number): Uint8Array => raftKey(shard, 's');
export const appliedKey = (shard: number): Uint8Array => raftKey(shard, 'a');
export const generationKey = (shard: number): Uint8Array => raftKey(shard, 'g');

export function logKey(shard: number, index: number): Uint8Array {
  const b = raftKey(shard, 'l', 8);
  u64(b, 6, index);
  return b;
}

export function logIndexOf(key: Uint8Array): number {
  return readU64(key, 6);
}

/** [gte, lt) covering every log entry of a shard. */
export function logRange(shard: number): [Uint8Array, Uint8Array] {
  return [logKey(shard, 0), raftKey(shard, 'm')];
}

function tenantPrefix(tag: number, shard: number, gen: number, tenant: string, extra: number): { b: Uint8Array; off: number } {
  const t = utf8.encode(tenant);
  const b = new Uint8Array(9 + t.length + 1 + extra);
  b[0] = tag;
  u32(b, 1, shard);
  u32(b, 5, gen);
  b.set(t, 9);
  b[9 + t.length] = 0;
  return { b, off: 10 + t.length };
}

/** Prefix of every record of (shard, tenant, bucket). */
export function bucketPrefix(shard: number, gen: number, tenant: string, bucket: number): Uint8Array {
  const { b, off } = tenantPrefix(D, shard, gen, tenant, 8);
  u64(b, off, bucket + 1);
  return b;
}

export function dataKey(shard: number, gen: number, tenant: string, bucket: number, key: Uint8Array | string): Uint8Array {
  // Built on every write's apply and every read: one allocation, not the prefix's three and a copy.
  // A key may come as its string when it is ASCII (the plain URLs of node/fast-kv.ts): no encoding then.
  const k = typeof key === 'string' && !isAscii(key) ? utf8.encode(key) : key;
  if (!isAscii(tenant)) {
    const p = bucketPrefix(shard, gen, tenant, bucket);
    const b = new Uint8Array(p.length + k.length);
    b.set(p, 0);
    putKey(b, p.length, k);
    return b;
  }
  // ASCII (every valid tenant): its UTF-8 bytes are its char codes.
  const off = 10 + tenant.length;
  const b = new Uint8Array(off + 8 + k.length);
  b[0] = D;
  u32(b, 1, shard);
  u32(b, 5, gen);
  for (let i = 0; i < tenant.length; i++) b[9 + i] = tenant.charCodeAt(i);
  b[off - 1] = 0;
  u64(b, off, bucket + 1);
  putKey(b, off + 8, k);
  return b;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return false;
  return true;
}

/** An encoded key, or an ASCII one as its string. */
function putKey(b: Uint8Array, at: number, k: Uint8Array | string): void {
  if (typeof k !== 'string') b.set(k, at);
  else for (let i = 0; i < k.length; i++) b[at + i] = k.charCodeAt(i);
}

export function idemKey(shard: number, gen: number, tenant: string, key: string): Uint8Array {
  const k = utf8.encode(key);
  const { b, off } = tenantPrefix(I, shard, gen, tenant, k.length);
  b.set(k, off);
  return b;
}

/** [gte, lt) of all state-machine keys of one generation of a shard, of one kind ('d' or 'i'). */
export function shardStateRange(shard: number, gen: number, kind: 'd' | 'i'): [Uint8Array, Uint8Array] {
  const lo = new Uint8Array(9);
  lo[0] = kind === 'd' ? D : I;
  u32(lo, 1, shard);
  u32(lo, 5, gen);
  return [lo, prefixEnd(lo)];
}

/** Move a state key of one generation to another (same shard). */
export function withGeneration(key: Uint8Array, gen: number): Uint8Array {
  const b = key.slice();
  u32(b, 5, gen);
  return b;
}

/** The smallest key greater than every key starting with prefix. */
export function prefixEnd(prefix: Uint8Array): Uint8Array {
  const b = prefix.slice();
  for (let i = b.length - 1; i >= 0; i--) {
    if ((b[i] as number) < 0xff) {
      b[i] = (b[i] as number) + 1;
      return b.subarray(0, i + 1);
    }
  }
  return new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
}
