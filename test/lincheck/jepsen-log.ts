/**
 * Parser for the Jepsen etcd register logs of the checker corpus (test/fixtures/lincheck-corpus/).
 *
 * Each line is one event of a process:
 *   INFO  jepsen.util - <process>\t:<type>\t:<f>\t<value>
 * with type ∈ invoke | ok | fail | info, f ∈ read | write | cas, and value `nil`, an integer,
 * `[expected new]` (cas) or `:timed-out`. Some files separate fields by spaces instead of tabs.
 *
 * Semantics (single register, key 'x', starting absent = nil):
 * - `:ok :read v`     → read observed v (`nil` → null, the register is absent)
 * - `:ok :write v`    → write took effect
 * - `:ok :cas [a b]`  → compare succeeded, register a → b
 * - `:fail :cas`      → the cas executed and its compare failed: status ok, casOk = false
 * - `:fail :read :timed-out` → unknown read: kept as an `info` read (which the checker ignores)
 * - `:fail :write`    → certainly did not happen (status fail; does not occur in the corpus)
 * - `:info :write/:cas` and ops still pending at the end of the log → status info, end = Infinity
 *
 * The line number (1-based) is the logical time of an event.
 */
import type { RegisterOp } from './checker.ts';

const LINE = /^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(invoke|ok|fail|info)\s+:(read|write|cas)\s+(.+?)\s*$/;

interface Pending {
  kind: RegisterOp['kind'];
  value: number | null;
  expect: number | null;
  start: number;
  raw: string;
}

function parseValue(s: string, line: number): number | null {
  if (s === 'nil') return null;
  if (!/^-?\d+$/.test(s)) throw new SyntaxError(`jepsen log line ${line}: bad value ${JSON.stringify(s)}`);
  return Number(s);
}

function parseCasArgs(s: string, line: number): [number | null, number | null] {
  const m = /^\[\s*(\S+)\s+(\S+)\s*\]$/.exec(s);
  if (m === null) throw new SyntaxError(`jepsen log line ${line}: bad cas argument ${JSON.stringify(s)}`);
  return [parseValue(m[1]!, line), parseValue(m[2]!, line)];
}

export function parseJepsenLog(text: string, key = 'x'): RegisterOp[] {
  const ops: RegisterOp[] = [];
  const pending = new Map<number, Pending>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i]!;
    if (line.trim() === '') continue;
    const m = LINE.exec(line);
    if (m === null) throw new SyntaxError(`jepsen log line ${lineNo}: unrecognised ${JSON.stringify(line)}`);
    const proc = Number(m[1]);
    const type = m[2]!;
    const f = m[3]! as RegisterOp['kind'];
    const val = m[4]!;
    if (type === 'invoke') {
      if (pending.has(proc)) throw new SyntaxError(`jepsen log line ${lineNo}: process ${proc} invoked twice`);
      let value: number | null = null;
      let expect: number | null = null;
      if (f === 'write') value = parseValue(val, lineNo);
      else if (f === 'cas') [expect, value] = parseCasArgs(val, lineNo);
      pending.set(proc, { kind: f, value, expect, start: lineNo, raw: val });
      continue;
    }
    const inv = pending.get(proc);
    if (inv === undefined) throw new SyntaxError(`jepsen log line ${lineNo}: completion without invoke (process ${proc})`);
    if (inv.kind !== f) throw new SyntaxError(`jepsen log line ${lineNo}: completes :${f} but process ${proc} invoked :${inv.kind}`);
    pending.delete(proc);
    const base = { key, kind: f, value: inv.value, expect: inv.expect, output: null, casOk: false, start: inv.start, label: `p${proc} L${inv.start}` };
    if (type === 'info') {
      ops.push({ ...base, end: Infinity, status: 'info' });
      continue;
    }
    if (f !== 'read' && val !== inv.raw) {
      throw new SyntaxError(`jepsen log line ${lineNo}: completion value ${val} differs from invoke value ${inv.raw}`);
    }
    if (type === 'ok') {
      if (f === 'read') ops.push({ ...base, output: parseValue(val, lineNo), end: lineNo, status: 'ok' });
      else ops.push({ ...base, casOk: f === 'cas', end: lineNo, status: 'ok' });
    } else {
      // fail
      if (f === 'cas') ops.push({ ...base, casOk: false, end: lineNo, status: 'ok' });
      else if (f === 'read') ops.push({ ...base, end: Infinity, status: 'info' }); // timed out: unknown
      else ops.push({ ...base, end: lineNo, status: 'fail' });
    }
  }
  // Ops that never completed may have taken effect at any time after their invoke, or never.
  for (const [proc, inv] of pending) {
    ops.push({
      key,
      kind: inv.kind,
      value: inv.value,
      expect: inv.expect,
      output: null,
      casOk: false,
      start: inv.start,
      end: Infinity,
      status: 'info',
      label: `p${proc} L${inv.start} (never completed)`,
    });
  }
  return ops;
}
