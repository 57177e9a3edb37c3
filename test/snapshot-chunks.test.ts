import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { pino } from 'pino';
import { openDb, type Db } from '../node/db.ts';
import { NodeMetrics } from '../node/metrics.ts';
import { ChunkBuilder, eachPut } from '../node/snapshot-chunks.ts';
import { SnapshotReceiver, type ClearDefer, type ReceiveBacklog } from '../node/snapshots.ts';
import { dataKey, idemKey, shardStateRange } from '../shard/layout.ts';
import { toWireMessage } from '../shard/raft-codec.ts';
import { decodeDescriptor, encodeDescriptor } from '../shard/store.ts';
import type { Message } from '../raft/index.ts';

const rows = (shard: number, n: number): Array<[Uint8Array, Uint8Array]> => {
  const out: Array<[Uint8Array, Uint8Array]> = [];
  for (let i = 0; i < n; i++) out.push([dataKey(shard, 4, `t${i % 3}`, i % 5, Buffer.from(`k${i}`)), Buffer.alloc(i % 7, i)]);
  out.push([idemKey(shard, 4, 't0', 'idem-1'), Buffer.from('outcome')]);
  return out;
};

/** Every put of a chunk, copied (the views are only valid until the next call). */
const chunkPuts = (chunk: Uint8Array, shard: number, gen: number): Array<{ type: 'put'; key: Uint8Array; value: Uint8Array }> => {
  const out: Array<{ type: 'put'; key: Uint8Array; value: Uint8Array }> = [];
  eachPut(chunk, shard, gen, (key, value) => out.push({ type: 'put', key: key.slice(), value: value.slice() }));
  return out;
};

const pack = (rs: Array<[Uint8Array, Uint8Array]>, target = 1 << 20): Buffer[] => {
  const b = new ChunkBuilder(target);
  const out: Buffer[] = [];
  for (const [k, v] of rs) if (b.add(k, v)) out.push(b.take());
  if (b.count > 0) out.push(b.take());
  return out;
};

test('chunks round-trip every record, moved to the receiving generation', (t) => {
  const rs = rows(7, 500);
  const chunks = pack(rs, 1000);
  t.true(chunks.length > 5);
  const ops = chunks.flatMap((c) => chunkPuts(c, 7, 9));
  t.is(ops.length, rs.length);
  ops.forEach((op, i) => {
    const [k, v] = rs[i] as [Uint8Array, Uint8Array];
    t.is(op.type, 'put');
    const want = Buffer.from(k);
    want.writeUInt32BE(9, 5);
    t.deepEqual(Buffer.from(op.key), want);
    t.deepEqual(Buffer.from(op.value), Buffer.from(v));
  });
  // The sender's buffer is not touched (the receiver rewrites a copy).
  t.is(Buffer.from(chunks[0] as Buffer).readUInt32BE(8 + 5), 4);
});

test('a chunk with a record of another shard, a short key, bad lengths or a stray byte is rejected', (t) => {
  const [good] = pack(rows(7, 3));
  t.notThrows(() => chunkPuts(good as Buffer, 7, 1));
  t.throws(() => chunkPuts(good as Buffer, 8, 1), { message: /outside the shard/ });
  const [foreign] = pack([[dataKey(7, 0, 't', 0, Buffer.from('a')), Buffer.from('v')], [dataKey(8, 0, 't', 0, Buffer.from('b')), Buffer.from('v')]]);
  t.throws(() => chunkPuts(foreign as Buffer, 7, 1), { message: /outside the shard/ });
  const raftKey = Buffer.from([0x72, 0, 0, 0, 7, 0x68, 0, 0, 0, 0]);
  t.throws(() => chunkPuts(pack([[raftKey, Buffer.from('x')]])[0] as Buffer, 7, 1), { message: /outside the shard/ });
  t.throws(() => chunkPuts(pack([[Buffer.from([0x64, 0, 0, 0, 7]), Buffer.from('x')]])[0] as Buffer, 7, 1), { message: /bad snapshot record/ });
  const long = Buffer.from(good as Buffer);
  long.writeUInt32BE(1 << 30, 4);
  t.throws(() => chunkPuts(long, 7, 1), { message: /bad snapshot record/ });
  t.throws(() => chunkPuts(Buffer.concat([good as Buffer, Buffer.from([1, 2, 3])]), 7, 1), { message: /bad snapshot record/ });
  t.deepEqual(chunkPuts(new Uint8Array(0), 7, 1), []);
});

/** A receiver for shard 7 over a fresh LevelDB; the Store's live generation is `live.gen` (4 unless a test moves it). */
async function withReceiver(t: { teardown(f: () => void): void }, limits?: ReceiveBacklog, clearDefer?: ClearDefer, live = { gen: 4 }): Promise<{ db: Db; rx: SnapshotReceiver; handed: Array<[number, Message]> }> {
  const dir = mkdtempSync(join(tmpdir(), 'kv-snaptest-'));
  const db = await openDb(dir);
  t.teardown(() => { void db.close().finally(() => rmSync(dir, { recursive: true, force: true })); });
  const handed: Array<[number, Message]> = [];
  const store = { has: (s: number) => s === 7, generation: () => live.gen, receive: (items: Array<[number, Message]>) => { handed.push(...items); } };
  const rx = new SnapshotReceiver(db, store as never, pino({ level: 'silent' }), new NodeMetrics(2), () => {}, limits, clearDefer);
  return { db, rx, handed };
}

async function stateKeys(db: Db, shard: number, gen: number): Promise<number> {
  let n = 0;
  for (const kind of ['d', 'i'] as const) {
    const [gte, lt] = shardStateRange(shard, gen, kind);
    n += (await db.keys({ gte, lt }).all()).length;
  }
  return n;
}

const snapMsg = (): Message => ({
  type: 9, from: 1, to: 2, term: 3, index: 0, logTerm: 0, entries: [], commit: 0, reject: false, rejectHint: 0, context: 0,
  snapshot: { meta: { index: 50, term: 3, conf: { voters: [1, 2, 3], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false } }, data: encodeDescriptor({ gen: 4, logTime: 11 }) },
} as unknown as Message);

test('the receiver stages a stream in the next generation and hands the snapshot over only after its last chunk', async (t) => {
  const { db, rx, handed } = await withReceiver(t);
  const rs = rows(7, 300);
  for (const c of pack(rs, 2000)) rx.onFrame(1, ['sc', 7, 's1', 'd', c]);
  await rx.idle();
  t.is(handed.length, 0, 'no Snap before the done frame');
  t.is(await stateKeys(db, 7, 5), rs.length);
  rx.onFrame(1, ['sd', 7, 's1', toWireMessage(snapMsg())]);
  await rx.idle();
  t.is(handed.length, 1);
  const m = handed[0]?.[1];
  t.is(decodeDescriptor(m?.snapshot?.data as Uint8Array).gen, 5);
});

test('a garbage chunk is refused before anything of it is written, and the stream never goes live', async (t) => {
  const { db, rx, handed } = await withReceiver(t);
  const [good] = pack(rows(7, 10));
  const bad = Buffer.concat([good as Buffer, pack([[dataKey(9, 0, 't', 0, Buffer.from('x')), Buffer.from('y')]])[0] as Buffer]);
  t.throws(() => rx.onFrame(1, ['sc', 7, 's2', 'd', bad]), { message: /outside the shard/ });
  t.throws(() => rx.onFrame(1, ['sc', 7, 's2', 'd', [[Buffer.from('k'), Buffer.from('v')]]] as never), { message: /byte string/ });
  await rx.idle();
  t.is(await stateKeys(db, 7, 5), 0);
  t.is(handed.length, 0);
});

test('the receiver bounds its write backlog: past the high mark it asks the transport to hold the sender until the backlog is down to the low mark', async (t) => {
  const limits = { highBytes: 64 << 10, lowBytes: 16 << 10 };
  const { db, rx, handed } = await withReceiver(t, limits);
  const rs: Array<[Uint8Array, Uint8Array]> = [];
  for (let i = 0; i < 2000; i++) rs.push([dataKey(7, 4, 't', 0, Buffer.from(`k${i}`)), Buffer.alloc(200, i)]);
  const chunks = pack(rs, 8 << 10);
  const biggest = Math.max(...chunks.map((c) => c.length));
  t.true(chunks.length * biggest > 4 * limits.highBytes, 'the stream is several times the high mark');
  let holds = 0;
  // As the transport does: a returned promise means read nothing more until it settles.
  for (const c of chunks) {
    const hold = rx.onFrame(1, ['sc', 7, 's3', 'd', c]);
    t.true(rx.backlogBytes() <= limits.highBytes + biggest, `backlog ${rx.backlogBytes()} bounded`);
    if (hold !== undefined) {
      holds++;
      await hold;
      t.true(rx.backlogBytes() <= limits.lowBytes, `released at ${rx.backlogBytes()} bytes, not above the low mark`);
    }
  }
  t.true(holds > 0, 'the sender was held at least once');
  t.true(rx.backlogPeak <= limits.highBytes + biggest, `peak backlog ${rx.backlogPeak}`);
  rx.onFrame(1, ['sd', 7, 's3', toWireMessage(snapMsg())]);
  await rx.idle();
  t.is(rx.backlogBytes(), 0);
  t.is(await stateKeys(db, 7, 5), rs.length, 'every record written');
  t.is(handed.length, 1);
});

/** `n` records of shard 7 in generation `gen`. */
async function fillGeneration(db: Db, gen: number, n: number): Promise<void> {
  const ops: Array<{ type: 'put'; key: Uint8Array; value: Uint8Array }> = [];
  for (let i = 0; i < n; i++) ops.push({ type: 'put', key: dataKey(7, gen, 't', 0, Buffer.from(`g${gen}-${i}`)), value: Buffer.from('v') });
  ops.push({ type: 'put', key: idemKey(7, gen, 't', `idem-${gen}`), value: Buffer.from('o') });
  await db.batch(ops);
}

const installedAt = (gen: number): Message['snapshot'] => ({ ...(snapMsg().snapshot as NonNullable<Message['snapshot']>), data: encodeDescriptor({ gen, logTime: 11 }) });

async function until(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return cond();
}

test('an install clears every generation below the new live one, and keeps the live one', async (t) => {
  const { db, rx } = await withReceiver(t);
  for (const g of [2, 3, 4]) await fillGeneration(db, g, 50);
  await fillGeneration(db, 1, 4_500); // more than one slice of the clear
  rx.installed(7, installedAt(4) as never);
  await rx.idle();
  t.is(await stateKeys(db, 7, 1), 0);
  t.is(await stateKeys(db, 7, 2), 0);
  t.is(await stateKeys(db, 7, 3), 0);
  t.is(await stateKeys(db, 7, 4), 51, 'the live generation is untouched');
});

test('clearing a replaced generation waits while a stream is coming in, and runs once streams have been quiet a while', async (t) => {
  const quietMs = 300;
  const { db, rx } = await withReceiver(t, undefined, { quietMs, maxMs: 60_000 });
  await fillGeneration(db, 3, 50);
  for (const c of pack(rows(7, 20))) rx.onFrame(1, ['sc', 7, 's9', 'd', c]); // staged in generation 5
  rx.installed(7, installedAt(4) as never);
  t.is(rx.pendingClearCount(), 1, 'deferred while the stream is open');
  // Once the stream's chunks are written, a clear that had not been deferred would have run beside them.
  t.true(await until(async () => (await stateKeys(db, 7, 5)) === 21, 5000), 'the chunks were written');
  t.is(rx.pendingClearCount(), 1, 'still deferred');
  t.is(await stateKeys(db, 7, 3), 51);
  const ended = Date.now();
  rx.onFrame(1, ['sd', 7, 's9', toWireMessage(snapMsg())]);
  // Not idle(): that would force the clear. The stream's end must start it, a quiet period later.
  t.true(await until(async () => (await stateKeys(db, 7, 3)) === 0, 10_000), 'cleared after the stream ended');
  t.true(Date.now() - ended >= quietMs - 50, `cleared ${Date.now() - ended} ms after the stream ended, before the quiet period`);
  t.is(rx.pendingClearCount(), 0);
  t.is(await stateKeys(db, 7, 5), 21, 'the stream staged above it is untouched');
});

test('a stream that never ends delays clearing only up to the bound', async (t) => {
  const { db, rx } = await withReceiver(t, undefined, { quietMs: 60_000, maxMs: 300 });
  await fillGeneration(db, 3, 50);
  for (const c of pack(rows(7, 20))) rx.onFrame(1, ['sc', 7, 's10', 'd', c]); // its sender goes away: no done frame
  const t0 = Date.now();
  rx.installed(7, installedAt(4) as never);
  t.true(await until(async () => (await stateKeys(db, 7, 3)) === 0, 5000), 'cleared without the stream ending');
  t.true(Date.now() - t0 >= 250, `cleared after ${Date.now() - t0} ms, not at once`);
});

test('the start sweep clears what a crash left below each live generation, after a quiet period (streams often follow a start)', async (t) => {
  // Long enough that filling two generations on a loaded machine does not use it up (300 ms did, once).
  const quietMs = 1_500;
  const started = Date.now();
  const { db, rx } = await withReceiver(t, undefined, { quietMs, maxMs: 60_000 });
  await fillGeneration(db, 2, 30);
  await fillGeneration(db, 4, 30);
  rx.sweep([{ shard: 7, gen: 4 }]);
  t.is(rx.pendingClearCount(), 1, 'not at once');
  t.true(await until(async () => (await stateKeys(db, 7, 2)) === 0, 10_000), 'swept');
  t.true(Date.now() - started >= quietMs - 50, `swept ${Date.now() - started} ms after the start`);
  t.is(await stateKeys(db, 7, 4), 31);
});

/** Rows of shard 7 whose keys end in `${tag}${i}`. */
const tagged = (tag: string, n: number, valueBytes: number): Array<[Uint8Array, Uint8Array]> =>
  Array.from({ length: n }, (_, i) => [dataKey(7, 4, 't', 0, Buffer.from(`${tag}${i}`)), Buffer.alloc(valueBytes, 1)]);

async function keysOf(db: Db, gen: number): Promise<string[]> {
  const [gte, lt] = shardStateRange(7, gen, 'd');
  // 'd', shard, gen (4 bytes each), tenant 't', 0, bucket (8 bytes), then the key.
  return (await db.keys({ gte, lt }).all()).map((k) => Buffer.from(k.subarray(19)).toString()).sort();
}

const genOf = (m: Message | undefined): number => decodeDescriptor(m?.snapshot?.data as Uint8Array).gen;

test('streams of one shard from two senders, interleaved, each stage whole in a generation of their own', async (t) => {
  const { db, rx, handed } = await withReceiver(t);
  const a = pack(tagged('a', 400, 50), 2000);
  const b = pack(tagged('b', 300, 50), 2000);
  t.true(a.length >= 3 && b.length >= 3);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== undefined) rx.onFrame(1, ['sc', 7, 'A', 'd', a[i] as Buffer]);
    if (b[i] !== undefined) rx.onFrame(3, ['sc', 7, 'B', 'd', b[i] as Buffer]);
  }
  rx.onFrame(1, ['sd', 7, 'A', toWireMessage(snapMsg())]);
  rx.onFrame(3, ['sd', 7, 'B', toWireMessage({ ...snapMsg(), from: 3 })]);
  await rx.idle();
  t.is(handed.length, 2);
  const byFrom = new Map(handed.map(([, m]) => [m.from, genOf(m)]));
  const [ga, gb] = [byFrom.get(1) ?? -1, byFrom.get(3) ?? -1];
  t.not(ga, gb);
  t.deepEqual(await keysOf(db, ga), tagged('a', 400, 0).map((_, i) => `a${i}`).sort());
  t.deepEqual(await keysOf(db, gb), tagged('b', 300, 0).map((_, i) => `b${i}`).sort());
});

test('a stream that starts while another\'s is still being written and handed over does not reuse its generation', async (t) => {
  const live = { gen: 4 };
  const { db, rx, handed } = await withReceiver(t, undefined, undefined, live);
  for (const c of pack(tagged('a', 3000, 100), 16 << 10)) rx.onFrame(1, ['sc', 7, 'A', 'd', c]);
  rx.onFrame(1, ['sd', 7, 'A', toWireMessage(snapMsg())]);
  // Another leader's stream comes while A's writes are still queued; A is then handed over and goes live.
  const b = pack(tagged('b', 10, 10), 100);
  rx.onFrame(3, ['sc', 7, 'B', 'd', b[0] as Buffer]);
  while (handed.length === 0) await new Promise((r) => setTimeout(r, 5));
  live.gen = genOf(handed[0]?.[1]);
  for (const c of b.slice(1)) rx.onFrame(3, ['sc', 7, 'B', 'd', c]);
  await rx.idle();
  t.is((await keysOf(db, live.gen)).length, 3000, 'the live generation holds all of A, nothing of B');
});

test('a sender\'s new stream gives up its unfinished one: that one\'s late frames are dropped and its generation cleared', async (t) => {
  const { db, rx, handed } = await withReceiver(t);
  const old = pack(tagged('o', 200, 50), 2000);
  rx.onFrame(1, ['sc', 7, 'old', 'd', old[0] as Buffer]);
  await rx.idle();
  t.true((await keysOf(db, 5)).length > 0);
  for (const c of pack(tagged('n', 100, 50), 2000)) rx.onFrame(1, ['sc', 7, 'new', 'd', c]);
  rx.onFrame(1, ['sc', 7, 'old', 'd', old[1] as Buffer]);
  rx.onFrame(1, ['sd', 7, 'old', toWireMessage(snapMsg())]);
  rx.onFrame(1, ['sd', 7, 'new', toWireMessage(snapMsg())]);
  await rx.idle();
  t.is(handed.length, 1, 'only the new stream is handed over');
  t.is(genOf(handed[0]?.[1]), 6);
  t.deepEqual(await keysOf(db, 5), [], 'the given-up generation is cleared');
  t.is((await keysOf(db, 6)).length, 100);
});

/** Frames of one stream as this release sends them: numbered chunks, and the count in the done frame. */
const numbered = (chunks: Buffer[]): Array<['sc', number, string, 'd', Buffer, number]> => chunks.map((c, i) => ['sc', 7, '', 'd', c, i]);
const sc = (id: string, body: Buffer, seq: number) => ['sc', 7, id, 'd', body, seq] as ['sc', number, string, 'd', Buffer, number];
const sd = (id: string, from: number, chunks: number) => ['sd', 7, id, toWireMessage({ ...snapMsg(), from }), chunks] as ['sd', number, string, unknown, number];

test('numbered chunks: a stream with a chunk missing, or a done frame that counts other chunks than came, is given up, never handed over', async (t) => {
  const { db, rx, handed } = await withReceiver(t);
  const a = pack(tagged('a', 300, 50), 2000);
  t.true(numbered(a).length >= 3);
  rx.onFrame(1, sc('gap', a[0] as Buffer, 0));
  rx.onFrame(1, sc('gap', a[2] as Buffer, 2));
  rx.onFrame(1, sd('gap', 1, a.length));
  rx.onFrame(3, sc('short', a[0] as Buffer, 0));
  rx.onFrame(3, sd('short', 3, a.length));
  await rx.idle();
  t.is(handed.length, 0);
  t.deepEqual(await keysOf(db, 5), []);
  t.deepEqual(await keysOf(db, 6), []);
  // A whole numbered stream goes through.
  a.forEach((c, i) => rx.onFrame(1, sc('whole', c, i)));
  rx.onFrame(1, sd('whole', 1, a.length));
  await rx.idle();
  t.is(handed.length, 1);
  t.is((await keysOf(db, genOf(handed[0]?.[1]))).length, 300);
});

test('numbered chunks: a stream given up and forgotten here is refused when its sender goes on (its first chunk is not chunk 0)', async (t) => {
  const { db, rx, handed } = await withReceiver(t);
  const s = pack(tagged('s', 400, 50), 2000);
  rx.onFrame(1, sc('S', s[0] as Buffer, 0));
  // Three other senders' streams: with S that makes four unfinished, so S, the oldest, is given up.
  for (const from of [3, 4, 5]) rx.onFrame(from, sc(`X${from}`, pack(tagged(`x${from}-`, 1, 1))[0] as Buffer, 0));
  // 1,100 more give-ups on the node: S drops out of what the receiver remembers of given-up streams.
  for (let i = 1; i <= 1100; i++) rx.onFrame(3, sc(`X3-${i}`, pack(tagged('x', 1, 1))[0] as Buffer, 0));
  await rx.idle();
  // Node 1 does not know: it goes on with S.
  s.slice(1).forEach((c, i) => rx.onFrame(1, sc('S', c, i + 1)));
  rx.onFrame(1, sd('S', 1, s.length));
  await rx.idle();
  t.is(handed.filter(([, m]) => m.from === 1).length, 0, 'S, missing its first chunk here, is not handed over');
  for (let g = 5; g < 5 + 1110; g += 1) {
    const k = await keysOf(db, g);
    if (k.some((x) => x.startsWith('s'))) t.fail(`generation ${g} holds records of S`);
  }
});

test('only unfinished streams count toward the limit: another sender\'s finished streams still being written do not push the leader\'s out', async (t) => {
  const { rx, handed } = await withReceiver(t);
  const s = pack(tagged('s', 100, 50), 2000);
  rx.onFrame(1, sc('S', s[0] as Buffer, 0));
  for (const id of ['D1', 'D2']) {
    const d = pack(tagged(id, 3000, 100), 16 << 10);
    d.forEach((c, i) => rx.onFrame(3, sc(id, c, i)));
    rx.onFrame(3, sd(id, 3, d.length));
  }
  rx.onFrame(3, sc('D3', pack(tagged('d3', 1, 1))[0] as Buffer, 0));
  s.slice(1).forEach((c, i) => rx.onFrame(1, sc('S', c, i + 1)));
  rx.onFrame(1, sd('S', 1, s.length));
  await rx.idle();
  t.is(handed.filter(([, m]) => m.from === 1).length, 1, 'the leader\'s stream is handed over');
});

test('a chunk refused (a bad record) leaves a gap: the stream goes no further, even if its sender goes on after a reconnect', async (t) => {
  const { db, rx, handed } = await withReceiver(t);
  const a = pack(tagged('a', 300, 50), 2000);
  const bad = Buffer.concat([a[1] as Buffer, pack([[dataKey(9, 0, 't', 0, Buffer.from('x')), Buffer.from('y')]])[0] as Buffer]);
  rx.onFrame(1, sc('s', a[0] as Buffer, 0));
  t.throws(() => rx.onFrame(1, sc('s', bad, 1)), { message: /outside the shard/ });
  for (let i = 2; i < a.length; i++) rx.onFrame(1, sc('s', a[i] as Buffer, i));
  rx.onFrame(1, sd('s', 1, a.length));
  await rx.idle();
  t.is(handed.length, 0);
  t.deepEqual(await keysOf(db, 5), [], 'its generation is cleared');
});

test('a frame after its stream\'s done frame is refused and changes nothing of what is handed over', async (t) => {
  const { db, rx, handed } = await withReceiver(t);
  const a = pack(tagged('a', 20, 50), 2000);
  rx.onFrame(1, sc('d', a[0] as Buffer, 0));
  rx.onFrame(1, sd('d', 1, 1));
  t.throws(() => rx.onFrame(1, sc('d', pack(tagged('extra', 5, 10))[0] as Buffer, 1)), { message: /after its stream's done frame/ });
  t.throws(() => rx.onFrame(1, sc('d', a[0] as Buffer, 0)), { message: /after its stream's done frame/ });
  await rx.idle();
  t.is(handed.length, 1);
  t.is((await keysOf(db, genOf(handed[0]?.[1]))).length, 20);
});

test('a done frame that cannot be read leaves no stream behind: the sender\'s next one gives it up', async (t) => {
  const { rx, handed } = await withReceiver(t);
  const a = pack(tagged('a', 10, 50), 2000);
  rx.onFrame(1, sc('z', a[0] as Buffer, 0));
  const unreadable = { ...snapMsg(), snapshot: { ...(snapMsg().snapshot as NonNullable<Message['snapshot']>), data: new Uint8Array([0xc1]) } };
  t.throws(() => rx.onFrame(1, ['sd', 7, 'z', toWireMessage(unreadable), 1]));
  rx.onFrame(1, sc('z2', a[0] as Buffer, 0));
  rx.onFrame(1, sd('z2', 1, 1));
  await rx.idle();
  t.is(handed.length, 1);
  t.is(genOf(handed[0]?.[1]), 6);
  t.is((rx as unknown as { incoming: Map<number, unknown> }).incoming.size, 0);
});

test('a finished stream a newer install superseded is not handed over, and its generation is cleared', async (t) => {
  const live = { gen: 4 };
  const { db, rx, handed } = await withReceiver(t, undefined, { quietMs: 50, maxMs: 100 }, live);
  const a = pack(tagged('a', 50, 50), 2000);
  a.forEach((c, i) => rx.onFrame(1, sc('old', c, i)));
  await rx.idle();
  // Another sender's stream went live at generation 9, and the clear below it ran, before this one's last chunks came.
  live.gen = 9;
  rx.installed(7, { meta: (snapMsg().snapshot as NonNullable<Message['snapshot']>).meta, data: encodeDescriptor({ gen: 9, logTime: 0 }) });
  await rx.idle();
  const b = pack(tagged('b', 50, 50), 2000);
  b.forEach((c, i) => rx.onFrame(1, sc('old', c, a.length + i)));
  rx.onFrame(1, sd('old', 1, a.length + b.length));
  await rx.idle();
  t.is(handed.length, 0);
  t.deepEqual(await keysOf(db, 5), []);
});

test('a LevelDB write that fails on a staged chunk fails its stream (not handed over), not the process (no unhandled rejection)', async (t) => {
  const { db, rx, handed } = await withReceiver(t);
  const hook = db as unknown as { _chainedBatch: () => { _write: () => Promise<void> } };
  const orig = hook._chainedBatch.bind(db);
  hook._chainedBatch = () => {
    const b = orig();
    b._write = async () => { throw new Error('IO error: disk full'); };
    return b;
  };
  const unhandled: unknown[] = [];
  const on = (e: unknown): void => { unhandled.push(e); };
  process.on('unhandledRejection', on);
  t.teardown(() => { process.off('unhandledRejection', on); });
  const told: string[] = [];
  rx.onRefuse = (to, shard, id, why) => told.push(`${to}/${shard}/${id}: ${why}`);
  rx.onFrame(1, sc('S', pack(tagged('s', 3, 10))[0] as Buffer, 0));
  // Its write fails before the next frame comes: wait for it to settle (the backlog is then empty).
  for (let i = 0; rx.backlogBytes() > 0 && i < 1000; i++) await new Promise((r) => setTimeout(r, 5));
  t.is(rx.backlogBytes(), 0);
  await new Promise((r) => setImmediate(r));
  t.deepEqual(told, ['1/7/S: writing it failed: IO error: disk full'], 'given up at the failed write, and its sender told (it stops)');
  rx.onFrame(1, sd('S', 1, 1));
  await rx.idle();
  t.is(handed.length, 0);
  t.deepEqual(unhandled.map((e) => (e as Error).message), []);
});

test('the sender of a stream given up or refused here is told (it streams again at once), except when it started another itself', async (t) => {
  const { rx, handed } = await withReceiver(t);
  const told: string[] = [];
  rx.onRefuse = (to, shard, id, why) => told.push(`${to}/${shard}/${id}: ${why}`);
  const a = pack(tagged('a', 300, 50), 2000);
  t.true(a.length >= 3);
  // a chunk lost on the way
  rx.onFrame(1, sc('gap', a[0] as Buffer, 0));
  rx.onFrame(1, sc('gap', a[2] as Buffer, 2));
  // a done frame counting chunks that never came
  rx.onFrame(3, sc('short', a[0] as Buffer, 0));
  rx.onFrame(3, sd('short', 3, a.length));
  // a stream whose first chunk never came here
  rx.onFrame(4, sc('late', a[1] as Buffer, 1));
  // a sender that starts another: its own choice, nothing to tell
  rx.onFrame(5, sc('first', a[0] as Buffer, 0));
  rx.onFrame(5, sc('second', a[0] as Buffer, 0));
  // too many at once: with 'second' unfinished, three more senders push the oldest out
  for (const from of [6, 8, 9]) rx.onFrame(from, sc(`x${from}`, a[0] as Buffer, 0));
  await rx.idle();
  t.deepEqual(told, [
    '1/7/gap: chunk 2 came where 1 was due',
    `3/7/short: it sent ${a.length} chunks, 1 came`,
    '4/7/late: its first chunk never came',
    '5/7/second: too many streams of the shard at once',
  ]);
  // late frames of a stream given up are dropped, and not told again
  rx.onFrame(1, sc('gap', a[3] as Buffer, 3));
  rx.onFrame(1, sd('gap', 1, a.length));
  await rx.idle();
  t.is(told.length, 4);
  t.is(handed.length, 0);
});

test('an unfinished stream that sent nothing for idleGiveUpMs is given up (its sender told) and what it wrote is cleared; a stream still sending is kept', async (t) => {
  const { db, rx, handed } = await withReceiver(t);
  t.teardown(() => rx.close());
  const told: string[] = [];
  rx.onRefuse = (to, shard, id, why) => told.push(`${to}/${shard}/${id}: ${why}`);
  rx.idleGiveUpMs = 60_000;
  const a = pack(tagged('a', 300, 50), 2000);
  rx.onFrame(1, sc('dead', a[0] as Buffer, 0));
  const tDead = performance.now();
  rx.onFrame(3, sc('live', a[0] as Buffer, 0));
  await rx.idle();
  t.true((await keysOf(db, 5)).length > 0, 'the dead stream wrote its first chunk');
  rx.giveUpIdle(tDead + 30_000);
  t.deepEqual(told, [], 'not idle long enough');
  // The live stream's next frame comes at least 20 ms after the dead one's last (timestamps in ms).
  while (performance.now() < tDead + 20) await new Promise((r) => setTimeout(r, 5));
  const tLive = performance.now();
  rx.onFrame(3, sc('live', a[1] as Buffer, 1));
  // 59,990 ms after the live stream's last frame: over 60 s after the dead one's
  rx.giveUpIdle(tLive + 59_990);
  t.is(told.length, 1);
  t.regex(told[0] as string, /^1\/7\/dead: no frame for 60 s$/);
  await rx.idle();
  t.deepEqual(await keysOf(db, 5), [], 'what it wrote is cleared');
  // the live stream goes on and is handed over
  a.slice(2).forEach((c, i) => rx.onFrame(3, sc('live', c, i + 2)));
  rx.onFrame(3, sd('live', 3, a.length));
  await rx.idle();
  t.is(handed.length, 1);
  t.is(handed[0]?.[1].from, 3);
});
