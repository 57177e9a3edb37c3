/** The SDK's ring (client/ring.ts) must agree with the server's (shard/ring.ts). */
import test from 'ava';
import { HashRing } from '../shard/ring.ts';
import { partitionKeyBytes as serverPkb, bucketOf as serverBucketOf } from '../shard/keys.ts';
import { createHash32 } from '../node/hash.ts';
import { ClientRing, loadHash32, partitionKeyBytes, bucketOf } from '../client/ring.ts';
import { seeded } from './client/fakes.ts';

const rng = seeded;

const ALPHA = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-';

test('client ring agrees with the server ring on thousands of random (tenant, bucket) pairs', async (t) => {
  const serverHash = await createHash32();
  const clientHash = await loadHash32();
  const r = rng(42);
  for (const [shards, vnodes] of [[16, 64], [2, 64], [7, 13], [64, 128]] as const) {
    const ids = Array.from({ length: shards }, (_, i) => i + 1);
    const server = new HashRing(ids, { vnodes, hash: 'xxh64-hi32' }, serverHash);
    const client = new ClientRing(ids, vnodes, clientHash);
    for (let i = 0; i < 5000; i++) {
      const len = 1 + Math.floor(r() * 64);
      let tenant = '';
      for (let k = 0; k < len; k++) tenant += ALPHA[Math.floor(r() * ALPHA.length)];
      const bucket = r() < 0.1 ? -1 : Math.floor(r() * 2 ** (r() < 0.5 ? 20 : 40));
      t.deepEqual(partitionKeyBytes(tenant, bucket), serverPkb(tenant, bucket));
      const a = server.shardFor(tenant, bucket);
      const b = client.shardFor(tenant, bucket);
      if (a !== b) t.fail(`shards=${shards} vnodes=${vnodes} tenant=${tenant} bucket=${bucket}: server ${a}, client ${b}`);
    }
  }
  for (let i = 0; i < 1000; i++) {
    const tt = Math.floor(r() * 2 ** 45);
    t.is(bucketOf(tt, 3_600_000), serverBucketOf(tt, 3_600_000));
  }
  t.is(bucketOf(undefined, 3_600_000), serverBucketOf(undefined, 3_600_000));
});

test('ring hash of a fixed input is stable', async (t) => {
  const h = await loadHash32();
  const sh = await createHash32();
  t.is(h(new TextEncoder().encode('shard-1-vnode-0')), sh(new TextEncoder().encode('shard-1-vnode-0')));
});
