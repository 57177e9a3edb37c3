/**
 * readRecord (the single-key read path's reader of stored records) against decodeRecord (msgpackr):
 * the same version and value bytes for every form a record is written in, and the fallback for
 * anything it does not know.
 */
import test from 'ava';
import { pack } from '../shard/codec.ts';
import { decodeRecord, encodeRecord, readRecord } from '../shard/kv-machine.ts';
import { mulberry32 as rng } from './fault/run.ts';

// From 2^32 on msgpackr writes a float64, which readRecord leaves to decodeRecord (the fallback is checked too).
const VERSIONS = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER];
const TIMES = [null, 0, 5, 127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, 1_700_000_000_000, Number.MAX_SAFE_INTEGER];
const SIZES = [0, 1, 31, 255, 256, 65_535, 65_536, 300_000];

test('readRecord reads what encodeRecord wrote, as decodeRecord does: every version, time and value size form', (t) => {
  const r = rng(7);
  let n = 0;
  for (const version of VERSIONS) {
    for (const tm of TIMES) {
      for (const size of SIZES) {
        const value = Buffer.alloc(size);
        for (let i = 0; i < Math.min(size, 64); i++) value[i] = Math.floor(r() * 256);
        const b = encodeRecord({ version, t: tm, value });
        const want = decodeRecord(b);
        const got = readRecord(b);
        if (got.version !== want.version || Buffer.compare(Buffer.from(got.value), Buffer.from(want.value)) !== 0) {
          t.fail(`version ${version}, t ${tm}, ${size} bytes: read ${got.version}/${got.value.length}, want ${want.version}/${want.value.length}`);
          return;
        }
        n++;
      }
    }
  }
  t.is(n, VERSIONS.length * TIMES.length * SIZES.length);
});

test('readRecord reads a record inside a larger buffer (a view) and gives a view of its value', (t) => {
  const b = encodeRecord({ version: 70_000, t: 12, value: Buffer.from('hello') });
  const big = Buffer.alloc(b.length + 20, 0xee);
  big.set(b, 10);
  const view = big.subarray(10, 10 + b.length);
  const got = readRecord(view);
  t.is(got.version, 70_000);
  t.is(Buffer.from(got.value).toString(), 'hello');
});

test('readRecord falls back to the decoder for forms it does not know', (t) => {
  // a string value (not written by this store, but readable by msgpackr), a 4-element array, a trailing
  // byte, a uint64 version (msgpackr reads it as a BigInt; this store never writes one)
  const u64 = Buffer.from([0x93, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0xc0, 0xc4, 1, 0x61]);
  const odd = [u64, pack([5, null, 'text']), pack([5, null, Buffer.from('x'), 1]), Buffer.concat([Buffer.from(encodeRecord({ version: 9, t: null, value: Buffer.from('v') })), Buffer.from([0])])];
  for (const b of odd) {
    let want: unknown;
    let wantErr: string | null = null;
    try {
      want = decodeRecord(b);
    } catch (e) {
      wantErr = (e as Error).message;
    }
    if (wantErr !== null) t.throws(() => readRecord(b));
    else t.deepEqual({ ...readRecord(b) }, { ...(want as object) });
  }
});
