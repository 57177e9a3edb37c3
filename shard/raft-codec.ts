import { invariant } from '../raft/assert.ts';
import type { ConfChange, Entry, EntryType, HardState, Message, MsgType, Snapshot } from '../raft/index.ts';
import { coalesce, pack, unpack } from './codec.ts';

/** Encodings of Raft state on disk and on the wire (compact msgpack arrays). */

type WireEntry = [term: number, index: number, type: EntryType, data: Uint8Array, change: ConfChange | null];
type WireSnapshot = [index: number, term: number, voters: number[], learners: number[], data: Uint8Array];
export type WireMessageV1 = [
  type: MsgType, from: number, to: number, term: number, logTerm: number, index: number,
  entries: WireEntry[], commit: number, reject: boolean, rejectHint: number, context: number, snapshot: WireSnapshot | null,
];
export type WireMessage = [...WireMessageV1, probe: number, probeDelta: number];

const toWireEntry = (e: Entry): WireEntry => [e.term, e.index, e.type, e.data, e.change];
const fromWireEntry = (w: WireEntry): Entry => ({ term: w[0], index: w[1], type: w[2], data: w[3], change: w[4] ?? null });

function toWireSnapshot(s: Snapshot): WireSnapshot {
  return [s.meta.index, s.meta.term, s.meta.conf.voters, s.meta.conf.learners, s.data];
}

function fromWireSnapshot(w: WireSnapshot): Snapshot {
  return { meta: { index: w[0], term: w[1], conf: { voters: w[2], learners: w[3] } }, data: w[4] };
}

export function encodeEntry(e: Entry): Uint8Array {
  return pack(toWireEntry(e));
}

export function decodeEntry(b: Uint8Array): Entry {
  return fromWireEntry(unpack<WireEntry>(b));
}

export function encodeHardState(h: HardState): Uint8Array {
  return pack([h.term, h.vote, h.commit]);
}

export function decodeHardState(b: Uint8Array): HardState {
  const [term, vote, commit] = unpack<[number, number, number]>(b);
  return { term, vote, commit };
}

export function encodeSnapshot(s: Snapshot): Uint8Array {
  return pack(toWireSnapshot(s));
}

export function decodeSnapshot(b: Uint8Array): Snapshot {
  return fromWireSnapshot(unpack<WireSnapshot>(b));
}

/** Fields of a wire message that hold non-negative integers. */
const COUNTS = [0, 1, 2, 3, 4, 5, 7, 9, 10] as const;

/**
 * Versions of the peer protocol (announced in the transport's hello):
 *   1  messages of 12 elements (nodes before the leader-contact probes);
 *   2  14 elements: probe and probeDelta appended;
 *   3  messages as 2; a snapshot receiver may answer a stream it gave up with an `sx` frame
 *      (node/transport.ts), which a node of 2 or below would take for a bad frame.
 * A node sends each peer the lower of the two versions, and reads both.
 */
export const PEER_PROTOCOL = 3;

export function toWireMessage(m: Message, protocol: number = PEER_PROTOCOL): WireMessage | WireMessageV1 {
  const entries = m.entries.map(toWireEntry);
  const snap = m.snapshot === null ? null : toWireSnapshot(m.snapshot);
  // Version 1 has no probes: its follower counts no leader contact from them (see shard/store.ts).
  // Two literals, not one array extended: this runs for every message.
  if (protocol < 2) return [m.type, m.from, m.to, m.term, m.logTerm, m.index, entries, m.commit, m.reject, m.rejectHint, m.context, snap];
  return [m.type, m.from, m.to, m.term, m.logTerm, m.index, entries, m.commit, m.reject, m.rejectHint, m.context, snap, m.probe ?? 0, m.probeDelta ?? 0];
}

/** Decode a message from a peer; throws on anything malformed (the caller drops the connection). */
export function fromWireMessage(w: unknown, protocol: number = PEER_PROTOCOL): Message {
  // 12 elements: protocol 1 (probes read as 0: no probe). A node that speaks only protocol 1 takes nothing longer.
  invariant(Array.isArray(w) && (w.length === 12 || (w.length === 14 && protocol >= 2)), protocol >= 2 ? 'message is a 12- or 14-element array' : 'message is a 12-element array');
  const a = w as WireMessage;
  // The message names the field only on failure: no string built per field of every message.
  for (const i of COUNTS) if (!(Number.isSafeInteger(a[i]) && (a[i] as number) >= 0)) invariant(false, `message field ${i} is a non-negative integer`);
  const probe = w.length === 14 ? a[12] : 0;
  const probeDelta = w.length === 14 ? a[13] : 0;
  invariant(Number.isSafeInteger(probe) && probe >= 0 && Number.isSafeInteger(probeDelta), 'probe fields are integers');
  invariant(Array.isArray(a[6]), 'entries is an array');
  const wire = a[6];
  const entries = new Array<Entry>(wire.length);
  if (wire.length > 0) {
    // The decoded data are views into the frame (and the frame into a socket read): copy them out.
    const datas = new Array<Uint8Array>(wire.length);
    for (let i = 0; i < wire.length; i++) {
      const e = wire[i];
      invariant(Array.isArray(e) && e.length === 5 && e[3] instanceof Uint8Array, 'entry shape');
      datas[i] = e[3];
    }
    const copies = coalesce(datas);
    for (let i = 0; i < wire.length; i++) {
      const e = wire[i] as WireEntry;
      entries[i] = { term: e[0], index: e[1], type: e[2], data: copies[i] as Buffer, change: e[4] ?? null };
    }
  }
  return {
    type: a[0], from: a[1], to: a[2], term: a[3], logTerm: a[4], index: a[5], entries, commit: a[7],
    reject: a[8] === true, rejectHint: a[9], context: a[10], snapshot: a[11] === null ? null : fromWireSnapshot(a[11]), probe, probeDelta,
  };
}
