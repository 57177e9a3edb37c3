/**
 * How long replay takes to judge where a WAL segment's records stop (node/wal-judge.ts), on a 64 MiB
 * segment of 2,000 × 5 KB records and one 4 MiB record: a clean end, the 4 MiB record torn (its last
 * MiB never written), then damage near the segment's start.
 *   npx tsx bench/wal-judge.ts
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Wal, readSegment } from '../node/wal.ts';

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'wal-judge-'));
  try {
    const { wal } = await Wal.open({ dir, segmentBytes: 64 << 20, header: () => Buffer.from('H') });
    for (let i = 0; i < 2000; i++) await wal.append(Buffer.alloc(5000, 1 + (i % 200)), new Map());
    const at = wal.currentSegment().offset;
    await wal.append(Buffer.alloc(4 << 20, 7), new Map());
    const path = wal.currentSegment().path;
    await wal.close();
    const poke = (pos: number, bytes: Buffer): void => {
      const fd = openSync(path, 'r+');
      writeSync(fd, bytes, 0, bytes.length, pos);
      closeSync(fd);
    };
    const time = async (name: string): Promise<void> => {
      const t0 = performance.now();
      const r = await readSegment(path, () => undefined);
      console.log(`${name}: ${r.records} records, torn ${r.torn}, corrupt ${r.corrupt === null ? 'no' : `"${r.corrupt.slice(0, 50)}…"`}, ${(performance.now() - t0).toFixed(1)} ms`);
    };
    await time('clean');
    poke(at + 8 + (3 << 20), Buffer.alloc(1 << 20));
    await time('torn');
    poke(100, Buffer.from([0xee]));
    await time('damage');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

void main();
