import xxhash from 'xxhash-wasm';
import type { Hash32 } from '../shard/ring.ts';

/** The ring's hash port: the high 32 bits of xxHash64 (seed 0), via xxhash-wasm. */
export async function createHash32(): Promise<Hash32> {
  const { h64Raw } = await xxhash();
  return (data: Uint8Array) => Number(h64Raw(data) >> 32n);
}
