/**
 * How much CPU does the pure part of a write cost — Store rounds, Raft, the
 * KV machine, log and record encodings, wire encoding of messages — and how
 * does it grow with the shard count? Three Stores in one thread, in-memory
 * state (a Map behind the KvStatePort), messages packed and unpacked as on
 * the wire, batches "landing" at once. Clients keep `--inflight` writes of
 * 256 B outstanding, spread uniformly over the shards, all led by node 1.
 * No HTTP, no LevelDB, no sockets: this is the floor under the node.
 *
 *   npx tsx bench/store-rounds.ts --seconds 3 --shards 8,16,64 --inflight 64
 */
import { Packr } from 'msgpackr';
import { defaultRaftConfig, type Message } from '../raft/index.ts';
import { STATIC_BUCKET } from '../shard/keys.ts';
import type { KvStatePort } from '../shard/kv-machine.ts';
import { fromWireMessage, toWireMessage } from '../shard/raft-codec.ts';
import { Store, type ProposeOutcome, type Round } from '../shard/store.ts';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] as string) : dflt;
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');

function run(shards: number, inflight: number, seconds: number): { writes: number; cpuUs: number; rounds: number } {
  const ids = [1, 2, 3];
  const stores = new Map<number, Store>();
  const ports = new Map<number, KvStatePort>();
  for (const id of ids) {
    const { id: _i, initialConf: _c, random: _r, applied: _a, ...raft } = defaultRaftConfig(id, { voters: [], learners: [] }, Math.random);
    const st = new Store({
      nodeId: id, raft: { ...raft, maxInflightMsgs: 64 }, random: lcg(id), idempotencyRetentionMs: 600_000,
      maxQueuedPerShard: 10_000, maxInbox: 1_000_000, noQuorumTicks: 1000, quiesceAfterTicks: 0,
    });
    for (let s = 0; s < shards; s++) st.addReplica({ shard: s, persisted: null, founders: ids, applied: 0, logTime: 0, gen: 0, persistedLast: 0 });
    stores.set(id, st);
    const m = new Map<string, Uint8Array>();
    ports.set(id, { get: (k) => m.get(hex(k)), put: (k, v) => void m.set(hex(k), v), del: (k) => void m.delete(hex(k)) });
  }
  const packr = new Packr({ useRecords: false, mapsAsObjects: true });
  const deliver = (from: number, msgs: Map<number, Array<[number, Message]>>): void => {
    for (const [to, items] of msgs) {
      const frame = packr.pack(items.map(([s, m]) => [s, toWireMessage(m)]));
      const back = (packr.unpack(frame) as Array<[number, unknown]>).map(([s, w]) => [s, fromWireMessage(w)] as [number, Message]);
      void from;
      stores.get(to)?.receive(back, 0);
    }
  };
  let rounds = 0;
  const cycle = (): void => {
    for (const [id, st] of stores) {
      const r: Round | null = st.beginRound(0);
      if (r === null) continue;
      rounds++;
      deliver(id, r.early);
      st.applyRound(r, () => ports.get(id) as KvStatePort);
      st.persistedRound(r);
      deliver(id, r.messages);
    }
  };
  // Elect node 1 everywhere: campaign by ticking node 1 only until it leads every shard.
  const s1 = stores.get(1) as Store;
  for (let i = 0; i < 200; i++) {
    s1.tick(0);
    cycle();
    if (s1.shards().every((s) => s1.status(s).role === 'leader')) break;
  }
  for (let i = 0; i < 5; i++) cycle();
  if (!s1.shards().every((s) => s1.status(s).role === 'leader')) throw new Error('node 1 does not lead every shard');
  const value = new Uint8Array(256).fill(7);
  let seq = 0;
  let done = 0;
  const rand = lcg(42);
  const submit = (): void => {
    const shard = Math.floor(rand() * shards);
    const key = new TextEncoder().encode(`k${seq++ % 4096}`);
    s1.propose(shard, { op: 'put', tenant: 't', bucket: STATIC_BUCKET, key, t: null, value, ifVersion: null, idem: null, time: 1 }, (r: ProposeOutcome) => {
      if (!r.ok) throw new Error(`proposal failed: ${r.code}`);
      done++;
      pending++;
    });
  };
  let pending = inflight;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  while (performance.now() - t0 < seconds * 1000) {
    while (pending > 0) {
      pending--;
      submit();
    }
    cycle();
  }
  const c = process.cpuUsage(c0);
  return { writes: done, cpuUs: c.user + c.system, rounds };
}

const seconds = Number(arg('seconds', '3'));
const inflight = Number(arg('inflight', '64'));
console.log(`Store rounds, 3 in-memory Stores, ${inflight} writes of 256 B in flight, ${seconds} s per case`);
console.log('shards | writes/s | CPU µs per write (all 3 nodes) | rounds per write');
for (const shards of arg('shards', '8,16,64').split(',').map(Number)) {
  const r = run(shards, inflight, seconds);
  console.log(`${String(shards).padStart(6)} | ${String(Math.round(r.writes / seconds)).padStart(8)} | ${(r.cpuUs / r.writes).toFixed(1).padStart(30)} | ${(r.rounds / r.writes).toFixed(3)}`);
}
