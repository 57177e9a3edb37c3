/**
 * How fast is the consensus core alone? Drives an in-memory 3-node cluster
 * of RaftNodes (no disk, no network, one thread) with batched proposals and
 * reports committed entries/s and CPU µs per entry, for 16 B and 1 KiB
 * entries. Persistence is modelled as "instant"; the log is compacted as it
 * goes so memory stays flat.
 *
 *   npm run bench:raft                       # default: 5 s per case
 *   npm run bench:raft -- --seconds 10 --batch 256
 */
import { RaftNode, defaultRaftConfig, type Message, type NodeId } from '../raft/index.ts';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
}

interface Result { entries: number; seconds: number; cpuUs: number; rounds: number }

function run(entryBytes: number, batch: number, seconds: number): Result {
  const ids: NodeId[] = [1, 2, 3];
  const nodes = new Map<NodeId, RaftNode>();
  for (const id of ids) {
    nodes.set(id, new RaftNode({ ...defaultRaftConfig(id, { voters: ids, learners: [] }, lcg(id)), maxInflightMsgs: 64 }, null));
  }
  const n1 = nodes.get(1) as RaftNode;
  let queue: Message[] = [];
  const drain = (): number => {
    let committed = 0;
    for (const n of nodes.values()) {
      while (n.hasReady()) {
        const rd = n.ready();
        for (const m of rd.messages) queue.push(m);
        if (n === n1) committed += rd.committedEntries.length;
        n.advance(rd);
      }
    }
    return committed;
  };
  const pump = (): number => {
    let committed = drain();
    while (queue.length > 0) {
      const q = queue;
      queue = [];
      for (const m of q) (nodes.get(m.to) as RaftNode).step(m);
      committed += drain();
    }
    return committed;
  };
  n1.campaign();
  pump();
  if (n1.status().role !== 'leader') throw new Error('node 1 did not win');
  const payload = new Uint8Array(entryBytes).fill(7);
  const data: Uint8Array[] = new Array<Uint8Array>(batch).fill(payload);

  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const deadline = t0 + BigInt(Math.round(seconds * 1e9));
  let entries = 0;
  let rounds = 0;
  let sinceCompact = 0;
  while (process.hrtime.bigint() < deadline) {
    for (let k = 0; k < 16; k++) {
      const r = n1.proposeMany(data);
      if (!r.ok) throw new Error(`propose failed: ${r.code}`);
      const c = pump();
      entries += c;
      sinceCompact += c;
      rounds++;
    }
    if (sinceCompact > 100_000) {
      for (const n of nodes.values()) {
        const s = n.status();
        n.compact(s.applied, new Uint8Array(0));
      }
      sinceCompact = 0;
    }
  }
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return { entries, seconds: elapsed, cpuUs: cpu.user + cpu.system, rounds };
}

const seconds = arg('seconds', 5);
const batchArg = process.argv.indexOf('--batch');
const batches = batchArg >= 0 ? [Number(process.argv[batchArg + 1])] : [1, 16, 256];
console.log(`raft core: 3 in-memory nodes in one thread, ${seconds}s per case`);
console.log('entry size | batch | entries/s committed | CPU µs per entry (all 3 replicas) | rounds/s');
for (const size of [16, 1024]) {
  for (const batch of batches) {
    run(size, batch, Math.min(1, seconds)); // warm-up
    const r = run(size, batch, seconds);
    const rate = r.entries / r.seconds;
    console.log(`${String(size).padStart(8)} B | ${String(batch).padStart(5)} | ${Math.round(rate).toLocaleString('en-US').padStart(19)} | ${(r.cpuUs / r.entries).toFixed(3).padStart(33)} | ${Math.round(r.rounds / r.seconds)}`);
  }
}
