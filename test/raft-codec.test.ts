import test from 'ava';
import { MsgType, type Message } from '../raft/index.ts';
import { fromWireMessage, toWireMessage } from '../shard/raft-codec.ts';
import { pack, unpack } from '../shard/codec.ts';

const msg = (over: Partial<Message> = {}): Message => ({
  type: MsgType.Heartbeat, from: 1, to: 2, term: 3, logTerm: 0, index: 9, entries: [], commit: 9, reject: false, rejectHint: 7, context: 0, snapshot: null, ...over,
});
const roundTrip = (w: unknown): Message => fromWireMessage(unpack(pack(w)));

test('raft codec: probe fields round-trip (ids past 2^32, negative deltas); a message without them reads as no probe', (t) => {
  const back = roundTrip(toWireMessage(msg({ probe: 2 ** 40 + 5, probeDelta: -1234 })));
  t.is(back.probe, 2 ** 40 + 5);
  t.is(back.probeDelta, -1234);
  t.is(back.rejectHint, 7);
  const none = roundTrip(toWireMessage(msg()));
  t.is(none.probe, 0);
  t.is(none.probeDelta, 0);
  // A 12-element message (a node from before the probes) is read, with no probe.
  const old = roundTrip(toWireMessage(msg({ probe: 9, probeDelta: 9 })).slice(0, 12));
  t.is(old.probe, 0);
  t.is(old.term, 3);
});

test('raft codec: malformed probe fields are refused', (t) => {
  const w = toWireMessage(msg());
  for (const [probe, delta] of [[-1, 0], [1.5, 0], [0, 0.5], [0, Number.NaN], ['1', 0], [0, null]] as Array<[unknown, unknown]>) {
    const bad = [...w.slice(0, 12), probe, delta];
    t.throws(() => roundTrip(bad), undefined, `probe ${String(probe)}, delta ${String(delta)}`);
  }
  t.throws(() => roundTrip(w.slice(0, 13)), undefined, '13 elements');
});

test('raft codec: protocol 1 writes 12 elements (no probes) and, like a node of that release, reads nothing longer', (t) => {
  const m = msg({ probe: 5, probeDelta: 3 });
  const v1 = toWireMessage(m, 1);
  t.is(v1.length, 12);
  t.is(toWireMessage(m, 2).length, 14);
  const back = fromWireMessage(unpack(pack(v1)), 1);
  t.is(back.probe, 0);
  t.is(back.commit, 9);
  t.throws(() => fromWireMessage(unpack(pack(toWireMessage(m, 2))), 1));
});
