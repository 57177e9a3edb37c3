import test from 'ava';
import net from 'node:net';
import { TestCluster, getRetry, http, putRetry } from './harness.ts';

const SMALL = ['--shards', '4', '--tick-ms', '50'];

test.serial('a write through one node is read linearizably through every node, and stale reads converge', async (t) => {
  const c = await TestCluster.start(t, 3, SMALL);
  const w = await putRetry(`${c.url(1)}/v1/kv/acme/k1`, 'v1');
  t.is(w.status, 200);
  const { version, shard } = w.json();
  t.true(version > 0 && shard > 0);
  for (const i of [1, 2, 3]) {
    const r = await getRetry(`${c.url(i)}/v1/kv/acme/k1`);
    t.is(r.status, 200);
    t.is(r.body, 'v1');
    t.is(r.headers.get('x-version'), String(version));
    t.is(r.headers.get('x-consistency'), 'linearizable');
  }
  for (const i of [1, 2, 3]) {
    let r = await http('GET', `${c.url(i)}/v1/kv/acme/k1?consistency=stale`);
    for (let k = 0; k < 50 && r.status !== 200; k++) {
      await new Promise((res) => setTimeout(res, 50));
      r = await http('GET', `${c.url(i)}/v1/kv/acme/k1?consistency=stale`);
    }
    t.is(r.body, 'v1');
    t.truthy(r.headers.get('x-staleness-ms'));
  }

  // CAS: create-if-absent conflicts, a matching version wins, a stale one gets 409 with the current version.
  t.is((await putRetry(`${c.url(2)}/v1/kv/acme/k1?ifVersion=0`, 'x')).status, 409);
  const cas = await putRetry(`${c.url(2)}/v1/kv/acme/k1?ifVersion=${version}`, 'v2');
  t.is(cas.status, 200);
  const stale = await putRetry(`${c.url(3)}/v1/kv/acme/k1?ifVersion=${version}`, 'v3');
  t.is(stale.status, 409);
  t.is(stale.json().error.code, 'version_mismatch');
  t.is(stale.json().error.currentVersion, cas.json().version);
  t.is(stale.json().error.outcome, 'not_applied');

  // Idempotent retries return the first outcome and apply once.
  const first = await putRetry(`${c.url(1)}/v1/kv/acme/once`, 'a', { idem: 'req-1' });
  const again = await putRetry(`${c.url(3)}/v1/kv/acme/once`, 'b', { idem: 'req-1' });
  t.deepEqual(again.json(), first.json());
  const read = await getRetry(`${c.url(2)}/v1/kv/acme/once`);
  t.is(read.body, 'a');
  t.is(read.headers.get('x-version'), String(first.json().version));

  // Delete, then a CAS on the old version fails and create-if-absent succeeds with a new version.
  const del = await http('DELETE', `${c.url(1)}/v1/kv/acme/once`, undefined, { 'idempotency-key': 'del-1' });
  t.deepEqual(del.json(), { deleted: true, version: first.json().version });
  t.is((await getRetry(`${c.url(1)}/v1/kv/acme/once`)).status, 404);
  const re = await putRetry(`${c.url(1)}/v1/kv/acme/once?ifVersion=0`, 'c');
  t.true(re.json().version > first.json().version, 'versions are never reused');

  // Request IDs are echoed.
  const rid = await http('GET', `${c.url(3)}/v1/kv/acme/k1?consistency=stale`, undefined, { 'x-request-id': 'trace-me-1' });
  t.is(rid.headers.get('x-request-id'), 'trace-me-1');
});

test.serial('bad input gets its 4xx code and changes nothing; garbage on the Raft port closes only that connection', async (t) => {
  const c = await TestCluster.start(t, 3, SMALL);
  t.is((await putRetry(`${c.url(1)}/v1/kv/acme/keep`, 'safe')).status, 200);
  const cases: Array<[string, string, string | Uint8Array | undefined, number, string]> = [
    ['PUT', '/v1/kv/bad%21tenant/k', 'x', 400, 'invalid_tenant'],
    ['PUT', `/v1/kv/${'t'.repeat(65)}/k`, 'x', 400, 'invalid_tenant'],
    ['PUT', `/v1/kv/acme/${'k'.repeat(513)}`, 'x', 400, 'invalid_key'],
    ['PUT', '/v1/kv/acme/keep?t=-1', 'x', 400, 'invalid_time'],
    ['PUT', '/v1/kv/acme/keep?t=abc', 'x', 400, 'invalid_time'],
    ['PUT', '/v1/kv/acme/keep?ifVersion=x', 'x', 400, 'invalid_argument'],
    ['PUT', '/v1/kv/acme/keep', new Uint8Array((1 << 20) + 1), 413, 'value_too_large'],
    ['GET', '/v1/kv/acme/keep?consistency=eventual', undefined, 400, 'invalid_argument'],
    ['GET', '/v1/kv/acme/keep?consistency=stale&maxStalenessMs=-4', undefined, 400, 'invalid_argument'],
    ['GET', '/v1/kv/acme?limit=5000&static=true', undefined, 400, 'invalid_argument'],
    ['GET', '/v1/kv/acme?cursor=garbage&static=true', undefined, 400, 'invalid_argument'],
    ['GET', '/v1/kv/acme', undefined, 400, 'invalid_argument'],
  ];
  for (const [method, path, body, status, code] of cases) {
    const r = await http(method, `${c.url(2)}${path}`, body);
    t.is(r.status, status, `${method} ${path}`);
    t.is(r.json().error.code, code, `${method} ${path}`);
    t.is(r.json().error.outcome, 'not_applied');
    t.truthy(r.json().error.requestId);
  }
  // Garbage on every node's Raft port: each closes that connection and keeps serving.
  const peerPorts = c.peers.split(',').map((p) => Number(p.split(':').pop()));
  for (const port of peerPorts) {
    await new Promise<void>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.write(Buffer.from([0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]));
        s.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
      });
      s.on('close', () => resolve());
      s.on('error', () => resolve());
      s.setTimeout(5000, () => s.destroy());
    });
  }
  for (const i of [1, 2, 3]) {
    const r = await getRetry(`${c.url(i)}/v1/kv/acme/keep`);
    t.is(r.body, 'safe');
  }
  const w = await putRetry(`${c.url(3)}/v1/kv/acme/after`, 'ok');
  t.is(w.status, 200, 'the cluster still replicates');
  const metrics = await http('GET', `${c.url(1)}/metrics`);
  t.regex(metrics.body, /kv_transport_bad_frames_total\{node="1"\} [1-9]/);
});

test.serial('scans visit buckets in time order with a cursor and a limit', async (t) => {
  const c = await TestCluster.start(t, 3, [...SMALL, '--bucket-ms', '1000']);
  const want: string[] = [];
  for (let b = 0; b < 6; b++) {
    for (let k = 0; k < 3; k++) {
      const tms = b * 1000 + k * 10;
      t.is((await putRetry(`${c.url(1 + (b % 3))}/v1/kv/scan-t/e${k}?t=${tms}`, `b${b}k${k}`)).status, 200);
      want.push(`b${b}k${k}`);
    }
  }
  await putRetry(`${c.url(1)}/v1/kv/scan-t/static-one`, 's');
  const got: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const q: string = `from=0&to=5999&limit=4${cursor === null ? '' : `&cursor=${cursor}`}`;
    const r = await getRetry(`${c.url(2)}/v1/kv/scan-t?${q}`);
    t.is(r.status, 200, r.body);
    const j = r.json() as { items: Array<{ value: string; t: number }>; cursor: string | null };
    t.true(j.items.length <= 4);
    for (const it of j.items) got.push(Buffer.from(it.value, 'base64').toString());
    cursor = j.cursor;
    pages++;
  } while (cursor !== null && pages < 20);
  t.deepEqual(got, want);
  const st = await http('GET', `${c.url(3)}/v1/kv/scan-t?static=true&consistency=stale`);
  t.deepEqual(st.json().items.map((i: { key: string }) => i.key), ['static-one']);
});

test.serial('idempotency keys expire by log time: a key reused after the window applies again, and expired records are reclaimed', async (t) => {
  const c = await TestCluster.start(t, 3, [...SMALL, '--idempotency-retention-ms', '1000']);
  const a = await putRetry(`${c.url(1)}/v1/kv/acme/idem`, 'first', { idem: 'k-1' });
  const b = await putRetry(`${c.url(1)}/v1/kv/acme/idem`, 'second', { idem: 'k-1' });
  t.deepEqual(b.json(), a.json(), 'within the window: the first outcome');
  await new Promise((r) => setTimeout(r, 1200));
  const d = await putRetry(`${c.url(1)}/v1/kv/acme/idem`, 'third', { idem: 'k-1' });
  t.true(d.json().version > a.json().version, 'after the window (in log time) the key is new again');
  // Other writes move log time on; the expired record of another key gets collected within a few GC passes.
  await putRetry(`${c.url(1)}/v1/kv/acme/idem2`, 'x', { idem: 'k-2' });
  let collected = 0;
  for (let k = 0; k < 150 && collected === 0; k++) {
    await new Promise((r) => setTimeout(r, 100));
    await http('PUT', `${c.url(1)}/v1/kv/acme/tick`, 'x');
    for (const i of [1, 2, 3]) {
      const m = /kv_idempotency_collected_total\{node="\d+"\} (\d+)/.exec((await http('GET', `${c.url(i)}/metrics`)).body);
      collected += Number(m?.[1] ?? 0);
    }
  }
  t.true(collected > 0, 'expired idempotency records were deleted');
});
