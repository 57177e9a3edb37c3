/**
 * `npx tsx bench/snapshot-stream.ts [--records N] [--value-bytes B] [--root DIR] [--runs R]`:
 * the snapshot stream's own cost, in one process, without the network or a
 * cluster. The sender (streamSnapshot) reads N records of one shard from an
 * in-memory iterator and encodes its frames with the transport's encoder; then
 * the receiver (SnapshotReceiver) decodes them as the transport does and writes
 * them into a fresh LevelDB in a temp dir, until the Snap message is handed
 * to a stub Store. Prints CPU seconds (all threads: LevelDB's included) and
 * wall time of each side, per MB of records. `--root` loads node/snapshots.ts
 * and node/transport.ts from another checkout of this repo (A/B: old vs new
 * on the same machine in the same minute).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Packr } from 'msgpackr';
import { pino } from 'pino';
import { num } from './args.ts';
import { ROOT } from './proc.ts';

interface Mods {
  snapshots: typeof import('../node/snapshots.ts');
  transport: typeof import('../node/transport.ts');
  db: typeof import('../node/db.ts');
  metrics: typeof import('../node/metrics.ts');
  layout: typeof import('../shard/layout.ts');
}

async function load(root: string): Promise<Mods> {
  const imp = (p: string): Promise<unknown> => import(pathToFileURL(join(root, p)).href);
  return {
    snapshots: (await imp('node/snapshots.ts')) as Mods['snapshots'],
    transport: (await imp('node/transport.ts')) as Mods['transport'],
    db: (await imp('node/db.ts')) as Mods['db'],
    metrics: (await imp('node/metrics.ts')) as Mods['metrics'],
    layout: (await imp('shard/layout.ts')) as Mods['layout'],
  };
}

const cpuS = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1e6;

async function once(m: Mods, records: number, valueBytes: number, chunkBytes: number): Promise<{ mb: number; send: [number, number]; recv: [number, number] }> {
  const shard = 3;
  const kvs: Array<[Uint8Array, Uint8Array]> = [];
  let bytes = 0;
  for (let i = 0; i < records; i++) {
    const k = m.layout.dataKey(shard, 0, `bench${i % 64}`, 480_000 + (i % 8), Buffer.from(`k${i}`));
    const v = Buffer.alloc(valueBytes, i & 0xff);
    kvs.push([k, v]);
    bytes += k.length + v.length;
  }
  kvs.sort((x, y) => Buffer.compare(x[0], y[0]));
  const iter = (rows: Array<[Uint8Array, Uint8Array]>) => {
    let at = 0;
    return {
      nextv: async (n: number) => {
        // The binding hands out fresh buffers: copy, as it does.
        const out = rows.slice(at, at + n).map(([k, v]): [Uint8Array, Uint8Array] => [Buffer.from(k), Buffer.from(v)]);
        at += out.length;
        return out;
      },
      close: async () => {},
    };
  };
  const log = pino({ level: 'silent' });
  const t = new m.transport.Transport({
    nodeId: 1, clusterId: 'kv', listenHost: '127.0.0.1', listenPort: 0, peers: new Map(), log, maxFrameBytes: 64 << 20,
    maxQueuedBytes: 32 << 20, connectTimeoutMs: 1000, onFrame: () => {},
  });
  const frames: Buffer[] = [];
  // protocolOf: the peer protocol of the Snap message (trees since e5778d4 ask for it; older ones do not).
  const transport = { sendWithBackpressure: async (_to: number, f: unknown) => { frames.push(t.encode(f as never)); }, protocolOf: () => 2 };
  const snapshot: { meta: unknown; data: Uint8Array } = { meta: { index: 100, term: 2, conf: { voters: [1, 2, 3], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false } }, data: new Uint8Array() };
  const { encodeDescriptor } = await import(pathToFileURL(join(ROOT, 'shard/store.ts')).href) as typeof import('../shard/store.ts');
  snapshot.data = encodeDescriptor({ gen: 0, logTime: 1 });
  const msg = { type: 9, from: 1, to: 2, term: 2, index: 0, logTerm: 0, entries: [], commit: 0, reject: false, rejectHint: 0, context: 0, snapshot: null };
  const c0 = process.cpuUsage();
  const w0 = performance.now();
  await m.snapshots.streamSnapshot({
    transport: transport as never, shard, to: 2, msg: msg as never, snapshot: snapshot as never,
    iters: [{ kind: 'd', it: iter(kvs) }, { kind: 'i', it: iter([]) }], chunkBytes, timeoutMs: 10_000, log,
    // a stream id and its refusal flag; trees before them named the stream from fromNode
    id: '1:bench', refused: { why: null }, ...({ fromNode: 1 } as object),
  });
  const send: [number, number] = [cpuS(process.cpuUsage(c0)), (performance.now() - w0) / 1000];
  const dir = mkdtempSync(join(tmpdir(), 'kv-snapbench-'));
  try {
    const db = await m.db.openDb(dir);
    let handed = 0;
    const store = { has: () => true, generation: () => 0, receive: () => { handed++; } };
    const rx = new m.snapshots.SnapshotReceiver(db, store as never, log, new m.metrics.NodeMetrics(2), () => {});
    const unpackr = new Packr({ useRecords: false, mapsAsObjects: true });
    const c1 = process.cpuUsage();
    const w1 = performance.now();
    for (const b of frames) rx.onFrame(1, unpackr.unpack(b.subarray(4)) as never);
    await rx.idle();
    const recv: [number, number] = [cpuS(process.cpuUsage(c1)), (performance.now() - w1) / 1000];
    if (handed !== 1) throw new Error('the receiver did not hand the snapshot over');
    await db.close();
    return { mb: bytes / 1e6, send, recv };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  let root = ROOT;
  let records = 200_000;
  let runs = 3;
  let chunk = 1 << 20;
  let valueBytes = 115;
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    if (f === '--root') root = resolve(argv[++i] ?? '.');
    else if (f === '--records') records = num(f, argv[++i], 1);
    else if (f === '--runs') runs = num(f, argv[++i], 1, 100);
    else if (f === '--chunk-bytes') chunk = num(f, argv[++i], 1024);
    else if (f === '--value-bytes') valueBytes = num(f, argv[++i], 1, 1 << 20);
    else throw new Error(`unknown flag ${f}`);
  }
  const m = await load(root);
  process.stdout.write(`snapshot-stream: ${records} records (${valueBytes} B values) of one shard, code from ${root}\n`);
  for (let r = 1; r <= runs; r++) {
    const x = await once(m, records, valueBytes, chunk);
    process.stdout.write(`run ${r}: ${x.mb.toFixed(1)} MB; sender ${(x.send[0] / x.mb * 1000).toFixed(1)} CPU ms/MB (${(x.mb / x.send[1]).toFixed(0)} MB/s wall); ` +
      `receiver ${(x.recv[0] / x.mb * 1000).toFixed(1)} CPU ms/MB (${(x.mb / x.recv[1]).toFixed(0)} MB/s wall)\n`);
  }
}

await main();
