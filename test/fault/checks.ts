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
  /** shard that served it (X-Shard), when the answer said */
  shard?: number | null;
  /** how far behind its leader the replica said it might be (X-Staleness-Ms), when it said a number */
  stalenessMs?: number | null;
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
  const versioned = reads.filter((s) => s.version !== null && s.value !== null);
  for (const l of groupBy(versioned, (s) => `${s.node}/${s.key}`).values()) {
    afterHighest(l, l, (r, max) => {
      if (max !== null && (r.version as number) < (max.version as number)) {
        report(`stale reads of ${r.key} on n${r.node} went back: ${max.label} saw version ${max.version}, then ${r.label} (started after it ended) saw ${r.version}`);
      }
    });
  }
  if (bad > limit) out.push(`… ${bad - limit} more stale-read problems`);
  return out;
}

/** An acknowledged put: its version is the Raft index of its entry in its shard's log. */
export interface AckedPut {
  key: string;
  shard: number;
  version: number;
  /** when the client sent it (absent in evidence saved before it was recorded: then not used for absent answers) */
  start?: number;
  /** when the client had the acknowledgement */
  end: number;
}

/** A delete that may have been applied: acknowledged (end), or of unknown outcome (end Infinity). */
export interface MaybeDelete { key: string; start: number; end: number }

/**
 * What a replica's stale reads promise across keys of one shard. A version is the Raft index of the
 * key's last write, so a 200 answer from replica R of shard S at version v shows R had applied S's log
 * up to at least v, and R's applied index only grows (across restarts too). Two rules follow:
 *  - **across keys**: once R answered any key of S at version v (the read ended), a later read on R of
 *    key k (it started after that) must not miss a write of k whose index is at most v;
 *  - **staleness** (`X-Staleness-Ms` s, unless `checkStaleness` is false): R held every write of S
 *    acknowledged before the read started less s, so it must not miss a write of k acknowledged then.
 * "Miss" is answering k at a version below a known write of k at or under that index (`versions`: every
 * version of each key some answer showed). An absent answer (404) misses the latest acknowledged put of
 * k at or under that index unless some delete of k may have come after that put in the log (it was
 * sent before the read ended, and not acknowledged before the put was sent): a delete's own index is
 * unknown (its answer carries the version it deleted), so this is judged only when no such delete exists.
 * Timing is the client's monotonic clock against the server's durations (one machine); `slackMs`
 * covers the rounding of X-Staleness-Ms. A clock fault (libfaketime rates) breaks the bounded-drift
 * assumption the staleness figure rests on: reads during one (and its aftermath) are passed over by
 * `skipStaleness`.
 */
export function checkStaleReadsAcrossKeys(
  reads: StaleRead[],
  versions: Map<string, Map<number, number>>,
  acked: AckedPut[],
  opts: { checkStaleness: boolean; skipStaleness?: (r: StaleRead) => boolean; slackMs?: number; limit?: number; deletes?: MaybeDelete[] },
): string[] {
  const limit = opts.limit ?? 5;
  const slack = opts.slackMs ?? 2;
  // Each rule lists its own first `limit` problems: one rule's many must not hide the other's.
  const found = { crossKey: [] as string[], staleness: [] as string[] };
  const bad = { crossKey: 0, staleness: 0 };
  const report = (rule: 'crossKey' | 'staleness', m: string) => {
    if (bad[rule]++ < limit) found[rule].push(m);
  };
  // each key's known versions, ascending
  const sorted = new Map([...versions].map(([k, m]) => [k, [...m.keys()].sort((a, b) => a - b)]));
  /** the lowest known version of `key` above `v` and at most `upTo`, or null */
  const missed = (key: string, v: number, upTo: number): number | null => {
    const vs = sorted.get(key);
    if (vs === undefined) return null;
    let lo = 0;
    let hi = vs.length; // first index with a version above v
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((vs[mid] as number) <= v) lo = mid + 1;
      else hi = mid;
    }
    const w = vs[lo];
    return w !== undefined && w <= upTo ? w : null;
  };
  // acknowledged puts per shard by acknowledgement time, with the running highest version
  const ackedBy = new Map<number, { ends: number[]; maxVersion: number[] }>();
  for (const [shard, list] of groupBy(acked, (a) => a.shard)) {
    list.sort((a, b) => a.end - b.end);
    let m = 0;
    ackedBy.set(shard, { ends: list.map((a) => a.end), maxVersion: list.map((a) => (m = Math.max(m, a.version))) });
  }
  /** the highest version of shard's writes acknowledged before time t (0: none) */
  const ackedBefore = (shard: number, t: number): number => {
    const g = ackedBy.get(shard);
    if (g === undefined) return 0;
    let lo = 0;
    let hi = g.ends.length; // first index with end >= t
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((g.ends[mid] as number) < t) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? 0 : (g.maxVersion[lo - 1] as number);
  };
  // Absent answers: each key's acknowledged puts (with their send time) by version, and its deletes.
  const putsOf = new Map<string, AckedPut[]>();
  for (const [k, l] of groupBy(acked.filter((a) => a.start !== undefined), (a) => a.key)) putsOf.set(k, l.sort((a, b) => a.version - b.version));
  const deletesOf = groupBy(opts.deletes ?? [], (d) => d.key);
  /** The latest acknowledged put of r's key at or under upTo, when no delete may have come after it (else null). */
  const heldThoughAbsent = (r: StaleRead, upTo: number): AckedPut | null => {
    if (opts.deletes === undefined) return null;
    let w: AckedPut | null = null;
    for (const a of putsOf.get(r.key) ?? []) if (a.version <= upTo) w = a;
    if (w === null) return null;
    const ws = w.start as number;
    return (deletesOf.get(r.key) ?? []).some((d) => d.start < r.end && d.end >= ws) ? null : w;
  };
  const withShard = reads.filter((s) => s.shard !== undefined && s.shard !== null);
  for (const l of groupBy(withShard, (s) => `${s.node}/${s.shard}`).values()) {
    afterHighest(l.filter((s) => s.version !== null && s.value !== null), l, (r, shown) => {
      if (r.value !== null && r.version === null) return; // a value without a version: nothing to compare
      const answered = r.value === null ? 'absent' : `version ${r.version}`;
      /** What r misses of its key at or under upTo, as the end of a problem line (null: nothing). */
      const miss = (upTo: number): string | null => {
        if (r.value === null) {
          const w = heldThoughAbsent(r, upTo);
          return w === null ? null : `, though its put at index ${w.version} was acknowledged and no delete of it came after`;
        }
        const w = missed(r.key, r.version as number, upTo);
        return w === null ? null : `, missing its write at index ${w}`;
      };
      if (shown !== null) {
        const m = miss(shown.version as number);
        if (m !== null) report('crossKey', `stale reads of shard ${r.shard} on n${r.node} went back across keys: ${shown.label} showed ${shown.key} at index ${shown.version}, then ${r.label} (started after it ended) answered ${r.key} ${r.value === null ? '' : 'at '}${answered}${m}`);
      }
      if (opts.checkStaleness && r.stalenessMs !== undefined && r.stalenessMs !== null && opts.skipStaleness?.(r) !== true) {
        const upTo = ackedBefore(r.shard as number, r.start - r.stalenessMs - slack);
        const m = miss(upTo);
        if (m !== null) report('staleness', `stale read ${r.label} of ${r.key} (shard ${r.shard}, n${r.node}) said it was at most ${r.stalenessMs} ms behind, but answered ${answered}${m} (the shard had acknowledged index ${upTo} by then)`);
      }
    });
  }
  const out = [...found.crossKey, ...found.staleness];
  if (bad.crossKey > limit) out.push(`… ${bad.crossKey - limit} more cross-key problems`);
  if (bad.staleness > limit) out.push(`… ${bad.staleness - limit} more staleness problems`);
  return out;
}

/** What the stale-read checks of a run look at: saved beside a failed run's history, re-checked by `--check`. */
export interface StaleEvidence {
  reads: StaleRead[];
  /** when each value's write was invoked (values are unique) */
  writeStart: Array<[number, number]>;
  /** per key, the (version, value) pairs learned from answers other than stale reads */
  pairs: Array<[string, Array<[number, number]>]>;
  acked: AckedPut[];
  /** deletes that may have been applied (absent from evidence saved before they were recorded) */
  deletes?: MaybeDelete[];
  /** clock faults (from, to incl. their aftermath): reads then are not judged by their staleness figure */
  clockWindows: Array<[number, number]>;
}

/**
 * Evidence as JSON that keeps what JSON cannot: a read's NaN or Infinity (a garbage body read as a
 * number) must come back as such, or the re-check would take it for an absent answer and pass it.
 */
export function evidenceToJson(e: StaleEvidence): string {
  return JSON.stringify(e, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? { nonFinite: String(v) } : v));
}

export function evidenceFromJson(text: string): StaleEvidence {
  return JSON.parse(text, (_k, v: unknown) => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1 && typeof (v as { nonFinite?: unknown }).nonFinite === 'string') return Number((v as { nonFinite: string }).nonFinite);
    return v;
  }) as StaleEvidence;
}

/** Every stale-read rule over a run's evidence (checkStaleReads, then checkStaleReadsAcrossKeys). */
export function checkStaleEvidence(e: StaleEvidence): string[] {
  const pairs = new Map(e.pairs.map(([k, l]) => [k, new Map(l)]));
  const out = checkStaleReads(e.reads, new Map(e.writeStart), pairs);
  // Every version an answer showed, stale ones included (one value per version is checked above).
  const versions = new Map([...pairs].map(([k, m]) => [k, new Map(m)]));
  for (const s of e.reads) {
    if (s.version === null || s.value === null) continue;
    let m = versions.get(s.key);
    if (m === undefined) versions.set(s.key, (m = new Map()));
    m.set(s.version, s.value);
  }
  // A window still open (no end) runs to the end of the run.
  const inClockFault = (r: StaleRead): boolean => e.clockWindows.some(([from, to]) => r.end >= from && (to === null || Number.isNaN(to) || r.start <= to));
  out.push(...checkStaleReadsAcrossKeys(e.reads, versions, e.acked, { checkStaleness: true, skipStaleness: inClockFault, ...(e.deletes === undefined ? {} : { deletes: e.deletes }) }));
  return out;
}

/**
 * For each read of `reads` in the order they started: `fn(read, highest)`, with the highest-version read
 * of `shown` that ended before it started (null: none yet). A replica's state only moves forward, so
 * what it showed by then bounds what it may answer.
 */
function afterHighest(shown: StaleRead[], reads: StaleRead[], fn: (r: StaleRead, highest: StaleRead | null) => void): void {
  const byEnd = [...shown].sort((a, b) => a.end - b.end);
  let j = 0;
  let max: StaleRead | null = null;
  for (const r of [...reads].sort((a, b) => a.start - b.start)) {
    while (j < byEnd.length && (byEnd[j] as StaleRead).end < r.start) {
      const e = byEnd[j++] as StaleRead;
      if (max === null || (e.version as number) > (max.version as number)) max = e;
    }
    fn(r, max);
  }
}

function groupBy<T, K>(xs: T[], key: (x: T) => K): Map<K, T[]> {
  const m = new Map<K, T[]>();
  for (const x of xs) {
    const k = key(x);
    let l = m.get(k);
    if (l === undefined) m.set(k, (l = []));
    l.push(x);
  }
  return m;
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
