import { crc32 } from 'node:zlib';

/**
 * Where a WAL segment's valid records stop (node/wal.ts): the clean end of its data, a write torn by a
 * crash, or damage to bytes once written whole. See judgeStop.
 */

/** A record's header: [u32 LE length][u32 LE crc32(payload)]. */
export const HDR = 8;
const ZEROS_AT_ONCE = 1 << 20;

export function allZero(buf: Buffer): boolean {
  const zeros = Buffer.alloc(Math.min(ZEROS_AT_ONCE, buf.length));
  for (let off = 0; off < buf.length; off += zeros.length) {
    const n = Math.min(zeros.length, buf.length - off);
    if (buf.compare(zeros, 0, n, off, off + n) !== 0) return false;
  }
  return true;
}

/** The disk's unit of atomic writes: a write cut short by a power loss kept some of its sectors, not others. */
const SECTOR = 512;
/** No record this node writes ends in this many zero bytes (its msgpack payload ends with a small integer or nil). */
const TORN_ZEROS = 8;
/** CRC work one judgement may spend looking for valid records (bytes). */
const CRC_BUDGET = 256 << 20;
const TOO_MUCH = 'too much of the data behind it reads as records to judge it within its budget: taken for damage, the safe side';
/** How far past where the records stop replay looks for data that a torn write could not have left. */
export const JUDGE_WINDOW = 4 << 20;

function zeros(buf: Buffer, from: number, to: number): boolean {
  if (to - from >= 64) return allZero(buf.subarray(from, to));
  for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}

/** A whole valid record at offset p of buf. */
function validAt(buf: Buffer, p: number): boolean {
  if (p + HDR > buf.length) return false;
  const len = buf.readUInt32LE(p);
  return len > 0 && p + HDR + len <= buf.length && crc32(buf.subarray(p + HDR, p + HDR + len)) === buf.readUInt32LE(p + 4);
}

/**
 * Record chains of a segment's tail: from offset p, do the lengths lead, record by record, to where its
 * data ends (a record's payload may end in a few zeros)? Memoized, so asking at every offset is linear
 * in the tail, and only a chain that lands is checked by CRC (a byte run such as 01 01 01 01 reads as
 * a 16 MiB length at every offset of it).
 */
class Chains {
  private readonly memo: Uint8Array;
  constructor(private readonly buf: Buffer, readonly dataEnd: number) {
    this.memo = new Uint8Array(buf.length + 1);
  }

  /** Whether a record chain starting at p lands on the end of the data. */
  lands(p: number): boolean {
    const path: number[] = [];
    let q = p;
    let ok = false;
    for (;;) {
      if (q >= this.dataEnd && q <= this.dataEnd + TORN_ZEROS) {
        ok = true;
        break;
      }
      if (q + HDR > this.buf.length) break;
      const m = this.memo[q] as number;
      if (m !== 0) {
        ok = m === 2;
        break;
      }
      const len = this.buf.readUInt32LE(q);
      if (len === 0) break;
      path.push(q);
      if (q < this.dataEnd && q + HDR + len > this.dataEnd + TORN_ZEROS && q + HDR + len <= this.buf.length) {
        // A last record whose end is zeros: the segment's newest write, torn. The chain reaches it.
        ok = true;
        break;
      }
      q += HDR + len;
    }
    for (const x of path) this.memo[x] = ok ? 2 : 1;
    return ok;
  }

  /** CRC bytes find() may still spend: past them it gives up (a run of data full of plausible lengths). */
  private budget = CRC_BUDGET;

  /** Take n bytes of CRC work from the budget; false once it ran out. */
  spend(n: number): boolean {
    this.budget -= n;
    return this.budget >= 0;
  }

  /**
   * The first offset in [from, to) where a whole valid record starts whose chain lands on the end of the
   * data; -1 if none; -2 if the CRC budget ran out first.
   */
  find(from: number, to: number): number {
    for (let p = from; p < to && p < this.dataEnd; p++) {
      if (!this.lands(p)) continue;
      const len = this.buf.readUInt32LE(p);
      if (p + HDR + len > this.dataEnd + TORN_ZEROS) continue;
      if (!this.spend(len)) return -2;
      if (validAt(this.buf, p)) return p;
    }
    return -1;
  }
}

/** The offset just past the last non-zero byte of buf[0, to) (0 if none). */
function dataEnd(buf: Buffer, to: number): number {
  let e = to;
  const CH = 64 << 10;
  while (e > 0) {
    const from = Math.max(0, e - CH);
    if (!allZero(buf.subarray(from, e))) break;
    e = from;
  }
  while (e > 0 && buf[e - 1] === 0) e--;
  return e;
}

/**
 * Where a segment's valid records stop, at file offset `at` (`tail`: the segment's bytes from there on, at
 * least JUDGE_WINDOW of them or to its end): the clean end of the data (a zero header with zeros behind
 * it: returns 'end'), a **torn** write (a crash cut the segment's last write short: it was never
 * acknowledged, so replay may end there: returns null), or **damage** to bytes once written whole
 * (returns why: replaying on without them would drop acknowledged records).
 *
 * What a torn write can look like: it is its segment's last (nothing is written after it, and appends
 * after a restart go to a fresh segment); it is one record, or at a segment's start its header and one
 * record; its sectors that did not reach the disk read as the segment's zeros. So a tear only clears
 * bytes, and only whole 512-byte sectors of them. Judged damage, then:
 *  - a valid record within JUDGE_WINDOW behind it, but for the one record a segment's first write
 *    carries after its header (then nothing may follow that record);
 *  - a length that runs past the segment's end (clearing bytes only shrinks a length);
 *  - a length with one byte changed (at that byte's other value the payload matches its CRC and
 *    the next record or the zeros begin right after it);
 *  - non-zero bytes within the window past its length (the write ended there);
 *  - no part of it missing: its length zero (with a CRC), its last 8 bytes zero, or a 512-byte sector
 *    of it zero — a record whose bytes are all there but do not match their CRC was changed.
 * A header that straddles a sector boundary and whose part on one side of it is all zeros lost that
 * sector: its length is not to be trusted, so only the first rule applies.
 * Known limits: damage to a segment's last record that leaves zeros where a tear would (and no data
 * after it); a record whose length was damaged in two or more bytes with no valid record within the
 * window behind it; a segment's records cut off whole at a record boundary (a truncated file) or its
 * last record damaged when it is not the newest segment are not seen here (the fold's contiguity check
 * and loadReplica's applied-index check catch most of those, under their own messages).
 */
export function judgeStop(tail: Buffer, at: number): 'end' | string | null {
  const len = tail.readUInt32LE(0);
  const crc = tail.readUInt32LE(4);
  const window = Math.min(tail.length, JUDGE_WINDOW);
  if (len === 0 && crc === 0 && zeros(tail, 0, window)) return 'end';
  const chains = new Chains(tail, dataEnd(tail, tail.length));
  // A valid record behind it: a torn write is the segment's last. At a segment's start, the first write
  // carries the header and one record: a torn header may be followed by that record, and then nothing.
  const behind = (from: number, to: number): string | null => {
    const v = chains.find(from, to);
    if (v === -2) return TOO_MUCH;
    if (v < 0) return null;
    if (at === 0 && v + HDR + tail.readUInt32LE(v) >= chains.dataEnd) return null;
    return `a valid record starts ${v} bytes after it: it was not the segment's last write`;
  };
  if (len === 0 && crc === 0) return behind(HDR, window);
  const cut = (SECTOR - (at % SECTOR)) % SECTOR;
  // A header across a sector boundary with one side all zeros lost that sector: its length is not to be trusted.
  if (cut > 0 && cut < HDR && (zeros(tail, 0, cut) || zeros(tail, cut, HDR))) return behind(1, window);
  const end = HDR + len;
  if (end > tail.length) return `its length (${len}) runs past the segment's end: a torn write only loses bytes`;
  // A length with one byte changed: at that byte's other value the next record (or the data's end) begins
  // right after the payload, and the payload matches its CRC.
  for (let b = 0; b < 4; b++) {
    for (let v = 0; v < 256; v++) {
      const l = ((len & ~(0xff << (8 * b))) | (v << (8 * b))) >>> 0;
      const q = HDR + l;
      if (l === len || l === 0 || q > tail.length || !chains.lands(q)) continue;
      if (!chains.spend(l)) return TOO_MUCH;
      if (crc32(tail.subarray(HDR, q)) === crc) return `its length's byte ${b} was changed (${len}; the payload matches its CRC at ${l})`;
    }
  }
  const found = behind(HDR, Math.min(tail.length, end + window));
  if (found !== null) return found;
  if (at !== 0 && !zeros(tail, end, Math.min(tail.length, end + window))) return 'non-zero bytes follow it: it was not the segment\'s last write';
  const lost = len === 0 || zeros(tail, Math.max(HDR, end - TORN_ZEROS), end) || (() => {
    for (let s = cut; s < end; s += SECTOR) if (zeros(tail, s, Math.min(tail.length, s + SECTOR))) return true;
    return false;
  })();
  return lost ? null : 'its CRC does not match and no part of it is missing: bytes written whole were changed';
}

