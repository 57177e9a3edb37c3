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

export function unpack<T>(b: Uint8Array): T {
  return packr.unpack(b) as T;
}
