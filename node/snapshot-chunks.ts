import type { BatchOp } from '../shard/store.ts';

/**
 * The body of a snapshot chunk: records back to back in one buffer, each
 *
 *   <key length:u32> <value length:u32> <key> <value>
 *
 * (big-endian), so a chunk travels as one msgpack bin and the receiver makes
 * no object per record until its LevelDB batch.
 */

const HEADER = 8;
const D = 0x64; // 'd'
const I = 0x69; // 'i'

/** Packs records into chunks of about `target` bytes. */
export class ChunkBuilder {
  private buf: Buffer;
  private off = 0;
  count = 0;

  constructor(private readonly target: number) {
    this.buf = Buffer.allocUnsafe(target);
  }

  get bytes(): number {
    return this.off;
  }

  /** Append one record; returns whether the chunk has reached its target size (take() it then). */
  add(key: Uint8Array, value: Uint8Array): boolean {
    const need = HEADER + key.length + value.length;
    if (this.off + need > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.off + need));
      this.buf.copy(next, 0, 0, this.off);
      this.buf = next;
    }
    const b = this.buf;
    b.writeUInt32BE(key.length, this.off);
    b.writeUInt32BE(value.length, this.off + 4);
    b.set(key, this.off + HEADER);
    b.set(value, this.off + HEADER + key.length);
    this.off += need;
    this.count++;
    return this.off >= this.target;
  }

  /** The chunk so far (a view: send it before the next add), and start a new one. */
  take(): Buffer {
    const out = this.buf.subarray(0, this.off);
    this.buf = Buffer.allocUnsafe(this.target);
    this.off = 0;
    this.count = 0;
    return out;
  }
}

/**
 * Check every record of a received chunk and turn it into puts into
 * generation `gen` of `shard`: each key must be a state key ('d' or 'i') of
 * that shard with room for a generation, and the records must fill the chunk
 * exactly. Throws on the first bad record, before anything is written. The
 * keys are rewritten in a copy of the chunk; the ops are views of that copy.
 */
export function chunkPuts(chunk: Uint8Array, shard: number, gen: number): BatchOp[] {
  const b = Buffer.from(chunk); // a copy: rewritten in place below
  const n = b.length;
  const s0 = (shard >>> 24) & 0xff;
  const s1 = (shard >>> 16) & 0xff;
  const s2 = (shard >>> 8) & 0xff;
  const s3 = shard & 0xff;
  const g0 = (gen >>> 24) & 0xff;
  const g1 = (gen >>> 16) & 0xff;
  const g2 = (gen >>> 8) & 0xff;
  const g3 = gen & 0xff;
  const ops: BatchOp[] = [];
  let off = 0;
  while (off < n) {
    if (off + HEADER > n) throw new Error('bad snapshot record: truncated header');
    const kl = b.readUInt32BE(off);
    const vl = b.readUInt32BE(off + 4);
    const k = off + HEADER;
    const v = k + kl;
    const end = v + vl;
    if (kl < 9 || end > n) throw new Error('bad snapshot record: lengths');
    const tag = b[k];
    if ((tag !== D && tag !== I) || b[k + 1] !== s0 || b[k + 2] !== s1 || b[k + 3] !== s2 || b[k + 4] !== s3) {
      throw new Error('snapshot record outside the shard');
    }
    b[k + 5] = g0;
    b[k + 6] = g1;
    b[k + 7] = g2;
    b[k + 8] = g3;
    ops.push({ type: 'put', key: b.subarray(k, v), value: b.subarray(v, end) });
    off = end;
  }
  return ops;
}
