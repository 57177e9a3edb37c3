import test from 'ava';
import { ReadCache } from '../node/read-cache.ts';

const v = (n: number, fill = 1): Uint8Array => new Uint8Array(n).fill(fill);

test('a filled key is a hit until a landed batch drops it', (t) => {
  const c = new ReadCache(1 << 20);
  t.is(c.get('a'), undefined);
  c.fill('a', v(10, 7));
  t.deepEqual(c.get('a'), v(10, 7));
  c.drop(['b', 'a']);
  t.is(c.get('a'), undefined);
  t.is(c.size, 0);
  t.is(c.usedBytes, 0);
  t.deepEqual({ hits: c.hits, misses: c.misses }, { hits: 1, misses: 2 });
});

test('bounded by bytes: the oldest entries go first; a refill replaces, a value over the bound is not kept', (t) => {
  const one = 100 + 1 + 96; // value + key + overhead
  const c = new ReadCache(3 * one, 1);
  for (const k of ['a', 'b', 'c']) c.fill(k, v(100));
  t.is(c.usedBytes, 3 * one);
  c.fill('d', v(100));
  t.is(c.get('a'), undefined, 'the oldest went');
  t.truthy(c.get('b'));
  t.truthy(c.get('d'));
  c.fill('b', v(100, 2));
  t.is(c.size, 3);
  t.is(c.usedBytes, 3 * one);
  t.deepEqual(c.get('b'), v(100, 2));
  c.fill('e', v(4 * one));
  t.is(c.get('e'), undefined);
  t.is(c.size, 3);
  c.clear();
  t.is(c.size, 0);
  t.is(c.usedBytes, 0);
});

test('once full, one miss in admitEvery is cached', (t) => {
  const one = 10 + 3 + 96;
  const c = new ReadCache(2 * one, 4);
  const key = (i: number): string => `k${String(i).padStart(2, '0')}`;
  c.fill(key(0), v(10));
  c.fill(key(1), v(10));
  const admitted: string[] = [];
  for (let i = 2; i < 14; i++) {
    c.fill(key(i), v(10));
    if (c.get(key(i)) !== undefined) admitted.push(key(i));
  }
  t.deepEqual(admitted, ['k05', 'k09', 'k13']);
  t.is(c.size, 2);
  t.true(c.usedBytes <= 2 * one);
});

test('size 0 is off', (t) => {
  t.false(new ReadCache(0).enabled);
  t.true(new ReadCache(1).enabled);
});
