import test from 'ava';
import { createHash32 } from '../node/hash.ts';
import { InputError, STATIC_BUCKET, bucketOf, checkKey, checkTenant, parseTime, partitionKeyBytes } from '../shard/keys.ts';
import { bucketPrefix, dataKey, logKey, logIndexOf, prefixEnd } from '../shard/layout.ts';
import { placeReplicas } from '../shard/placement.ts';
import { HashRing } from '../shard/ring.ts';
import { KvMachine, decodeRecord, type KvCommand, type KvStatePort } from '../shard/kv-machine.ts';

const code = (f: () => unknown): string | undefined => {
  try {
    f();
    return undefined;
  } catch (e) {
    return e instanceof InputError ? e.code : 'other';
  }
};

test('tenant, key and time validation give stable codes', (t) => {
  t.is(code(() => checkTenant('acme-1.prod_x')), undefined);
  t.is(code(() => checkTenant('')), 'invalid_tenant');
  t.is(code(() => checkTenant('a/b')), 'invalid_tenant');
  t.is(code(() => checkTenant('x'.repeat(65))), 'invalid_tenant');
  t.is(code(() => checkKey('k')), undefined);
  t.is(code(() => checkKey('')), 'invalid_key');
  t.is(code(() => checkKey('é'.repeat(257))), 'invalid_key');
  t.is(parseTime(undefined), undefined);
  t.is(parseTime('1700000000000'), 1700000000000);
  t.is(code(() => parseTime('-1')), 'invalid_time');
  t.is(code(() => parseTime('1.5')), 'invalid_time');
  t.is(code(() => parseTime('9007199254740992')), 'invalid_time');
  t.is(bucketOf(undefined, 3600000), STATIC_BUCKET);
  t.is(bucketOf(7200001, 3600000), 2);
});

test('layout: big-endian integers sort numerically; buckets sort in time order', (t) => {
  const cmp = (a: Uint8Array, b: Uint8Array): number => Buffer.compare(Buffer.from(a), Buffer.from(b));
  t.true(cmp(logKey(1, 255), logKey(1, 256)) < 0);
  t.true(cmp(logKey(1, 2 ** 40), logKey(2, 1)) < 0);
  t.is(logIndexOf(logKey(3, 2 ** 50 + 7)), 2 ** 50 + 7);
  const k = new TextEncoder().encode('k');
  t.true(cmp(dataKey(1, 0, 'a', STATIC_BUCKET, k), dataKey(1, 0, 'a', 0, k)) < 0);
  t.true(cmp(dataKey(1, 0, 'a', 9, k), dataKey(1, 0, 'a', 10, k)) < 0);
  const p = bucketPrefix(1, 0, 'a', 5);
  t.true(cmp(dataKey(1, 0, 'a', 5, new Uint8Array([0xff, 0xff])), prefixEnd(p)) < 0);
  // A tenant that is a prefix of another does not share its keys.
  t.true(cmp(dataKey(1, 0, 'ab', 0, k), bucketPrefix(1, 0, 'a', 0)) > 0 && cmp(dataKey(1, 0, 'ab', 0, k), prefixEnd(bucketPrefix(1, 0, 'a', 2 ** 40))) > 0);
});

test('layout: a data key given as its string is the key given as its UTF-8 bytes', (t) => {
  const utf8 = new TextEncoder();
  for (const tenant of ['acme', 't-1.x_Y', 'é']) {
    for (const key of ['k', 'user/42?x=1', '~!*', 'ключ', 'a\u0000b', 'x'.repeat(512)]) {
      for (const [shard, gen, bucket] of [[0, 0, STATIC_BUCKET], [7, 3, 123456], [2 ** 31, 2 ** 32 - 1, 2 ** 52]] as const) {
        t.deepEqual(dataKey(shard, gen, tenant, bucket, key), dataKey(shard, gen, tenant, bucket, utf8.encode(key)), `${tenant}/${key}`);
      }
    }
  }
});

test('placement is balanced and puts each shard on distinct nodes', (t) => {
  for (const [shards, nodes, r] of [[64, 3, 3], [10, 4, 3], [7, 5, 2], [256, 3, 3]] as const) {
    const ids = Array.from({ length: nodes }, (_, i) => i + 1);
    const p = placeReplicas(Array.from({ length: shards }, (_, i) => i + 1), ids, r);
    const load = new Map<number, number>();
    for (const reps of p.values()) {
      t.is(new Set(reps).size, r);
      for (const n of reps) load.set(n, (load.get(n) ?? 0) + 1);
    }
    const max = Math.max(...load.values());
    t.true(max <= Math.ceil((shards * r) / nodes) + 1, `max load ${max}`);
  }
  t.throws(() => placeReplicas([1], [1, 2], 3));
});

test('the ring\'s remembered shards are the ones it computes, past its memo\'s bound too', async (t) => {
  const hash = await createHash32();
  const ring = new HashRing([1, 2, 3, 4, 5], { vnodes: 16, hash: 'xxh64-hi32' }, hash);
  const fresh = (tenant: string, b: number): number => ring.shardForHash(hash(partitionKeyBytes(tenant, b)) >>> 0);
  // 70,000 partition keys: more than the memo holds (65,536), so it is cleared once on the way.
  let wrong = 0;
  for (let pass = 0; pass < 2; pass++) {
    for (let b = 0; b < 70_000; b++) if (ring.shardFor(`t${b % 13}`, b) !== fresh(`t${b % 13}`, b)) wrong++;
  }
  t.is(wrong, 0);
  t.is(ring.shardFor('é', STATIC_BUCKET), fresh('é', STATIC_BUCKET));
});

test('the ring spreads one tenant\'s buckets over all shards and is stable', async (t) => {
  const hash = await createHash32();
  const shards = Array.from({ length: 16 }, (_, i) => i + 1);
  const ring = new HashRing(shards, { vnodes: 64, hash: 'xxh64-hi32' }, hash);
  const counts = new Map<number, number>();
  for (let b = 0; b < 16000; b++) {
    const s = ring.shardFor('acme', b);
    counts.set(s, (counts.get(s) ?? 0) + 1);
  }
  t.is(counts.size, 16);
  for (const c of counts.values()) t.true(c > 1000 * 0.5 && c < 1000 * 1.6, `shard load ${c}`);
  t.is(ring.shardFor('acme', 42), new HashRing(shards, { vnodes: 64, hash: 'xxh64-hi32' }, hash).shardFor('acme', 42));
  // Adding a shard moves only about 1/17 of the keys.
  const bigger = new HashRing([...shards, 17], { vnodes: 64, hash: 'xxh64-hi32' }, hash);
  let moved = 0;
  for (let b = 0; b < 16000; b++) if (ring.shardFor('acme', b) !== bigger.shardFor('acme', b)) moved++;
  t.true(moved < 16000 * 0.12, `moved ${moved}`);
});

function memPort(): KvStatePort & { m: Map<string, Uint8Array> } {
  const m = new Map<string, Uint8Array>();
  const k = (b: Uint8Array): string => Buffer.from(b).toString('hex');
  return { m, get: (b) => m.get(k(b)), put: (b, v) => void m.set(k(b), v), del: (b) => void m.delete(k(b)) };
}

const cmd = (over: Partial<KvCommand>): KvCommand => ({
  op: 'put', tenant: 'a', bucket: STATIC_BUCKET, key: new TextEncoder().encode('k'), t: null,
  value: new Uint8Array([1]), ifVersion: null, idem: null, time: 1000, ...over,
});

test('kv machine: versions are log indexes, CAS, delete, never-reused versions', (t) => {
  const port = memPort();
  const m = new KvMachine(1, 0, 600_000);
  t.deepEqual(m.apply(5, cmd({ ifVersion: 0 }), port), { kind: 'put', version: 5 });
  t.deepEqual(m.apply(6, cmd({ ifVersion: 0 }), port), { kind: 'conflict', currentVersion: 5 });
  t.deepEqual(m.apply(7, cmd({ ifVersion: 5, value: new Uint8Array([2]) }), port), { kind: 'put', version: 7 });
  t.deepEqual(m.apply(8, cmd({ op: 'del', value: null, ifVersion: 5 }), port), { kind: 'conflict', currentVersion: 7 });
  t.deepEqual(m.apply(9, cmd({ op: 'del', value: null }), port), { kind: 'del', deleted: true, version: 7 });
  t.deepEqual(m.apply(10, cmd({ op: 'del', value: null }), port), { kind: 'del', deleted: false, version: 0 });
  t.deepEqual(m.apply(11, cmd({ ifVersion: 7 }), port), { kind: 'conflict', currentVersion: 0 });
  t.deepEqual(m.apply(12, cmd({}), port), { kind: 'put', version: 12 });
  const rec = decodeRecord([...port.m.values()][0] as Uint8Array);
  t.is(rec.version, 12);
});

test('kv machine: an idempotency key returns the first outcome within the retention window, by log time', (t) => {
  const port = memPort();
  const m = new KvMachine(1, 0, 1000);
  t.deepEqual(m.apply(3, cmd({ idem: 'r1', time: 100 }), port), { kind: 'put', version: 3 });
  t.deepEqual(m.apply(4, cmd({ idem: 'r1', time: 900, value: new Uint8Array([9]) }), port), { kind: 'put', version: 3 });
  t.deepEqual(m.apply(5, cmd({ idem: 'r1', time: 1200 }), port), { kind: 'put', version: 5 }, 'expired after 1000 ms of log time');
  // A leader whose clock went back does not move log time back.
  t.deepEqual(m.apply(6, cmd({ idem: 'r2', time: 50 }), port), { kind: 'put', version: 6 });
  t.is(m.logTime, 1200);
});

test('dataKey is its bucket prefix then the key, byte for byte (the on-disk layout), for ASCII and other tenants', (t) => {
  const cases: Array<[number, number, string, number, Uint8Array]> = [
    [0, 0, 'a', STATIC_BUCKET, new Uint8Array([1])],
    [7, 3, 'acme-corp.eu_1', 482_113, new TextEncoder().encode('user/42')],
    [2 ** 32 - 1, 2 ** 31, 'Z'.repeat(256), 2 ** 40, new Uint8Array(1024).fill(0xff)],
    [5, 1, 'tënant', 9, new Uint8Array([0, 0])],
    [5, 1, '日本', 9, new Uint8Array([0x7f])],
  ];
  for (const [shard, gen, tenant, bucket, key] of cases) {
    const p = bucketPrefix(shard, gen, tenant, bucket);
    const want = new Uint8Array(p.length + key.length);
    want.set(p, 0);
    want.set(key, p.length);
    t.deepEqual(dataKey(shard, gen, tenant, bucket, key), want, `${tenant.slice(0, 12)} ${bucket}`);
  }
});
