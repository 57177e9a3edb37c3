import test from 'ava';
import { judgeTargets, targetsMarkdown } from '../bench/issue-targets.ts';

const w = (name: string, workload: string, consistency: string, staleReadsTo: 'spread' | 'one' = 'spread') => ({ name, workload, consistency, staleReadsTo });

test('each target is judged on its own figures, at its bound', (t) => {
  const lines = judgeTargets([
    { workload: w('write', 'write', 'linearizable'), store: { opsPerSec: 2000, p99Ms: 30 }, etcd: { opsPerSec: 1000, p99Ms: 30 }, ceiling: { opsPerSec: 4001 } },
    { workload: w('read lin', 'read', 'linearizable'), store: { opsPerSec: 1999, p99Ms: 5 }, etcd: { opsPerSec: 1000, p99Ms: 9 } },
    { workload: w('read stale one node', 'read', 'stale', 'one'), store: { opsPerSec: 800, p99Ms: 5 }, ceiling: { opsPerSec: 1000 } },
    { workload: w('scan', 'scan', 'linearizable'), store: { opsPerSec: 10, p99Ms: 5 }, etcd: { opsPerSec: 1, p99Ms: 9 } },
  ]);
  t.deepEqual(lines.map((l) => [l.target.split(':')[0], l.met]), [['write', true], ['write', false], ['read lin', false], ['read stale one node', true]]);
  t.regex(lines[0]?.measured ?? '', /^2\.00×, p99 30\.0 vs 30\.0 ms$/);
  t.true((lines[3]?.target ?? '').includes('served by one replica'));
  // a p99 above etcd's fails the write target, whatever the ratio
  t.false(judgeTargets([{ workload: w('write', 'write', 'linearizable'), store: { opsPerSec: 5000, p99Ms: 31 }, etcd: { opsPerSec: 1000, p99Ms: 30 } }])[0]?.met);
  // no store figure, no etcd or ceiling: nothing judged, no table
  t.deepEqual(judgeTargets([{ workload: w('write', 'write', 'linearizable'), etcd: { opsPerSec: 1, p99Ms: 1 } }]), []);
  t.deepEqual(targetsMarkdown([]), []);
  t.is(targetsMarkdown(lines).length, 2 + lines.length + 1);
});
