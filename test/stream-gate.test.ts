import test from 'ava';
import { KeyedGate } from '../node/stream-gate.ts';

/** A task that records when it starts and settles when told to. */
function task(log: string[], name: string): { run: () => Promise<string>; end: (ok?: boolean) => void } {
  let settle: (ok: boolean) => void = () => undefined;
  const done = new Promise<boolean>((r) => (settle = r));
  return {
    run: async () => {
      log.push(`start ${name}`);
      if (!(await done)) throw new Error(`${name} failed`);
      return name;
    },
    end: (ok = true) => settle(ok),
  };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('one task per key at a time, in order; other keys do not wait', async (t) => {
  const log: string[] = [];
  const g = new KeyedGate(1);
  const [a1, a2, a3, b1] = [task(log, 'a1'), task(log, 'a2'), task(log, 'a3'), task(log, 'b1')];
  const p1 = g.run(1, a1.run);
  const p2 = g.run(1, a2.run);
  const p3 = g.run(1, a3.run);
  const pb = g.run(2, b1.run);
  await turn();
  t.deepEqual(log, ['start a1', 'start b1']);
  t.is(g.active(1), 1);
  t.is(g.queued(1), 2);
  t.is(g.totalQueued(), 2);
  a1.end();
  t.is(await p1, 'a1');
  await turn();
  t.deepEqual(log, ['start a1', 'start b1', 'start a2']);
  // A failed task frees its place like a finished one, and its caller sees the failure.
  a2.end(false);
  await t.throwsAsync(p2, { message: 'a2 failed' });
  await turn();
  t.deepEqual(log.slice(3), ['start a3']);
  t.is(g.queued(1), 0);
  a3.end();
  b1.end();
  t.deepEqual(await Promise.all([p3, pb]), ['a3', 'b1']);
  t.is(g.active(1), 0);
  t.is(g.active(2), 0);
});

test('a task that throws before returning a promise frees its place', async (t) => {
  const g = new KeyedGate(1);
  const p1 = g.run(7, () => { throw new Error('at once'); });
  const p2 = g.run(7, async () => 'next');
  await t.throwsAsync(p1, { message: 'at once' });
  t.is(await p2, 'next');
  t.is(g.active(7), 0);
});

test('a limit of two runs two at a time', async (t) => {
  const log: string[] = [];
  const g = new KeyedGate(2);
  const ts = [0, 1, 2, 3].map((i) => task(log, `s${i}`));
  const ps = ts.map((x) => g.run(3, x.run));
  await turn();
  t.deepEqual(log, ['start s0', 'start s1']);
  ts[1]?.end();
  await ps[1];
  await turn();
  t.deepEqual(log, ['start s0', 'start s1', 'start s2']);
  for (const x of ts) x.end();
  t.deepEqual(await Promise.all(ps), ['s0', 's1', 's2', 's3']);
});

test('the limit must be a positive integer', (t) => {
  t.throws(() => new KeyedGate(0));
  t.throws(() => new KeyedGate(1.5));
});
