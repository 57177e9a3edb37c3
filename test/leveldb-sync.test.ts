/**
 * A synced LevelDB batch makes every earlier write durable too (node/db.ts writeBatch): LevelDB syncs
 * only its current log, so the memtable holding earlier unsynced batches is flushed to a (synced) table
 * first. Seen from the files: before, the unsynced writes sit in a log and no table; after, a table
 * holds them. Without the flush no table appears (the memtable is far from full).
 */
import test from 'ava';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDb, writeBatch } from '../node/db.ts';

test('a synced batch first flushes the unsynced writes before it to a table', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'leveldb-sync-'));
  const db = await openDb(dir);
  t.teardown(async () => {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const tables = (): string[] => readdirSync(dir).filter((f) => f.endsWith('.ldb'));
  const ops = Array.from({ length: 500 }, (_, i) => ({ type: 'put' as const, key: Buffer.from(`d-key-${i}`), value: Buffer.alloc(100, i) }));
  await writeBatch(db, ops, false);
  t.deepEqual(tables(), [], 'unsynced writes are in the log only');
  await writeBatch(db, [{ type: 'put', key: Buffer.from('r-meta'), value: Buffer.from('x') }], true);
  t.is(tables().length, 1, 'flushed to a table before the synced batch');
  t.deepEqual(await db.get(Buffer.from('d-key-7')), Buffer.alloc(100, 7));
  // An unsynced batch alone flushes nothing.
  await writeBatch(db, ops.slice(0, 10), false);
  t.is(tables().length, 1);
});
