import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { MsgType, type Message, type Snapshot } from '../raft/index.ts';
import { buildClusterMap, type ClusterMap } from '../shard/cluster-map.ts';
import { DATA_KIND, shardStateRange } from '../shard/layout.ts';
import { fromWireMessage, toWireMessage } from '../shard/raft-codec.ts';
import { HashRing } from '../shard/ring.ts';
import { Store, type Round } from '../shard/store.ts';
import type { KvStatePort } from '../shard/kv-machine.ts';
import { ReadCache } from './read-cache.ts';
import { Overlay, dropLegacyLog, keyString, loadReplica, openDb, readLegacyLog, writeBatch, type Db } from './db.ts';
import { unpack } from '../shard/codec.ts';
import type { BatchOp, WalItem } from '../shard/store.ts';
import type { HardState } from '../raft/index.ts';
import { join } from 'node:path';
import { Wal } from './wal.ts';
import { WalFold, encodeBatch, encodeHeader } from './wal-codec.ts';
import { FOLLOWER_GRACE_MS, compactionPlan, logMemoryOf } from './log-budget.ts';
import type { NodeConfig } from './config.ts';
import { createHash32 } from './hash.ts';
import { NodeMetrics } from './metrics.ts';
import { RateLimitedWarn } from './rate-limited-warn.ts';
import { SnapshotLedger } from './snapshot-ledger.ts';
import { KeyedGate } from './stream-gate.ts';
import { ITER_HIGH_WATER_BYTES, SnapshotReceiver, newStreamId, streamSnapshot, type Iter } from './snapshots.ts';
import { Transport, type Frame } from './transport.ts';
import { monoNowMs } from './clock.ts';
import { ReplicaChecks } from './replica-check.ts';

/** Idempotency collection: keys read and time spent per maintenance pass at most (see maybeCollectIdempotency). */
const GC_PASS_KEYS = 2000;
const GC_PASS_MS = 20;

/** The rounds begun since the last batch went out, and the writes they make. */
interface Group {
  seq: number;
  rounds: Round[];
  /** Raft log and hard state of the rounds: one WAL record. */
  wal: WalItem[];
  /** LevelDB ops of the rounds (installs), and the applied state they staged (in the overlay). */
  ops: BatchOp[];
  /** Staged state key -> its op in `ops`: a key written again in the same batch (a shard's applied index every round, a hot record) replaces its op. */
  staged: Map<string, number>;
  /** A snapshot install: the LevelDB batch is synced, and written after the WAL append. */
  sync: boolean;
  /** Replica checkpoints of its rounds: no later round joins it, so once it lands LevelDB holds their shards' state exactly there. */
  checkpoints: Array<{ shard: number; index: number }>;
}

const newGroup = (seq: number): Group => ({ seq, rounds: [], wal: [], ops: [], staged: new Map(), sync: false, checkpoints: [] });

/** PLANTED BUG (`--plant-bug replica-diverges`): a stored record with its last byte changed, as damage or a bad apply leaves it. */
const divergedRecord = (v: Uint8Array): Uint8Array => {
  const c = Uint8Array.from(v);
  if (c.length > 0) c[c.length - 1] = (c[c.length - 1] as number) ^ 0x01;
  return c;
};

/** Wait for both; fail with the first failure (never leave one running behind a rejection). */
async function settleBoth(a: Promise<unknown>, b: Promise<unknown>): Promise<void> {
  const [ra, rb] = await Promise.allSettled([a, b]);
  if (ra.status === 'rejected') throw ra.reason;
  if (rb.status === 'rejected') throw rb.reason;
}

/**
 * One storage node: a Store of replicas over one LevelDB, the peer transport
 * and the round loop. The HTTP API (http.ts) sits on top of this.
 *
 * The loop pipelines rounds (like etcd's asynchronous storage writes): a
 * round steps what arrived, sends what may go before its batch is durable,
 * applies committed entries at once (into the overlay, completing their
 * requests) and adds its writes to the next batch. At most one batch is
 * being written at a time; when it lands, its rounds are acknowledged in
 * order and their other messages sent, and the rounds gathered meanwhile go
 * out as the next batch. With midFlightRounds = 0 a round begins only when
 * no batch is in flight (one round per batch: the largest group commits).
 */
export class KvNode {
  readonly map: ClusterMap;
  readonly metrics: NodeMetrics;
  /** This node's replica checks (hashes at checkpoints; compared with peers' by the HTTP layer). */
  readonly checks: ReplicaChecks;
  store!: Store;
  ring!: HashRing;
  private db!: Db;
  /** The Raft log and hard state of every replica here (LevelDB holds the state). */
  private wal!: Wal;
  /** The hard state of each shard as last appended to the WAL (the header of every new segment). */
  private readonly walHard = new Map<number, HardState>();
  private transport!: Transport;
  private tickTimer: NodeJS.Timeout | null = null;
  /** Monotonic time ticks count from, and ticks handed to the store so far (see catchUpTicks). */
  private tickOrigin = 0;
  private ticksGiven = 0;
  private lagTimer: NodeJS.Timeout | null = null;
  private wakeResolve: (() => void) | null = null;
  private loopDone: Promise<void> = Promise.resolve();
  private stopping = false;
  private ready = false;
  private readonly snapLedger: SnapshotLedger;
  /** --fault-drop-snapshot-chunk: done once. */
  private droppedSnapshotChunk = false;
  /** Our snapshot streams running (started, not yet ended), by stream id: a refusal from their follower stops them. */
  private readonly streamsOut = new Map<string, { shard: number; to: number; refused: { why: string | null } }>();
  private snapshotReceiver!: SnapshotReceiver;
  private pendingSnapshotSends: Array<{ shard: number; to: number; msg: Message }> = [];
  /** Snapshot streams running per follower (--snapshot-streams-per-peer); the others wait their turn. */
  private readonly streamGate: KeyedGate;
  private lastLeaders = new Map<number, number>();
  /** Shards whose replica here recovers lost state (see "Lost state" in raft/raft-node.ts), for the log. */
  private recovering = new Set<number>();
  private gcCursor = new Map<number, Uint8Array>();
  /** Node-level liveness of peers: last frame time and the peer process's incarnation. */
  private readonly incarnation = `${process.pid}-${Date.now()}`;
  private readonly lastHeard = new Map<number, number>();
  private readonly peerIncarnation = new Map<number, string>();
  private lastGcMs = 0;
  /** Idempotency collection: the shard (index into shards()) a pass resumes after, and whether the last pass was cut short. */
  private gcShardAt = -1;
  private gcBacklog = false;
  private readonly overlay = new Overlay();
  /** LevelDB's values of keys the API read lately (see read-cache.ts). */
  readonly readCache: ReadCache;
  private group: Group = newGroup(1);
  private writing: Promise<void> | null = null;
  /** When the batch being written began (monotonic ms). */
  private writingSince = 0;
  private landedSeq = 0;
  private landWaiters: Array<{ seq: number; resolve: () => void }> = [];
  private midRounds = 0;
  private landedSinceMaintenance = false;
  /** PLANTED BUG (replica-diverges): data puts seen. */
  private plantedPuts = 0;
  /** The state machine's port: reads see the overlay; writes are staged for the next batch. */
  private readonly statePort: KvStatePort = {
    get: (key) => {
      const o = this.overlay.get(key);
      return o === undefined ? this.db.getSync(key) : (o ?? undefined);
    },
    put: (key, value) => {
      if (this.cfg.plantBug === 'replica-diverges' && key[0] === DATA_KIND && ++this.plantedPuts % 10 === 0) value = divergedRecord(value);
      this.stage({ type: 'put', key, value }, value);
    },
    del: (key) => this.stage({ type: 'del', key }, null),
  };
  private readonly port = (): KvStatePort => this.statePort;
  fatal: Error | null = null;

  private readonly slowPersist: RateLimitedWarn;

  constructor(readonly cfg: NodeConfig, readonly log: Logger) {
    this.map = buildClusterMap(cfg.cluster);
    this.metrics = new NodeMetrics(cfg.id);
    this.checks = new ReplicaChecks(log, this.metrics);
    this.slowPersist = new RateLimitedWarn(log, 'slow persist: writing a batch took long (walMs, leveldbMs: when each part finished)', 5_000, () => this.metrics.slowPersists.inc());
    this.snapLedger = new SnapshotLedger(cfg.snapshotTimeoutMs);
    this.streamGate = new KeyedGate(cfg.snapshotStreamsPerPeer);
    this.metrics.snapshotStreamsQueued = () => this.streamGate.totalQueued();
    this.readCache = new ReadCache(cfg.readCacheMb * 1024 * 1024);
    this.metrics.readCache = () => ({ hits: this.readCache.hits, misses: this.readCache.misses, bytes: this.readCache.usedBytes });
    this.metrics.raftLogMemory = () => {
      const t = this.store.logMemoryTotals();
      return { entries: t.entries, bytes: logMemoryOf(t) };
    };
  }

  isReady(): boolean {
    return this.ready && this.fatal === null;
  }

  async start(): Promise<void> {
    const cfg = this.cfg;
    this.ring = new HashRing(this.map.shards.map((s) => s.id), this.map.ring, await createHash32());
    this.db = await openDb(cfg.dataDir);
    const { id: _i, initialConf: _c, random: _r, applied: _a, trace: _t, ...raft } = {
      ...cfg.raft, id: 0, initialConf: null, random: null, applied: 0, trace: undefined,
    };
    this.store = new Store({
      nodeId: cfg.id, raft, random: Math.random, idempotencyRetentionMs: cfg.idempotencyRetentionMs,
      maxQueuedPerShard: cfg.maxQueuedPerShard, maxInbox: cfg.maxInbox, noQuorumTicks: cfg.noQuorumTicks,
      quiesceAfterTicks: cfg.quiesceAfterTicks,
    });
    const mine = this.map.shards.filter((s) => s.replicas.includes(cfg.id));
    // Each record is folded as it is read: no segment stays in memory (see readSegment).
    const fold = new WalFold();
    /** segment -> shard -> highest entry index in it (for deleting segments: Wal.noteEntries). */
    const maxima = new Map<number, Map<number, number>>();
    const note = (segment: number, shard: number, max: number): void => {
      let m = maxima.get(segment);
      if (m === undefined) maxima.set(segment, (m = new Map()));
      if (max > (m.get(shard) ?? 0)) m.set(shard, max);
    };
    const opened = await Wal.open({
      dir: join(cfg.dataDir, 'wal'), segmentBytes: cfg.walSegmentBytes, header: () => encodeHeader(this.walHard),
      onWarn: (msg, err) => this.log.warn({ err }, msg), plantNoDsync: cfg.plantBug === 'wal-no-dsync',
      plantCorruptAsTorn: cfg.plantBug === 'wal-corrupt-as-torn',
    }, (segment, payload) => fold.add(payload, (shard, max) => note(segment, shard, max)));
    this.wal = opened.wal;
    for (const [segment, m] of maxima) for (const [shard, max] of m) this.wal.noteEntries(segment, shard, max);
    if (this.wal.tornAtOpen !== null) this.log.warn(this.wal.tornAtOpen, 'WAL: torn tail dropped (a crash during a write)');
    const walShards = fold.shards;
    for (const [shard, w] of walShards) if (w.hardState !== null) this.walHard.set(shard, w.hardState);
    // A data directory of the earlier format (log and hard state in LevelDB): import it once.
    const legacy: WalItem[] = [];
    for (const s of mine) legacy.push(...await readLegacyLog(this.db, s.id));
    if (legacy.length > 0) {
      const max = new Map<number, number>();
      for (const it of legacy) {
        if (it.hardState !== null) this.walHard.set(it.shard, it.hardState);
        const last = it.entries[it.entries.length - 1];
        if (last !== undefined) max.set(it.shard, last.index);
      }
      const rec = encodeBatch(legacy);
      await this.wal.append(rec, max);
      for (const s of mine) await dropLegacyLog(this.db, s.id);
      fold.add(rec);
      this.log.info({ shards: legacy.length }, 'WAL: imported the Raft log and hard state from LevelDB (earlier format)');
    }
    for (const s of mine) {
      const w = walShards.get(s.id);
      const boot = await loadReplica(this.db, s.id, s.replicas, w);
      this.wal.compacted(s.id, boot.persisted?.snapshot?.meta.index ?? 0);
      this.store.addReplica(boot);
    }
    this.snapshotReceiver = new SnapshotReceiver(this.db, this.store, this.log, this.metrics, () => this.wake());
    this.snapshotReceiver.idleGiveUpMs = Math.max(60_000, 6 * this.cfg.snapshotTimeoutMs);
    // A sender of an older release would drop the connection on a frame it does not know.
    this.snapshotReceiver.onRefuse = (to, shard, id, why) => {
      if (this.transport.protocolOf(to) >= 3) this.transport.send(to, ['sx', shard, id, why]);
    };
    this.snapshotReceiver.protocol = cfg.peerProtocol;
    this.snapshotReceiver.sweep(mine.map((s) => ({ shard: s.id, gen: this.store.generation(s.id) })));
    const peers = new Map(this.map.nodes.map((n) => [n.id, n.peerAddr] as [number, string]));
    const [host, port] = [cfg.peerListen.slice(0, cfg.peerListen.lastIndexOf(':')), Number(cfg.peerListen.slice(cfg.peerListen.lastIndexOf(':') + 1))];
    this.transport = new Transport({
      nodeId: cfg.id, clusterId: cfg.clusterId, listenHost: host, listenPort: port, peers, log: this.log,
      maxFrameBytes: 64 << 20, maxQueuedBytes: 32 << 20, connectTimeoutMs: 1000, protocol: cfg.peerProtocol,
      onFrame: (from, f) => this.onFrame(from, f), metrics: this.metrics.transport(),
    });
    await this.transport.listen();
    const started = monoNowMs();
    this.tickOrigin = performance.now();
    this.tickTimer = setInterval(() => {
      this.catchUpTicks();
      this.livenessTick(started);
      this.wake();
    }, cfg.tickMs);
    const h = monitorEventLoopDelay({ resolution: 10 });
    h.enable();
    this.lagTimer = setInterval(() => {
      this.metrics.eventLoopLag.set(h.percentile(99) / 1e9);
      h.reset();
      this.updateRaftGauges();
    }, 1000);
    this.loopDone = this.runLoop().catch((e: unknown) => this.stopServing(e, 'round loop failed: the node stops serving'));
    this.ready = true;
    this.log.info({ shards: this.store.shards().length, map: { epoch: this.map.epoch } }, 'node started');
  }

  /**
   * Ticks follow the monotonic clock, not the count of timer callbacks: a
   * timer that fires late (event-loop stall, GC, SIGSTOP) owes the ticks it
   * missed. Without this a leader resumed after a long pause would still count
   * its lease as fresh — one tick older, not seconds older — and could serve a
   * lease read after another leader was elected. Called by the timer and
   * before every round, so a request handled right after a stall (I/O runs
   * before timers when the loop wakes) already sees the elapsed ticks. A
   * stall longer than two election timeouts is capped: every timeout has
   * expired by then anyway.
   */
  private catchUpTicks(): void {
    const due = Math.floor((performance.now() - this.tickOrigin) / this.cfg.tickMs);
    let missed = due - this.ticksGiven;
    if (missed <= 0) return;
    const cap = 2 * this.cfg.raft.electionTicks + 2;
    if (missed > cap) missed = cap;
    const now = monoNowMs();
    for (let i = 0; i < missed; i++) this.store.tick(now);
    this.ticksGiven = due;
  }

  /**
   * The node cannot go on (a failed persist, a failed round): it stops serving, and falls silent to its
   * peers. Any frame from it (a ping, a snapshot stream's chunk, a refusal) tells them it is alive: the
   * quiesced groups it led would never be woken, and stay without a leader until it was killed.
   */
  private stopServing(e: unknown, msg: string): void {
    this.fatal = e instanceof Error ? e : new Error(String(e));
    this.log.fatal({ err: e }, msg);
    void this.transport?.close().catch(() => undefined);
  }

  /**
   * Ping every peer (one frame per node pair per tick) and wake groups led by silent peers. None once
   * fatal (see stopServing), and none while a batch has been writing for four election timeouts: a disk
   * that stalls (an fsync stuck) stops this node's rounds, so the groups it leads can neither commit
   * nor answer, and its pings would keep the quiesced ones from electing elsewhere until the disk came
   * back. Pings resume once the batch lands.
   */
  private livenessTick(started: number): void {
    if (this.fatal !== null) return;
    const now = monoNowMs();
    const silentMs = this.cfg.raft.electionTicks * this.cfg.tickMs;
    if (this.writing !== null && now - this.writingSince > 4 * silentMs) return;
    for (const n of this.map.nodes) {
      if (n.id === this.cfg.id) continue;
      this.transport.send(n.id, ['p', this.incarnation], 0);
      if (now - (this.lastHeard.get(n.id) ?? started) > silentMs) this.store.wakeLedBy(n.id);
    }
  }

  /** A returned promise holds the peer's connection until it settles (snapshot receiver backlog). */
  private onFrame(from: number, f: Frame): Promise<void> | undefined {
    const now = monoNowMs();
    this.lastHeard.set(from, now);
    switch (f[0]) {
      case 'p': {
        const prev = this.peerIncarnation.get(from);
        if (typeof f[1] !== 'string') throw new Error('bad ping');
        // A restarted peer forgot everything; groups it led must not wait for it.
        if (prev !== undefined && prev !== f[1]) {
          this.store.wakeLedBy(from);
          this.store.peerRestarted(from);
        }
        this.peerIncarnation.set(from, f[1]);
        this.wake();
        return;
      }
      case 'm': {
        const items: Array<[number, Message]> = [];
        for (const it of f[1]) {
          if (!Array.isArray(it) || it.length !== 2 || !Number.isSafeInteger(it[0])) throw new Error('bad message item');
          const m = fromWireMessage(it[1], this.transport.protocol);
          if (m.from !== from) throw new Error('message from a different node than the connection');
          items.push([it[0] as number, m]);
        }
        this.store.receive(items, now);
        this.wake();
        return;
      }
      case 'sc':
        if (this.cfg.faultDropSnapshotChunk && !this.droppedSnapshotChunk && f[5] === 1) {
          this.droppedSnapshotChunk = true;
          this.log.warn({ shard: f[1], stream: f[2] }, 'TESTS ONLY (--fault-drop-snapshot-chunk): snapshot chunk 1 dropped');
          return;
        }
        return this.snapshotReceiver.onFrame(from, f);
      case 'sd':
        return this.snapshotReceiver.onFrame(from, f);
      case 'sx': {
        const [, shard, id, why] = f;
        if (!Number.isSafeInteger(shard) || typeof id !== 'string' || typeof why !== 'string') throw new Error('bad snapshot refusal frame');
        this.onRefused(from, shard, id, why.slice(0, 200));
        return;
      }
      default:
        throw new Error(`unknown frame ${String(f[0])}`);
    }
  }

  private stage(op: BatchOp, value: Uint8Array | null): void {
    const g = this.group;
    const k = this.overlay.set(op.key, value, g.seq);
    const at = g.staged.get(k);
    if (at === undefined) {
      g.staged.set(k, g.ops.length);
      g.ops.push(op);
    } else {
      g.ops[at] = op;
    }
  }

  /** Wake the round loop: there is work. */
  wake(): void {
    const r = this.wakeResolve;
    if (r !== null) {
      this.wakeResolve = null;
      r();
    }
  }

  private async runLoop(): Promise<void> {
    while (!this.stopping && this.fatal === null) {
      if (this.writing === null && this.landedSinceMaintenance) {
        // Between batches with nothing pending: compaction, snapshot streams and
        // collection read LevelDB directly and must see every applied change.
        this.landedSinceMaintenance = false;
        await this.maintenance();
        continue;
      }
      const canRound = this.canRound();
      if (canRound) this.catchUpTicks();
      const began = canRound && this.runRound();
      if (began && this.writing !== null) this.midRounds++;
      if (this.writing === null) this.submit();
      if (began) {
        // Let requests and peer frames in before the next round.
        await new Promise<void>((resolve) => setImmediate(resolve));
        continue;
      }
      await new Promise<void>((resolve) => {
        this.wakeResolve = resolve;
        const canNow = this.canRound();
        const maintain = this.writing === null && this.landedSinceMaintenance;
        if (this.stopping || this.fatal !== null || maintain || (canNow && this.store.hasWork())) this.wake();
      });
    }
  }

  /** Whether a round may begin now: at most midFlightRounds join a batch while one is written, none a batch with a checkpoint. */
  private canRound(): boolean {
    return this.group.checkpoints.length === 0 && (this.writing === null || this.midRounds < this.cfg.midFlightRounds);
  }

  /** Begin a round: send what may go early, apply what is committed, and add its writes to the next batch. */
  private runRound(): boolean {
    const t0 = performance.now();
    const round = this.store.beginRound(monoNowMs());
    if (round === null) return false;
    this.sendMessages(round.early);
    const g = this.group;
    this.store.applyRound(round, this.port);
    for (const it of round.wal) g.wal.push(it);
    for (const op of round.persist) g.ops.push(op);
    if (round.mustSync) g.sync = true;
    for (const cp of round.checkpoints) g.checkpoints.push(cp);
    g.rounds.push(round);
    this.metrics.roundDuration.observe({ phase: 'round' }, (performance.now() - t0) / 1000);
    return true;
  }

  /**
   * Write the rounds gathered since the last batch (at most one batch in
   * flight): their Raft log and hard state as one WAL record (synced), their
   * state ops as one LevelDB batch, at the same time. The batch is durable
   * once both are done: the WAL is synced, and the LevelDB batch has landed
   * (unsynced: a kill -9 keeps it in the page cache; after a power loss the
   * applied index may go back, and the WAL still holds every entry above the
   * last synced compaction, so Raft applies them again). A snapshot install
   * writes its LevelDB batch synced and only after its WAL marker is durable.
   */
  private submit(): void {
    const g = this.group;
    if (this.writing !== null || (g.rounds.length === 0 && g.ops.length === 0 && g.wal.length === 0)) return;
    this.group = newGroup(g.seq + 1);
    this.midRounds = 0;
    if (g.ops.length === 0 && g.wal.length === 0) {
      this.landed(g);
      return;
    }
    const t0 = performance.now();
    this.writingSince = monoNowMs();
    // LevelDB may show this batch to getSync before it lands (the WAL sync is the slow part): no cached
    // value of its keys may outlive that, or reads would see later keys new and these old.
    if (this.cfg.plantBug !== 'stale-read-cache') this.readCache.drop(g.staged.keys());
    this.metrics.roundEntries.observe(g.ops.length);
    // When each part finished (ms since t0): a slow batch says which part was slow.
    let walMs = 0;
    let leveldbMs = 0;
    const walDone = (g.wal.length > 0 ? this.appendWal(g.wal) : Promise.resolve()).then(() => { walMs = performance.now() - t0; });
    const timedBatch = (sync: boolean): Promise<void> => writeBatch(this.db, g.ops, sync).then(() => {
      leveldbMs = performance.now() - t0;
      if (g.ops.length > 0) this.metrics.roundDuration.observe({ phase: 'leveldb' }, leveldbMs / 1000);
    });
    const both = g.sync ? walDone.then(() => timedBatch(true)) : settleBoth(walDone, timedBatch(false));
    this.writing = both.then(
      () => {
        const ms = performance.now() - t0;
        this.metrics.roundDuration.observe({ phase: 'persist' }, ms / 1000);
        if (ms >= this.cfg.slowPersistMs) this.slowPersist.report({ ms: Math.round(ms), walMs: Math.round(walMs), leveldbMs: Math.round(leveldbMs), leveldbOps: g.ops.length, synced: g.sync });
        this.writing = null;
        this.landed(g);
        // Rounds begun while this batch was in flight go out at once.
        this.submit();
        this.wake();
      },
      (e: unknown) => {
        this.writing = null;
        this.stopServing(e, 'persisting a batch failed: the node stops serving');
        for (const w of this.landWaiters) w.resolve();
        this.landWaiters = [];
        this.wake();
      },
    );
  }

  /** One WAL record for the batch's log and hard state; resolves once synced. */
  private async appendWal(items: WalItem[]): Promise<void> {
    const max = new Map<number, number>();
    for (const it of items) {
      const last = it.entries[it.entries.length - 1];
      if (last !== undefined && last.index > (max.get(it.shard) ?? 0)) max.set(it.shard, last.index);
    }
    const t0 = performance.now();
    if (this.cfg.faultSlowWalMs > 0) await new Promise((r) => setTimeout(r, this.cfg.faultSlowWalMs));
    await this.wal.append(encodeBatch(items), max);
    this.metrics.roundDuration.observe({ phase: 'wal' }, (performance.now() - t0) / 1000);
    for (const it of items) if (it.hardState !== null) this.walHard.set(it.shard, it.hardState);
  }

  /** Batch g is durable: acknowledge its rounds in order, install snapshots, send what waited for it. */
  private landed(g: Group): void {
    const late = new Map<number, Array<[number, Message]>>();
    for (const r of g.rounds) {
      this.store.persistedRound(r);
      for (const inst of r.installs) {
        this.readCache.clear();
        this.snapshotReceiver.installed(inst.shard, inst.snapshot);
        this.wal.compacted(inst.shard, inst.snapshot.meta.index);
      }
      for (const [to, items] of r.messages) {
        const q = late.get(to);
        if (q === undefined) late.set(to, items);
        else for (const it of items) q.push(it);
      }
    }
    this.sendMessages(late);
    // LevelDB holds each checkpoint's shard exactly at its index now: no later batch was written yet.
    for (const cp of g.checkpoints) this.checks.capture(this.db, cp.shard, cp.index);
    this.overlay.release(g.staged.keys(), g.seq);
    this.landedSeq = g.seq;
    if (this.landWaiters.length > 0) {
      const still: typeof this.landWaiters = [];
      for (const w of this.landWaiters) if (w.seq <= g.seq) w.resolve(); else still.push(w);
      this.landWaiters = still;
    }
    if (g.rounds.length > 0) this.landedSinceMaintenance = true;
  }

  /** Resolves once every state change applied so far is in LevelDB (for readers that go to LevelDB directly). */
  appliedWritten(): Promise<void> {
    const seq = this.group.ops.length > 0 ? this.group.seq : this.group.seq - 1;
    if (seq <= this.landedSeq || this.fatal !== null) return Promise.resolve();
    this.wake();
    return new Promise((resolve) => this.landWaiters.push({ seq, resolve }));
  }

  /**
   * A state value as applied: staged in the overlay, else from LevelDB.
   * Synchronous (getSync): about 6 us when the block is cached, against a
   * thread-pool round trip and a promise for get(); the state of this
   * store's working set lives in LevelDB's cache and the page cache.
   */
  readState(key: Uint8Array): Uint8Array | undefined {
    const k = keyString(key);
    const o = this.overlay.getByString(k);
    if (o !== undefined) return o ?? undefined;
    // The planted bug lives on the stale path alone (readLanded): linearizable reads stay right, so only
    // the checks of stale reads can catch it (test/fault/checks.ts, test/integration/read-cache.test.ts).
    if (this.cfg.plantBug === 'stale-read-cache') return this.db.getSync(key);
    return this.cachedGet(k, key);
  }

  /** A state value as it is in LevelDB (what a kill -9 would leave), without the overlay. */
  readLanded(key: Uint8Array): Uint8Array | undefined {
    return this.readCache.enabled ? this.cachedGet(keyString(key), key) : this.db.getSync(key);
  }

  private cachedGet(k: string, key: Uint8Array): Uint8Array | undefined {
    const c = this.readCache;
    if (!c.enabled) return this.db.getSync(key);
    const hit = c.get(k);
    if (hit !== undefined) return hit;
    const v = this.db.getSync(key);
    // A key with a write staged or in flight is not cached: its batch drops it from the cache as it
    // goes to LevelDB, and a value read now could be either side of that batch.
    if (v !== undefined && (this.overlay.getByString(k) === undefined || this.cfg.plantBug === 'stale-read-cache')) c.fill(k, v);
    return v;
  }

  private async maintenance(): Promise<void> {
    // No round runs meanwhile (no heartbeat, no answer to a peer): say so when it takes long.
    const t0 = performance.now();
    const sends = this.pendingSnapshotSends.length;
    this.startSnapshotSends();
    const t1 = performance.now();
    await this.maybeCompact();
    const t2 = performance.now();
    await this.maybeCollectIdempotency();
    const t3 = performance.now();
    const ms = t3 - t0;
    const parts = this.metrics.maintenanceParts;
    parts.snapshotSends.observe((t1 - t0) / 1000);
    parts.compact.observe((t2 - t1) / 1000);
    parts.idempotencyGc.observe((t3 - t2) / 1000);
    if (ms > 300) {
      this.log.warn({ ms: Math.round(ms), snapshotSendsMs: Math.round(t1 - t0), sends, compactMs: Math.round(t2 - t1), gcMs: Math.round(t3 - t2) }, 'slow maintenance between rounds');
    }
  }

  private sendMessages(messages: Round['messages']): void {
    for (const [to, items] of messages) {
      const wire: Array<[number, unknown]> = [];
      const protocol = this.transport.protocolOf(to);
      for (const [shard, m] of items) {
        if (m.type === MsgType.Snap) {
          this.pendingSnapshotSends.push({ shard, to, msg: m });
          continue;
        }
        wire.push([shard, toWireMessage(m, protocol)]);
      }
      if (wire.length > 0) this.transport.send(to, ['m', wire], wire.length);
    }
  }

  /**
   * The follower `from` gave up our stream `id` (an `sx` frame): a running one stops before its next
   * frame (and fails: the core is told); one sent in full and settling is forgotten and the core told
   * now, so it streams again soon (the ledger's backoff: 250 ms, doubling while refusals go on) instead
   * of after the settle time (snapshotTimeoutMs). An `sx` lost on the way (the link down, its queue
   * full) is not sent again: the settle time still bounds the wait.
   */
  private onRefused(from: number, shard: number, id: string, why: string): void {
    const out = this.streamsOut.get(id);
    if (out !== undefined) {
      if (out.to === from && out.shard === shard) out.refused.why = why;
      return;
    }
    if (!this.snapLedger.refused(shard, from, id)) return;
    this.log.warn({ shard, peer: from, stream: id, why }, 'snapshot stream refused by the follower after it was sent: streaming again');
    this.metrics.snapshots.inc({ direction: 'sent', result: 'refused' });
    this.store.reportSnapshot(shard, from, false);
    this.wake();
  }

  /**
   * With no batch pending: take a consistent cut of each shard to stream, then
   * stream it in the background. One stream per shard and follower: while one
   * runs or settles (see SnapshotLedger), the core's repeated asks are
   * dropped. A finished stream is not reported to the core: reporting it
   * would move the follower's progress to probing at the index the core
   * asked for, below the fresh cut just streamed, so the first probe would
   * ask for the same snapshot again while the follower is still installing
   * it. The follower's answer after the install moves the progress on; if
   * that never comes, the core's snapshot timer asks again, and the stream is
   * sent again once it has settled.
   *
   * A cut does not compact the log (it once did, to the cut): with five
   * replicas or learners, a second follower a little behind would then have
   * needed a snapshot too. The entries after the cut stay until the budget
   * rules compact them (maybeCompact), held while the stream runs or settles.
   */
  private startSnapshotSends(): void {
    const sends = this.pendingSnapshotSends;
    this.pendingSnapshotSends = [];
    for (const { shard, to, msg } of sends) {
      if (!this.snapLedger.mayStart(shard, to)) continue;
      const snapshot = this.store.snapshotForSend(shard);
      if (snapshot === null) {
        this.store.reportSnapshot(shard, to, false);
        continue;
      }
      const id = newStreamId(this.cfg.id, shard, snapshot.meta.index);
      const refused = { why: null as string | null };
      this.snapLedger.started(shard, to, snapshot.meta.index, id);
      this.streamsOut.set(id, { shard, to, refused });
      const gen = this.store.generation(shard);
      // Opened now, with no round in flight: each iterator reads a LevelDB snapshot of exactly the cut.
      // The streams go through the gate, and wait there with their iterators open and their shard's
      // compaction held.
      const iters: Iter[] = (['d', 'i'] as const).map((kind) => {
        const [gte, lt] = shardStateRange(shard, gen, kind);
        return { kind, it: this.db.iterator({ gte, lt, highWaterMarkBytes: ITER_HIGH_WATER_BYTES }) };
      });
      this.streamGate.run(to, () => streamSnapshot({
        transport: this.transport, shard, to, msg, snapshot, iters, chunkBytes: this.cfg.snapshotChunkBytes,
        timeoutMs: this.cfg.snapshotTimeoutMs, id, refused, log: this.log,
      })).then(
        () => {
          this.streamsOut.delete(id);
          this.snapLedger.finished(shard, to, true, id);
          // Refused while its last frame went out: as if refused once settling (onRefused counts it).
          if (refused.why !== null) this.onRefused(to, shard, id, refused.why);
          else this.metrics.snapshots.inc({ direction: 'sent', result: 'ok' });
        },
        (e: unknown) => {
          this.streamsOut.delete(id);
          this.metrics.snapshots.inc({ direction: 'sent', result: refused.why !== null ? 'refused' : 'error' });
          this.log.warn({ shard, peer: to, err: (e as Error).message }, 'snapshot stream failed');
          // Refused: the next stream waits out the ledger's backoff (a follower that refuses every one).
          if (refused.why !== null) this.snapLedger.refused(shard, to, id);
          else this.snapLedger.finished(shard, to, false, id);
          this.store.reportSnapshot(shard, to, false);
        },
      ).finally(() => this.wake());
    }
  }

  /**
   * Compact every shard whose log is long enough, and then (past walMaxSegments) those pinning the
   * oldest WAL segment, all in one durable write (persistCuts): shards under an even load reach the
   * threshold together, and a synced write per shard once held the rounds for 343 ms under load.
   */
  private async maybeCompact(): Promise<void> {
    const cuts: Array<{ shard: number; snapshot: Snapshot; below: number }> = [];
    // Runs between every two batches: look closer only when a rule may apply.
    const t = this.store.logMemoryTotals();
    if (t.most < this.cfg.compactEveryEntries && logMemoryOf(t) <= this.cfg.logMemoryBytes) return this.releaseIfManySegments(cuts);
    // A follower being sent (or installing) a snapshot needs the entries after it: `held`.
    const grace = Math.ceil(FOLLOWER_GRACE_MS / this.cfg.tickMs);
    const logs = this.store.shards().map((shard) => {
      const use = this.store.logMemory(shard, grace, this.cfg.compactEveryEntries);
      const streamed = this.snapLedger.heldIndex(shard);
      return { shard, ...use, held: streamed === null ? 0 : Math.max(0, use.applied - streamed) };
    });
    const plan = compactionPlan(logs, { everyEntries: this.cfg.compactEveryEntries, keepEntries: this.cfg.compactKeepEntries, budgetBytes: this.cfg.logMemoryBytes });
    for (const { shard, keep } of plan) {
      const cut = this.store.compact(shard, keep);
      if (cut === null) continue;
      cuts.push({ shard, snapshot: cut.snapshot, below: cut.below });
      this.metrics.logCompactions.inc({ reason: 'log' });
      const use = logs.find((l) => l.shard === shard);
      this.log.info({ shard, index: cut.below - 1, kept: keep, entries: use?.entries, neededByFollower: use?.needed, memoryBytes: use === undefined ? 0 : logMemoryOf(use), followers: this.store.progressSummary(shard) }, 'raft log compacted');
    }
    await this.releaseIfManySegments(cuts);
  }

  private async releaseIfManySegments(cuts: Array<{ shard: number; snapshot: Snapshot; below: number }>): Promise<void> {
    const many = this.wal.segmentCount() > this.cfg.walMaxSegments;
    if (many) this.releaseOldSegments(cuts);
    await this.persistCuts(cuts);
    // Segments nothing pins any more (every start after a written segment begins a new one, and one
    // holding only hard states or compacted entries pins nothing) go without a compaction.
    if (many && cuts.length === 0) await this.wal.collect();
  }

  /**
   * Make compactions durable: every cut's snapshot meta in ONE synced LevelDB write; then the
   * entries below each cut are covered, and the WAL segments holding only such entries go.
   */
  private async persistCuts(cuts: Array<{ shard: number; snapshot: Snapshot; below: number }>): Promise<void> {
    if (cuts.length === 0) return;
    await this.snapshotReceiver.persistCompactions(cuts);
    for (const c of cuts) this.wal.compacted(c.shard, c.below - 1);
    await this.wal.collect();
  }

  /**
   * A shard that writes little never reaches compactEveryEntries, and its few
   * entries in the oldest WAL segment would keep that segment — and every
   * later one — on disk forever. Past walMaxSegments, compact each shard that
   * pins the oldest segment exactly at its highest entry there (once applied;
   * a whole segment of writes later, its followers are long past it).
   */
  private releaseOldSegments(cuts: Array<{ shard: number; snapshot: Snapshot; below: number }>): void {
    const done = new Set(cuts.map((c) => c.shard));
    for (const [shard, index] of this.wal.pinning()) {
      if (done.has(shard)) continue;
      const applied = this.store.status(shard).applied;
      const streamed = this.snapLedger.heldIndex(shard);
      if (applied < index || (streamed !== null && index > streamed)) continue;
      const cut = this.store.compact(shard, applied - index);
      if (cut === null) continue;
      cuts.push({ shard, snapshot: cut.snapshot, below: cut.below });
      this.metrics.logCompactions.inc({ reason: 'wal_segments' });
    }
  }

  /**
   * Idempotency records past the retention window (in the shard's log time)
   * are already treated as absent by every replica; deleting them is a local
   * space reclaim that changes no outcome. Each pass reads a bounded slice
   * of each shard's table, then re-checks and deletes between rounds, so no
   * apply can race the delete.
   */
  private async maybeCollectIdempotency(): Promise<void> {
    const now = Date.now();
    if (!this.gcBacklog && now - this.lastGcMs < this.cfg.idempotencyGcIntervalMs) return;
    this.lastGcMs = now;
    this.gcBacklog = false;
    const retention = this.cfg.idempotencyRetentionMs;
    const shards = this.store.shards();
    // No round runs during maintenance: one pass reads at most GC_PASS_KEYS keys and stops after
    // GC_PASS_MS, resuming at the next shard on the next pass (a pass over every shard took 0.3-0.5 s
    // under load, stalling rounds toward the election timeout). A pass cut short continues at the next
    // maintenance instead of after the interval, so collection keeps up with a busy write load.
    const t0 = performance.now();
    let budget = GC_PASS_KEYS;
    for (let n = 0; n < shards.length; n++) {
      if (budget <= 0 || performance.now() - t0 > GC_PASS_MS) {
        this.gcBacklog = true;
        return;
      }
      this.gcShardAt = (this.gcShardAt + 1) % shards.length;
      const shard = shards[this.gcShardAt] as number;
      const gen = this.store.generation(shard);
      const [lo, hi] = shardStateRange(shard, gen, 'i');
      const from = this.gcCursor.get(shard);
      const it = this.db.iterator(from === undefined ? { gte: lo, lt: hi } : { gt: from, lt: hi });
      let keys: Uint8Array[] = [];
      try {
        keys = (await it.nextv(budget)).map(([k]) => k);
      } finally {
        await it.close();
      }
      budget -= keys.length;
      if (keys.length === 0) {
        this.gcCursor.delete(shard);
        continue;
      }
      this.gcCursor.set(shard, keys[keys.length - 1] as Uint8Array);
      if (this.store.generation(shard) !== gen) continue;
      const cutoff = this.store.status(shard).logTime - retention;
      const ops: BatchOp[] = [];
      for (const k of keys) {
        const v = this.db.getSync(k);
        if (v !== undefined && unpack<[number, unknown]>(v)[0] < cutoff) ops.push({ type: 'del', key: k });
      }
      await writeBatch(this.db, ops, false);
      if (ops.length > 0) this.metrics.idempotencyCollected.inc(ops.length);
    }
  }

  private updateRaftGauges(): void {
    this.metrics.proposalsPending.set(this.store.pendingRequests());
    const entered: number[] = [];
    const left: number[] = [];
    for (const shard of this.store.shards()) {
      const st = this.store.status(shard);
      const l = { shard: String(shard) };
      this.metrics.raftTerm.set(l, st.term);
      this.metrics.raftCommit.set(l, st.commit);
      this.metrics.raftApplied.set(l, st.applied);
      this.metrics.raftIsLeader.set(l, st.role === 'leader' ? 1 : 0);
      this.metrics.raftQuiesced.set(l, st.quiesced ? 1 : 0);
      this.metrics.raftRecovering.set(l, st.recovery === 'probing' ? 1 : st.recovery === 'catching-up' ? 2 : 0);
      if (st.recovery !== null && !this.recovering.has(shard)) {
        this.recovering.add(shard);
        entered.push(shard);
      } else if (st.recovery === null && this.recovering.delete(shard)) left.push(shard);
      const prev = this.lastLeaders.get(shard);
      if (prev !== undefined && prev !== st.leader) this.metrics.leaderChanges.inc(l);
      this.lastLeaders.set(shard, st.leader);
    }
    if (entered.length > 0) {
      this.log.info({ shards: entered }, 'replicas started without their state (a new cluster, or a lost data directory): they vote only once every voter told them its term and they follow a leader of a newer term');
    }
    if (left.length > 0) this.log.info({ shards: left, stillRecovering: this.recovering.size }, 'replicas recovered from starting without their state: they vote again');
  }

  reachablePeers(): number[] {
    return this.transport.connectedPeers();
  }

  dbHandle(): Db {
    return this.db;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.ready = false;
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    if (this.lagTimer !== null) clearInterval(this.lagTimer);
    this.wake();
    await this.loopDone;
    // What was applied but not yet written goes out before LevelDB closes.
    while (this.writing !== null) await this.writing;
    if (this.fatal === null) this.submit();
    while (this.writing !== null) await this.writing;
    await this.transport?.close();
    await this.checks.close();
    this.snapshotReceiver?.close();
    await this.snapshotReceiver?.idle();
    await this.wal?.close();
    await this.db?.close();
  }
}
