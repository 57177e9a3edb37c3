import { DATA_KIND as D } from '../shard/layout.ts';

/**
 * The body of a snapshot chunk: records back to back in one buffer, each
 *
 *   <key length:u32> <value length:u32> <key> <value>
 *
 * (big-endian), so a chunk travels as one msgpack bin and the receiver makes
 * no object per record until its LevelDB batch.
 */

const HEADER = 8;
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
 * Check every record of a received chunk and hand it to `put` as a put into
 * generation `gen` of `shard`: each key must be a state key ('d' or 'i') of
 * that shard with room for a generation, and the records must fill the chunk
 * exactly. Throws on the first bad record (the caller then writes none of
 * them). The keys are rewritten in a copy of the chunk and handed over as
 * views of it, valid until the next call. Returns the number of records.
 */
export function eachPut(chunk: Uint8Array, shard: number, gen: number, put: (key: Uint8Array, value: Uint8Array) => void): number {
  const b = new Uint8Array(chunk.length); // a copy: rewritten in place below
  b.set(chunk);
  const ab = b.buffer;
  const dv = new DataView(ab);
  const n = b.length;
  let count = 0;
  let off = 0;
  while (off < n) {
    if (off + HEADER > n) throw new Error('bad snapshot record: truncated header');
    const kl = dv.getUint32(off);
    const vl = dv.getUint32(off + 4);
    const k = off + HEADER;
    const v = k + kl;
    const end = v + vl;
    if (kl < 9 || end > n) throw new Error('bad snapshot record: lengths');
    const tag = b[k];
    if ((tag !== D && tag !== I) || dv.getUint32(k + 1) !== shard) throw new Error('snapshot record outside the shard');
    dv.setUint32(k + 5, gen);
    put(new Uint8Array(ab, k, kl), new Uint8Array(ab, v, vl));
    count++;
    off = end;
  }
  return count;
}
