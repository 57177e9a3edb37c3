/**
 * The classic lease trap on real processes: the leader of a shard (running with --lease) is paused
 * with SIGSTOP long enough for the others to elect a new leader and commit a write; a linearizable
 * read sent to the old leader while it is stopped is handled the moment it resumes. Its lease must
 * count the pause (ticks follow the monotonic clock), so the read may fail or be forwarded, never
 * return the overwritten value.
 */
import test from 'ava';
import { TestCluster, http, putRetry } from './harness.ts';

test.serial('a leader resumed after a pause past its lease does not serve a stale lease read', async (t) => {
  const c = await TestCluster.start(t, 3, ['--shards', '1', '--tick-ms', '50', '--lease']);
  let stale = 0;
  for (let round = 0; round < 3; round++) {
    const leaders = await c.waitLeaders();
    const old = leaders.get(1) as number;
    const others = [1, 2, 3].filter((i) => i !== old);
    t.is((await putRetry(`${c.url(old)}/v1/kv/lease/k`, `before-${round}`)).status, 200);
    // warm the lease: reads at the old leader are served by it
    for (let i = 0; i < 5; i++) t.is((await http('GET', `${c.url(old)}/v1/kv/lease/k`)).body, `before-${round}`);
    c.signal(old, 'SIGSTOP');
    const pending = http('GET', `${c.url(old)}/v1/kv/lease/k`, undefined, {}, 15_000).catch(() => null); // waits in the socket
    const w = await putRetry(`${c.url(others[0] as number)}/v1/kv/lease/k`, `after-${round}`, { deadlineMs: 15_000 });
    t.is(w.status, 200, 'the others elect a leader and commit while the old one is stopped');
    c.signal(old, 'SIGCONT');
    const r = await pending;
    t.log(`round ${round}: old leader n${old} answered ${r === null ? 'nothing' : `${r.status} ${r.body.slice(0, 60)}`}`);
    if (r !== null && r.status === 200 && r.body === `before-${round}`) stale++;
  }
  t.is(stale, 0, 'a read served from an expired lease returned an overwritten value');
});
