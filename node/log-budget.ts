/**
 * Which shards' Raft logs to compact, and how far.
 *
 * A log holds its entries in memory from one compaction to the next, so
 * that a follower a little behind is sent entries rather than a whole
 * snapshot. Two rules bound it:
 *
 *  - per shard, by count: a log of `everyEntries` or more is compacted down
 *    to its last `keepEntries`;
 *  - per node, by memory: when the logs of all shards together take more than
 *    `budgetBytes`, the largest are compacted first, each down to a quarter
 *    of its entries (at most `keepEntries`), until they take at most 3/4 of
 *    the budget. The count rule alone let 16 shards × 20,000 entries hold
 *    ≈ 170 MiB of a node's memory at 100-byte values, and a shard of 64 KiB
 *    values 1.3 GiB.
 *
 * The price of a smaller log: a follower that falls further behind than
 * what its leader kept needs a snapshot, not entries.
 */

/**
 * Memory an entry takes besides its data, measured with a heap snapshot of a
 * node holding 200,000 entries (session 8): its Buffer view (96 B), the entry
 * object (64 B) and its share of the ArrayBuffer it was copied into (≈ 40 B).
 */
export const ENTRY_OVERHEAD_BYTES = 200;

export interface LogUse {
  shard: number;
  entries: number;
  dataBytes: number;
  /** false while a snapshot stream holds the shard's compaction. */
  compactable: boolean;
}

export interface BudgetOptions {
  everyEntries: number;
  keepEntries: number;
  budgetBytes: number;
}

export const logMemoryOf = (l: { entries: number; dataBytes: number }): number => l.dataBytes + l.entries * ENTRY_OVERHEAD_BYTES;

/** The compactions to make now: each shard at most once, keeping `keep` of its latest entries. */
export function compactionPlan(logs: readonly LogUse[], o: BudgetOptions): Array<{ shard: number; keep: number }> {
  const keepOf = new Map<number, number>();
  let total = 0;
  for (const l of logs) total += logMemoryOf(l);
  /** Estimated bytes freed by cutting l down to keep entries (its entries taken as equal in size). */
  const freed = (l: LogUse, keep: number): number => (l.entries === 0 ? 0 : (logMemoryOf(l) * Math.max(0, l.entries - keep)) / l.entries);
  for (const l of logs) {
    if (!l.compactable || l.entries < o.everyEntries) continue;
    keepOf.set(l.shard, o.keepEntries);
    total -= freed(l, o.keepEntries);
  }
  if (total > o.budgetBytes) {
    const target = (o.budgetBytes * 3) / 4;
    const left = (l: LogUse): number => logMemoryOf(l) - freed(l, keepOf.get(l.shard) ?? l.entries);
    const byLeft = logs.filter((l) => l.compactable && l.entries > 0).sort((a, b) => left(b) - left(a));
    for (const l of byLeft) {
      if (total <= target) break;
      const was = keepOf.get(l.shard) ?? l.entries;
      const keep = Math.min(was, o.keepEntries, Math.floor(l.entries / 4));
      if (keep >= was) continue;
      total -= freed(l, keep) - freed(l, was);
      keepOf.set(l.shard, keep);
    }
  }
  return [...keepOf].map(([shard, keep]) => ({ shard, keep }));
}
