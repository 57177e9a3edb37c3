import { constants } from 'node:fs';
import { mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { HDR, JUDGE_WINDOW, allZero, judgeStop } from './wal-judge.ts';

/**
 * A write-ahead log of preallocated, pre-zeroed segments (as etcd keeps):
 * `NNNNNNNN.seg` files of a fixed size, written full of zeros and synced
 * (file and directory) before first use, in the background. Overwriting a
 * slot of such a file needs only an fdatasync of the data blocks, no
 * metadata (size, block allocation), which is what makes it cheaper than a
 * LevelDB synced batch or an append to a growing file (bench/fsync.ts).
 *
 * Records: [u32 LE length][u32 LE crc32(payload)][payload]. A length of 0
 * ends the written data of a segment. A batch of records is one write() at
 * the current offset, durable on return (O_DSYNC); a batch that does not fit rolls, as
 * a whole, to the next segment. Every segment starts with a header record
 * the owner supplies (its current hard state of every shard), so a segment
 * is never needed for anything but the entries it holds.
 *
 * Each append is one write of one record (two at a segment's start: its
 * header, then the record). Replay reads segments in order; within a segment
 * it stops at the first zero length (the end of the data) or at the first
 * record that fails its check (a bad CRC, a length past the segment's end).
 * That point is judged (judgeStop, node/wal-judge.ts): a write cut short by a crash (a torn tail:
 * it was never acknowledged, replay of the segment ends there) or damage to
 * bytes once written whole (corruption: open() fails, the node does not start
 * on a log that lost acknowledged records). Appends after an open always go to
 * a fresh segment (one that never held data), so bytes after a torn tail are
 * never followed by anything that replays. Segments are never reused: a
 * deleted segment's file is gone, a new one is zeroed anew.
 *
 * A segment may be deleted once every entry in it, for every shard, is at or
 * below that shard's compaction index (made durable elsewhere first), the
 * segment is not the one being written, and the segment being written holds
 * its (synced) header — so the hard state is always on disk. Deletion goes
 * oldest first: the segments kept are always a suffix.
 */

export interface WalOptions {
  dir: string;
  segmentBytes: number;
  /** The first record of every new segment. Called when a batch starts a segment, before the batch is written. */
  header: () => Uint8Array;
  /** Background errors (a spare segment that could not be made; the next roll fails with it). */
  onWarn?: (msg: string, err: unknown) => void;
  /** PLANTED BUG (`--plant-bug wal-no-dsync`, tests only): segments opened without O_DSYNC, appends not durable. */
  plantNoDsync?: boolean;
  /** PLANTED BUG (`--plant-bug wal-corrupt-as-torn`, tests only): every record that fails its check is taken for a torn tail. */
  plantCorruptAsTorn?: boolean;
}

export interface WalRecord {
  segment: number;
  payload: Buffer;
}

interface Segment {
  seq: number;
  path: string;
  /** Highest entry index per shard written into this segment. */
  maxima: Map<number, number>;
}

/**
 * Segments are written with O_DSYNC: every write returns once its data is
 * durable, as if followed by fdatasync, in one system call and one
 * thread-pool round trip instead of two (bench/fsync.ts: wal-dsync vs wal-2ops).
 */
const APPEND_FLAGS = constants.O_RDWR | constants.O_DSYNC;
const appendFlags = (o: WalOptions): number => (o.plantNoDsync === true ? constants.O_RDWR : APPEND_FLAGS);
const ZERO_CHUNK = 1 << 20;

const segName = (seq: number): string => `${String(seq).padStart(8, '0')}.seg`;

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Write all of buf at position (write() may write less than asked). */
async function writeAll(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw new Error('WAL write wrote nothing');
    done += bytesWritten;
  }
}

/**
 * Make a zeroed, synced segment file under its final name (atomically: written as .tmp, then renamed).
 * `paced` (the spare, made in the background while appends go on): each 1 MiB of zeros is synced
 * before the next is written, so the disk never has more than that queued ahead of an append. Written
 * whole and synced once, 64 MiB went to the disk in one burst, ahead of every node's WAL appends on
 * that disk (Writeback in /proc/meminfo peaked at 64 MiB at a roll; paced, at 3 MiB).
 */
async function createSegment(dir: string, seq: number, size: number, paced = false): Promise<string> {
  const path = join(dir, segName(seq));
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    const zeros = Buffer.alloc(Math.min(ZERO_CHUNK, size));
    for (let off = 0; off < size; off += zeros.length) {
      await writeAll(fh, zeros.subarray(0, Math.min(zeros.length, size - off)), off);
      if (paced) await fh.datasync();
    }
    await fh.datasync();
  } catch (e) {
    // A full disk: give the space back (LevelDB may still have room for what it must write).
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
  await syncDir(dir);
  return path;
}

export function encodeRecords(records: Uint8Array[]): Buffer {
  let total = 0;
  for (const r of records) total += HDR + r.length;
  const buf = Buffer.allocUnsafe(total);
  let off = 0;
  for (const r of records) {
    if (r.length === 0) throw new Error('WAL records must not be empty');
    buf.writeUInt32LE(r.length, off);
    buf.writeUInt32LE(crc32(r), off + 4);
    buf.set(r, off + HDR);
    off += HDR + r.length;
  }
  return buf;
}

type Step = { kind: 'record'; payload: Buffer; next: number } | { kind: 'end' } | { kind: 'bad' } | { kind: 'short'; need: number };

/**
 * The record at `off` of buf, whose bytes are a segment's from `base` on: a valid record, the end of the
 * data (a zero length and CRC), `bad` (a record that fails its check: a zero length with a CRC, a length
 * past the segment's `segmentSize` bytes, or a bad CRC: see judgeStop), or `short`: buf must hold `need`
 * bytes from off first.
 */
function parseOne(buf: Buffer, off: number, base: number, segmentSize: number): Step {
  if (base + off + HDR > segmentSize) return { kind: 'end' };
  if (off + HDR > buf.length) return { kind: 'short', need: HDR };
  const len = buf.readUInt32LE(off);
  const crc = buf.readUInt32LE(off + 4);
  if (len === 0) return crc === 0 ? { kind: 'end' } : { kind: 'bad' };
  if (base + off + HDR + len > segmentSize) return { kind: 'bad' };
  if (off + HDR + len > buf.length) return { kind: 'short', need: HDR + len };
  const payload = buf.subarray(off + HDR, off + HDR + len);
  if (crc32(payload) !== crc) return { kind: 'bad' };
  return { kind: 'record', payload, next: off + HDR + len };
}

/** Where a segment's records end: `torn` if at a torn write, `corrupt` (why) if at damage. */
export interface SegmentEnd {
  torn: boolean;
  corrupt: string | null;
  /** File offset where the valid records end. */
  end: number;
}

const judged = (why: 'end' | string | null, end: number, asTorn: boolean): SegmentEnd =>
  why === 'end' ? { torn: false, corrupt: null, end } : why === null || asTorn ? { torn: true, corrupt: null, end } : { torn: false, corrupt: why, end };

/** Parse the records of one segment's bytes: the valid prefix, and how it ended. */
export function parseSegment(buf: Buffer, opts: { corruptAsTorn?: boolean } = {}): SegmentEnd & { records: Buffer[] } {
  const records: Buffer[] = [];
  let off = 0;
  for (;;) {
    const st = parseOne(buf, off, 0, buf.length);
    if (st.kind === 'record') {
      records.push(st.payload);
      off = st.next;
      continue;
    }
    if (off + HDR > buf.length) return { records, torn: false, corrupt: null, end: off };
    return { records, ...judged(judgeStop(buf.subarray(off), off), off, opts.corruptAsTorn === true) };
  }
}

const READ_CHUNK = 1 << 20;

/**
 * Read one segment's records in order, a chunk at a time: each payload goes to onRecord as a view valid
 * only during the call (copy what must stay). Reads no further than the end of the data, so a
 * segment's preallocated zeros are not read, and never holds more than a chunk or the largest record
 * (a node used to read every segment whole, 64 MiB each, and keep them all until its logs were loaded);
 * where the records stop is judged with what lies behind it read (judgeStop).
 * `empty`: no record and every byte zero (a segment never written, which may be reused).
 */
export async function readSegment(path: string, onRecord: (payload: Buffer) => void, opts: { corruptAsTorn?: boolean } = {}): Promise<SegmentEnd & { records: number; empty: boolean; size: number }> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    let buf: Buffer = Buffer.alloc(0);
    let base = 0; // file offset of buf[0]
    let off = 0; // parse position in buf
    let records = 0;
    const fill = async (need: number): Promise<boolean> => {
      // Keep the unparsed tail, then read at least `need` bytes past off (or to the end of the file).
      const keep = buf.subarray(off);
      const want = Math.max(need, READ_CHUNK);
      const next = Buffer.allocUnsafe(Math.min(keep.length + want, size - base - off));
      keep.copy(next, 0);
      let got = keep.length;
      while (got < next.length) {
        const { bytesRead } = await fh.read(next, got, next.length - got, base + off + got);
        if (bytesRead <= 0) break;
        got += bytesRead;
      }
      base += off;
      off = 0;
      buf = next.subarray(0, got);
      return got >= need;
    };
    for (;;) {
      const st = parseOne(buf, off, base, size);
      if (st.kind === 'short') {
        if (!(await fill(st.need))) return { records, torn: false, corrupt: `the file ended at ${base + buf.length} bytes while ${size} were expected`, end: base + off, empty: false, size };
        continue;
      }
      if (st.kind === 'end' || st.kind === 'bad') {
        const end = base + off;
        if (end + HDR > size) return { records, torn: false, corrupt: null, end, empty: records === 0, size };
        // Judged with what lies behind it: at a zero header with zeros behind (the common end) a window of
        // it, else the rest of the segment.
        await fill(Math.min(size - end, JUDGE_WINDOW));
        const clean = st.kind === 'end' && allZero(buf.subarray(off));
        if (!clean) await fill(size - end);
        const j: SegmentEnd = clean ? { torn: false, corrupt: null, end } : judged(judgeStop(buf.subarray(off), end), end, opts.corruptAsTorn === true);
        if (records > 0 || j.torn || j.corrupt !== null) return { records, ...j, empty: false, size };
        // No record: reusable only if every byte is zero (a torn first write may have left later pages behind a zero header).
        return { records, ...j, empty: await zeroFrom(fh, end, size), size };
      }
      onRecord(st.payload);
      records++;
      off = st.next;
    }
  } finally {
    await fh.close();
  }
}

async function zeroFrom(fh: FileHandle, from: number, size: number): Promise<boolean> {
  const chunk = Buffer.allocUnsafe(Math.min(ZERO_CHUNK, Math.max(1, size - from)));
  for (let pos = from; pos < size;) {
    const { bytesRead } = await fh.read(chunk, 0, Math.min(chunk.length, size - pos), pos);
    if (bytesRead <= 0) return false;
    if (!allZero(chunk.subarray(0, bytesRead))) return false;
    pos += bytesRead;
  }
  return true;
}

/** A WAL segment holds a damaged record (judgeStop): the log cannot be trusted, and the node must not start on it. */
export class WalCorruption extends Error {
  constructor(readonly path: string, readonly offset: number, readonly why: string) {
    super(`corrupt WAL: ${path}, record at byte ${offset}: ${why}. The node will not start on a log that may have lost acknowledged records or votes. ` +
      'To repair: keep this node stopped, move its data directory aside, and start it again with an empty one: its replicas then ' +
      'recover from their peers (docs/FAILURE-MODES.md, "data directory lost"; every other replica of each of its shards must be up)');
    this.name = 'WalCorruption';
  }
}

export class Wal {
  private readonly segments: Segment[] = [];
  private fh: FileHandle | null = null;
  private size = 0;
  private offset = 0;
  /** The current segment's header record is written and synced. */
  private headerDurable = false;
  private spare: Promise<{ seq: number; path: string; size: number }> | null = null;
  private appending = false;
  private failed: Error | null = null;
  private readonly compactedAt = new Map<number, number>();
  /** Bytes of torn tail found at open (for the log). */
  tornAtOpen: { segment: number; offset: number } | null = null;

  private constructor(private readonly o: WalOptions) {}

  /**
   * Open (creating if missing) and replay every valid record, in order: to `onRecord` as it is read (a
   * view valid during the call), or else copied into `records`. Appends go to a fresh segment.
   */
  static async open(o: WalOptions, onRecord?: (segment: number, payload: Buffer) => void): Promise<{ wal: Wal; records: WalRecord[] }> {
    if (!(o.segmentBytes >= 4096)) throw new Error(`WAL segment size ${o.segmentBytes} is below 4096`);
    const w = new Wal(o);
    await mkdir(o.dir, { recursive: true });
    const names = (await readdir(o.dir)).sort();
    for (const n of names) if (n.endsWith('.seg.tmp')) await unlink(join(o.dir, n));
    const records: WalRecord[] = [];
    const take = onRecord ?? ((segment: number, payload: Buffer) => records.push({ segment, payload: Buffer.from(payload) }));
    let lastEmpty = false;
    for (const n of names) {
      const m = /^(\d{8})\.seg$/.exec(n);
      if (m === null) continue;
      const seq = Number(m[1]);
      const path = join(o.dir, n);
      const p = await readSegment(path, (payload) => take(seq, payload), { corruptAsTorn: o.plantCorruptAsTorn === true });
      if (p.corrupt !== null) throw new WalCorruption(path, p.end, p.corrupt);
      if (p.torn && w.tornAtOpen === null) w.tornAtOpen = { segment: seq, offset: p.end };
      // An empty segment (never written) followed by another is the current segment or spare of a start
      // that wrote nothing: it holds nothing, so it goes. Left, each such start added one for good
      // (a node in a crash loop: 64 MiB of disk per start). Only the tail can be empty: a roll writes.
      const prev = w.segments[w.segments.length - 1];
      if (lastEmpty && prev !== undefined) {
        await unlink(prev.path);
        w.segments.pop();
      }
      w.segments.push({ seq, path, maxima: new Map() });
      lastEmpty = p.empty;
      if (lastEmpty) w.size = p.size;
    }
    const last = w.segments[w.segments.length - 1];
    if (last !== undefined && lastEmpty) {
      // Never written: zeros under its final name (made as .tmp, renamed once synced).
      w.fh = await open(last.path, appendFlags(o));
    } else {
      const seq = (last?.seq ?? 0) + 1;
      const path = await createSegment(o.dir, seq, o.segmentBytes);
      w.segments.push({ seq, path, maxima: new Map() });
      w.fh = await open(path, appendFlags(o));
      w.size = o.segmentBytes;
    }
    w.offset = 0;
    w.headerDurable = false;
    w.makeSpare();
    return { wal: w, records };
  }

  /** Replay: entries of `shard` up to `index` are in segment `segment` (for deletion). */
  noteEntries(segment: number, shard: number, index: number): void {
    const s = this.segments.find((x) => x.seq === segment);
    if (s !== undefined && index > (s.maxima.get(shard) ?? 0)) s.maxima.set(shard, index);
  }

  private current(): Segment {
    return this.segments[this.segments.length - 1] as Segment;
  }

  private makeSpare(): void {
    const seq = this.current().seq + 1;
    const size = this.o.segmentBytes;
    const p = createSegment(this.o.dir, seq, size, true).then((path) => ({ seq, path, size }));
    p.catch((e: unknown) => this.o.onWarn?.('preparing the next WAL segment failed', e));
    this.spare = p;
  }

  /**
   * Write one record and fdatasync: resolves once it is durable. One record
   * per write is what lets replay tell a torn write from damage (judgeStop).
   * `maxima`: the highest entry index per shard in it. At most one
   * append at a time; after a failure every later append fails (a failed
   * fsync must never be retried as if the data were safe).
   */
  async append(record: Uint8Array, maxima: Map<number, number>): Promise<void> {
    if (this.failed !== null) throw this.failed;
    if (this.appending) throw new Error('one WAL append at a time');
    this.appending = true;
    try {
      let body = encodeRecords([record]);
      let buf = this.offset === 0 ? Buffer.concat([encodeRecords([this.o.header()]), body]) : body;
      if (this.offset + buf.length > this.size) {
        await this.roll(body.length);
        buf = Buffer.concat([encodeRecords([this.o.header()]), body]);
        body = buf;
      }
      const seg = this.current();
      for (const [shard, idx] of maxima) if (idx > (seg.maxima.get(shard) ?? 0)) seg.maxima.set(shard, idx);
      const fh = this.fh as FileHandle;
      await writeAll(fh, buf, this.offset); // O_DSYNC: durable on return
      this.offset += buf.length;
      this.headerDurable = true;
    } catch (e) {
      this.failed = e instanceof Error ? e : new Error(String(e));
      throw this.failed;
    } finally {
      this.appending = false;
    }
  }

  /** Move to the next segment (the spare, or one made now if the batch needs more room than a segment has). */
  private async roll(bodyBytes: number): Promise<void> {
    const need = HDR + this.o.header().length + bodyBytes + HDR;
    await this.fh?.close();
    this.fh = null;
    let next: { seq: number; path: string; size: number };
    const spare = this.spare;
    this.spare = null;
    if (spare === null) throw new Error('no spare WAL segment');
    const s = await spare;
    if (need <= s.size) next = s;
    else {
      // A batch bigger than a segment: the spare stays (empty, it replays as nothing and is collected), and this batch gets a segment of its own.
      this.segments.push({ seq: s.seq, path: s.path, maxima: new Map() });
      const seq = s.seq + 1;
      const size = Math.ceil(need / 4096) * 4096;
      next = { seq, path: await createSegment(this.o.dir, seq, size), size };
    }
    this.segments.push({ seq: next.seq, path: next.path, maxima: new Map() });
    this.fh = await open(next.path, appendFlags(this.o));
    this.size = next.size;
    this.offset = 0;
    this.headerDurable = false;
    this.makeSpare();
  }

  /** Entries of `shard` at or below `index` are no longer needed (a compaction or snapshot made durable elsewhere, synced). */
  compacted(shard: number, index: number): void {
    if (index > (this.compactedAt.get(shard) ?? 0)) this.compactedAt.set(shard, index);
  }

  /** Delete the oldest segments whose entries are all compacted. Returns how many were deleted. */
  async collect(): Promise<number> {
    if (this.failed !== null || !this.headerDurable) return 0;
    let n = 0;
    while (this.segments.length > 1) {
      const s = this.segments[0] as Segment;
      for (const [shard, idx] of s.maxima) if (idx > (this.compactedAt.get(shard) ?? 0)) return n;
      await unlink(s.path);
      this.segments.shift();
      n++;
    }
    return n;
  }

  /**
   * Shards whose entries keep the oldest segment alive, with the highest of
   * their entries in it: compacting each at (or past) that index lets it go.
   * Only asked when more than one segment exists.
   */
  pinning(): Array<[shard: number, index: number]> {
    if (this.segments.length <= 1) return [];
    const s = this.segments[0] as Segment;
    const out: Array<[number, number]> = [];
    for (const [shard, idx] of s.maxima) if (idx > (this.compactedAt.get(shard) ?? 0)) out.push([shard, idx]);
    return out;
  }

  segmentCount(): number {
    return this.segments.length;
  }

  /** The segment being written (for tests). */
  currentSegment(): { seq: number; path: string; offset: number } {
    const c = this.current();
    return { seq: c.seq, path: c.path, offset: this.offset };
  }

  async close(): Promise<void> {
    await this.spare?.catch(() => undefined);
    await this.fh?.close();
    this.fh = null;
  }
}
