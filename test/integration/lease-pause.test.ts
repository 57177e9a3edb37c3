/**
 * The classic lease trap on real processes: the leader of a shard (running with --lease) is paused
 * with SIGSTOP long enough for the others to elect a new leader and commit a write; a linearizable
 * read sent to the old leader while it is stopped is handled the moment it resumes. Its lease must
 * count the pause (ticks follow the monotonic clock), so the read may fail or be forwarded, never
 * return the overwritten value. A bounded stale read sent to it at the same time must count the pause
 * in its staleness (wall time, not ticks): it may answer the old value only with a staleness past the
 * time since the new value was acknowledged, so `maxStalenessMs` below that gap must not get it.
 */
import test from 'ava';
import { TestCluster, http, putRetry } from './harness.ts';

test.serial('a leader resumed after a pause past its lease does not serve a stale lease read', async (t) => {
  const c = await TestCluster.start(t, 3, ['--shards', '1', '--tick-ms', '50', '--lease']);
  let stale = 0;
  let staleBounded = 0;
  const boundMs = 1000;
  for (let round = 0; round < 3; round++) {
    const leaders = await c.waitLeaders();
    const old = leaders.get(1) as number;
    const others = [1, 2, 3].filter((i) => i !== old);
    t.is((await putRetry(`${c.url(old)}/v1/kv/lease/k`, `before-${round}`)).status, 200);
    // warm the lease: reads at the old leader are served by it
    for (let i = 0; i < 5; i++) t.is((await http('GET', `${c.url(old)}/v1/kv/lease/k`)).body, `before-${round}`);
    c.signal(old, 'SIGSTOP');
    const pending = http('GET', `${c.url(old)}/v1/kv/lease/k`, undefined, {}, 15_000).catch(() => null); // waits in the socket
    const pendingStale = http('GET', `${c.url(old)}/v1/kv/lease/k?consistency=stale&maxStalenessMs=${boundMs}`, undefined, {}, 15_000).catch(() => null);
    const w = await putRetry(`${c.url(others[0] as number)}/v1/kv/lease/k`, `after-${round}`, { deadlineMs: 15_000 });
    t.is(w.status, 200, 'the others elect a leader and commit while the old one is stopped');
    const ackedAt = Date.now();
    // The scenario needs the pause to outlast the bound after the ack (a duration, not an event).
    await new Promise((r) => setTimeout(r, boundMs + 500));
    c.signal(old, 'SIGCONT');
    const r = await pending;
    const s = await pendingStale;
    const staleMs = s?.headers.get('x-staleness-ms');
    t.log(`round ${round}: old leader n${old} answered ${r === null ? 'nothing' : `${r.status} ${r.body.slice(0, 60)}`}; ` +
      `the bounded stale read ${s === null ? 'nothing' : `${s.status} ${s.body.slice(0, 120)} (X-Staleness-Ms ${staleMs}, ${Date.now() - ackedAt} ms after the ack)`}`);
    if (r !== null && r.status === 200 && r.body === `before-${round}`) stale++;
    if (s !== null && s.status === 200 && s.body === `before-${round}`) staleBounded++;
  }
  t.is(stale, 0, 'a read served from an expired lease returned an overwritten value');
  t.is(staleBounded, 0, `a stale read bounded by ${boundMs} ms returned a value overwritten more than ${boundMs} ms earlier`);
});
