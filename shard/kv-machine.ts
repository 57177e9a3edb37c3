import { invariant } from '../raft/assert.ts';
import { pack, unpack } from './codec.ts';
import { dataKey, idemKey } from './layout.ts';

/** A mutation as it travels through the log. `time` is the leader's log time (ms). */
export interface KvCommand {
  op: 'put' | 'del';
  tenant: string;
  bucket: number;
  key: Uint8Array;
  /** Event time, stored with the record (null: static bucket). */
  t: number | null;
  value: Uint8Array | null;
  /** Compare-and-set: apply only if the record's version is this (0 = absent). */
  ifVersion: number | null;
  idem: string | null;
  time: number;
}

export type KvResult =
  | { kind: 'put'; version: number }
  | { kind: 'del'; deleted: boolean; version: number }
  | { kind: 'conflict'; currentVersion: number };

export interface StoredRecord {
  version: number;
  t: number | null;
  value: Uint8Array;
}

/** Synchronous access to the shard's state (the node's LevelDB plus the pending batch). */
export interface KvStatePort {
  get(key: Uint8Array): Uint8Array | undefined;
  put(key: Uint8Array, value: Uint8Array): void;
  del(key: Uint8Array): void;
}

type WireCommand = [op: 0 | 1, tenant: string, bucket: number, key: Uint8Array, t: number | null, value: Uint8Array | null, ifVersion: number | null, idem: string | null, time: number];

export function encodeCommand(c: KvCommand): Uint8Array {
  const w: WireCommand = [c.op === 'put' ? 0 : 1, c.tenant, c.bucket, c.key, c.t, c.value, c.ifVersion, c.idem, c.time];
  return pack(w);
}

export function decodeCommand(b: Uint8Array): KvCommand {
  const w = unpack<WireCommand>(b);
  invariant(Array.isArray(w) && w.length === 9, 'a log entry decodes to a command');
  return { op: w[0] === 0 ? 'put' : 'del', tenant: w[1], bucket: w[2], key: w[3], t: w[4], value: w[5], ifVersion: w[6], idem: w[7], time: w[8] };
}

export function encodeRecord(r: StoredRecord): Uint8Array {
  return pack([r.version, r.t, r.value]);
}

export function decodeRecord(b: Uint8Array): StoredRecord {
  const [version, t, value] = unpack<[number, number | null, Uint8Array]>(b);
  return { version, t, value };
}

/**
 * A stored record's version and value, read straight from its bytes for the single-key read path (a
 * view of the value, no decoder state, no array). The forms msgpackr writes for [version, t, value]
 * (a 3-array; a version below 2^32; nil or a number as t; a bin value); anything else, or a
 * length that does not end where the bytes do, goes to decodeRecord.
 */
const u32be = (b: Uint8Array, at: number): number =>
  (((b[at] as number) << 24) >>> 0) + (((b[at + 1] as number) << 16) | ((b[at + 2] as number) << 8) | (b[at + 3] as number));

export function readRecord(b: Uint8Array): { version: number; value: Uint8Array } {
  const n = b.length;
  if (n < 4 || b[0] !== 0x93) return decodeRecord(b);
  let at = 1;
  let version: number;
  const v0 = b[at] as number;
  if (v0 <= 0x7f) {
    version = v0;
    at += 1;
  } else if (v0 === 0xcc && n > 2) {
    version = b[2] as number;
    at = 3;
  } else if (v0 === 0xcd && n > 3) {
    version = ((b[2] as number) << 8) | (b[3] as number);
    at = 4;
  } else if (v0 === 0xce && n > 5) {
    version = u32be(b, 2);
    at = 6;
  } else return decodeRecord(b); // msgpackr writes 2^32 and above as float64 (0xcb): its decoder reads those
  // t: skipped (nil, a fixint, or a sized number)
  const t0 = b[at] as number;
  const tw = t0 === 0xc0 || t0 <= 0x7f || t0 >= 0xe0 ? 1 : t0 === 0xcc || t0 === 0xd0 ? 2 : t0 === 0xcd || t0 === 0xd1 ? 3
    : t0 === 0xce || t0 === 0xd2 || t0 === 0xca ? 5 : t0 === 0xcf || t0 === 0xd3 || t0 === 0xcb ? 9 : 0;
  if (tw === 0) return decodeRecord(b);
  at += tw;
  const b0 = b[at];
  let len: number;
  if (b0 === 0xc4 && at + 2 <= n) {
    len = b[at + 1] as number;
    at += 2;
  } else if (b0 === 0xc5 && at + 3 <= n) {
    len = ((b[at + 1] as number) << 8) | (b[at + 2] as number);
    at += 3;
  } else if (b0 === 0xc6 && at + 5 <= n) {
    len = u32be(b, at + 1);
    at += 5;
  } else return decodeRecord(b);
  if (at + len !== n || !Number.isSafeInteger(version)) return decodeRecord(b);
  return { version, value: b.subarray(at, n) };
}

/**
 * The KV state machine of one shard. Deterministic: every replica applying
 * the same entries reaches the same state and the same results. A record's
 * version is the Raft index of its last write, so versions grow and are never
 * reused, not even after delete and re-create.
 */
export class KvMachine {
  constructor(
    readonly shard: number,
    /** Generation of the state in use (see layout.ts). */
    public gen: number,
    /** Idempotency keys are remembered this long, in log time. */
    readonly idempotencyRetentionMs: number,
    /** Log time of the last applied entry: the max of leader stamps, so it never goes back. */
    public logTime = 0,
  ) {}

  apply(index: number, cmd: KvCommand, port: KvStatePort): KvResult {
    this.logTime = Math.max(this.logTime, cmd.time);
    const ik = cmd.idem === null ? null : idemKey(this.shard, this.gen, cmd.tenant, cmd.idem);
    if (ik !== null) {
      const prev = port.get(ik);
      if (prev !== undefined) {
        const [time, result] = unpack<[number, KvResult]>(prev);
        if (this.logTime - time < this.idempotencyRetentionMs) return result;
      }
    }
    const result = this.mutate(index, cmd, port);
    if (ik !== null) port.put(ik, pack([this.logTime, result]));
    return result;
  }

  private mutate(index: number, cmd: KvCommand, port: KvStatePort): KvResult {
    const dk = dataKey(this.shard, this.gen, cmd.tenant, cmd.bucket, cmd.key);
    if (cmd.op === 'put' && cmd.ifVersion === null) {
      // An unconditional put needs nothing of the current record: its version is
      // this entry's index, which is above every version in the shard (versions
      // are indexes of earlier entries). Saves a read per write on every replica.
      invariant(cmd.value !== null, 'put carries a value');
      port.put(dk, encodeRecord({ version: index, t: cmd.t, value: cmd.value }));
      return { kind: 'put', version: index };
    }
    const raw = port.get(dk);
    const current = raw === undefined ? 0 : decodeRecord(raw).version;
    if (cmd.ifVersion !== null && cmd.ifVersion !== current) return { kind: 'conflict', currentVersion: current };
    if (cmd.op === 'put') {
      invariant(cmd.value !== null, 'put carries a value');
      invariant(index > current, 'versions grow');
      port.put(dk, encodeRecord({ version: index, t: cmd.t, value: cmd.value }));
      return { kind: 'put', version: index };
    }
    if (raw === undefined) return { kind: 'del', deleted: false, version: 0 };
    port.del(dk);
    return { kind: 'del', deleted: true, version: current };
  }
}
