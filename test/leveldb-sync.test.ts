/**
 * A synced LevelDB batch makes every earlier write durable too (node/db.ts writeBatch): LevelDB syncs
 * only its current log, so every log file (an old one still waiting for its memtable's flush included)
 * is synced first. A power cut cannot be staged here; these check that the step runs, on what.
 */
import test from 'ava';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { levelDbSync, openDb, syncLevelDbLogs, writeBatch } from '../node/db.ts';

test('syncLevelDbLogs syncs every .log file of the directory and skips one deleted meanwhile', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'leveldb-logs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, '000003.log'), 'a');
  writeFileSync(join(dir, '000005.log'), 'b');
  writeFileSync(join(dir, 'LOG'), 'info log');
  writeFileSync(join(dir, 'MANIFEST-000004'), 'm');
  symlinkSync(join(dir, 'gone'), join(dir, '000002.log'));
  mkdirSync(join(dir, 'sub'));
  t.deepEqual((await syncLevelDbLogs(dir)).sort(), ['000003.log', '000005.log']);
});

test('a synced batch syncs LevelDB\'s log files first; an unsynced one does not', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'leveldb-sync-'));
  const db = await openDb(dir);
  const calls: string[][] = [];
  const real = levelDbSync.logs;
  levelDbSync.logs = async (d) => {
    const synced = await real(d);
    calls.push(synced);
    return synced;
  };
  t.teardown(async () => {
    levelDbSync.logs = real;
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const ops = Array.from({ length: 100 }, (_, i) => ({ type: 'put' as const, key: Buffer.from(`d-key-${i}`), value: Buffer.alloc(100, i) }));
  await writeBatch(db, ops, false);
  t.is(calls.length, 0);
  await writeBatch(db, [{ type: 'put', key: Buffer.from('r-meta'), value: Buffer.from('x') }], true);
  t.is(calls.length, 1);
  t.true((calls[0] ?? []).length >= 1, 'at least the current log');
  t.deepEqual(await db.get(Buffer.from('d-key-7')), Buffer.alloc(100, 7));
});
