// LevelDB: cost of writing S sorted streams into fresh key ranges of a loaded DB, K streams at a time (round-robin chunks)
import { ClassicLevel } from 'classic-level';
import { rmSync } from 'node:fs';
const [S, K, PER, VB] = [16, Number(process.argv[2] ?? 16), Number(process.argv[3] ?? 20000), 256];
const dir = '/tmp/ldb/il-' + K; rmSync(dir, { recursive: true, force: true });
const db = new ClassicLevel(dir, { keyEncoding: 'view', valueEncoding: 'view' }); await db.open();
const val = Buffer.alloc(VB, 7);
const key = (s, g, i) => { const b = Buffer.alloc(24); b[0] = 0x64; b.writeUInt32BE(s, 1); b.writeUInt32BE(g, 5); b.writeUInt32BE(Math.imul(i, 2654435761) >>> 0, 9); b.writeUInt32BE(i, 13); return b; };
// preload gen 1 of each shard, random order across shards
for (let i = 0; i < PER; i += 500) { const b = db._chainedBatch(); for (let s = 0; s < S; s++) for (let j = i; j < i + 500; j++) b._put(key(s, 1, j), val); await b._write({ sync: false }); await b.close(); }
await db.compactRange(Buffer.from([0]), Buffer.from([0xff]));
const c0 = process.cpuUsage(); const t0 = performance.now();
// gen 2: streams in sorted order (by i after sorting keys), CHUNK records per batch; K at a time, round-robin
const CH = 3500;
const sorted = (s) => { const ks = []; for (let i = 0; i < PER; i++) ks.push(key(s, 2, i)); ks.sort(Buffer.compare); return ks; };
for (let s0 = 0; s0 < S; s0 += K) {
  const group = []; for (let s = s0; s < Math.min(S, s0 + K); s++) group.push(sorted(s));
  for (let off = 0; off < PER; off += CH) for (const ks of group) { const b = db._chainedBatch(); for (let j = off; j < Math.min(PER, off + CH); j++) b._put(ks[j], val); await b._write({ sync: false }); await b.close(); }
}
const ms = performance.now() - t0; const c = process.cpuUsage(c0);
const mb = S * PER * (VB + 24) / 1e6;
console.log(`K=${K}: ${mb.toFixed(0)} MB written in ${(ms / 1000).toFixed(1)} s = ${(mb / ms * 1000).toFixed(1)} MB/s; CPU ${((c.user + c.system) / 1e6).toFixed(1)} s (${((c.user + c.system) / 1e3 / mb).toFixed(1)} ms/MB)`);
const st = db.getProperty('leveldb.stats'); const w = st.split('\n').filter(l => /^\s+\d/.test(l)).reduce((a, l) => a + Number(l.trim().split(/\s+/)[5]), 0); console.log('  compaction written MB (incl. preload compactRange):', w.toFixed(0)); await db.close();
