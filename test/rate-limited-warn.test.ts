import test from 'ava';
import pino from 'pino';
import { Writable } from 'node:stream';
import { RateLimitedWarn } from '../node/rate-limited-warn.ts';

function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const out = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk)) as Record<string, unknown>); cb(); } });
  return { log: pino({ level: 'warn' }, out), lines };
}

test('logs at most once per interval, counts every report, and says what it left out', (t) => {
  const { log, lines } = capture();
  let now = 0;
  let counted = 0;
  const w = new RateLimitedWarn(log, 'slow thing', 1000, () => counted++, () => now);
  w.report({ ms: 300, part: 'a' });
  now = 200; w.report({ ms: 900 });
  now = 700; w.report({ ms: 250 });
  now = 1100; w.report({ ms: 210, part: 'b' });
  now = 1500; w.report({ ms: 220 });
  t.is(counted, 5);
  t.is(lines.length, 2);
  t.like(lines[0], { msg: 'slow thing', ms: 300, part: 'a' });
  t.false('suppressed' in (lines[0] as object));
  t.like(lines[1], { ms: 210, part: 'b', suppressed: 2, suppressedWorstMs: 900 });
  now = 2200; w.report({ ms: 400 });
  t.like(lines[2], { ms: 400, suppressed: 1, suppressedWorstMs: 220 });
});
