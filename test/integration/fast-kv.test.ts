/**
 * node/fast-kv.ts answers plain single-key reads and writes ahead of fastify.
 * The same request with one character percent-encoded (`k%31` for `k1`) goes
 * through fastify's route, so each case below is asked both ways and the
 * answers must agree: status, body, the contract's headers, the error body.
 * The fast-path counter shows which path answered.
 */
import test from 'ava';
import net from 'node:net';
import { TestCluster, getRetry, http, metricOf, putRetry, type HttpResult } from './harness.ts';

const fastReads = (c: TestCluster, i: number): Promise<number> => metricOf(c, i, /kv_http_fast_requests_total\{node="\d+"\} (\d+)/);
const requests = (c: TestCluster, i: number, status: number, consistency: string, method = 'GET'): Promise<number> =>
  metricOf(c, i, new RegExp(`kv_http_requests_total\\{route="/v1/kv/:tenant/:key",method="${method}",status="${status}",consistency="${consistency}",node="\\d+"\\} (\\d+)`));
/** `k%31` for `k1`: the same key, through fastify. */
const encodedKey = (key: string): string => `${key.slice(0, -1)}%${key.charCodeAt(key.length - 1).toString(16)}`;

const HEADERS = ['x-shard', 'x-consistency', 'x-version', 'x-served-by', 'x-cluster-epoch', 'content-type', 'retry-after'];

function view(r: HttpResult): Record<string, unknown> {
  const out: Record<string, unknown> = { status: r.status };
  for (const h of HEADERS) out[h] = r.headers.get(h);
  out['staleness'] = r.headers.get('x-staleness-ms') === null ? null : /^\d+$/.test(r.headers.get('x-staleness-ms') as string) ? 'ms' : r.headers.get('x-staleness-ms');
  if (r.status === 200) out['body'] = r.body;
  else {
    const e = r.json().error;
    out['error'] = { ...e, requestId: typeof e.requestId, message: e.message };
  }
  return out;
}

test.serial('plain reads are answered ahead of fastify exactly as fastify answers them', async (t) => {
  const c = await TestCluster.start(t, 3, ['--shards', '4', '--tick-ms', '50']);
  const w = await putRetry(`${c.url(1)}/v1/kv/acme/k1?t=1700000000000`, 'v1');
  t.is(w.status, 200, w.body);
  const shard = w.json().shard as number;
  const cluster = (await http('GET', `${c.url(1)}/v1/cluster`)).json();
  const leader = cluster.shards.find((s: { id: number }) => s.id === shard).leader as number;
  // The linearizable read is sure to be seen by the leader's state; wait until every replica's stale read sees it too.
  for (const i of [1, 2, 3]) {
    for (let k = 0; k < 100; k++) {
      if ((await http('GET', `${c.url(i)}/v1/kv/acme/k1?t=1700000000000&consistency=stale`)).status === 200) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const cases: Array<{ node: number; query: string; fast: boolean; consistency: string }> = [
    { node: leader, query: '?t=1700000000000', fast: true, consistency: 'linearizable' },
    { node: leader, query: '?t=1700000000000&consistency=linearizable', fast: true, consistency: 'linearizable' },
    { node: leader, query: '?consistency=linearizable&t=1700000000000', fast: true, consistency: 'linearizable' },
    { node: 1, query: '?t=1700000000000&consistency=stale', fast: true, consistency: 'stale' },
    { node: 2, query: '?t=1700000000000&consistency=stale&maxStalenessMs=60000', fast: true, consistency: 'stale' },
    { node: 3, query: '?consistency=stale&t=1700000000000', fast: true, consistency: 'stale' },
    // Not fast: a follower forwards a linearizable read; an invalid time or an unknown parameter is fastify's to judge.
    { node: leader % 3 + 1, query: '?t=1700000000000', fast: false, consistency: 'linearizable' },
    { node: 1, query: '?t=abc&consistency=stale', fast: false, consistency: 'stale' },
    { node: 1, query: '?t=1700000000000&consistency=stale&ifVersion=3', fast: false, consistency: 'stale' },
    { node: 1, query: '?t=1700000000000&consistency=eventual', fast: false, consistency: 'invalid' },
  ];
  for (const key of ['k1', 'absent1']) {
    const encoded = encodedKey(key);
    for (const cs of cases) {
      const label = `${key} on node ${cs.node} ${cs.query}`;
      const f0 = await fastReads(c, cs.node);
      const plain = await getRetry(`${c.url(cs.node)}/v1/kv/acme/${key}${cs.query}`);
      const f1 = await fastReads(c, cs.node);
      const viaFastify = await getRetry(`${c.url(cs.node)}/v1/kv/acme/${encoded}${cs.query}`);
      const f2 = await fastReads(c, cs.node);
      t.is(f1 - f0, cs.fast ? 1 : 0, `${label}: fast path taken`);
      t.is(f2 - f1, 0, `${label}: the encoded form goes to fastify`);
      t.deepEqual(view(plain), view(viaFastify), label);
    }
  }

  // Request IDs: echoed when given, taken from a traceparent, else made up.
  const url = `${c.url(1)}/v1/kv/acme/k1?t=1700000000000&consistency=stale`;
  t.is((await http('GET', url, undefined, { 'x-request-id': 'trace-me-2' })).headers.get('x-request-id'), 'trace-me-2');
  const tp = await http('GET', url, undefined, { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' });
  t.is(tp.headers.get('x-request-id'), '0af7651916cd43dd8448eb211c80319c');
  t.regex((await http('GET', url)).headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
  const miss = await http('GET', `${c.url(1)}/v1/kv/acme/absent2?consistency=stale`, undefined, { 'x-request-id': 'trace-me-3' });
  t.is(miss.json().error.requestId, 'trace-me-3');

  // Answered here, counted in the request metrics as fastify's hooks count them.
  const before = await requests(c, 2, 200, 'stale');
  const notFound = await requests(c, 2, 404, 'stale');
  for (let k = 0; k < 5; k++) t.is((await http('GET', `${c.url(2)}/v1/kv/acme/k1?t=1700000000000&consistency=stale`)).status, 200);
  t.is((await http('GET', `${c.url(2)}/v1/kv/acme/nope?consistency=stale`)).status, 404);
  t.is(await requests(c, 2, 200, 'stale'), before + 5);
  t.is(await requests(c, 2, 404, 'stale'), notFound + 1);
});

test.serial('plain writes are answered ahead of fastify exactly as fastify answers them', async (t) => {
  const c = await TestCluster.start(t, 3, ['--shards', '4', '--tick-ms', '50']);
  const T = '?t=1700000000000';
  const first = await putRetry(`${c.url(1)}/v1/kv/acme/w0${T}`, 'x');
  t.is(first.status, 200, first.body);
  const shard = first.json().shard as number;
  const leader = (await http('GET', `${c.url(1)}/v1/cluster`)).json().shards.find((s: { id: number }) => s.id === shard).leader as number;
  const follower = leader % 3 + 1;
  const L = c.url(leader);
  const octet = { 'content-type': 'application/octet-stream' };
  /** One write each way: `plainKey` as is, `viaKey` percent-encoded; the counter must show which path took each. */
  async function both(label: string, node: number, plainKey: string, viaKey: string, query: string, body: string, headers: Record<string, string>, fast: boolean): Promise<[HttpResult, HttpResult]> {
    const f0 = await fastReads(c, node);
    const plain = await http('PUT', `${c.url(node)}/v1/kv/acme/${plainKey}${query}`, body, headers);
    const f1 = await fastReads(c, node);
    const viaFastify = await http('PUT', `${c.url(node)}/v1/kv/acme/${encodedKey(viaKey)}${query}`, body, headers);
    const f2 = await fastReads(c, node);
    t.is(f1 - f0, fast ? 1 : 0, `${label}: fast path taken`);
    t.is(f2 - f1, 0, `${label}: the encoded form goes to fastify`);
    return [plain, viaFastify];
  }
  const shape = (r: HttpResult): Record<string, unknown> => {
    const j = r.json();
    return {
      status: r.status, servedBy: r.headers.get('x-served-by'), type: r.headers.get('content-type'), epoch: r.headers.get('x-cluster-epoch'),
      retryAfter: r.headers.get('retry-after'), keys: Object.keys(j.error ?? j).sort(), code: j.error?.code, outcome: j.error?.outcome,
      shard: j.shard, currentVersion: j.error?.currentVersion,
    };
  };
  // New keys in the same partition (same shard): both acknowledged alike, each with a new version.
  const [a, b] = await both('new key', leader, 'w1', 'w2', T, 'v', octet, true);
  t.deepEqual(shape(a), shape(b));
  t.true(b.json().version > a.json().version);
  t.is((await getRetry(`${L}/v1/kv/acme/w1${T}`)).body, 'v');
  t.is((await getRetry(`${L}/v1/kv/acme/w2${T}`)).body, 'v');
  // A stale compare-and-set: 409 with the current version, both ways; nothing changes.
  const [c1, c2] = await both('conflict', leader, 'w1', 'w1', `${T}&ifVersion=1`, 'nope', octet, true);
  t.deepEqual(shape(c1), shape(c2));
  t.is(c1.status, 409);
  t.is(c1.json().error.currentVersion, a.json().version);
  // A matching one wins, either way.
  const [m1, m2] = await both('compare-and-set', leader, 'w1', 'w2', `${T}&ifVersion=${a.json().version}`, 'v2', octet, true);
  t.is(m1.status, 200);
  t.is(m2.status, 409, 'w2 has its own version');
  // An idempotent retry returns the first outcome, through either path, and applies once.
  const idem = { ...octet, 'idempotency-key': 'fast-1' };
  const [i1, i2] = await both('idempotent', leader, 'w3', 'w3', T, 'first', idem, true);
  t.deepEqual(i2.json(), i1.json());
  const again = await http('PUT', `${L}/v1/kv/acme/w3${T}`, 'second', idem);
  t.deepEqual(again.json(), i1.json());
  t.is((await getRetry(`${L}/v1/kv/acme/w3${T}`)).body, 'first');
  // Request IDs are echoed.
  const rid = await http('PUT', `${L}/v1/kv/acme/w4${T}`, 'v', { ...octet, 'x-request-id': 'put-me-1' });
  t.is(rid.headers.get('x-request-id'), 'put-me-1');
  // Fastify's: a follower forwards; an invalid version; no body; no content type.
  const [f1, f2] = await both('on a follower', follower, 'w5', 'w6', T, 'v', octet, false);
  t.deepEqual(shape(f1), shape(f2));
  t.is(f1.status, 200);
  t.is((await both('invalid ifVersion', leader, 'w7', 'w7', `${T}&ifVersion=x`, 'v', octet, false))[0].status, 400);
  t.is((await both('empty body', leader, 'w8', 'w8', T, '', octet, false))[0].status, 200);
  t.is((await both('no content type', leader, 'w9', 'w9', T, Buffer.from('v') as unknown as string, {}, false))[0].status, 200);
  const [bad1, bad2] = await both('malformed content type', leader, 'w9', 'w9', T, 'v', { 'content-type': 'a' }, false);
  t.is(bad1.status, 415);
  t.deepEqual(shape(bad1), shape(bad2));
  const [p1, p2] = await both('content type with parameters', leader, 'w11', 'w12', T, 'v', { 'content-type': 'text/plain; charset=utf-8' }, false);
  t.deepEqual(shape(p1), shape(p2));
  // Counted as fastify's hooks count them.
  const before = await requests(c, leader, 200, 'none', 'PUT');
  for (let k = 0; k < 3; k++) t.is((await http('PUT', `${L}/v1/kv/acme/w10${T}`, 'v', octet)).status, 200);
  t.is(await requests(c, leader, 200, 'none', 'PUT'), before + 3);
});

test.serial('a write whose body does not come within the request deadline is dropped and frees its in-flight slot, on either path', async (t) => {
  const c = await TestCluster.start(t, 3, ['--shards', '1', '--tick-ms', '50', '--max-in-flight', '2']);
  const ok = await putRetry(`${c.url(1)}/v1/kv/acme/slow0`, 'v');
  t.is(ok.status, 200, ok.body);
  const leader = ok.headers.get('x-served-by') as string;
  const url = new URL(c.url(Number(leader)));
  // Two writes that promise 10 bytes and send 3: they hold both slots.
  const started = Date.now();
  const closed = [1, 2].map((i) => new Promise<number>((resolve) => {
    const s = net.connect({ host: url.hostname, port: Number(url.port) }, () => {
      // slow1 is a plain write (fast-kv.ts), slow%32 goes through fastify.
      const key = i === 1 ? 'slow1' : 'slow%32';
      s.write(`PUT /v1/kv/acme/${key} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10\r\n\r\nabc`);
    });
    s.on('data', (d) => t.log(`slow${i} got`, String(d).slice(0, 200)));
    s.on('close', () => resolve(Date.now() - started));
    s.on('error', () => {});
  }));
  // Wait until both are taken: the node's own requests in flight (its /metrics answer is itself shed then).
  let held = false;
  for (let k = 0; k < 200 && !held; k++) {
    const m = await http('GET', `${url.origin}/metrics`);
    held = m.status === 503 || Number(/kv_http_in_flight\{node="\d+"\} (-?\d+)/.exec(m.body)?.[1] ?? 0) >= 3;
    if (!held) await new Promise((r) => setTimeout(r, 20));
  }
  t.true(held, 'both slow writes are in flight');
  const shed = await http('PUT', `${url.origin}/v1/kv/acme/slow3`, 'v', { 'content-type': 'application/octet-stream' });
  t.is(shed.status, 503, `while they hold the slots, a third is shed: ${shed.status} ${shed.body}`);
  t.is(shed.json().error.code, 'overloaded');
  // Bounded: a connection the node never drops counts as 60 s.
  const times = await Promise.all(closed.map((p) => Promise.race([p, new Promise<number>((r) => setTimeout(() => r(60_000), 15_000).unref())])));
  t.true(times.every((ms) => ms >= 4000 && ms < 15_000), `dropped after the 5 s deadline (the second within a second of it): ${times.join(', ')} ms`);
  const after = await http('PUT', `${url.origin}/v1/kv/acme/slow4`, 'v', { 'content-type': 'application/octet-stream' });
  t.is(after.status, 200, 'the slots are free again');
  for (const k of ['slow1', 'slow2']) t.is((await getRetry(`${url.origin}/v1/kv/acme/${k}`)).status, 404, 'nothing of the cut-off writes was applied');
});
