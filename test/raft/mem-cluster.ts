/**
 * A small in-memory cluster of Raft cores for unit tests, golden transcripts
 * and the core benchmark: instant persistence, FIFO delivery, and a filter to
 * drop messages (partitions). Deterministic: a fixed seed per node.
 */
import {
  RaftNode, defaultRaftConfig, EntryType,
  type ConfState, type Entry, type HardState, type Message, type NodeId, type RaftConfig, type Ready, type Snapshot,
} from '../../raft/index.ts';

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface MemStorage {
  hardState: HardState;
  snapshot: Snapshot | null;
  entries: Entry[];
}

export class MemNode {
  raft: RaftNode;
  storage: MemStorage = { hardState: { term: 0, vote: 0, commit: 0 }, snapshot: null, entries: [] };
  applied: Entry[] = [];
  /** The indexes of each Ready's committed entries, in order. */
  applyBatches: number[][] = [];
  appliedIndex = 0;
  readsDone: Array<{ context: number; index: number }> = [];
  alive = true;

  constructor(public cfg: RaftConfig) {
    this.raft = new RaftNode(cfg, null);
  }

  persist(rd: Ready): void {
    const st = this.storage;
    if (rd.snapshot !== null) {
      st.snapshot = rd.snapshot;
      st.entries = [];
      this.appliedIndex = rd.snapshot.meta.index;
    }
    if (rd.hardState !== null) st.hardState = rd.hardState;
    const first = rd.entries[0];
    if (first !== undefined) {
      const base = st.snapshot?.meta.index ?? 0;
      st.entries.length = Math.max(0, first.index - base - 1);
      for (const e of rd.entries) st.entries.push(e);
    }
  }

  restart(): void {
    const st = this.storage;
    this.raft = new RaftNode({ ...this.cfg, applied: st.snapshot?.meta.index ?? 0 },
      { hardState: { ...st.hardState }, snapshot: st.snapshot, entries: [...st.entries] });
    this.appliedIndex = st.snapshot?.meta.index ?? 0;
    this.alive = true;
  }
}

export class MemCluster {
  nodes = new Map<NodeId, MemNode>();
  queue: Message[] = [];
  /** Return false to drop a message. */
  filter: (m: Message) => boolean = () => true;
  delivered = 0;

  constructor(ids: NodeId[], opts: Partial<RaftConfig> = {}, conf?: ConfState, seed = 1) {
    const c = conf ?? { voters: [...ids], learners: [] };
    for (const id of ids) this.add(id, c, opts, seed);
  }

  add(id: NodeId, conf: ConfState, opts: Partial<RaftConfig> = {}, seed = 1): MemNode {
    // Scripted scenarios of other features: no lost-state probing at start (test/raft-lost-state.test.ts turns it on).
    const cfg = { ...defaultRaftConfig(id, conf, mulberry32(seed * 1000 + id)), recoverLostState: false, ...opts };
    const n = new MemNode(cfg);
    this.nodes.set(id, n);
    return n;
  }

  node(id: NodeId): MemNode {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  /** Handle every node's ready until none has one; returns messages queued. */
  processReady(): void {
    for (const n of this.nodes.values()) {
      if (!n.alive) continue;
      while (n.raft.hasReady()) {
        const rd = n.raft.ready();
        n.persist(rd);
        for (const m of rd.messages) this.queue.push(m);
        if (rd.committedEntries.length > 0) n.applyBatches.push(rd.committedEntries.map((e) => e.index));
        for (const e of rd.committedEntries) {
          n.applied.push(e);
          n.appliedIndex = e.index;
        }
        for (const r of rd.readStates) n.readsDone.push(r);
        n.raft.advance(rd);
      }
    }
  }

  /** Deliver queued messages (and the ones they cause) until quiet or the bound. */
  stabilize(maxMessages = 1_000_000): void {
    this.processReady();
    let n = 0;
    while (this.queue.length > 0 && n < maxMessages) {
      const batch = this.queue;
      this.queue = [];
      for (const m of batch) {
        n++;
        const to = this.nodes.get(m.to);
        if (to === undefined || !to.alive || !this.filter(m)) continue;
        this.delivered++;
        to.raft.step(m);
      }
      this.processReady();
    }
    if (this.queue.length > 0) throw new Error('cluster did not stabilize');
  }

  tickAll(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const n of this.nodes.values()) if (n.alive) n.raft.tick();
      this.stabilize();
    }
  }

  leader(): NodeId {
    let lead = 0;
    let term = -1;
    for (const n of this.nodes.values()) {
      const s = n.raft.status();
      if (n.alive && s.role === 'leader' && s.term > term) {
        lead = s.id;
        term = s.term;
      }
    }
    return lead;
  }

  /** Tick until some node is leader (bounded). */
  electLeader(maxTicks = 200): NodeId {
    for (let i = 0; i < maxTicks; i++) {
      const l = this.leader();
      if (l !== 0) return l;
      this.tickAll();
    }
    throw new Error('no leader elected');
  }

  isolate(id: NodeId): void {
    this.filter = (m) => m.from !== id && m.to !== id;
  }

  heal(): void {
    this.filter = () => true;
  }

  crash(id: NodeId): void {
    this.node(id).alive = false;
    this.queue = this.queue.filter((m) => m.to !== id && m.from !== id);
  }
}

export function normalData(e: Entry): string | null {
  if (e.type !== EntryType.Normal || e.data.length === 0) return null;
  return new TextDecoder().decode(e.data);
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
