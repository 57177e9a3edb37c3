/**
 * node/wal.ts and node/wal-codec.ts: records round-trip, a torn tail ends
 * replay of a segment (and appends go on in a fresh one) while a damaged
 * record stops the open (judgeBad tells them apart), batches
 * roll to the next segment, segments are deleted only below compaction, and
 * the per-shard fold (suffix replacement, hard state, snapshot markers).
 */
import test from 'ava';
import { constants, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, truncateSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Entry, HardState } from '../raft/index.ts';
import { Wal, WalCorruption, parseSegment, encodeRecords, readSegment } from '../node/wal.ts';
import { WalFold, encodeBatch, encodeHeader, foldWal } from '../node/wal-codec.ts';

const SEG = 64 * 1024;

function tmp(t: import('ava').ExecutionContext): string {
  const d = mkdtempSync(join(tmpdir(), 'wal-test-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const hdr = () => Buffer.from('H');

async function openWal(dir: string, segmentBytes = SEG) {
  return Wal.open({ dir, segmentBytes, header: hdr });
}

const rec = (s: string): Buffer => Buffer.from(s);
const texts = (rs: Array<{ payload: Buffer }>): string[] => rs.map((r) => r.payload.toString()).filter((x) => x !== 'H');
const segs = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith('.seg')).sort();

test('records round-trip across reopen; every segment starts with the header', async (t) => {
  const dir = tmp(t);
  const { wal, records } = await openWal(dir);
  t.deepEqual(records, []);
  await wal.append(rec('a'), new Map());
  await wal.append(rec('bb'), new Map());
  await wal.append(rec('ccc'), new Map());
  await wal.close();
  const r2 = await openWal(dir);
  t.deepEqual(r2.records.map((r) => r.payload.toString()), ['H', 'a', 'bb', 'ccc']);
  await r2.wal.append(rec('d'), new Map());
  await r2.wal.close();
  const r3 = await openWal(dir);
  // appends after an open go to a fresh segment, which starts with its header
  t.deepEqual(r3.records.map((r) => r.payload.toString()), ['H', 'a', 'bb', 'ccc', 'H', 'd']);
  t.true(r3.records[4]!.segment > r3.records[0]!.segment);
  await r3.wal.close();
});

test('segments are preallocated and zeroed to their full size', async (t) => {
  const dir = tmp(t);
  const { wal } = await openWal(dir);
  await wal.append(rec('x'), new Map());
  await wal.close();
  for (const f of segs(dir)) t.is(statSync(join(dir, f)).size, SEG);
  t.true(segs(dir).length >= 2, 'a spare segment is ready');
});

/** Overwrite bytes of a file at `pos`. */
function poke(path: string, pos: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, pos);
  closeSync(fd);
}

/** A WAL with records 'one', a 2,000-byte record and 'three' (each its own append); where each record starts. */
async function threeRecords(t: import('ava').ExecutionContext): Promise<{ dir: string; path: string; at: number[]; end: number }> {
  const dir = tmp(t);
  const { wal } = await openWal(dir);
  const at: number[] = [];
  for (const r of [rec('one'), Buffer.alloc(2000, 0x61), rec('three')]) {
    at.push(wal.currentSegment().offset + (wal.currentSegment().offset === 0 ? 8 + 1 : 0));
    await wal.append(r, new Map());
  }
  const cur = wal.currentSegment();
  await wal.close();
  return { dir, path: cur.path, at, end: cur.offset };
}

test('a torn tail (the last write cut short: a zero tail, a lost sector) ends replay of its segment; later appends replay after it', async (t) => {
  const tears: Array<[string, (path: string, last: number, end: number) => void]> = [
    // the last 600 bytes of the write never reached the disk
    ['zero tail', (path, _last, end) => poke(path, end - 600, Buffer.alloc(600))],
    // a 512-byte sector in its middle never did, the ones around it did
    ['lost sector', (path, last) => poke(path, (Math.floor(last / 512) + 1) * 512, Buffer.alloc(512))],
  ];
  for (const [name, tear] of tears) {
    const dir = tmp(t);
    const { wal } = await openWal(dir);
    await wal.append(rec('one'), new Map());
    const last = wal.currentSegment().offset;
    await wal.append(Buffer.alloc(3000, 0x62), new Map());
    const cur = wal.currentSegment();
    await wal.close();
    tear(cur.path, last, cur.offset);
    const r = await openWal(dir);
    t.deepEqual(texts(r.records), ['one'], name);
    t.deepEqual(r.wal.tornAtOpen, { segment: Number(cur.path.slice(-12, -4)), offset: last }, name);
    await r.wal.append(rec('three'), new Map());
    await r.wal.close();
    const r2 = await openWal(dir);
    t.deepEqual(texts(r2.records), ['one', 'three'], name);
    await r2.wal.close();
  }
});

test('a torn write whose header straddles a sector boundary and lost the sector on either side of it (part of its length) is torn', async (t) => {
  // (Found by review: the length's low bytes read as zeros, so it looked like damage.)
  for (const [at, size] of [[1023, 300], [1023, 4200], [1020, 4096], [1022, 2048]] as const) {
    const dir = tmp(t);
    const { wal } = await openWal(dir);
    await wal.append(Buffer.alloc(at - 9 - 8, 0x61), new Map()); // the header record (9 bytes) and this one end at `at`
    t.is(wal.currentSegment().offset, at);
    await wal.append(Buffer.alloc(size, 0x62), new Map());
    const path = wal.currentSegment().path;
    await wal.close();
    poke(path, at, Buffer.alloc(1024 - at)); // the sector [512, 1024) keeps its old content: zeros from `at`
    const r = await openWal(dir);
    t.is(r.records.length, 2, `${at}, ${size}`);
    t.deepEqual(r.wal.tornAtOpen, { segment: 1, offset: at }, `${at}, ${size}`);
    await r.wal.close();
  }
  // The other side: the header's first byte kept, the sector after the boundary (the rest of it) lost.
  const dir = tmp(t);
  const { wal } = await openWal(dir);
  await wal.append(Buffer.alloc(1023 - 9 - 8, 0x61), new Map());
  await wal.append(Buffer.alloc(700, 0x62), new Map());
  const path = wal.currentSegment().path;
  await wal.close();
  poke(path, 1024, Buffer.alloc(512));
  const r = await openWal(dir);
  t.is(r.records.length, 2);
  t.deepEqual(r.wal.tornAtOpen, { segment: 1, offset: 1023 });
  await r.wal.close();
});

test('damage that zeros a header or a sector is refused when records follow it, even at a segment\'s start', async (t) => {
  const dir = tmp(t);
  const { wal } = await openWal(dir);
  for (let i = 0; i < 10; i++) await wal.append(Buffer.alloc(300, 0x61 + i), new Map());
  const path = wal.currentSegment().path;
  await wal.close();
  poke(path, 0, Buffer.alloc(512));
  await t.throwsAsync(openWal(dir), { instanceOf: WalCorruption, message: /record at byte 0: a valid record starts \d+ bytes after it/ });
});

test('a damaged record is corruption, not a torn tail: open() fails naming the segment and the offset; with the planted bug replay drops it and the rest', async (t) => {
  const damages: Array<[string, (path: string, at: number[], end: number) => void, RegExp]> = [
    ['a bit of the last payload', (path, at) => poke(path, (at[2] as number) + 8 + 2, Buffer.from('T')), /no part of it is missing/],
    ['a bit of the last CRC', (path, at) => poke(path, (at[2] as number) + 4, Buffer.from([0x55])), /no part of it is missing/],
    ['a bit of the last length', (path, at) => poke(path, at[2] as number, Buffer.from([5 ^ 16])), /length's byte 0 was changed \(21; the payload matches its CRC at 5\)/],
    ['a byte of a middle length (0x07d0 -> 0x27d0)', (path, at) => poke(path, (at[1] as number) + 1, Buffer.from([0x27])), /length's byte 1 was changed \(10192; the payload matches its CRC at 2000\)/],
    ['a byte of a middle length, past the segment (2000 -> 2000 + 0x30000)', (path, at) => poke(path, (at[1] as number) + 2, Buffer.from([0x03])), /its length \(198608\) runs past the segment's end/],
    ['a zeroed sector inside a record with records after it', (path) => poke(path, 512, Buffer.alloc(512)), /valid record starts \d+ bytes after it/],
    ['a zeroed header with records after it', (path, at) => poke(path, at[1] as number, Buffer.alloc(8)), /valid record starts \d+ bytes after it/],
    ['a bit of a payload with records after it', (path, at) => poke(path, (at[1] as number) + 8 + 700, Buffer.from('b')), /valid record starts \d+ bytes after it/],
    ['zeros over a record with records after it', (path, at) => poke(path, (at[1] as number) + 8 + 1000, Buffer.alloc(1000)), /bytes after it/],
  ];
  for (const [name, damage, why] of damages) {
    const { dir, path, at, end } = await threeRecords(t);
    damage(path, at, end);
    const bad = at[name.includes('last') ? 2 : 1] as number;
    const err = await t.throwsAsync(openWal(dir), { instanceOf: WalCorruption }, name);
    t.regex(err?.message ?? '', why, name);
    t.true((err?.message ?? '').includes(`${path}, record at byte ${bad}`), `${name}: ${err?.message}`);
    t.regex(err?.message ?? '', /move its data directory aside/, name);
    // The bug the check keeps out: the damaged record and everything after it in the segment, gone.
    const planted = await Wal.open({ dir, segmentBytes: SEG, header: hdr, plantCorruptAsTorn: true });
    t.deepEqual(texts(planted.records), name.includes('last') ? ['one', 'a'.repeat(2000)] : ['one'], name);
    await planted.wal.close();
  }
});

test('a segment file cut short inside a record is corruption (segments are preallocated: only damage shortens one)', async (t) => {
  const dir = tmp(t);
  const { wal } = await openWal(dir);
  await wal.append(rec('keep'), new Map());
  await wal.append(rec('x'.repeat(100)), new Map());
  const cur = wal.currentSegment();
  await wal.close();
  truncateSync(cur.path, cur.offset - 50);
  await t.throwsAsync(openWal(dir), { instanceOf: WalCorruption, message: /runs past the segment/ });
});

test('parseSegment: a zero length ends the data; a length past the end is damage', (t) => {
  const good = encodeRecords([rec('a'), rec('b')]);
  const z = Buffer.concat([good, Buffer.alloc(32)]);
  t.deepEqual(parseSegment(z).records.map(String), ['a', 'b']);
  t.false(parseSegment(z).torn);
  t.is(parseSegment(z).corrupt, null);
  // A tear only clears bytes, and a length only shrinks that way: one past the segment's end is damage.
  const long = Buffer.concat([good, Buffer.from([0xff, 0xff, 0, 0, 1, 2, 3, 4]), Buffer.alloc(8)]);
  t.deepEqual(parseSegment(long).records.map(String), ['a', 'b']);
  t.regex(parseSegment(long).corrupt ?? '', /runs past the segment's end/);
  t.is(parseSegment(long).end, good.length);
});

test('batches roll over to the next segment whole; one bigger than a segment gets its own', async (t) => {
  const dir = tmp(t);
  const { wal } = await openWal(dir, 4096);
  const big = 'y'.repeat(1500);
  for (let i = 0; i < 6; i++) await wal.append(rec(`${i}${big}`), new Map());
  await wal.append(rec('z'.repeat(10_000)), new Map());
  await wal.append(rec('after'), new Map());
  await wal.close();
  const r = await openWal(dir, 4096);
  const got = texts(r.records);
  t.deepEqual(got.map((x) => x.slice(0, 1)), ['0', '1', '2', '3', '4', '5', 'z', 'a']);
  t.is(got[6]!.length, 10_000);
  const segsWithData = new Set(r.records.map((x) => x.segment));
  t.true(segsWithData.size >= 4, `spread over ${segsWithData.size} segments`);
  // every segment with data starts with the header
  for (const s of segsWithData) t.is(r.records.find((x) => x.segment === s)!.payload.toString(), 'H');
  await r.wal.close();
});

test('segments are deleted oldest first, only once every entry in them is compacted, never the current one', async (t) => {
  const dir = tmp(t);
  const { wal } = await openWal(dir, 4096);
  const pad = 'p'.repeat(2500);
  // one batch per segment: shard 1 entries up to 10, 20, 30; shard 2 up to 5 in the first
  await wal.append(rec(`a${pad}`), new Map([[1, 10], [2, 5]]));
  await wal.append(rec(`b${pad}`), new Map([[1, 20]]));
  await wal.append(rec(`c${pad}`), new Map([[1, 30]]));
  const n0 = wal.segmentCount();
  t.is(await wal.collect(), 0, 'nothing compacted');
  wal.compacted(1, 25);
  t.is(await wal.collect(), 0, 'the first segment also holds shard 2 entries above its compaction');
  wal.compacted(2, 5);
  t.is(await wal.collect(), 2, 'the first two go; the third holds shard 1 up to 30');
  t.is(wal.segmentCount(), n0 - 2);
  wal.compacted(1, 100);
  await wal.collect();
  t.is(wal.segmentCount(), 1, 'the current segment stays');
  await wal.close();
  const r = await openWal(dir, 4096);
  t.deepEqual(texts(r.records).map((x) => x.slice(0, 1)), ['c'], 'the current segment, with the last batch, stays');
  await r.wal.close();
});

test('pinning() names the shards that keep the oldest segment, at their highest entry in it', async (t) => {
  const dir = tmp(t);
  const { wal } = await openWal(dir, 4096);
  const pad = 'p'.repeat(2500);
  t.deepEqual(wal.pinning(), [], 'one segment: nothing to release');
  await wal.append(rec(`a${pad}`), new Map([[1, 10], [2, 5]]));
  await wal.append(rec(`b${pad}`), new Map([[1, 20]]));
  t.deepEqual(wal.pinning().sort(), [[1, 10], [2, 5]]);
  wal.compacted(2, 5);
  t.deepEqual(wal.pinning(), [[1, 10]]);
  wal.compacted(1, 10);
  t.deepEqual(wal.pinning(), []);
  t.true((await wal.collect()) >= 1);
  await wal.close();
});

test('after a reopen, replayed maxima (noteEntries) guard deletion; nothing is deleted before the new segment has its header', async (t) => {
  const dir = tmp(t);
  const { wal } = await openWal(dir, 4096);
  await wal.append(rec('a'), new Map([[1, 10]]));
  await wal.close();
  const r = await openWal(dir, 4096);
  const seg = r.records[0]!.segment;
  r.wal.noteEntries(seg, 1, 10);
  r.wal.compacted(1, 9);
  await r.wal.append(rec('b'), new Map());
  t.is(await r.wal.collect(), 0, 'shard 1 has entries up to 10 in the replayed segment');
  await r.wal.close();
  const r2 = await openWal(dir, 4096);
  for (const x of r2.records) r2.wal.noteEntries(x.segment, 1, x.payload.toString() === 'a' ? 10 : 0);
  r2.wal.compacted(1, 10);
  t.is(await r2.wal.collect(), 0, 'the fresh segment has no header yet: nothing goes');
  await r2.wal.append(rec('c'), new Map());
  t.true(await r2.wal.collect() >= 1);
  t.false(segs(dir).includes(`${String(seg).padStart(8, '0')}.seg`));
  await r2.wal.close();
});

test('a failed append fails every later one', async (t) => {
  const dir = tmp(t);
  const { wal } = await openWal(dir);
  await wal.append(rec('a'), new Map());
  await (wal as unknown as { fh: { close(): Promise<void> } }).fh.close(); // the next write fails (EBADF)
  await t.throwsAsync(wal.append(rec('b'), new Map()));
  await t.throwsAsync(wal.append(rec('c'), new Map()));
});

const e = (term: number, index: number): Entry => ({ term, index, type: 0, data: new Uint8Array([index & 0xff]), change: null });
const hs = (term: number, vote: number, commit: number): HardState => ({ term, vote, commit });

test('fold: later entries replace a suffix, the latest hard state wins, a snapshot marker drops the log', (t) => {
  const recs = [
    encodeHeader(new Map([[1, hs(1, 1, 0)]])),
    encodeBatch([{ shard: 1, hardState: hs(2, 3, 1), entries: [e(1, 1), e(1, 2), e(1, 3), e(1, 4)], snapshot: null }]),
    encodeBatch([{ shard: 2, hardState: null, entries: [e(1, 1)], snapshot: null }, { shard: 1, hardState: null, entries: [e(3, 3)], snapshot: null }]),
    encodeBatch([{ shard: 1, hardState: null, entries: [e(3, 4), e(3, 5)], snapshot: null }]),
  ];
  const maxima: Array<[number, number, number]> = [];
  const f = foldWal(recs, (i, s, m) => maxima.push([i, s, m]));
  const s1 = f.get(1)!;
  t.deepEqual(s1.hardState, hs(2, 3, 1));
  t.deepEqual(s1.entries.map((x) => [x.index, x.term]), [[1, 1], [2, 1], [3, 3], [4, 3], [5, 3]]);
  t.deepEqual(f.get(2)!.entries.map((x) => x.index), [1]);
  t.deepEqual(maxima, [[1, 1, 4], [2, 2, 1], [2, 1, 3], [3, 1, 5]]);
  const withSnap = foldWal([...recs, encodeBatch([{ shard: 1, hardState: hs(4, 0, 9), entries: [], snapshot: 9 }]), encodeBatch([{ shard: 1, hardState: null, entries: [e(4, 10)], snapshot: null }])]);
  const s = withSnap.get(1)!;
  t.deepEqual(s.entries.map((x) => x.index), [10]);
  t.deepEqual(s.markers.map((m) => [m.index, m.before.length]), [[9, 5]]);
  t.deepEqual(s.hardState, hs(4, 0, 9));
  t.throws(() => foldWal([encodeBatch([{ shard: 1, hardState: null, entries: [e(1, 1)], snapshot: null }]), encodeBatch([{ shard: 1, hardState: null, entries: [e(1, 3)], snapshot: null }])]), { message: /after a log ending at 1/ });
});

/** Open descriptors of this process on files under dir, with their open flags (from /proc/self/fdinfo). */
function openFlagsUnder(dir: string): Array<{ path: string; flags: number }> {
  const out: Array<{ path: string; flags: number }> = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let path: string;
    try {
      path = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    if (!path.startsWith(dir)) continue;
    const m = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    if (m !== null) out.push({ path, flags: parseInt(m[1] as string, 8) });
  }
  return out;
}

test('segments are written through O_DSYNC descriptors (append() does no separate fdatasync)', async (t) => {
  const dir = tmp(t);
  const { wal } = await openWal(dir, 4096);
  // Roll at least once: the segment opened by a roll must be O_DSYNC too, not only the first.
  for (let i = 0; i < 8; i++) await wal.append(Buffer.alloc(1500, i), new Map([[1, i + 1]]));
  t.true(segs(dir).length >= 3);
  const fds = openFlagsUnder(dir).filter((f) => f.path.endsWith('.seg'));
  t.true(fds.length >= 1, 'the segment being written is open');
  for (const f of fds) t.is(f.flags & constants.O_DSYNC, constants.O_DSYNC, `${f.path} is open without O_DSYNC (flags ${f.flags.toString(8)})`);
  await wal.close();
});

test('readSegment reads a chunk at a time what parseSegment reads from the whole file: records across chunk boundaries, a torn record, zeros', async (t) => {
  const dir = tmp(t);
  // Sizes around the 1 MiB read chunk: records split by every boundary, one bigger than a chunk.
  let seed = 7;
  const rnd = (n: number): number => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) % n;
  const sizes = [1, 1 << 20, 3, (1 << 20) - 8, 9, 2.5 * (1 << 20), ...Array.from({ length: 300 }, () => 1 + rnd(40_000))];
  const records = sizes.map((n, i) => Buffer.alloc(n, i & 0xff));
  const data = encodeRecords(records);
  const cases: Array<[string, Buffer]> = [
    ['zero tail', Buffer.concat([data, Buffer.alloc(3 << 20)])],
    ['no tail (the data fills the file)', data],
    ['damaged in the big record', (() => { const b = Buffer.concat([data, Buffer.alloc(64)]); b[3 * (1 << 20)] = (b[3 * (1 << 20)] as number) ^ 1; return b; })()],
    ['torn in the last record', (() => { const b = Buffer.concat([data, Buffer.alloc(64)]); b.fill(0, data.length - 4000, data.length); return b; })()],
    ['a length past the end', Buffer.concat([data, Buffer.from([0xff, 0xff, 0xff, 0, 1, 2, 3, 4])])],
    ['never written', Buffer.alloc(2 << 20)],
    ['zero header, a byte further on', (() => { const b = Buffer.alloc(2 << 20); b[(1 << 20) + 5] = 1; return b; })()],
  ];
  for (const [name, bytes] of cases) {
    const path = join(dir, `${name.replace(/\W/g, '_')}.seg`);
    const fd = openSync(path, 'w');
    writeSync(fd, bytes);
    closeSync(fd);
    const want = parseSegment(bytes);
    const got: Buffer[] = [];
    const r = await readSegment(path, (p) => got.push(Buffer.from(p)));
    t.is(got.length, want.records.length, name);
    t.true(got.every((g, i) => g.equals(want.records[i] as Buffer)), name);
    t.is(r.torn, want.torn, name);
    t.is(r.corrupt, want.corrupt, name);
    t.is(r.end, want.end, name);
    t.is(r.empty, name === 'never written', name);
    t.is(r.corrupt !== null, name === 'damaged in the big record' || name === 'a length past the end', `${name}: ${r.corrupt}`);
    // (a stray byte behind a zero header, with no valid record: a torn first write that lost its header's sector)
    t.is(r.torn, name === 'torn in the last record' || name === 'zero header, a byte further on', name);
  }
});

test('WalFold folds record by record what foldWal folds from the list', (t) => {
  const e = (term: number, index: number): Entry => ({ term, index, type: 0, data: Buffer.from(`d${index}`), change: null }) as Entry;
  const payloads = [
    encodeHeader(new Map([[1, { term: 1, vote: 1, commit: 0 }]])),
    encodeBatch([{ shard: 1, hardState: null, entries: [e(1, 1), e(1, 2), e(1, 3)], snapshot: null }]),
    encodeBatch([{ shard: 1, hardState: { term: 2, vote: 2, commit: 2 }, entries: [e(2, 3), e(2, 4)], snapshot: null }, { shard: 2, hardState: null, entries: [e(1, 1)], snapshot: null }]),
    encodeBatch([{ shard: 2, hardState: null, entries: [], snapshot: 5 }]),
  ];
  const f = new WalFold();
  const seen: string[] = [];
  payloads.forEach((p, i) => f.add(p, (shard, max) => seen.push(`${i}:${shard}:${max}`)));
  const seenList: string[] = [];
  t.deepEqual(f.shards, foldWal(payloads, (i, shard, max) => seenList.push(`${i}:${shard}:${max}`)));
  t.deepEqual(seen, seenList);
  t.deepEqual(f.shards.get(1)?.entries.map((x) => [x.term, x.index]), [[1, 1], [1, 2], [2, 3], [2, 4]]);
});

test('starts that write nothing do not add segments: an empty segment followed by another is deleted at open', async (t) => {
  const dir = tmp(t);
  const first = await openWal(dir);
  await first.wal.append(rec('data'), new Map());
  await first.wal.close();
  const counts: number[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await openWal(dir);
    t.deepEqual(texts(r.records), ['data'], `start ${i}`);
    await r.wal.close();
    counts.push(segs(dir).length);
  }
  // The written segment, the empty current one and its spare: the same after every start.
  t.true(counts.every((c) => c === counts[0]) && (counts[0] as number) <= 3, `segments after each start: ${counts.join(', ')}`);
  // And appends after all those starts still replay.
  const r = await openWal(dir);
  await r.wal.append(rec('more'), new Map());
  await r.wal.close();
  const last = await openWal(dir);
  t.deepEqual(texts(last.records), ['data', 'more']);
  await last.wal.close();
});
