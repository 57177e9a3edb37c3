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
 * what its leader kept needs a snapshot, not entries. So a leader keeps what
 * its live followers still need (`needed`: heard from within
 * FOLLOWER_GRACE_MS, not being sent a snapshot), as TiKV does, within two limits: a
 * follower more than `everyEntries` behind gets a snapshot anyway, and once
 * the logs take twice the budget, the budget rule cuts without regard for
 * followers. A cut held back for a follower that would remove less than a
 * quarter of a log waits for a later pass (each cut costs a synced write).
 * The entries after a snapshot being streamed (`held`) are kept in any case.
 */

/**
 * Memory an entry takes besides its data, measured with a heap snapshot of a
 * node holding 200,000 entries (session 8): its Buffer view (96 B), the entry
 * object (64 B) and its share of the ArrayBuffer it was copied into (≈ 40 B).
 */
export const ENTRY_OVERHEAD_BYTES = 200;

/**
 * A follower heard from within this long counts as live: its leader keeps the entries it still needs
 * (a restart, a short partition, a slow disk). Past it, the follower gets a snapshot when it is back.
 */
export const FOLLOWER_GRACE_MS = 60_000;

export interface LogUse {
  shard: number;
  entries: number;
  dataBytes: number;
  /**
   * The latest applied entries a follower being sent a snapshot will need (after the snapshot's index):
   * always kept, past twice the budget too — cutting them would make it need another snapshot the moment
   * it installs this one. 0: no stream running or settling.
   */
  held: number;
  /** The latest applied entries a live follower still needs (0: none, or not the leader). */
  needed: number;
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
  /** Entries kept for a live follower: none for one further behind than a whole count window. */
  const retain = (l: LogUse): number => (l.needed <= o.everyEntries ? l.needed : 0);
  /**
   * A cut raised to keep a follower's entries is made only if it removes at least a quarter of the
   * log (each cut costs a synced write; a later pass makes it once worth it).
   */
  const worth = (l: LogUse, was: number, keep: number): boolean => was - keep >= Math.max(1, Math.ceil(l.entries / 4));
  for (const l of logs) {
    if (l.entries < o.everyEntries) continue;
    const keep = Math.max(o.keepEntries, retain(l), l.held);
    if (keep >= l.entries) continue;
    if (keep > o.keepEntries && !worth(l, l.entries, keep)) continue;
    keepOf.set(l.shard, keep);
    total -= freed(l, keep);
  }
  const left = (l: LogUse): number => logMemoryOf(l) - freed(l, keepOf.get(l.shard) ?? l.entries);
  // Over the budget: the largest logs first, each to a quarter, until 3/4 of the budget; live
  // followers' needs first respected, then (past twice the budget) not.
  for (const hard of [false, true]) {
    if (total <= (hard ? 2 * o.budgetBytes : o.budgetBytes)) continue;
    const target = (o.budgetBytes * 3) / 4;
    const byLeft = logs.filter((l) => l.entries > l.held).sort((a, b) => left(b) - left(a));
    for (const l of byLeft) {
      if (total <= target) break;
      const was = keepOf.get(l.shard) ?? l.entries;
      const quarter = Math.min(was, o.keepEntries, Math.floor(l.entries / 4));
      const keep = Math.max(hard ? quarter : Math.max(quarter, retain(l)), l.held);
      if (keep >= was || (keep > quarter && !worth(l, was, keep))) continue;
      total -= freed(l, keep) - freed(l, was);
      keepOf.set(l.shard, keep);
    }
  }
  return [...keepOf].map(([shard, keep]) => ({ shard, keep }));
}
