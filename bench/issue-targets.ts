/**
 * The store's speed targets (issue 6), judged on one bench:compare run: each line says what the target
 * is, what this run measured and whether it was met, so every run states where the store stands
 * instead of leaving the reader to redo the arithmetic. A target whose targets or workloads were not
 * in the run is left out.
 */

export interface TargetInput {
  /** workload kind ('write', 'read', ...), its consistency and whether stale reads went to one node */
  workload: { name: string; workload: string; consistency: string; staleReadsTo: 'spread' | 'one' };
  store?: { opsPerSec: number; p99Ms: number };
  etcd?: { opsPerSec: number; p99Ms: number };
  ceiling?: { opsPerSec: number };
}

export interface TargetLine { target: string; measured: string; met: boolean }

const x = (v: number): string => `${v.toFixed(2)}×`;

export function judgeTargets(rows: TargetInput[]): TargetLine[] {
  const out: TargetLine[] = [];
  for (const { workload: w, store: s, etcd: e, ceiling: c } of rows) {
    if (s === undefined) continue;
    if (w.workload === 'write' && e !== undefined) {
      const r = s.opsPerSec / e.opsPerSec;
      out.push({ target: `${w.name}: writes/s ≥ 2× etcd's, p99 no higher than etcd's`, measured: `${x(r)}, p99 ${s.p99Ms.toFixed(1)} vs ${e.p99Ms.toFixed(1)} ms`, met: r >= 2 && s.p99Ms <= e.p99Ms });
    }
    if (w.workload === 'write' && c !== undefined) {
      const r = s.opsPerSec / c.opsPerSec;
      out.push({ target: `${w.name}: writes/s ≥ 0.5× the HTTP ceiling`, measured: x(r), met: r >= 0.5 });
    }
    if (w.workload === 'read' && w.consistency === 'linearizable' && e !== undefined) {
      const r = s.opsPerSec / e.opsPerSec;
      out.push({ target: `${w.name}: linearizable reads/s ≥ 2× etcd's`, measured: x(r), met: r >= 2 });
    }
    if (w.workload === 'read' && w.consistency === 'stale' && c !== undefined) {
      const r = s.opsPerSec / c.opsPerSec;
      out.push({ target: `${w.name}: stale reads/s ≥ 0.8× the HTTP ceiling (${w.staleReadsTo === 'one' ? 'served by one replica' : 'spread over the replicas'})`, measured: x(r), met: r >= 0.8 });
    }
  }
  return out;
}

/** Markdown lines for the targets (none when no target could be judged). */
export function targetsMarkdown(lines: TargetLine[]): string[] {
  if (lines.length === 0) return [];
  return ['| issue 6 target | this run | met |', '| --- | --- | --- |', ...lines.map((l) => `| ${l.target} | ${l.measured} | ${l.met ? 'yes' : '**no**'} |`), ''];
}
