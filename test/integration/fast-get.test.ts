/**
 * node/fast-get.ts answers plain single-key reads ahead of fastify. The same
 * read with one character percent-encoded (`k%31` for `k1`) goes through
 * fastify's route, so each case below is asked both ways and the answers must
 * agree: status, body, the contract's headers, the error body. The fast-path
 * counter shows which path answered.
 */
import test from 'ava';
import { TestCluster, getRetry, http, metricOf, putRetry, type HttpResult } from './harness.ts';

const fastReads = (c: TestCluster, i: number): Promise<number> => metricOf(c, i, /kv_http_fast_reads_total\{node="\d+"\} (\d+)/);
const requests = (c: TestCluster, i: number, status: number, consistency: string): Promise<number> =>
  metricOf(c, i, new RegExp(`kv_http_requests_total\\{route="/v1/kv/:tenant/:key",method="GET",status="${status}",consistency="${consistency}",node="\\d+"\\} (\\d+)`));

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
    const encoded = `${key.slice(0, -1)}%${key.charCodeAt(key.length - 1).toString(16)}`;
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
