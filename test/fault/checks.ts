/**
 * Checks of a fault run beyond linearizability (test/fault/run.ts):
 *  - stale reads keep the weaker promise: a value some write was invoked with (or absent), never from
 *    the future (the write started before the read ended), one value per (key, version), and
 *    monotonic per replica: a read served by replica R returns a version no older than any read
 *    R served for that key before it started (R's applied state only moves forward, across restarts
 *    too — it is written atomically with the applied index);
 *  - replicas converge: after healing, every replica of every shard reaches the same applied index
 *    with the same digest of its data (GET /v1/debug/digest).
 */
import type { TestCluster } from '../integration/harness.ts';

export interface StaleRead {
  key: string;
  value: number | null;
  version: number | null;
  /** node that served it (X-Served-By) */
  node: number;
  start: number;
  end: number;
  label: string;
}

/** Problems found in the stale reads (at most `limit` listed, then a count). */
export function checkStaleReads(
  reads: StaleRead[],
  writeStart: Map<number, number>,
  pairs: Map<string, Map<number, number>>,
  limit = 5,
): string[] {
  const out: string[] = [];
  let bad = 0;
  const report = (m: string) => {
    if (bad++ < limit) out.push(m);
  };
  for (const s of reads) {
    if (s.value === null) continue;
    const started = writeStart.get(s.value);
    if (!Number.isInteger(s.value) || started === undefined) report(`stale read ${s.label} of ${s.key} returned ${s.value}, which no write sent`);
    else if (started > s.end) report(`stale read ${s.label} of ${s.key} returned ${s.value} from the future (its write started ${(started - s.end).toFixed(1)} ms after the read ended)`);
    const known = s.version === null ? undefined : pairs.get(s.key)?.get(s.version);
    if (known !== undefined && known !== s.value) report(`stale read ${s.label} of ${s.key} returned ${s.value} at version ${s.version}, which holds ${known}`);
  }
  // monotonic per (replica, key): versions of 200 answers never go back for reads that follow each other
  const groups = new Map<string, StaleRead[]>();
  for (const s of reads) {
    if (s.version === null || s.value === null) continue;
    const g = `${s.node}/${s.key}`;
    let l = groups.get(g);
    if (l === undefined) groups.set(g, (l = []));
    l.push(s);
  }
  for (const l of groups.values()) {
    const byEnd = [...l].sort((a, b) => a.end - b.end);
    const byStart = [...l].sort((a, b) => a.start - b.start);
    let j = 0;
    let max: StaleRead | null = null;
    for (const r of byStart) {
      while (j < byEnd.length && (byEnd[j] as StaleRead).end < r.start) {
        const e = byEnd[j++] as StaleRead;
        if (max === null || (e.version as number) > (max.version as number)) max = e;
      }
      if (max !== null && (r.version as number) < (max.version as number)) {
        report(`stale reads of ${r.key} on n${r.node} went back: ${max.label} saw version ${max.version}, then ${r.label} (started after it ended) saw ${r.version}`);
      }
    }
  }
  if (bad > limit) out.push(`… ${bad - limit} more stale-read problems`);
  return out;
}

interface DigestView {
  node: number;
  shards: Array<{ shard: number; applied: number; logTime: number; records: number; digest: string }>;
}

/**
 * Wait until every shard's replicas report the same applied index and digest. Two replicas with the
 * same applied index and different digests diverged: that is reported at once. Bounded by timeoutMs.
 */
export async function awaitConvergence(c: TestCluster, nodes: number[], timeoutMs = 30_000): Promise<{ ok: boolean; problems: string[]; shards: number; records: number }> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no digests read';
  for (;;) {
    const views: DigestView[] = [];
    for (const i of nodes) {
      try {
        const r = await fetch(`${c.url(i)}/v1/debug/digest`, { signal: AbortSignal.timeout(5000) });
        if (r.status === 200) views.push((await r.json()) as DigestView);
      } catch { /* not up: retry */ }
    }
    const byShard = new Map<number, Array<{ node: number; applied: number; digest: string; records: number }>>();
    for (const v of views) for (const s of v.shards) {
      let l = byShard.get(s.shard);
      if (l === undefined) byShard.set(s.shard, (l = []));
      l.push({ node: v.node, applied: s.applied, digest: s.digest, records: s.records });
    }
    const problems: string[] = [];
    let pending = views.length < nodes.length ? `${nodes.length - views.length} node(s) did not answer` : '';
    let records = 0;
    for (const [shard, reps] of byShard) {
      const first = reps[0];
      if (first === undefined) continue;
      records += first.records;
      for (const r of reps) {
        if (r.applied === first.applied && r.digest !== first.digest) {
          problems.push(`shard ${shard} diverged: n${first.node} and n${r.node} both applied ${r.applied} but hold different data (${first.records} vs ${r.records} records)`);
        } else if (r.applied !== first.applied && pending === '') {
          pending = `shard ${shard}: applied ${reps.map((x) => `n${x.node}=${x.applied}`).join(' ')}`;
        }
      }
    }
    if (problems.length > 0) return { ok: false, problems, shards: byShard.size, records };
    if (pending === '') return { ok: true, problems: [], shards: byShard.size, records };
    last = pending;
    if (Date.now() >= deadline) return { ok: false, problems: [`replicas did not converge within ${timeoutMs} ms (${last})`], shards: byShard.size, records };
    await new Promise((r) => setTimeout(r, 200));
  }
}
