import { Packr } from 'msgpackr';

/**
 * The one msgpackr instance for log entries and stored records. Plain
 * arrays (no records/structures): entries must decode identically on every
 * replica and after restarts, with no shared state between encoder and decoder.
 */
export const packr = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true });

export function pack(v: unknown): Uint8Array {
  return packr.pack(v);
}

/**
 * Decode b without touching it. msgpackr caches a DataView on the buffer it
 * reads (a property added to the object: a DataView and a property array,
 * ≈ 120 B); on a log entry's data, which lives until compaction, that was
 * more than the entry's own bytes. So it reads a throwaway view instead.
 */
export function unpack<T>(b: Uint8Array): T {
  return packr.unpack(Buffer.from(b.buffer, b.byteOffset, b.byteLength)) as T;
}

/**
 * Copies of `parts`, all in one new exact-size buffer, in order. Bytes that
 * stay in memory for long (log entries until compaction) must not be views
 * into a larger buffer: a 150-byte entry decoded from a 64 KiB socket read,
 * or packed into msgpackr's shared output buffer, keeps all of it alive.
 * The copies share one allocation, so entries that arrived together (one
 * message, one round's proposals) are freed together by compaction.
 */
export function coalesce(parts: readonly Uint8Array[]): Buffer[] {
  let total = 0;
  for (const p of parts) total += p.byteLength;
  const arena = Buffer.allocUnsafeSlow(total);
  const out = new Array<Buffer>(parts.length);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i] as Uint8Array;
    arena.set(p, at);
    out[i] = arena.subarray(at, at + p.byteLength);
    at += p.byteLength;
  }
  return out;
}
