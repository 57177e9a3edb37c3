/** The SDK against real 3-node clusters (test/integration/harness.ts). */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import test from 'ava';
import { TestCluster } from './integration/harness.ts';
import { KvClient, KvError, type KvEvent } from '../client/index.ts';

const SMALL = ['--shards', '2', '--tick-ms', '50'];
const DEAD = 'http://127.0.0.1:1';
const dec = new TextDecoder();

test.serial('CRUD, compare-and-set, scans over buckets and shards; a dead seed endpoint does not stop start-up', async (t) => {
  const c = await TestCluster.start(t, 3, SMALL);
  const kv = new KvClient({ endpoints: [DEAD, c.url(2)], deadlineMs: 8000 });
  t.teardown(() => kv.close());
  const info = await kv.connect();
  t.is(info.nodes.length, 3);
  t.is(info.shards.length, 2);
  // (A node may not know a shard's leader yet; the SDK then routes via any replica, which forwards.)
  const p = await kv.put({ tenant: 'acme', key: 'k/1 é', value: 'hello' });
  t.true(p.version > 0);
  const g = await kv.get({ tenant: 'acme', key: 'k/1 é' });
  t.is(dec.decode(g?.value), 'hello');
  t.is(g?.version, p.version);
  t.false(g?.stale);
  // Compare-and-set.
  const cas = await kv.put({ tenant: 'acme', key: 'k/1 é', value: 'v2', ifVersion: p.version });
  t.true(cas.version > p.version);
  const bad = await kv.put({ tenant: 'acme', key: 'k/1 é', value: 'v3', ifVersion: p.version }).catch((e: unknown) => e);
  t.true(bad instanceof KvError);
  t.is((bad as KvError).code, 'version_mismatch');
  t.is((bad as KvError).outcome, 'not_applied');
  t.is((bad as KvError).currentVersion, cas.version);
  t.truthy((bad as KvError).requestId);
  t.is((await kv.put({ tenant: 'acme', key: 'fresh', value: 'x', ifVersion: 0 })).shard >= 1, true);
  // Stale reads.
  let s = await kv.get({ tenant: 'acme', key: 'k/1 é', consistency: 'stale', maxStalenessMs: 5000 });
  for (let i = 0; i < 50 && s?.version !== cas.version; i++) s = await kv.get({ tenant: 'acme', key: 'k/1 é', consistency: 'stale' });
  t.is(s?.version, cas.version);
  t.true(s?.stale);
  // Missing and deleted.
  t.is(await kv.get({ tenant: 'acme', key: 'missing' }), null);
  const d = await kv.delete({ tenant: 'acme', key: 'k/1 é' });
  t.true(d.deleted);
  t.is(d.version, cas.version);
  t.is(await kv.get({ tenant: 'acme', key: 'k/1 é' }), null);
  // Scan a time range spanning 6 hourly buckets (both shards), in pages of 3.
  const T = 1_763_800_000_000;
  const want: string[] = [];
  for (let i = 0; i < 12; i++) {
    await kv.put({ tenant: 'scan', key: `e${String(i).padStart(2, '0')}`, value: `v${i}`, t: T + i * 1_800_000 });
    want.push(`e${String(i).padStart(2, '0')}`);
  }
  await kv.put({ tenant: 'scan', key: 'static-1', value: 's' });
  const got: string[] = [];
  for await (const it of kv.scan({ tenant: 'scan', from: T, to: T + 12 * 1_800_000, pageSize: 3 })) {
    got.push(it.key);
    t.is(dec.decode(it.value), `v${Number(it.key.slice(1))}`);
    t.is(it.t, T + Number(it.key.slice(1)) * 1_800_000);
  }
  t.deepEqual(got, want);
  const lin: string[] = [];
  for await (const it of kv.scan({ tenant: 'scan', static: true })) lin.push(it.key);
  t.deepEqual(lin, ['static-1']);
  // A stale scan may be served by a replica that has not applied the put yet: it converges.
  let st: string[] = [];
  for (let i = 0; i < 100 && st.length === 0; i++) {
    st = [];
    for await (const it of kv.scan({ tenant: 'scan', static: true, consistency: 'stale' })) st.push(it.key);
    if (st.length === 0) await new Promise((r) => setTimeout(r, 50));
  }
  t.deepEqual(st, ['static-1']);
  const sub: string[] = [];
  for await (const it of kv.scan({ tenant: 'scan', from: T + 1_800_000, to: T + 3 * 1_800_000 })) sub.push(it.key);
  t.deepEqual(sub, ['e01', 'e02', 'e03']);
  // cluster(): leaders as the nodes report them.
  const m = await kv.cluster();
  t.is(m.shards.length, 2);
});

test.serial('leader killed during a stream of writes: every call succeeds in its deadline or reports its outcome truthfully; no retry applies twice', async (t) => {
  const c = await TestCluster.start(t, 3, SMALL);
  const events: KvEvent[] = [];
  const kv = new KvClient({ endpoints: [c.url(1), c.url(2), c.url(3)], deadlineMs: 4000, attemptTimeoutMs: 800, onEvent: (e) => events.push(e), retryBudget: { minRetries: 200 } });
  t.teardown(() => kv.close());
  const info = await kv.connect();
  const victim = info.shards[0]?.leader as number;
  // Slack over the deadline: 300 ms, plus however long this test process's own event loop was
  // stalled (a loaded CI box delays the timer that ends a call — not the SDK's doing).
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  t.teardown(() => loopDelay.disable());
  const slack = (): number => 300 + loopDelay.max / 1e6;
  let stop = false;
  const stats = { ok: 0, unknown: 0, notApplied: 0, late: 0, mismatch: 0, resyncApplied: 0 };
  // Each writer owns a few keys and writes them as a compare-and-set chain: a retry that applied a
  // second time would meet its own first write and fail with version_mismatch; a not_applied that
  // had applied would make the next compare-and-set fail the same way.
  const writer = async (w: number): Promise<void> => {
    const keys = [0, 1, 2].map((k) => `w${w}-k${k}`);
    const ver = new Map(keys.map((k) => [k, 0]));
    for (let i = 0; !stop; i++) {
      const key = keys[i % keys.length] as string;
      const value = `${w}:${i}`;
      const t0 = performance.now();
      try {
        const r = await kv.put({ tenant: 'acme', key, value, ifVersion: ver.get(key) as number });
        t.true(r.version > (ver.get(key) as number));
        ver.set(key, r.version);
        stats.ok++;
        slowestOkMs = Math.max(slowestOkMs, performance.now() - t0);
      } catch (e) {
        if (!(e instanceof KvError)) throw e;
        if (e.code === 'version_mismatch') stats.mismatch++;
        if (e.outcome === 'unknown') {
          stats.unknown++;
          // Resolve the unknown: did it apply?
          const g = await kv.get({ tenant: 'acme', key, deadlineMs: 15_000 });
          if (g !== null && dec.decode(g.value) === value) {
            stats.resyncApplied++;
            ver.set(key, g.version);
          } else t.is(g?.version ?? 0, ver.get(key) as number, `${key}: an unknown write left the record at an unexpected version`);
        } else stats.notApplied++;
      }
      if (performance.now() - t0 > 4000 + slack()) stats.late++;
    }
    // The final state of every key is the last version this writer saw.
    for (const key of keys) {
      const g = await kv.get({ tenant: 'acme', key, deadlineMs: 15_000 });
      t.is(g?.version ?? 0, ver.get(key) as number, `${key} final version`);
    }
  };
  let slowestOkMs = 0;
  const writers = [0, 1, 2, 3, 4, 5].map(writer);
  await new Promise((r) => setTimeout(r, 600));
  await c.kill(victim);
  const killedAt = performance.now();
  await new Promise((r) => setTimeout(r, 3500));
  stop = true;
  await Promise.all(writers);
  const retries = events.filter((e) => e.type === 'retry').length;
  t.log(`failover seen by the SDK: slowest successful put ${Math.round(slowestOkMs)} ms (calls in flight across the kill wait for the new leader)`);
  t.log(`killed node ${victim} (leader of shard 1) at +600 ms: ${stats.ok} ok, ${stats.unknown} unknown (${stats.resyncApplied} had applied), ${stats.notApplied} not_applied, ${retries} retries, ${stats.late} late; ${Math.round(performance.now() - killedAt)} ms after kill`);
  t.is(stats.mismatch, 0, 'no compare-and-set met its own earlier attempt');
  t.is(stats.late, 0, 'every call ended within its deadline');
  t.true(stats.ok > 50);
  t.true(retries > 0, 'the kill caused retries');
  // After the failover the client routes to the new leader directly.
  const after = await kv.cluster();
  t.not(after.shards[0]?.leader, victim);
});

test.serial('idempotency: a put whose first attempt timed out after reaching the leader is applied once', async (t) => {
  const c = await TestCluster.start(t, 3, SMALL);
  const kv = new KvClient({ endpoints: [c.url(1)] });
  t.teardown(() => kv.close());
  const info = await kv.connect();
  const first = await kv.put({ tenant: 'acme', key: 'idem', value: 'a', idempotencyKey: 'fixed-key-1' });
  // The same logical put sent again (as a retry would): the first outcome, no new version.
  const again = await kv.put({ tenant: 'acme', key: 'idem', value: 'a', idempotencyKey: 'fixed-key-1' });
  t.is(again.version, first.version);
  const g = await kv.get({ tenant: 'acme', key: 'idem' });
  t.is(g?.version, first.version);
  t.is(info.shards.length, 2);
});

test.serial('a paused node (SIGSTOP) trips its breaker, traffic moves away, and the breaker closes after SIGCONT', async (t) => {
  const c = await TestCluster.start(t, 3, SMALL);
  const events: KvEvent[] = [];
  const kv = new KvClient({
    endpoints: [c.url(1), c.url(2), c.url(3)], deadlineMs: 5000, attemptTimeoutMs: 400,
    breaker: { failureThreshold: 2, openMs: 500 }, retryBudget: { minRetries: 200 }, onEvent: (e) => events.push(e),
  });
  t.teardown(() => kv.close());
  const info = await kv.connect();
  const victim = info.shards[0]?.leader as number;
  const victimUrl = c.url(victim);
  for (let i = 0; i < 10; i++) await kv.put({ tenant: 'acme', key: `p${i}`, value: 'v' });
  c.signal(victim, 'SIGSTOP');
  t.teardown(() => c.signal(victim, 'SIGCONT'));
  const pausedAt = performance.now();
  // Writes and stale reads keep going.
  let failures = 0;
  let okWrites = 0;
  let okReads = 0;
  // At least 3 s of traffic, and until enough calls got through (a loaded machine elects slowly); bounded.
  const until = performance.now() + 15_000;
  const enough = (): boolean => performance.now() - pausedAt > 3000 && okWrites > 10 && okReads > 10;
  for (let i = 0; performance.now() < until && !enough(); i++) {
    try {
      await kv.put({ tenant: 'acme', key: `p${i % 10}`, value: `v${i}` });
      okWrites++;
      await kv.get({ tenant: 'acme', key: `p${i % 10}`, consistency: 'stale' });
      okReads++;
    } catch {
      failures++;
    }
  }
  const opened = events.find((e) => e.type === 'breaker' && e.url === victimUrl && e.to === 'open');
  t.truthy(opened, 'the paused node\'s breaker opened');
  t.true(okWrites > 10 && okReads > 10, `${okWrites} writes, ${okReads} reads while node ${victim} was paused`);
  // Once open, attempts to the paused node are rare (only after a failed probe's open time ends, via probes).
  const idx = events.indexOf(opened as KvEvent);
  const laterAttempts = events.slice(idx).filter((e) => e.type === 'attempt' && e.url === victimUrl).length;
  const laterTotal = events.slice(idx).filter((e) => e.type === 'attempt').length;
  t.log(`paused node ${victim}: breaker opened ${Math.round(performance.now() - pausedAt)} ms window; ${laterAttempts}/${laterTotal} attempts went to it afterwards; ${failures} calls failed`);
  t.true(laterAttempts <= laterTotal * 0.05 + 1, `${laterAttempts} of ${laterTotal} attempts after opening went to the paused node`);
  t.is(kv.breakerStates()[victimUrl] === 'closed', false);
  c.signal(victim, 'SIGCONT');
  // Traffic continues; a probe closes the breaker.
  const deadline = performance.now() + 8000;
  while (performance.now() < deadline && kv.breakerStates()[victimUrl] !== 'closed') {
    await kv.get({ tenant: 'acme', key: 'p1', consistency: 'stale' }).catch(() => null);
    await new Promise((r) => setTimeout(r, 50));
  }
  t.is(kv.breakerStates()[victimUrl], 'closed');
  // Closed by a successful probe (half-open) — or by a late answer to a call that was in flight when the
  // node was paused, which proves it alive just as well.
  t.true(events.some((e) => e.type === 'breaker' && e.url === victimUrl && e.from !== 'closed' && e.to === 'closed'));
  // And it serves again.
  await c.waitLeaders();
  const r = await kv.put({ tenant: 'acme', key: 'after', value: 'x' });
  t.true(r.version > 0);
});

test.serial('linearizable-else-stale fallback when a shard loses its quorum; hedged stale reads', async (t) => {
  const c = await TestCluster.start(t, 3, SMALL);
  const events: KvEvent[] = [];
  const kv = new KvClient({ endpoints: [c.url(1), c.url(2), c.url(3)], deadlineMs: 4000, attemptTimeoutMs: 800, onEvent: (e) => events.push(e) });
  t.teardown(() => kv.close());
  await kv.connect();
  const w = await kv.put({ tenant: 'acme', key: 'fb', value: 'kept' });
  // Make sure every replica has it before the quorum goes.
  for (let i = 0; i < 100; i++) {
    const all = await Promise.all([1, 2, 3].map((n) => fetch(`${c.url(n)}/v1/kv/acme/fb?consistency=stale`).then((r) => r.headers.get('x-version'))));
    if (all.every((v) => v === String(w.version))) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const survivor = 3;
  await c.kill(1);
  await c.kill(2);
  const t0 = performance.now();
  const r = await kv.get({ tenant: 'acme', key: 'fb', fallbackToStale: true, fallbackAfterMs: 2000 });
  t.log(`fallback read after losing quorum took ${Math.round(performance.now() - t0)} ms`);
  t.truthy(r);
  t.true(r?.stale);
  t.is(r?.node, survivor);
  t.is(dec.decode(r?.value), 'kept');
  t.true(events.some((e) => e.type === 'fallback_stale'));
  const lin = await kv.get({ tenant: 'acme', key: 'fb', deadlineMs: 1500 }).catch((e: unknown) => e);
  t.true(lin instanceof KvError);
  t.is((lin as KvError).outcome, 'not_applied');
  // Hedged stale reads: the dead replicas are skipped or overtaken.
  for (let i = 0; i < 5; i++) {
    const h = await kv.get({ tenant: 'acme', key: 'fb', consistency: 'stale', hedge: true, hedgeAfterMs: 30 });
    t.is(dec.decode(h?.value), 'kept');
  }
  // A write without a quorum fails with a truthful outcome within its deadline.
  const t1 = performance.now();
  const we = await kv.put({ tenant: 'acme', key: 'fb', value: 'no', deadlineMs: 2000 }).catch((e: unknown) => e);
  t.true(we instanceof KvError);
  t.true(performance.now() - t1 < 2500);
  t.log(`write without quorum: ${(we as KvError).code} / ${(we as KvError).outcome}`);
});
