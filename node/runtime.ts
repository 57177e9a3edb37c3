import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { MsgType, type Message } from '../raft/index.ts';
import { buildClusterMap, type ClusterMap } from '../shard/cluster-map.ts';
import { shardStateRange } from '../shard/layout.ts';
import { fromWireMessage, toWireMessage } from '../shard/raft-codec.ts';
import { HashRing } from '../shard/ring.ts';
import { Store, type Round } from '../shard/store.ts';
import { ApplyBatch, loadReplica, openDb, truncateLog, writeBatch, type Db } from './db.ts';
import { unpack } from '../shard/codec.ts';
import type { BatchOp } from '../shard/store.ts';
import type { NodeConfig } from './config.ts';
import { createHash32 } from './hash.ts';
import { NodeMetrics } from './metrics.ts';
import { SnapshotReceiver, streamSnapshot } from './snapshots.ts';
import { Transport, type Frame } from './transport.ts';

/**
 * One storage node: a Store of replicas over one LevelDB, the peer transport
 * and the round loop. The HTTP API (http.ts) sits on top of this.
 */
export class KvNode {
  readonly map: ClusterMap;
  readonly metrics: NodeMetrics;
  store!: Store;
  ring!: HashRing;
  private db!: Db;
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
  private readonly sending = new Set<string>();
  private snapshotReceiver!: SnapshotReceiver;
  private pendingSnapshotSends: Array<{ shard: number; to: number; msg: Message }> = [];
  private lastLeaders = new Map<number, number>();
  private gcCursor = new Map<number, Uint8Array>();
  /** Node-level liveness of peers: last frame time and the peer process's incarnation. */
  private readonly incarnation = `${process.pid}-${Date.now()}`;
  private readonly lastHeard = new Map<number, number>();
  private readonly peerIncarnation = new Map<number, string>();
  private lastGcMs = 0;
  fatal: Error | null = null;

  constructor(readonly cfg: NodeConfig, readonly log: Logger) {
    this.map = buildClusterMap(cfg.cluster);
    this.metrics = new NodeMetrics(cfg.id);
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
    for (const s of this.map.shards) {
      if (!s.replicas.includes(cfg.id)) continue;
      this.store.addReplica(await loadReplica(this.db, s.id, s.replicas));
    }
    this.snapshotReceiver = new SnapshotReceiver(this.db, this.store, this.log, this.metrics, () => this.wake());
    const peers = new Map(this.map.nodes.map((n) => [n.id, n.peerAddr] as [number, string]));
    const [host, port] = [cfg.peerListen.slice(0, cfg.peerListen.lastIndexOf(':')), Number(cfg.peerListen.slice(cfg.peerListen.lastIndexOf(':') + 1))];
    this.transport = new Transport({
      nodeId: cfg.id, clusterId: cfg.clusterId, listenHost: host, listenPort: port, peers, log: this.log,
      maxFrameBytes: 64 << 20, maxQueuedBytes: 32 << 20, connectTimeoutMs: 1000,
      onFrame: (from, f) => this.onFrame(from, f), metrics: this.metrics.transport(),
    });
    await this.transport.listen();
    const started = Date.now();
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
    this.loopDone = this.runLoop().catch((e: unknown) => {
      this.fatal = e as Error;
      this.log.fatal({ err: e }, 'round loop failed: the node stops serving');
    });
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
    for (let i = 0; i < missed; i++) this.store.tick();
    this.ticksGiven = due;
  }

  /** Ping every peer (one frame per node pair per tick) and wake groups led by silent peers. */
  private livenessTick(started: number): void {
    const now = Date.now();
    const silentMs = this.cfg.raft.electionTicks * this.cfg.tickMs;
    for (const n of this.map.nodes) {
      if (n.id === this.cfg.id) continue;
      this.transport.send(n.id, ['p', this.incarnation], 0);
      if (now - (this.lastHeard.get(n.id) ?? started) > silentMs) this.store.wakeLedBy(n.id);
    }
  }

  private onFrame(from: number, f: Frame): void {
    const now = Date.now();
    this.lastHeard.set(from, now);
    switch (f[0]) {
      case 'p': {
        const prev = this.peerIncarnation.get(from);
        if (typeof f[1] !== 'string') throw new Error('bad ping');
        // A restarted peer forgot everything; groups it led must not wait for it.
        if (prev !== undefined && prev !== f[1]) this.store.wakeLedBy(from);
        this.peerIncarnation.set(from, f[1]);
        this.wake();
        return;
      }
      case 'm': {
        const items: Array<[number, Message]> = [];
        for (const it of f[1]) {
          if (!Array.isArray(it) || it.length !== 2 || !Number.isSafeInteger(it[0])) throw new Error('bad message item');
          const m = fromWireMessage(it[1]);
          if (m.from !== from) throw new Error('message from a different node than the connection');
          items.push([it[0] as number, m]);
        }
        this.store.receive(items, Date.now());
        this.wake();
        return;
      }
      case 'sc':
      case 'sd':
        this.snapshotReceiver.onFrame(from, f);
        return;
      default:
        throw new Error(`unknown frame ${String(f[0])}`);
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
    while (!this.stopping) {
      this.catchUpTicks();
      const round = this.store.beginRound();
      if (round === null) {
        if (this.pendingSnapshotSends.length > 0) {
          this.startSnapshotSends();
          continue;
        }
        await new Promise<void>((resolve) => {
          this.wakeResolve = resolve;
          if (this.store.hasWork() || this.stopping) this.wake();
        });
        continue;
      }
      await this.runRound(round);
      this.startSnapshotSends();
      await this.maybeCompact();
      await this.maybeCollectIdempotency();
    }
  }

  private async runRound(round: Round): Promise<void> {
    const t0 = performance.now();
    this.sendMessages(round.early);
    await writeBatch(this.db, round.persist, round.mustSync);
    const t1 = performance.now();
    this.metrics.roundDuration.observe({ phase: 'persist' }, (t1 - t0) / 1000);
    this.metrics.roundEntries.observe(round.persist.length);
    for (const inst of round.installs) this.snapshotReceiver.installed(inst.shard, inst.snapshot);
    this.sendMessages(round.messages);
    const ab = new ApplyBatch(this.db);
    this.store.applyRound(round, () => ab.port());
    await writeBatch(this.db, ab.ops, false);
    this.store.finishRound(round);
    this.metrics.roundDuration.observe({ phase: 'round' }, (performance.now() - t0) / 1000);
  }

  private sendMessages(messages: Round['messages']): void {
    for (const [to, items] of messages) {
      const wire: Array<[number, unknown]> = [];
      for (const [shard, m] of items) {
        if (m.type === MsgType.Snap) {
          this.pendingSnapshotSends.push({ shard, to, msg: m });
          continue;
        }
        wire.push([shard, toWireMessage(m)]);
      }
      if (wire.length > 0) this.transport.send(to, ['m', wire], wire.length);
    }
  }

  /** Between rounds: take a consistent cut of each shard to stream, then stream it in the background. */
  private startSnapshotSends(): void {
    const sends = this.pendingSnapshotSends;
    this.pendingSnapshotSends = [];
    for (const { shard, to, msg } of sends) {
      const key = `${shard}/${to}`;
      if (this.sending.has(key)) continue;
      const cut = this.store.compact(shard, 0);
      if (cut === null) {
        this.store.reportSnapshot(shard, to, false);
        continue;
      }
      this.sending.add(key);
      const gen = this.store.generation(shard);
      const iters = (['d', 'i'] as const).map((kind) => {
        const [gte, lt] = shardStateRange(shard, gen, kind);
        return { kind, it: this.db.iterator({ gte, lt }) };
      });
      void this.snapshotReceiver.persistCompaction(shard, cut.snapshot).then(() => truncateLog(this.db, shard, cut.below));
      streamSnapshot({
        transport: this.transport, shard, to, msg, snapshot: cut.snapshot, iters, chunkBytes: this.cfg.snapshotChunkBytes,
        timeoutMs: this.cfg.snapshotTimeoutMs, fromNode: this.cfg.id, log: this.log,
      }).then(
        () => {
          this.metrics.snapshots.inc({ direction: 'sent', result: 'ok' });
          this.store.reportSnapshot(shard, to, true);
        },
        (e: unknown) => {
          this.metrics.snapshots.inc({ direction: 'sent', result: 'error' });
          this.log.warn({ shard, peer: to, err: (e as Error).message }, 'snapshot stream failed');
          this.store.reportSnapshot(shard, to, false);
        },
      ).finally(() => {
        this.sending.delete(key);
        this.wake();
      });
    }
  }

  private async maybeCompact(): Promise<void> {
    for (const shard of this.store.shards()) {
      if (this.store.logLength(shard) < this.cfg.compactEveryEntries) continue;
      const cut = this.store.compact(shard, this.cfg.compactKeepEntries);
      if (cut === null) continue;
      await this.snapshotReceiver.persistCompaction(shard, cut.snapshot);
      await truncateLog(this.db, shard, cut.below);
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
    if (now - this.lastGcMs < this.cfg.idempotencyGcIntervalMs) return;
    this.lastGcMs = now;
    const retention = this.cfg.idempotencyRetentionMs;
    for (const shard of this.store.shards()) {
      const gen = this.store.generation(shard);
      const [lo, hi] = shardStateRange(shard, gen, 'i');
      const from = this.gcCursor.get(shard);
      const it = this.db.iterator(from === undefined ? { gte: lo, lt: hi } : { gt: from, lt: hi });
      let keys: Uint8Array[] = [];
      try {
        keys = (await it.nextv(2000)).map(([k]) => k);
      } finally {
        await it.close();
      }
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
    for (const shard of this.store.shards()) {
      const st = this.store.status(shard);
      const l = { shard: String(shard) };
      this.metrics.raftTerm.set(l, st.term);
      this.metrics.raftCommit.set(l, st.commit);
      this.metrics.raftApplied.set(l, st.applied);
      this.metrics.raftIsLeader.set(l, st.role === 'leader' ? 1 : 0);
      this.metrics.raftQuiesced.set(l, st.quiesced ? 1 : 0);
      const prev = this.lastLeaders.get(shard);
      if (prev !== undefined && prev !== st.leader) this.metrics.leaderChanges.inc(l);
      this.lastLeaders.set(shard, st.leader);
    }
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
    await this.transport?.close();
    await this.snapshotReceiver?.idle();
    await this.db?.close();
  }
}
