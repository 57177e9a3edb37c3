/**
 * Loading a replica from LevelDB (state, snapshot meta) and the WAL (log,
 * hard state): entries at or below the snapshot are skipped, an install whose
 * LevelDB batch never landed is undone, commit is clamped to the log, and an
 * earlier-format data directory (log in LevelDB) is read for import and then
 * dropped.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Entry, HardState, Snapshot } from '../raft/index.ts';
import { dropLegacyLog, loadReplica, openDb, readLegacyLog, writeBatch, type Db } from '../node/db.ts';
import { encodeBatch, encodeHeader, foldWal } from '../node/wal-codec.ts';
import { pack } from '../shard/codec.ts';
import { appliedKey, hardStateKey, logKey, logRange, snapMetaKey } from '../shard/layout.ts';
import { encodeEntry, encodeHardState, encodeSnapshot } from '../shard/raft-codec.ts';
import { encodeDescriptor } from '../shard/store.ts';

const e = (term: number, index: number): Entry => ({ term, index, type: 0, data: new Uint8Array([index & 0xff]), change: null });
const hs = (term: number, vote: number, commit: number): HardState => ({ term, vote, commit });
const snap = (index: number, term: number): Snapshot => ({ meta: { index, term, conf: { voters: [1, 2, 3], learners: [] } }, data: encodeDescriptor({ gen: 1, logTime: 0 }) });

async function db(t: import('ava').ExecutionContext): Promise<Db> {
  const dir = mkdtempSync(join(tmpdir(), 'wal-load-'));
  const d = await openDb(dir);
  t.teardown(async () => {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return d;
}

test('load: entries at or below the snapshot are skipped; commit is clamped to the log', async (t) => {
  const d = await db(t);
  await writeBatch(d, [{ type: 'put', key: snapMetaKey(1), value: encodeSnapshot(snap(3, 1)) }, { type: 'put', key: appliedKey(1), value: pack([4, 0]) }], true);
  const w = foldWal([encodeBatch([{ shard: 1, hardState: hs(2, 1, 9), entries: [e(1, 1), e(1, 2), e(1, 3), e(2, 4), e(2, 5)], snapshot: null }])]);
  const b = await loadReplica(d, 1, [1, 2, 3], w.get(1));
  t.deepEqual(b.persisted?.entries.map((x) => x.index), [4, 5]);
  t.deepEqual(b.persisted?.hardState, hs(2, 1, 5));
  t.is(b.applied, 4);
  t.is(b.persistedLast, 5);
});

test('load: an install whose LevelDB batch never landed is undone (its marker\'s dropped entries come back)', async (t) => {
  const d = await db(t);
  const recs = [
    encodeBatch([{ shard: 1, hardState: hs(1, 1, 0), entries: [e(1, 1), e(1, 2), e(1, 3)], snapshot: null }]),
    encodeBatch([{ shard: 1, hardState: null, entries: [], snapshot: 10 }]),
  ];
  const notLanded = await loadReplica(d, 1, [1, 2, 3], foldWal(recs).get(1));
  t.deepEqual(notLanded.persisted?.entries.map((x) => x.index), [1, 2, 3]);
  t.is(notLanded.persisted?.snapshot, null);
  await writeBatch(d, [{ type: 'put', key: snapMetaKey(1), value: encodeSnapshot(snap(10, 2)) }, { type: 'put', key: appliedKey(1), value: pack([10, 0]) }], true);
  const landed = await loadReplica(d, 1, [1, 2, 3], foldWal([...recs, encodeBatch([{ shard: 1, hardState: null, entries: [e(2, 11)], snapshot: null }])]).get(1));
  t.deepEqual(landed.persisted?.entries.map((x) => x.index), [11]);
  t.is(landed.persisted?.snapshot?.meta.index, 10);
  t.is(landed.applied, 10);
});

test('load: applied beyond the WAL is refused (synced WAL data lost)', async (t) => {
  const d = await db(t);
  await writeBatch(d, [{ type: 'put', key: appliedKey(1), value: pack([5, 0]) }], true);
  const w = foldWal([encodeBatch([{ shard: 1, hardState: hs(1, 1, 3), entries: [e(1, 1), e(1, 2), e(1, 3)], snapshot: null }])]);
  await t.throwsAsync(loadReplica(d, 1, [1, 2, 3], w.get(1)), { message: /beyond the last entry/ });
});

test('earlier format: the log and hard state in LevelDB are read for import, then dropped', async (t) => {
  const d = await db(t);
  await writeBatch(d, [
    { type: 'put', key: snapMetaKey(1), value: encodeSnapshot(snap(1, 1)) },
    { type: 'put', key: hardStateKey(1), value: encodeHardState(hs(3, 2, 2)) },
    ...[1, 2, 3].map((i) => ({ type: 'put' as const, key: logKey(1, i), value: encodeEntry(e(3, i)) })),
  ], true);
  t.deepEqual(await readLegacyLog(d, 2), []);
  const items = await readLegacyLog(d, 1);
  t.is(items.length, 1);
  const b = await loadReplica(d, 1, [1, 2, 3], foldWal([encodeBatch(items)]).get(1));
  t.deepEqual(b.persisted?.entries.map((x) => x.index), [2, 3]);
  t.deepEqual(b.persisted?.hardState, hs(3, 2, 2));
  await dropLegacyLog(d, 1);
  t.deepEqual(await readLegacyLog(d, 1), []);
  const [lo, hi] = logRange(1);
  t.is((await d.keys({ gte: lo, lt: hi }).all()).length, 0);
  t.is(await d.get(hardStateKey(1)), undefined);
});

test('a recovery index (HardState.recovered) round-trips through batches and headers; records without one load without one', async (t) => {
  const d = await db(t);
  const withIt: HardState = { term: 3, vote: 0, commit: 2, recovered: 3 };
  const fromBatch = foldWal([encodeBatch([{ shard: 1, hardState: withIt, entries: [e(3, 1), e(3, 2), e(3, 3)], snapshot: null }])]);
  t.deepEqual(fromBatch.get(1)?.hardState, withIt);
  t.deepEqual((await loadReplica(d, 1, [1, 2, 3], fromBatch.get(1))).persisted?.hardState, withIt);
  const fromHeader = foldWal([encodeHeader(new Map([[1, withIt], [2, hs(4, 2, 0)]]))]);
  t.deepEqual(fromHeader.get(1)?.hardState, withIt);
  t.deepEqual(fromHeader.get(2)?.hardState, hs(4, 2, 0));
  t.false('recovered' in (fromHeader.get(2)?.hardState ?? {}));
  // An earlier release's records: three numbers.
  const old = foldWal([pack([0, [[1, 4, 2, 0]]]), pack([1, [[1, [5, 1, 0], [], null]]])]);
  t.deepEqual(old.get(1)?.hardState, hs(5, 1, 0));
  t.throws(() => foldWal([pack([1, [[1, [5, 1, 0, 'x'], [], null]]])]), { message: /recovered index/ });
});
