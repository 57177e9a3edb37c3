import test from 'ava';
import { SnapshotLedger } from '../node/snapshot-ledger.ts';

test('one stream per shard and follower: none while one runs or settles; a failed one is retried at once', (t) => {
  let now = 0;
  const l = new SnapshotLedger(1000, () => now);
  t.true(l.mayStart(1, 2));
  t.false(l.holdsCompaction(1));
  l.started(1, 2, 50);
  t.false(l.mayStart(1, 2), 'running');
  t.true(l.mayStart(1, 3), 'another follower');
  t.true(l.mayStart(2, 2), 'another shard');
  t.true(l.holdsCompaction(1));
  t.false(l.holdsCompaction(2));
  now = 5000;
  t.false(l.mayStart(1, 2), 'still running, however long');
  l.finished(1, 2, true);
  now = 5999;
  t.false(l.mayStart(1, 2), 'settling');
  t.true(l.holdsCompaction(1));
  now = 6000;
  t.true(l.mayStart(1, 2), 'settled: stream again if the core still asks');
  t.false(l.holdsCompaction(1));
  t.is(l.size, 0);
  l.started(1, 2, 60);
  l.finished(1, 2, false);
  t.true(l.mayStart(1, 2), 'failed: forgotten at once');
  t.false(l.holdsCompaction(1));
});
