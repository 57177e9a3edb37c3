import type { ConfChange, Entry, EntryType, HardState } from '../raft/index.ts';
import { coalesce, pack, unpack } from '../shard/codec.ts';
import type { WalItem } from '../shard/store.ts';

/**
 * Payloads of the node's WAL records (msgpack):
 *
 *   [0, [[shard, term, vote, commit, recovered?], ...]]                      header: the hard state of every shard (first record of every segment)
 *   [1, [[shard, [term, vote, commit, recovered?] | null, entries, snap], ...]] a persist batch: per shard, in round order
 *
 * recovered (HardState.recovered) is written only when set, so records of
 * replicas that never recovered lost state (and those of older releases)
 * have three numbers; entries are wire entries [term, index, type, data, change]; snap is the
 * index of a snapshot installed in that round (null if none): it drops
 * every entry of the shard before it.
 */

type WireEntry = [term: number, index: number, type: EntryType, data: Uint8Array, change: ConfChange | null];
type WireHs = [term: number, vote: number, commit: number, recovered?: number];
type WireItem = [shard: number, hs: WireHs | null, entries: WireEntry[], snap: number | null];

const HEADER = 0;
const BATCH = 1;

export function encodeHeader(hs: Map<number, HardState>): Uint8Array {
  const list: number[][] = [];
  for (const [shard, h] of hs) list.push(h.recovered === undefined ? [shard, h.term, h.vote, h.commit] : [shard, h.term, h.vote, h.commit, h.recovered]);
  return pack([HEADER, list]);
}

export function encodeBatch(items: WalItem[]): Uint8Array {
  const list: WireItem[] = items.map((it) => [
    it.shard,
    it.hardState === null ? null : wireHs(it.hardState),
    it.entries.map((e) => [e.term, e.index, e.type, e.data, e.change]),
    it.snapshot,
  ]);
  return pack([BATCH, list]);
}

function wireHs(h: HardState): WireHs {
  return h.recovered === undefined ? [h.term, h.vote, h.commit] : [h.term, h.vote, h.commit, h.recovered];
}

function hardStateOf(term: number, vote: number, commit: number, recovered: number | undefined): HardState {
  if (recovered !== undefined && !Number.isSafeInteger(recovered)) throw bad('recovered index');
  return recovered === undefined ? { term, vote, commit } : { term, vote, commit, recovered };
}

/** What the WAL says about one shard after replay. */
export interface WalShard {
  hardState: HardState | null;
  /** Contiguous entries (a later append at index i replaced every earlier one >= i). */
  entries: Entry[];
  /**
   * Snapshot installs seen, in order, each with the entries it dropped. An
   * install is complete only once its LevelDB batch (written after the WAL
   * record) landed: the loader undoes the ones above LevelDB's snapshot index.
   */
  markers: Array<{ index: number; before: Entry[] }>;
}

const bad = (what: string): Error => new Error(`corrupt WAL record: ${what}`);

/**
 * Fold replayed payloads into per-shard state; `onEntries(i, shard, maxIndex)`
 * reports, per record i, the highest entry index of each shard in it.
 */
export function foldWal(payloads: Uint8Array[], onEntries?: (i: number, shard: number, maxIndex: number) => void): Map<number, WalShard> {
  const f = new WalFold();
  payloads.forEach((p, i) => f.add(p, onEntries === undefined ? undefined : (shard, max) => onEntries(i, shard, max)));
  return f.shards;
}

/**
 * foldWal one record at a time, as the WAL is read: nothing of a record is kept but what its entries
 * and hard states fold into (entry data is copied out), so replay holds no segment in memory.
 */
export class WalFold {
  readonly shards = new Map<number, WalShard>();

  private get(shard: number): WalShard {
    let s = this.shards.get(shard);
    if (s === undefined) this.shards.set(shard, (s = { hardState: null, entries: [], markers: [] }));
    return s;
  }

  /** Fold the next record; `onEntries(shard, maxIndex)`: the highest entry index of each shard in it. */
  add(p: Uint8Array, onEntries?: (shard: number, maxIndex: number) => void): void {
    const rec = unpack<[number, unknown[]]>(p);
    if (!Array.isArray(rec) || !Array.isArray(rec[1])) throw bad('shape');
    if (rec[0] === HEADER) {
      for (const h of rec[1] as Array<[number, number, number, number, number?]>) this.get(h[0]).hardState = hardStateOf(h[1], h[2], h[3], h[4]);
      return;
    }
    if (rec[0] !== BATCH) throw bad(`type ${String(rec[0])}`);
    for (const [shard, hs, entries, snap] of rec[1] as WireItem[]) {
      const s = this.get(shard);
      if (snap !== null) {
        s.markers.push({ index: snap, before: s.entries });
        s.entries = [];
      }
      if (hs !== null) s.hardState = hardStateOf(hs[0], hs[1], hs[2], hs[3]);
      if (entries.length === 0) continue;
      const first = (entries[0] as WireEntry)[1];
      const have = s.entries[0];
      if (have !== undefined) {
        const keep = first - have.index;
        if (keep < 0) s.entries = [];
        else if (keep <= s.entries.length) s.entries.length = keep;
        else throw bad(`shard ${shard}: entries from ${first} after a log ending at ${have.index + s.entries.length - 1}`);
      }
      let expect = first;
      // Views into the segment read would keep all of it in memory: copy the data out.
      const data = coalesce(entries.map((w) => {
        if (!(w[3] instanceof Uint8Array)) throw bad(`shard ${shard}: entry data`);
        return w[3];
      }));
      entries.forEach((w, k) => {
        if (w[1] !== expect++) throw bad(`shard ${shard}: entries not contiguous at ${w[1]}`);
        s.entries.push({ term: w[0], index: w[1], type: w[2], data: data[k] as Uint8Array, change: w[4] ?? null });
      });
      onEntries?.(shard, expect - 1);
    }
  }
}
