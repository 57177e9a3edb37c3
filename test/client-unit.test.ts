/** SDK unit tests with a fake clock, a seeded random source and a scripted transport. */
import test from 'ava';
import { KvClient, KvError, RetryBudget, CircuitBreaker, backoffDelay, ClientRing, loadHash32 } from '../client/index.ts';
import type { KvEvent, BreakerState } from '../client/index.ts';
import { FakeClock, FakeTransport, drive, seeded, jsonRes, errRes, mapRes, connRefused } from './client/fakes.ts';

// The wasm hash loads asynchronously on the real clock: load it before the fake clock drives anything.
test.before(async () => {
  await loadHash32();
});

// ------------------------------------------------------------------ policies

test('backoff: full jitter stays within [0, min(max, base·2^(n-1))) and spreads over it', (t) => {
  const r = seeded(1);
  for (let n = 1; n <= 12; n++) {
    const cap = Math.min(1000, 25 * 2 ** (n - 1));
    let sum = 0;
    let max = 0;
    const N = 2000;
    for (let i = 0; i < N; i++) {
      const d = backoffDelay(n, 25, 1000, r);
      t.true(d >= 0 && d < cap, `retry ${n}: ${d} not in [0, ${cap})`);
      sum += d;
      max = Math.max(max, d);
    }
    // Full jitter: mean ≈ cap/2, and it reaches near the cap.
    t.true(Math.abs(sum / N - cap / 2) < cap * 0.08, `retry ${n}: mean ${sum / N}, cap ${cap}`);
    t.true(max > cap * 0.9);
  }
  // Retry-After is a floor, capped by maxRetryAfterMs.
  t.is(backoffDelay(1, 25, 1000, () => 0, 1000, 5000), 1000);
  t.is(backoffDelay(1, 25, 1000, () => 0.99, 3000, 800), 800);
  t.is(backoffDelay(1, 25, 1000, () => 0, null), 0);
});

test('retry budget: retries ≤ 20 % of first attempts (+ minimum) over a sliding window', (t) => {
  const clock = new FakeClock();
  const b = new RetryBudget(clock, { ratio: 0.2, minRetries: 5, windowMs: 10_000 });
  for (let i = 0; i < 100; i++) b.recordFirst();
  let allowed = 0;
  for (let i = 0; i < 100; i++) if (b.tryRetry()) allowed++;
  t.is(allowed, 25);
  t.false(b.tryRetry());
  // Half a window later the same counts are still in the window.
  clock.advance(5_000);
  t.false(b.tryRetry());
  // A full window later they have slid out: only the minimum is available until first attempts come in.
  clock.advance(5_001);
  t.deepEqual(b.stats(), { firsts: 0, retries: 0 });
  let again = 0;
  for (let i = 0; i < 100; i++) if (b.tryRetry()) again++;
  t.is(again, 5);
  for (let i = 0; i < 50; i++) b.recordFirst();
  let more = 0;
  for (let i = 0; i < 100; i++) if (b.tryRetry()) more++;
  t.is(more, 10);
});

test('circuit breaker: closed → open after N failures → half-open after openMs → one probe → closed (or open again, longer)', (t) => {
  const clock = new FakeClock();
  const changes: Array<[BreakerState, BreakerState]> = [];
  const b = new CircuitBreaker(clock, { failureThreshold: 3, openMs: 1000 }, (f, to) => changes.push([f, to]));
  t.is(b.state, 'closed');
  b.onFailure();
  b.onFailure();
  b.onSuccess(); // resets the count
  b.onFailure();
  b.onFailure();
  t.is(b.state, 'closed');
  b.onFailure();
  t.is(b.state, 'open');
  t.false(b.allows());
  clock.advance(999);
  t.is(b.state, 'open');
  clock.advance(1);
  t.is(b.state, 'half_open');
  t.false(b.allows());
  t.true(b.tryStartProbe());
  t.false(b.tryStartProbe(), 'only one probe at a time');
  b.onFailure(); // probe failed: open again for twice as long
  t.is(b.state, 'open');
  clock.advance(1000);
  t.is(b.state, 'open');
  clock.advance(1000);
  t.is(b.state, 'half_open');
  t.true(b.tryStartProbe());
  b.onSuccess();
  t.is(b.state, 'closed');
  t.true(b.allows());
  t.deepEqual(changes, [['closed', 'open'], ['open', 'half_open'], ['half_open', 'open'], ['open', 'half_open'], ['half_open', 'closed']]);
});

// ------------------------------------------------------------------ the client over a scripted transport

async function shardOfKey(tenant: string): Promise<number> {
  return new ClientRing([1, 2], 64, await loadHash32()).shardFor(tenant, -1);
}

function mk(handler: ConstructorParameters<typeof FakeTransport>[0], extra: Partial<ConstructorParameters<typeof KvClient>[0]> = {}) {
  const clock = new FakeClock();
  const transport = new FakeTransport(handler);
  const events: KvEvent[] = [];
  const kv = new KvClient({
    endpoints: ['http://n1', 'http://n2'], clock, random: seeded(7), transport, onEvent: (e) => events.push(e),
    attemptTimeoutMs: 1000, deadlineMs: 5000, ...extra,
  });
  return { clock, transport, events, kv };
}

test('put: idempotency key on every attempt, reused across retries; request ids per attempt; straight to the leader', async (t) => {
  const shard = await shardOfKey('acme');
  let n = 0;
  const { clock, transport, kv } = mk((url, req) => {
    if (req.path === '/v1/cluster') return mapRes();
    n++;
    if (n === 1) return errRes(503, 'no_leader', 'not_applied', { 'retry-after': '1' });
    if (n === 2) return errRes(504, 'timeout', 'unknown');
    return jsonRes(200, { version: 9, shard }, { 'x-served-by': url.slice(-1) });
  });
  const r = await drive(clock, kv.put({ tenant: 'acme', key: 'k', value: 'v', requestId: 'req-1' }));
  t.is(r.version, 9);
  t.is(r.attempts, 3);
  const puts = transport.log.filter((x) => x.method === 'PUT');
  t.is(puts.length, 3);
  t.is(puts[0]?.url, `http://n${shard}`, 'first attempt goes to the shard leader');
  const keys = new Set(puts.map((p) => p.headers['idempotency-key']));
  t.is(keys.size, 1);
  t.truthy([...keys][0]);
  t.deepEqual(puts.map((p) => p.headers['x-request-id']), ['req-1', 'req-1.2', 'req-1.3']);
});

test('mutation timing out everywhere: outcome unknown, never not_applied; read: not_applied', async (t) => {
  const { clock, kv } = mk((_url, req) => (req.path === '/v1/cluster' ? mapRes() : 'hang'));
  const e = await drive(clock, kv.put({ tenant: 'acme', key: 'k', value: 'v' })).catch((x: unknown) => x);
  t.true(e instanceof KvError);
  t.is((e as KvError).outcome, 'unknown');
  t.true(['deadline_exceeded', 'attempt_timeout'].includes((e as KvError).code), (e as KvError).code);
  t.true(clock.now() <= 5000, `gave up at ${clock.now()} (deadline 5000)`);
  const g = await drive(clock, kv.get({ tenant: 'acme', key: 'k' })).catch((x: unknown) => x);
  t.is((g as KvError).outcome, 'not_applied');
});

test('mutation refused by every node (never sent): outcome not_applied', async (t) => {
  const { clock, kv } = mk((_url, req) => (req.path === '/v1/cluster' ? mapRes() : connRefused()), { breaker: { failureThreshold: 100 } });
  const e = (await drive(clock, kv.delete({ tenant: 'acme', key: 'k' })).catch((x: unknown) => x)) as KvError;
  t.is(e.code, 'unreachable');
  t.is(e.outcome, 'not_applied');
  t.true(e.attempts > 1);
});

test('an unknown attempt followed by refusals still reports unknown', async (t) => {
  let n = 0;
  const { clock, kv } = mk((_url, req) => (req.path === '/v1/cluster' ? mapRes() : ++n === 1 ? errRes(504, 'timeout', 'unknown') : connRefused()), { breaker: { failureThreshold: 100 } });
  const e = (await drive(clock, kv.put({ tenant: 'acme', key: 'k', value: 'v' })).catch((x: unknown) => x)) as KvError;
  t.is(e.outcome, 'unknown');
});

test('version_mismatch is final (no retry) and carries currentVersion; 404 is null', async (t) => {
  const { clock, kv, transport } = mk((_url, req) => {
    if (req.path === '/v1/cluster') return mapRes();
    if (req.method === 'PUT') return errRes(409, 'version_mismatch', 'not_applied', {}, { currentVersion: 5 });
    return errRes(404, 'not_found', 'not_applied');
  });
  const e = (await drive(clock, kv.put({ tenant: 'acme', key: 'k', value: 'v', ifVersion: 3 })).catch((x: unknown) => x)) as KvError;
  t.is(e.code, 'version_mismatch');
  t.is(e.outcome, 'not_applied');
  t.is(e.currentVersion, 5);
  t.is(e.status, 409);
  t.is(transport.log.filter((x) => x.method === 'PUT').length, 1);
  t.true(transport.log.some((x) => x.path.includes('ifVersion=3')));
  t.is(await drive(clock, kv.get({ tenant: 'acme', key: 'k' })), null);
});

test('a dead seed endpoint does not stop start-up', async (t) => {
  const { clock, kv } = mk((url, req) => {
    if (url === 'http://n1') return connRefused();
    if (req.path === '/v1/cluster') return mapRes();
    return jsonRes(200, { version: 1, shard: 1 });
  });
  const info = await drive(clock, kv.connect());
  t.is(info.shards.length, 2);
  const hung = mk((url, req) => (url === 'http://n1' ? 'hang' : req.path === '/v1/cluster' ? mapRes() : jsonRes(200, {})));
  const info2 = await drive(hung.clock, hung.kv.connect());
  t.is(info2.nodes.length, 3);
  t.true(hung.clock.now() < 1000, 'a black-holed seed does not hold up start-up');
});

test('no endpoint at all: a typed error, not a hang', async (t) => {
  const { clock, kv } = mk(() => connRefused(), { deadlineMs: 3000 });
  const e = (await drive(clock, kv.get({ tenant: 'acme', key: 'k' })).catch((x: unknown) => x)) as KvError;
  t.true(e instanceof KvError);
  t.true(['no_endpoint', 'deadline_exceeded'].includes(e.code), e.code);
});

test('the retry budget stops retry storms', async (t) => {
  const { clock, kv, events } = mk((_url, req) => (req.path === '/v1/cluster' ? mapRes() : errRes(503, 'overloaded', 'not_applied')), {
    retryBudget: { ratio: 0.2, minRetries: 2, windowMs: 10_000 }, retry: { maxAttempts: 10 },
  });
  let attempts = 0;
  for (let i = 0; i < 20; i++) {
    const e = (await drive(clock, kv.get({ tenant: 'acme', key: `k${i}` })).catch((x: unknown) => x)) as KvError;
    t.is(e.code, 'overloaded');
    attempts += e.attempts;
  }
  // 20 first attempts; retries ≤ 0.2·20 + 2 = 6.
  t.true(attempts - 20 <= 6, `${attempts - 20} retries`);
  t.true(events.some((e) => e.type === 'retry_denied' && e.reason === 'budget'));
});

test('Retry-After is honoured when retrying the same node', async (t) => {
  let n = 0;
  const { clock, kv, events } = mk((_url, req) => {
    if (req.path === '/v1/cluster') return mapRes();
    return ++n < 5 ? errRes(429, 'rate_limited', 'not_applied', { 'retry-after': '2' }) : jsonRes(200, { version: 1, shard: 1 });
  }, { retry: { maxRetryAfterMs: 5000 }, deadlineMs: 20_000 });
  await drive(clock, kv.put({ tenant: 'acme', key: 'k', value: 'v' }));
  const retries = events.filter((e): e is Extract<KvEvent, { type: 'retry' }> => e.type === 'retry');
  t.is(retries.length, 4);
  // After every replica was tried once, the next attempts return to a node that asked for 2 s.
  t.true(retries.slice(3).every((r) => r.delayMs >= 2000), JSON.stringify(retries.map((r) => r.delayMs)));
});

test('breaker: a node that keeps timing out is opened, traffic moves away, a /health probe closes it', async (t) => {
  let n1Alive = false;
  const { clock, kv, events, transport } = mk((url, req) => {
    if (url === 'http://n1' && !n1Alive) return 'hang';
    if (req.path === '/v1/cluster') return mapRes({ 1: 1, 2: 1 });
    if (req.path === '/health') return jsonRes(200, { status: 'ok' });
    return jsonRes(200, { version: 1, shard: 1 }, { 'x-served-by': '2' });
  }, { breaker: { failureThreshold: 1, openMs: 1000 }, attemptTimeoutMs: 200 });
  for (let i = 0; i < 4; i++) await drive(clock, kv.put({ tenant: 'acme', key: `k${i}`, value: 'v' }));
  t.true(events.some((e) => e.type === 'breaker' && e.node === 1 && e.to === 'open'));
  const before = transport.log.filter((x) => x.url === 'http://n1' && x.method === 'PUT').length;
  for (let i = 0; i < 3; i++) await drive(clock, kv.put({ tenant: 'acme', key: `x${i}`, value: 'v' }));
  t.is(transport.log.filter((x) => x.url === 'http://n1' && x.method === 'PUT').length, before, 'no traffic to an open node');
  n1Alive = true;
  clock.advance(5000);
  await drive(clock, kv.put({ tenant: 'acme', key: 'y', value: 'v' }));
  await drive(clock, kv.put({ tenant: 'acme', key: 'z', value: 'v' }));
  t.true(transport.log.some((x) => x.url === 'http://n1' && x.path === '/health'));
  t.true(events.some((e) => e.type === 'breaker' && e.node === 1 && e.from === 'half_open' && e.to === 'closed'));
  t.is(kv.breakerStates()['http://n1'], 'closed');
});

test('fallback linearizable-else-stale: a shard without quorum still answers, marked stale', async (t) => {
  const { clock, kv, events } = mk((url, req) => {
    if (req.path === '/v1/cluster') return mapRes();
    if (req.path.includes('consistency=linearizable')) return errRes(503, 'no_quorum', 'not_applied', { 'retry-after': '1' });
    return { status: 200, headers: { 'x-version': '4', 'x-shard': '1', 'x-consistency': 'stale', 'x-staleness-ms': '1500', 'x-served-by': url.slice(-1) }, body: new TextEncoder().encode('old') };
  });
  const r = await drive(clock, kv.get({ tenant: 'acme', key: 'k', fallbackToStale: true }));
  t.truthy(r);
  t.true(r?.stale);
  t.is(r?.consistency, 'stale');
  t.is(r?.stalenessMs, 1500);
  t.is(new TextDecoder().decode(r?.value), 'old');
  t.true(events.some((e) => e.type === 'fallback_stale'));
  // Without the opt-in, the error surfaces.
  const e = (await drive(clock, kv.get({ tenant: 'acme', key: 'k', deadlineMs: 500 })).catch((x: unknown) => x)) as KvError;
  t.is(e.code, 'no_quorum');
});

test('hedged stale read: a slow replica is overtaken by another', async (t) => {
  const { clock, kv, events } = mk((url, req) => {
    if (req.path === '/v1/cluster') return mapRes();
    if (url === 'http://n1' || url === 'http://n2') return 'hang';
    return { status: 200, headers: { 'x-version': '4', 'x-shard': '1', 'x-served-by': '3', 'x-staleness-ms': '3' }, body: new TextEncoder().encode('v') };
  });
  for (let i = 0; i < 5; i++) {
    const r = await drive(clock, kv.get({ tenant: 'acme', key: 'k', consistency: 'stale', hedge: true, hedgeAfterMs: 20 }));
    t.is(r?.node, 3);
  }
  t.true(events.some((e) => e.type === 'hedge'));
});

test('stale reads spread over the replicas', async (t) => {
  const { clock, kv, transport } = mk((url, req) => {
    if (req.path === '/v1/cluster') return mapRes();
    return { status: 200, headers: { 'x-version': '1', 'x-served-by': url.slice(-1) }, body: new Uint8Array([1]) };
  });
  for (let i = 0; i < 60; i++) await drive(clock, kv.get({ tenant: 'acme', key: 'k', consistency: 'stale' }));
  const by = new Map<string, number>();
  for (const x of transport.log) if (x.method === 'GET' && x.path.startsWith('/v1/kv')) by.set(x.url, (by.get(x.url) ?? 0) + 1);
  t.is(by.size, 3);
  for (const c of by.values()) t.true(c >= 10);
});

test('a response served by another node teaches the client the new leader', async (t) => {
  const shard = await shardOfKey('acme');
  const { clock, kv, transport } = mk((_url, req) => {
    if (req.path === '/v1/cluster') return mapRes({ 1: 1, 2: 2 });
    return jsonRes(200, { version: 1, shard }, { 'x-served-by': '3' });
  });
  await drive(clock, kv.put({ tenant: 'acme', key: 'a', value: 'v' }));
  await drive(clock, kv.put({ tenant: 'acme', key: 'b', value: 'v' }));
  const puts = transport.log.filter((x) => x.method === 'PUT');
  t.is(puts[0]?.url, `http://n${shard}`);
  t.is(puts[1]?.url, 'http://n3');
});

test('AbortSignal cancels a call; a mutation already sent reports unknown', async (t) => {
  const { clock, kv } = mk((_url, req) => (req.path === '/v1/cluster' ? mapRes() : 'hang'));
  await drive(clock, kv.connect());
  const ac = new AbortController();
  const p = kv.put({ tenant: 'acme', key: 'k', value: 'v', signal: ac.signal }).catch((x: unknown) => x);
  await new Promise((r) => setImmediate(r));
  ac.abort();
  const e = (await p) as KvError;
  t.is(e.code, 'aborted');
  t.is(e.outcome, 'unknown');
});

test('a response from a node on a newer cluster-map epoch makes the client refresh its map', async (t) => {
  let epoch = 1;
  const { clock, kv, events } = mk((_url, req) => {
    if (req.path === '/v1/cluster') {
      const m = mapRes();
      return { ...m, body: new TextEncoder().encode(JSON.stringify({ ...JSON.parse(new TextDecoder().decode(m.body)), epoch })) };
    }
    return jsonRes(200, { version: 1, shard: 1 }, { 'x-served-by': '1', 'x-cluster-epoch': String(epoch) });
  });
  await drive(clock, kv.put({ tenant: 'acme', key: 'a', value: 'v' }));
  const before = events.filter((e) => e.type === 'map_refresh').length;
  epoch = 2;
  await drive(clock, kv.put({ tenant: 'acme', key: 'b', value: 'v' }));
  await drive(clock, new Promise((r) => setImmediate(r)));
  const refreshes = events.filter((e) => e.type === 'map_refresh');
  t.true(refreshes.length > before, 'refreshed');
  t.is((refreshes[refreshes.length - 1] as { epoch: number }).epoch, 2);
});
