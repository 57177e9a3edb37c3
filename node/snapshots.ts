import type { Logger } from 'pino';
import type { Message, Snapshot } from '../raft/index.ts';
import { invariant } from '../raft/assert.ts';
import { shardStateRange, snapMetaKey } from '../shard/layout.ts';
import { PEER_PROTOCOL, encodeSnapshot, fromWireMessage, toWireMessage } from '../shard/raft-codec.ts';
import { decodeDescriptor, encodeDescriptor, type Store } from '../shard/store.ts';
import { writeBatch, type Db } from './db.ts';
import type { NodeMetrics } from './metrics.ts';
import { BulkPuts } from './bulk-write.ts';
import { ChunkBuilder, eachPut } from './snapshot-chunks.ts';
import type { Frame, Transport } from './transport.ts';

/**
 * Snapshots stream the shard's state in bounded chunks, with backpressure,
 * from a consistent LevelDB iterator taken between rounds. The receiver
 * writes them into the next generation of the shard's keys, beside the live
 * state, and only then hands the Raft Snap message to its core; installing
 * is a switch of generation in the next persist batch.
 */

/** Rows per iterator read; the iterator's highWaterMarkBytes (ITER_HIGH_WATER_BYTES) must let that many through. */
export const NEXTV_ROWS = 4096;
export const ITER_HIGH_WATER_BYTES = 2 << 20;

export interface Iter {
  kind: 'd' | 'i';
  it: { nextv(n: number): Promise<Array<[Uint8Array, Uint8Array]>>; close(): Promise<void> };
}

/** A stream's id: unique per sender (its node, the shard, the snapshot's index and a random part). */
export function newStreamId(fromNode: number, shard: number, index: number): string {
  return `${fromNode}:${shard}:${index}:${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * Stream one snapshot. `refused.why` is set when the follower says it gave the stream up (an `sx`
 * frame, see SnapshotReceiver.onRefuse): the stream stops before its next frame, failing.
 */
export async function streamSnapshot(o: {
  transport: Transport; shard: number; to: number; msg: Message; snapshot: Snapshot; iters: Iter[];
  chunkBytes: number; timeoutMs: number; id: string; refused: { why: string | null }; log: Logger;
}): Promise<void> {
  const id = o.id;
  const send = async (f: Frame): Promise<void> => {
    if (o.refused.why !== null) throw new Error(`the follower gave the stream up: ${o.refused.why}`);
    await o.transport.sendWithBackpressure(o.to, f, o.timeoutMs);
  };
  const t0 = performance.now();
  const startedAt = Date.now();
  let bytes = 0;
  let records = 0;
  let seq = 0;
  try {
    for (const { kind, it } of o.iters) {
      const chunk = new ChunkBuilder(o.chunkBytes);
      const flush = async (): Promise<void> => {
        const n = chunk.count;
        const body = chunk.take();
        await send(['sc', o.shard, id, kind, body, seq++]);
        bytes += body.length;
        records += n;
      };
      for (;;) {
        const rows = await it.nextv(NEXTV_ROWS);
        for (const [k, v] of rows) if (chunk.add(k, v)) await flush();
        if (rows.length === 0) break;
      }
      if (chunk.count > 0) await flush();
    }
    const msg: Message = { ...o.msg, snapshot: o.snapshot };
    await send(['sd', o.shard, id, toWireMessage(msg, o.transport.protocolOf(o.to)), seq]);
    const secs = (performance.now() - t0) / 1000;
    o.log.info({ shard: o.shard, peer: o.to, index: o.snapshot.meta.index, records, bytes, startedAt, mbPerSec: +(bytes / 1e6 / Math.max(secs, 1e-6)).toFixed(1) }, 'snapshot sent');
  } finally {
    for (const { it } of o.iters) await it.close();
  }
}

interface Incoming {
  id: string;
  from: number;
  gen: number;
  chain: Promise<void>;
  /** Its done frame came: it is handed to the Store at the end of its chain, and its generation is then not ours to clear. */
  done: boolean;
  /** The chunk number due next (chunks came in order from 0). */
  next: number;
  /** When (performance.now(): a wall-clock step must not age it) its last frame came. */
  lastFrameAt: number;
}

const isBytes = (x: unknown): x is Uint8Array => x instanceof Uint8Array;

/**
 * A stream's chain may fail (a LevelDB write) before its next frame adds a handler: mark it handled now,
 * or Node ends the process on the unhandled rejection. The failure still reaches the chain's next step
 * (its done frame's error path: the stream is not handed over).
 */
const handled = (p: Promise<unknown>): void => {
  p.catch(() => undefined);
};

/**
 * Bytes of received chunks not yet written to LevelDB: past high, the
 * receiver holds the sender's connection (Transport.onFrame) until the
 * backlog is down to low. Without it a disk slower than the network
 * gathered a whole snapshot in memory.
 */
export interface ReceiveBacklog { highBytes: number; lowBytes: number }
export const DEFAULT_RECEIVE_BACKLOG: ReceiveBacklog = { highBytes: 16 << 20, lowBytes: 4 << 20 };

/**
 * When a replaced generation is cleared: once no stream has come in for `quietMs` (the installs that
 * end a catch-up, and the log after them, go first), and at most `maxMs` after the install. Clearing is
 * a delete per record, in the same LevelDB and on the same two thread-pool threads as the WAL appends
 * and the streams' writes; during a catch-up of many shards it ran beside the streams still coming.
 * Bounded, so that a sender that keeps streaming, or one that went away mid-stream (its stream stays in
 * `incoming` until its sender starts another, too many come at once, or it is idle for idleGiveUpMs), does not keep dead generations
 * on disk for long.
 */
export interface ClearDefer { quietMs: number; maxMs: number }
export const DEFAULT_CLEAR_DEFER: ClearDefer = { quietMs: 2_000, maxMs: 10_000 };
/** Unfinished streams of one shard taken at once (from different senders); past it the oldest is given up. */
const MAX_STREAMS_PER_SHARD = 3;
const GIVEN_UP_REMEMBERED = 1024;
/** Keys deleted per thread-pool work item when clearing. */
const CLEAR_SLICE = 2_000;

export class SnapshotReceiver {
  /** The peer protocol this node speaks (see shard/raft-codec.ts). */
  protocol = PEER_PROTOCOL;
  /**
   * Told when a stream is refused or given up here for its own fault or the receiver's (a chunk lost,
   * a count that does not match, too many at once, a write that failed; not when its sender started
   * another): the runtime tells the sender (`sx`, peer protocol 3), whose leader then streams again at
   * once instead of waiting out its snapshot timeout with this replica behind.
   */
  onRefuse: (to: number, shard: number, id: string, why: string) => void = () => {};
  /** Streams coming in, per shard, by sender and stream id: each in its own generation. */
  private readonly incoming = new Map<number, Map<string, Incoming>>();
  /** Streams given up (shard, sender, id), the latest GIVEN_UP_REMEMBERED: their late frames are dropped. */
  private readonly givenUp = new Set<string>();
  /** Replaced generations waiting to be cleared (below `gen`), oldest first. */
  private pendingClears: Array<{ shard: number; gen: number; at: number }> = [];
  private clearTimer: NodeJS.Timeout | null = null;
  /** When (Date.now()) a stream last sent a frame or ended; a start counts as one (streams often follow it). */
  private lastStreamAt = Date.now();
  /** Bytes of chunks checked and staged but not yet written. */
  private backlog = 0;
  /** Most the backlog has been (for tests). */
  backlogPeak = 0;
  private drained: Array<() => void> = [];
  /**
   * Per shard: the last staging generation given to a stream. Each stream gets a new one, above the
   * live generation and every one given before: a stream handed to the Store may not have landed (its
   * generation not live yet), or not even been handed yet (its chain still writing) when the next
   * stream starts; reusing its generation would clear the state it is about to serve.
   */
  private readonly givenGen = new Map<number, number>();
  private background: Promise<unknown> = Promise.resolve();
  /**
   * An unfinished stream that sent nothing for this long is given up (its sender told), and the part of
   * it written so far cleared: a sender that died or lost its leadership mid-stream left it, and
   * nothing else ends it unless a stream of the same shard comes. The runtime sets it from the
   * snapshot timeout (a live sender's frame drains within that, or its stream fails).
   */
  idleGiveUpMs = 60_000;
  private idleTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly db: Db, private readonly store: Store, private readonly log: Logger,
    private readonly metrics: NodeMetrics, private readonly wake: () => void,
    private readonly limits: ReceiveBacklog = DEFAULT_RECEIVE_BACKLOG,
    private readonly clearDefer: ClearDefer = DEFAULT_CLEAR_DEFER,
  ) {
    invariant(limits.lowBytes >= 0 && limits.lowBytes < limits.highBytes, 'snapshot backlog: low below high');
  }

  /** Bytes received and not yet written. */
  backlogBytes(): number {
    return this.backlog;
  }

  private written(n: number): void {
    this.backlog -= n;
    invariant(this.backlog >= 0, `snapshot backlog went negative (${this.backlog})`);
    if (this.backlog <= this.limits.lowBytes && this.drained.length > 0) {
      const d = this.drained;
      this.drained = [];
      for (const f of d) f();
    }
  }

  /**
   * Handle a snapshot frame. Returns a promise when the write backlog is past
   * its high mark: the transport reads nothing more from that peer until the
   * backlog is down to the low mark.
   */
  onFrame(from: number, f: Frame): Promise<void> | undefined {
    if (f[0] !== 'sc' && f[0] !== 'sd') return undefined;
    const shard = f[1];
    const id = f[2];
    this.lastStreamAt = Date.now();
    if (!Number.isSafeInteger(shard) || !this.store.has(shard) || typeof id !== 'string') throw new Error('snapshot frame for an unknown shard');
    // Chunk numbers and the done frame's count (absent from older senders) fail a stream closed: one
    // whose frames were lost (a connection that died with frames in it, a stream given up here and
    // forgotten) is refused, never handed over with part of its records.
    const seq = f[0] === 'sc' ? f[5] : undefined;
    const count = f[0] === 'sd' ? f[4] : undefined;
    if ((seq !== undefined && !(Number.isSafeInteger(seq) && seq >= 0)) || (count !== undefined && !(Number.isSafeInteger(count) && count >= 0))) {
      throw new Error('snapshot frame with a bad chunk number or count');
    }
    const key = `${from}\u0000${id}`;
    let s = this.incoming.get(shard)?.get(key);
    if (s === undefined) {
      // Frames of a stream given up (below) are dropped: starting it again would stage half a snapshot.
      if (this.givenUp.has(`${shard}\u0000${key}`)) return undefined;
      if (f[0] === 'sc' ? (seq ?? 0) !== 0 : (count ?? 0) !== 0) {
        this.forget(shard, key);
        this.log.warn({ shard, from, stream: id, seq, count }, 'snapshot stream refused: its first chunk never came here');
        this.metrics.snapshots.inc({ direction: 'received', result: 'error' });
        this.onRefuse(from, shard, id, 'its first chunk never came');
        return undefined;
      }
      // A sender streams one snapshot of a shard at a time: its unfinished earlier one is dead. Streams
      // of other senders (a leader and its successor) go on side by side, each in its own generation;
      // past MAX_STREAMS_PER_SHARD unfinished ones, the oldest is given up.
      const others = this.incoming.get(shard) ?? new Map<string, Incoming>();
      let unfinished = 0;
      for (const [k, o] of others) {
        if (o.done) continue;
        if (o.from === from) this.giveUp(shard, k, o, 'its sender started another', false);
        else unfinished++;
      }
      for (const [k, o] of others) {
        if (unfinished < MAX_STREAMS_PER_SHARD) break;
        if (o.done) continue;
        this.giveUp(shard, k, o, 'too many streams of the shard at once');
        unfinished--;
      }
      const gen = Math.max(this.store.generation(shard), this.givenGen.get(shard) ?? 0) + 1;
      this.givenGen.set(shard, gen);
      // Its generation may hold what a crash left there: cleared before its first write.
      s = { id, from, gen, done: false, next: 0, lastFrameAt: performance.now(), chain: this.clearGeneration(shard, gen) };
      handled(s.chain);
      let streams = this.incoming.get(shard);
      if (streams === undefined) this.incoming.set(shard, (streams = new Map()));
      streams.set(key, s);
      this.watchIdle();
    }
    const st = s;
    st.lastFrameAt = performance.now();
    // Its done frame came: it is being handed over (its generation is no longer ours to give up or
    // write into). A correct sender sends nothing after it: the connection goes (Transport's fail()).
    if (st.done) throw new Error(`snapshot frame after its stream's done frame (shard ${shard}, stream ${id})`);
    if (f[0] === 'sc') {
      const body = f[4];
      if (!isBytes(body)) throw new Error('snapshot chunk is not a byte string');
      if (seq !== undefined && seq !== st.next) {
        this.giveUp(shard, key, st, `chunk ${seq} came where ${st.next} was due`);
        return undefined;
      }
      // Checked and staged now, written in order after the stream's earlier chunks. Counted only once
      // staged: a chunk refused here leaves a gap the next one shows.
      const puts = new BulkPuts(this.db);
      try {
        eachPut(body, shard, st.gen, puts.put);
      } catch (e) {
        puts.discard();
        throw e;
      }
      st.next++;
      const n = body.length;
      this.backlog += n;
      if (this.backlog > this.backlogPeak) this.backlogPeak = this.backlog;
      st.chain = st.chain.then(() => puts.write(false), (e: unknown) => {
        puts.discard();
        throw e;
      }).finally(() => this.written(n));
      handled(st.chain);
      // A write that failed fails the stream: give it up now (its sender is told and stops), not after
      // the rest of it came only to be thrown away. Once: a stream given up is no longer in `incoming`.
      st.chain.catch((e: unknown) => {
        if (!st.done && this.incoming.get(shard)?.get(key) === st) this.giveUp(shard, key, st, `writing it failed: ${(e as Error).message}`);
      });
      if (this.backlog <= this.limits.highBytes) return undefined;
      return new Promise<void>((resolve) => this.drained.push(resolve));
    }
    const msg = fromWireMessage(f[3], this.protocol);
    if (msg.snapshot === null || msg.from !== from) throw new Error('snapshot done frame without a snapshot');
    if (count !== undefined && count !== st.next) {
      this.giveUp(shard, key, st, `it sent ${count} chunks, ${st.next} came`);
      return undefined;
    }
    const desc = decodeDescriptor(msg.snapshot.data);
    st.done = true;
    msg.snapshot = { meta: msg.snapshot.meta, data: encodeDescriptor({ gen: st.gen, logTime: desc.logTime }) };
    st.chain = st.chain.then(
      () => {
        this.remove(shard, key, st);
        this.lastStreamAt = Date.now();
        this.maybeClear();
        // Generations only grow (givenGen), so a stream staged below what is live now lost to a newer one
        // already installed; the core would refuse it (by term or index), and clearBelow may be deleting it.
        if (st.gen <= this.store.generation(shard)) {
          this.log.info({ shard, from, stream: id, gen: st.gen, live: this.store.generation(shard) }, 'snapshot stream not handed over: a newer one is live');
          this.metrics.snapshots.inc({ direction: 'received', result: 'superseded' });
          this.clearLater(shard, st.gen);
          return;
        }
        this.metrics.snapshots.inc({ direction: 'received', result: 'ok' });
        this.store.receive([[shard, msg]], Date.now());
        this.wake();
      },
      (e: unknown) => {
        this.remove(shard, key, st);
        this.lastStreamAt = Date.now();
        this.maybeClear();
        this.metrics.snapshots.inc({ direction: 'received', result: 'error' });
        this.log.warn({ shard, err: (e as Error).message }, 'snapshot receive failed');
        this.clearLater(shard, st.gen);
        this.onRefuse(from, shard, id, `receiving it failed: ${(e as Error).message}`);
      },
    );
    return undefined;
  }

  /** Stop taking a stream: its later frames are dropped, and its generation cleared once its writes are done. Its sender is told unless `tell` is false. */
  private giveUp(shard: number, key: string, s: Incoming, why: string, tell = true): void {
    this.remove(shard, key, s);
    this.forget(shard, key);
    this.log.info({ shard, from: s.from, stream: s.id, gen: s.gen, why }, 'snapshot stream given up');
    this.metrics.snapshots.inc({ direction: 'received', result: 'given_up' });
    this.clearLater(shard, s.gen, s.chain);
    if (tell) this.onRefuse(s.from, shard, s.id, why);
  }

  /** While streams come in: every quarter of idleGiveUpMs, give up those that sent nothing for idleGiveUpMs. */
  private watchIdle(): void {
    if (this.idleTimer !== null) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      this.giveUpIdle(performance.now());
      if (this.incoming.size > 0) this.watchIdle();
    }, Math.max(10, Math.floor(this.idleGiveUpMs / 4)));
    this.idleTimer.unref();
  }

  /** Give up every unfinished stream whose last frame came idleGiveUpMs or more before `now` (performance.now()). */
  giveUpIdle(now: number): void {
    for (const [shard, streams] of [...this.incoming]) {
      for (const [key, st] of [...streams]) {
        if (!st.done && now - st.lastFrameAt >= this.idleGiveUpMs) this.giveUp(shard, key, st, `no frame for ${Math.round((now - st.lastFrameAt) / 1000)} s`);
      }
    }
  }

  /** Take a stream out of `incoming` (if a later one has not taken its place), and its shard once it has none. */
  private remove(shard: number, key: string, s: Incoming): void {
    const streams = this.incoming.get(shard);
    if (streams?.get(key) === s) streams.delete(key);
    if (streams?.size === 0) this.incoming.delete(shard);
  }

  /**
   * Drop a stream's later frames. Bounded: a frame of a stream forgotten since still fails closed, by its
   * chunk number (a stream must start at chunk 0).
   */
  private forget(shard: number, key: string): void {
    this.givenUp.add(`${shard}\u0000${key}`);
    if (this.givenUp.size > GIVEN_UP_REMEMBERED) this.givenUp.delete(this.givenUp.values().next().value as string);
  }

  /** Clear one generation nothing will serve, after `after` (a stream's writes). */
  private clearLater(shard: number, gen: number, after: Promise<void> = Promise.resolve()): void {
    this.background = this.background.then(() => after.catch(() => undefined)).then(() => this.clearGeneration(shard, gen)).catch((e: unknown) => {
      this.log.warn({ shard, gen, err: (e as Error).message }, 'clearing a dead stream\'s generation failed');
    });
  }

  private async clearBelow(shard: number, gen: number): Promise<void> {
    for (const kind of ['d', 'i'] as const) {
      const [gte] = shardStateRange(shard, 0, kind);
      const [lt] = shardStateRange(shard, gen, kind);
      await this.clearRange(gte, lt);
    }
  }

  private async clearGeneration(shard: number, gen: number): Promise<void> {
    for (const kind of ['d', 'i'] as const) {
      const [gte, lt] = shardStateRange(shard, gen, kind);
      await this.clearRange(gte, lt);
    }
  }

  /**
   * Delete a key range CLEAR_SLICE keys at a time. One native clear deletes the whole range in one
   * thread-pool work item: seconds for a large shard, with the WAL appends, state batches and stream
   * writes left one pool thread of two. Each slice ends with a look for a key left (a seek).
   */
  private async clearRange(gte: Uint8Array, lt: Uint8Array): Promise<void> {
    for (;;) {
      await this.db.clear({ gte, lt, limit: CLEAR_SLICE });
      if ((await this.db.keys({ gte, lt, limit: 1 }).all()).length === 0) return;
    }
  }

  /**
   * The core installed a snapshot: clear the generation it replaced, in the background, when streams
   * have been quiet for a while (see ClearDefer).
   */
  installed(shard: number, snapshot: Snapshot): void {
    const gen = decodeDescriptor(snapshot.data).gen;
    this.log.info({ shard, index: snapshot.meta.index, gen }, 'snapshot installed');
    // Every generation below the new live one is dead: the one it replaced, and a staged snapshot that
    // was handed over but ignored (generations may skip, see onFrame). Clearing below a live generation
    // never touches a stream staged above it, so it may run whenever.
    this.pendingClears.push({ shard, gen, at: Date.now() });
    this.maybeClear();
  }

  /**
   * At start: clear what a crash may have left below each shard's live generation (a replaced
   * generation whose clearing had not run or not finished), deferred like any other clear: a node that
   * restarts far behind is about to receive streams, and they go first. An empty range costs two seeks.
   */
  sweep(shards: Array<{ shard: number; gen: number }>): void {
    for (const { shard, gen } of shards) if (gen > 0) this.pendingClears.push({ shard, gen, at: Date.now() });
    this.maybeClear();
  }

  /** Generations waiting to be cleared (for tests and the log). */
  pendingClearCount(): number {
    return this.pendingClears.length;
  }

  private maybeClear(force = false): void {
    const oldest = this.pendingClears[0];
    if (oldest === undefined) return;
    const now = Date.now();
    const untilMax = oldest.at + this.clearDefer.maxMs - now;
    const untilQuiet = this.incoming.size > 0 ? untilMax : this.lastStreamAt + this.clearDefer.quietMs - now;
    const wait = Math.min(untilMax, untilQuiet);
    if (!force && wait > 0) {
      if (this.clearTimer !== null) clearTimeout(this.clearTimer);
      this.clearTimer = setTimeout(() => {
        this.clearTimer = null;
        this.maybeClear();
      }, wait + 1);
      this.clearTimer.unref();
      return;
    }
    if (this.clearTimer !== null) {
      clearTimeout(this.clearTimer);
      this.clearTimer = null;
    }
    const todo = this.pendingClears;
    this.pendingClears = [];
    for (const { shard, gen } of todo) {
      this.background = this.background.then(() => this.clearBelow(shard, gen)).catch((e: unknown) => {
        this.log.warn({ shard, err: (e as Error).message }, 'clearing an old generation failed');
      });
    }
  }

  /** Several compactions' snapshot metas in one durable write. */
  async persistCompactions(cuts: Array<{ shard: number; snapshot: Snapshot }>): Promise<void> {
    await writeBatch(this.db, cuts.map(({ shard, snapshot }) => ({ type: 'put', key: snapMetaKey(shard), value: encodeSnapshot(snapshot) })), true);
  }

  /** Stop the idle watch (a node closing). */
  close(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /** Every stream's writes done, and every generation replaced so far cleared (the clears are not deferred past this). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.incoming.values()].flatMap((m) => [...m.values()].map((s) => s.chain)));
    this.maybeClear(true);
    await this.background;
  }
}
