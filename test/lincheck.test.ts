import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { checkLinearizable, formatHistory, type RegisterOp } from './lincheck/checker.ts';
import { parseJepsenLog } from './lincheck/jepsen-log.ts';
import { mulberry32 } from './raft/mem-cluster.ts';

const CORPUS = fileURLToPath(new URL('./fixtures/lincheck-corpus/', import.meta.url));

// ---------------------------------------------------------------------------------------------
// helpers

type OpInit = Partial<RegisterOp> & Pick<RegisterOp, 'kind' | 'start'>;
function op(o: OpInit): RegisterOp {
  return {
    key: 'k',
    value: null,
    expect: null,
    output: null,
    casOk: false,
    end: Infinity,
    status: 'ok',
    ...o,
  };
}
const w = (value: number | null, start: number, end: number, extra: Partial<RegisterOp> = {}) =>
  op({ kind: 'write', value, start, end, ...extra });
const r = (output: number | null, start: number, end: number, extra: Partial<RegisterOp> = {}) =>
  op({ kind: 'read', output, start, end, ...extra });
const cas = (expect: number | null, value: number | null, casOk: boolean, start: number, end: number, extra: Partial<RegisterOp> = {}) =>
  op({ kind: 'cas', expect, value, casOk, start, end, ...extra });

// ---------------------------------------------------------------------------------------------
// (a) the Jepsen etcd corpus

test('corpus: every Jepsen etcd log gets the expected verdict', (t) => {
  const expected = JSON.parse(readFileSync(`${CORPUS}expected.json`, 'utf8')) as Record<string, boolean>;
  const ids = Object.keys(expected).sort();
  t.is(ids.length, 102);
  // every log in the directory is covered by expected.json, except etcd_095.log, which is empty
  // (Porcupine's notes: the etcd cluster failed to start up in test 95).
  const logs = readdirSync(CORPUS).filter((f) => f.endsWith('.log'));
  for (const f of logs) {
    const id = f.slice('etcd_'.length, -'.log'.length);
    if (id === '095') t.deepEqual(parseJepsenLog(readFileSync(`${CORPUS}${f}`, 'utf8')), []);
    else t.true(id in expected, `${f} missing from expected.json`);
  }

  const times: { file: string; ms: number; verdict: string }[] = [];
  let total = 0;
  for (const id of ids) {
    const file = `etcd_${id}.log`;
    const ops = parseJepsenLog(readFileSync(`${CORPUS}${file}`, 'utf8'));
    const t0 = performance.now();
    const res = checkLinearizable(ops);
    const ms = performance.now() - t0;
    total += ms;
    times.push({ file, ms, verdict: String(res.ok) });
    t.not(res.ok, 'unknown', `${file}: search budget exhausted`);
    t.is(res.ok, expected[id]!, `${file}: expected ${expected[id] ? 'linearizable' : 'NOT linearizable'}, got ${String(res.ok)}`);
    if (res.ok === false) {
      t.is(res.key, 'x');
      t.true(res.ops.length > 0);
    }
  }
  t.log(times.map((x) => `${x.file} ${x.ms.toFixed(1)} ms (${x.verdict})`).join('\n'));
  const slowest = times.reduce((a, b) => (b.ms > a.ms ? b : a));
  t.log(`corpus total ${total.toFixed(0)} ms; slowest ${slowest.file} ${slowest.ms.toFixed(1)} ms`);
});

test('jepsen parser: cas fail observes the register, timed-out read is dropped, pending ops become info', (t) => {
  const log = [
    'INFO  jepsen.util - 0\t:invoke\t:write\t3',
    'INFO  jepsen.util - 1\t:invoke\t:cas\t[3 4]',
    'INFO  jepsen.util - 0\t:ok\t:write\t3',
    'INFO  jepsen.util - 1\t:fail\t:cas\t[3 4]',
    'INFO  jepsen.util - 2   :invoke :read   nil',
    'INFO  jepsen.util - 2   :fail   :read   :timed-out',
    'INFO  jepsen.util - 3\t:invoke\t:write\t1',
    'INFO  jepsen.util - 3\t:info\t:write\t:timed-out',
    'INFO  jepsen.util - 4\t:invoke\t:read\tnil',
    'INFO  jepsen.util - 4\t:ok\t:read\tnil',
    'INFO  jepsen.util - 5\t:invoke\t:cas\t[1 2]',
    '',
  ].join('\n');
  const ops = parseJepsenLog(log);
  t.is(ops.length, 6);
  const byStart = new Map(ops.map((o) => [o.start, o]));
  t.like(byStart.get(1), { kind: 'write', value: 3, status: 'ok', start: 1, end: 3 });
  t.like(byStart.get(2), { kind: 'cas', expect: 3, value: 4, casOk: false, status: 'ok', end: 4 });
  t.like(byStart.get(5), { kind: 'read', status: 'info', end: Infinity });
  t.like(byStart.get(7), { kind: 'write', value: 1, status: 'info', end: Infinity });
  t.like(byStart.get(9), { kind: 'read', output: null, status: 'ok', end: 10 });
  t.like(byStart.get(11), { kind: 'cas', expect: 1, value: 2, status: 'info', end: Infinity });
  // write 3 completed before the read of nil started → not linearizable
  const res = checkLinearizable(ops);
  t.is(res.ok, false);
});

// ---------------------------------------------------------------------------------------------
// (b) hand-written cases

test('stale read after a completed write is caught', (t) => {
  const res = checkLinearizable([w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)]);
  t.is(res.ok, false);
  if (res.ok !== false) return;
  t.is(res.key, 'k');
  t.regex(res.message, /not linearizable/);
  t.regex(res.message, /read\(\) -> 1/);
  t.is(res.ops.length, 3);
  // reading the initial (absent) value after a completed write is stale too
  t.is(checkLinearizable([w(1, 0, 1), r(null, 2, 3)]).ok, false);
  t.is(checkLinearizable([w(1, 0, 1), r(1, 2, 3)]).ok, true);
});

test('concurrent write/read overlap is accepted, but no new-old inversion', (t) => {
  // the write is concurrent with both reads: either value may be seen...
  t.is(checkLinearizable([w(1, 0, 10), r(null, 2, 3), r(1, 4, 5)]).ok, true);
  t.is(checkLinearizable([w(1, 0, 10), r(1, 2, 3)]).ok, true);
  t.is(checkLinearizable([w(1, 0, 10), r(null, 2, 3)]).ok, true);
  // ...but once a read has seen the new value, a later read cannot see the old one
  t.is(checkLinearizable([w(1, 0, 10), r(1, 2, 3), r(null, 4, 5)]).ok, false);
  // overlapping reads may disagree in either order
  t.is(checkLinearizable([w(1, 0, 10), r(1, 2, 5), r(null, 4, 6)]).ok, true);
});

test('precedence is strict: ops touching at one instant are concurrent', (t) => {
  t.is(checkLinearizable([w(1, 0, 5), r(null, 5, 6)]).ok, true);
  t.is(checkLinearizable([w(1, 0, 5), r(null, 6, 7)]).ok, false);
  // zero-length ops
  t.is(checkLinearizable([w(1, 3, 3), r(1, 3, 3), r(null, 3, 3)]).ok, true);
  t.is(checkLinearizable([w(1, 3, 3), r(1, 4, 4), r(null, 5, 5)]).ok, false);
});

test('info write that takes effect late is accepted', (t) => {
  const info = w(1, 0, Infinity, { status: 'info' });
  t.is(checkLinearizable([info, r(null, 5, 6), r(null, 10, 11), r(1, 20, 21), r(1, 30, 31)]).ok, true);
  // once it has been observed it stays in effect
  t.is(checkLinearizable([info, r(1, 5, 6), r(null, 10, 11)]).ok, false);
  // it cannot take effect before it was invoked
  t.is(checkLinearizable([r(1, 0, 1), w(1, 5, Infinity, { status: 'info' })]).ok, false);
  // late effect overriding later ok writes
  t.is(checkLinearizable([info, w(2, 10, 11), r(2, 12, 13), r(1, 14, 15)]).ok, true);
});

test('info write that never happens is accepted; fail ops and info reads are ignored', (t) => {
  const info = w(1, 0, Infinity, { status: 'info' });
  t.is(checkLinearizable([info, r(null, 5, 6), r(null, 10, 11)]).ok, true);
  t.is(checkLinearizable([info]).ok, true);
  t.is(checkLinearizable([w(7, 0, 1, { status: 'fail' }), r(null, 2, 3)]).ok, true);
  t.is(checkLinearizable([w(7, 0, 1), r(99, 2, Infinity, { status: 'info' }), r(7, 3, 4)]).ok, true);
  // a failed write cannot explain a read
  t.is(checkLinearizable([w(7, 0, 1, { status: 'fail' }), r(7, 2, 3)]).ok, false);
  // info cas that may or may not have applied
  const icas = cas(null, 5, false, 0, Infinity, { status: 'info' });
  t.is(checkLinearizable([icas, r(null, 1, 2), r(5, 3, 4)]).ok, true);
  t.is(checkLinearizable([icas, r(null, 1, 2)]).ok, true);
  // an info cas whose compare can never succeed cannot explain its new value
  t.is(checkLinearizable([w(1, 0, 1), cas(0, 5, false, 2, Infinity, { status: 'info' }), r(5, 3, 4)]).ok, false);
});

test('cas semantics: ok and compare-failed', (t) => {
  t.is(checkLinearizable([w(1, 0, 1), cas(1, 2, true, 2, 3), r(2, 4, 5)]).ok, true);
  t.is(checkLinearizable([w(1, 0, 1), cas(1, 2, true, 2, 3), r(1, 4, 5)]).ok, false);
  // compare failed: register unchanged
  t.is(checkLinearizable([w(1, 0, 1), cas(3, 2, false, 2, 3), r(1, 4, 5)]).ok, true);
  t.is(checkLinearizable([w(1, 0, 1), cas(3, 2, false, 2, 3), r(2, 4, 5)]).ok, false);
  // compare reported failed although the register held the expected value
  t.is(checkLinearizable([w(1, 0, 1), cas(1, 2, false, 2, 3)]).ok, false);
  // compare reported success although the register held something else
  t.is(checkLinearizable([w(1, 0, 1), cas(3, 2, true, 2, 3)]).ok, false);
  // expect null = key must be absent
  t.is(checkLinearizable([cas(null, 4, true, 0, 1), r(4, 2, 3)]).ok, true);
  t.is(checkLinearizable([w(1, 0, 1), cas(null, 4, true, 2, 3)]).ok, false);
  t.is(checkLinearizable([w(1, 0, 1), cas(null, 4, false, 2, 3), r(1, 4, 5)]).ok, true);
  // concurrent cas ops: exactly one of two cas(0 -> x) can succeed
  t.is(checkLinearizable([w(0, 0, 1), cas(0, 1, true, 2, 10), cas(0, 2, true, 3, 9)]).ok, false);
  t.is(checkLinearizable([w(0, 0, 1), cas(0, 1, true, 2, 10), cas(0, 2, false, 3, 9), r(1, 11, 12)]).ok, true);
  // a failed cas is a read: it must see a value other than expect
  t.is(checkLinearizable([w(0, 0, 1), cas(0, 1, false, 2, 3)]).ok, false);
});

test('initial value option', (t) => {
  t.is(checkLinearizable([r(0, 0, 1)], { initial: 0 }).ok, true);
  t.is(checkLinearizable([r(0, 0, 1)]).ok, false);
  t.is(checkLinearizable([r(null, 0, 1)]).ok, true);
});

test('multiple keys are checked independently; a violation names its key', (t) => {
  // as a single register this would be a violation; per key it is fine
  const fine = [w(1, 0, 1, { key: 'a' }), r(null, 2, 3, { key: 'b' }), r(1, 4, 5, { key: 'a' }), w(2, 6, 7, { key: 'b' })];
  t.is(checkLinearizable(fine).ok, true);
  const bad = [...fine, r(null, 8, 9, { key: 'b', label: 'client-7 op#3' })];
  const res = checkLinearizable(bad);
  t.is(res.ok, false);
  if (res.ok !== false) return;
  t.is(res.key, 'b');
  t.regex(res.message, /"b"/);
  t.regex(res.message, /client-7 op#3/);
  t.true(res.ops.every((o) => o.key === 'b'));
  t.is(res.ops.length, 3);
  const text = formatHistory(res.ops);
  t.is(text.split('\n').length, 3);
  t.regex(text, /read\(\) -> nil/);
});

test('formatHistory sorts by start and shows unknown outcomes', (t) => {
  const text = formatHistory([
    r(1, 5, 6, { label: 'p2' }),
    w(1, 0, Infinity, { status: 'info', label: 'p1' }),
    cas(1, 2, false, 3, 4),
  ]);
  const lines = text.split('\n');
  t.is(lines.length, 3);
  t.regex(lines[0]!, /^0 → ∞ +info +k +write\(1\) +p1$/);
  t.regex(lines[1]!, /cas\(1 => 2\) -> compare-failed/);
  t.regex(lines[2]!, /read\(\) -> 1 +p2$/);
});

test('search budget exhausted yields unknown, not a wrong verdict', (t) => {
  const ops = parseJepsenLog(readFileSync(`${CORPUS}etcd_002.log`, 'utf8'));
  const res = checkLinearizable(ops, { maxStates: 10 });
  t.is(res.ok, 'unknown');
  if (res.ok === 'unknown') t.is(res.key, 'x');
});

test('rejects malformed intervals', (t) => {
  t.throws(() => checkLinearizable([w(1, 5, 4)]), { instanceOf: RangeError });
  t.throws(() => checkLinearizable([w(1, Number.NaN, 4)]), { instanceOf: RangeError });
});

// ---------------------------------------------------------------------------------------------
// (c) property tests: sequential histories of a true register, timing perturbed to overlap

interface GenOpts {
  nOps: number;
  keys: number;
  /** value domain size; 0 = every write / cas uses a fresh unique value */
  values: number;
  /** max distance of start / end from the op's linearization point (points are 10 apart) */
  spread: number;
  infoRate: number;
  failRate: number;
}

function generate(seed: number, g: GenOpts): RegisterOp[] {
  const rnd = mulberry32(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const reg = new Map<string, number | null>();
  let fresh = 1000;
  const pickValue = () => (g.values === 0 ? fresh++ : int(g.values));
  const ops: RegisterOp[] = [];
  for (let i = 0; i < g.nOps; i++) {
    const lp = (i + 1) * 10; // linearization point of op i in the true sequential execution
    const key = `key${int(g.keys)}`;
    const cur = reg.get(key) ?? null;
    const u = rnd();
    const status: RegisterOp['status'] = u < g.failRate ? 'fail' : u < g.failRate + g.infoRate ? 'info' : 'ok';
    const applied = status === 'ok' || (status === 'info' && rnd() < 0.5);
    const start = lp - int(g.spread + 1);
    const end = status === 'info' ? Infinity : lp + int(g.spread + 1);
    const label = `op${i}`;
    const k = rnd();
    if (k < 0.4) {
      // reads never change the register; info/fail reads carry a bogus output that must be ignored
      ops.push(op({ key, kind: 'read', output: applied && status === 'ok' ? cur : 424242, start, end, status, label }));
    } else if (k < 0.75) {
      const value = pickValue();
      if (applied) reg.set(key, value);
      ops.push(op({ key, kind: 'write', value, start, end, status, label }));
    } else {
      const expect = rnd() < 0.5 ? cur : rnd() < 0.2 ? null : pickValue();
      const value = pickValue();
      const match = expect === cur;
      if (applied && match) reg.set(key, value);
      ops.push(op({ key, kind: 'cas', expect, value, casOk: applied ? match : rnd() < 0.5, start, end, status, label }));
    }
  }
  // the order a recorder would log them in: by completion
  return ops.sort((a, b) => a.end - b.end || a.start - b.start);
}

/** Plants a provably stale read into a unique-values history; null if it has no candidate. */
function plantStaleRead(ops: RegisterOp[], rnd: () => number): { mutated: RegisterOp[]; victim: RegisterOp; from: RegisterOp } | null {
  // Find (W1, W2, R) on one key with W1, W2 ok writes, W1.end < W2.start, W2.end < R.start: with
  // unique values, after W2 the register never again holds W1's value, so R reading it is impossible.
  const candidates: [RegisterOp, RegisterOp][] = [];
  const writes = ops.filter((o) => o.kind === 'write' && o.status === 'ok');
  for (const rd of ops) {
    if (rd.kind !== 'read' || rd.status !== 'ok') continue;
    const before = writes.filter((x) => x.key === rd.key && x.end < rd.start);
    const w1 = before.find((a) => before.some((b) => a.end < b.start));
    if (w1 !== undefined && rd.output !== w1.value) candidates.push([rd, w1]);
  }
  if (candidates.length === 0) return null;
  const [victim, from] = candidates[Math.floor(rnd() * candidates.length)]!;
  return { mutated: ops.map((o) => (o === victim ? { ...o, output: from.value } : o)), victim, from };
}

const PROP_SEEDS = 300;

test('property: perturbed sequential histories are linearizable', (t) => {
  let checked = 0;
  for (let seed = 1; seed <= PROP_SEEDS; seed++) {
    const rnd = mulberry32(seed * 7919);
    const g: GenOpts = {
      nOps: 20 + Math.floor(rnd() * 300),
      keys: 1 + Math.floor(rnd() * 4),
      values: Math.floor(rnd() * 5), // 0 (unique values) .. 4
      spread: Math.floor(rnd() * 40),
      infoRate: rnd() * 0.1,
      failRate: rnd() * 0.1,
    };
    const ops = generate(seed, g);
    const res = checkLinearizable(ops);
    if (res.ok !== true) {
      t.fail(`seed ${seed} ${JSON.stringify(g)}: expected linearizable, got ${String(res.ok)}: ${res.message}`);
      return;
    }
    checked++;
  }
  t.is(checked, PROP_SEEDS);
});

// (Reads of never-written values are caught by the checker's linear pre-check; the stale-read and
// info-heavy properties below exercise the searches.)
test('property: a read of a value never written is reported on its key', (t) => {
  let planted = 0;
  for (let seed = 1; seed <= PROP_SEEDS; seed++) {
    const rnd = mulberry32(seed * 104729);
    const g: GenOpts = {
      nOps: 20 + Math.floor(rnd() * 200),
      keys: 1 + Math.floor(rnd() * 4),
      values: 1 + Math.floor(rnd() * 4),
      spread: Math.floor(rnd() * 40),
      infoRate: rnd() * 0.1,
      failRate: rnd() * 0.1,
    };
    const ops = generate(seed, g);
    const reads = ops.filter((o) => o.kind === 'read' && o.status === 'ok');
    if (reads.length === 0) continue;
    const victim = reads[Math.floor(rnd() * reads.length)]!;
    const mutated = ops.map((o) => (o === victim ? { ...o, output: 31337 } : o));
    const res = checkLinearizable(mutated);
    planted++;
    if (res.ok !== false || res.key !== victim.key) {
      t.fail(`seed ${seed} ${JSON.stringify(g)}: planted bad read ${victim.label} on ${victim.key} not reported: ${JSON.stringify(res.ok)}`);
      return;
    }
  }
  t.true(planted > PROP_SEEDS * 0.9);
});

test('property: a provably stale read is reported on its key', (t) => {
  let planted = 0;
  for (let seed = 1; seed <= PROP_SEEDS; seed++) {
    const rnd = mulberry32(seed * 15485863);
    const g: GenOpts = {
      nOps: 20 + Math.floor(rnd() * 200),
      keys: 1 + Math.floor(rnd() * 3),
      values: 0, // unique values: a value can only ever come from the one op that wrote it
      spread: Math.floor(rnd() * 30),
      infoRate: rnd() * 0.1,
      failRate: rnd() * 0.1,
    };
    const ops = generate(seed, g);
    const plant = plantStaleRead(ops, rnd);
    if (plant === null) continue;
    const { mutated, victim, from: w1 } = plant;
    const res = checkLinearizable(mutated);
    planted++;
    if (res.ok !== false || res.key !== victim.key) {
      t.fail(
        `seed ${seed} ${JSON.stringify(g)}: stale read ${victim.label} (now ${w1.value}, from ${w1.label}) on ${victim.key} ` +
          `not reported: ${JSON.stringify(res.ok)}`,
      );
      return;
    }
  }
  t.true(planted > PROP_SEEDS * 0.5, `only ${planted} histories had a stale-read candidate`);
});

test('property: info-heavy single-key histories are decided (exercises the layered fallback)', (t) => {
  // 15% of ops time out: the depth-first search alone tends to run out of budget refuting these.
  let layered = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const g: GenOpts = { nOps: 400, keys: 1, values: 0, spread: 20, infoRate: 0.15, failRate: 0.02 };
    const ops = generate(seed, g);
    const clean = checkLinearizable(ops);
    t.is(clean.ok, true, `seed ${seed}: clean history`);
    const planted = plantStaleRead(ops, mulberry32(seed));
    if (planted === null) continue;
    const res = checkLinearizable(planted.mutated);
    if (res.ok !== false) {
      t.fail(`seed ${seed}: stale read ${planted.victim.label} not reported: ${JSON.stringify(res.ok)}`);
      return;
    }
    t.is(res.key, 'key0');
    if (/Every valid partial linearization/.test(res.message)) layered++;
  }
  t.log(`${layered} of 30 refuted by the layered search`);
  t.true(layered > 0, 'expected some histories to need the layered search');
});

test('differential: agrees with brute-force enumeration on small random histories', (t) => {
  // Reference: try every order of the relevant ops directly (exponential; fine for <= 8 ops).
  const brute = (ops: RegisterOp[], initial: number | null): boolean => {
    const rel = ops.filter((o) => o.status === 'ok' || (o.status === 'info' && o.kind !== 'read'));
    const used = rel.map(() => false);
    const rec = (state: number | null, okLeft: number): boolean => {
      if (okLeft === 0) return true;
      for (let i = 0; i < rel.length; i++) {
        if (used[i]) continue;
        const o = rel[i]!;
        // o may go next unless some other pending ok op returned before o was invoked
        if (rel.some((b, j) => j !== i && !used[j] && b.status === 'ok' && b.end < o.start)) continue;
        let ns = state;
        if (o.kind === 'read') {
          if (o.output !== state) continue;
        } else if (o.kind === 'write') {
          ns = o.value;
        } else {
          const match = state === o.expect;
          if (o.status === 'ok' && match !== o.casOk) continue;
          if (match) ns = o.value;
        }
        used[i] = true;
        const found = rec(ns, okLeft - (o.status === 'ok' ? 1 : 0));
        used[i] = false;
        if (found) return true;
      }
      return false;
    };
    return rec(initial, rel.filter((o) => o.status === 'ok').length);
  };
  const tally = { linearizable: 0, violations: 0 };
  for (let seed = 1; seed <= 4000; seed++) {
    const rnd = mulberry32(seed);
    const int = (n: number) => Math.floor(rnd() * n);
    const nv = 1 + int(3);
    const val = () => (rnd() < 0.15 ? null : int(nv));
    const ops: RegisterOp[] = [];
    const n = 2 + int(7);
    for (let i = 0; i < n; i++) {
      const start = int(20);
      const u = rnd();
      const status: RegisterOp['status'] = u < 0.25 ? 'info' : u < 0.32 ? 'fail' : 'ok';
      const k = rnd();
      const kind: RegisterOp['kind'] = k < 0.4 ? 'read' : k < 0.7 ? 'write' : 'cas';
      ops.push(
        op({
          kind,
          value: kind === 'read' ? null : int(nv),
          expect: kind === 'cas' ? val() : null,
          output: kind === 'read' ? val() : null,
          casOk: rnd() < 0.5,
          start,
          end: status === 'info' ? Infinity : start + int(8),
          status,
          label: `o${i}`,
        }),
      );
    }
    const initial = rnd() < 0.3 ? 0 : null;
    const expected = brute(ops, initial);
    const got = checkLinearizable(ops, { initial }).ok;
    if (got !== expected) {
      t.fail(`seed ${seed}: brute force says ${expected}, checker says ${String(got)}\n${formatHistory(ops)}`);
      return;
    }
    tally[expected ? 'linearizable' : 'violations']++;
  }
  t.log(tally);
  t.true(tally.linearizable > 500 && tally.violations > 500);
});

test('performance: a simulator-sized history (3,000 ops, 8 keys) checks quickly', (t) => {
  const g: GenOpts = { nOps: 3000, keys: 8, values: 0, spread: 40, infoRate: 0.02, failRate: 0.02 };
  let worst = 0;
  for (let seed = 1; seed <= 20; seed++) {
    const ops = generate(seed, g);
    const t0 = performance.now();
    const res = checkLinearizable(ops);
    worst = Math.max(worst, performance.now() - t0);
    t.is(res.ok, true);
  }
  t.log(`worst of 20: ${worst.toFixed(1)} ms`);
  t.true(worst < 1000); // generous: CI machines are loaded; typical is a few ms
});
