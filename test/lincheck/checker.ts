/**
 * Linearizability checker for histories of read / write / compare-and-set operations on a set of
 * independent registers (a key-value map).
 *
 * The history is partitioned by key (linearizability is compositional, so each key can be checked on
 * its own). Per key:
 *
 * 0. A linear-time pre-check: every value an ok op observes must be the initial value or have a
 *    writer invoked before the observer returned.
 * 1. The Wing–Gong backtracking search as refined by Lowe and used by Porcupine: call and return
 *    events in a doubly linked list sorted by time; repeatedly pick a pending call that comes before
 *    the first pending return, apply it to the sequential register model and, if legal, "lift" it out
 *    of the list; reaching a return event means that op could not be placed, so backtrack. A memo
 *    cache of (linearized set, register value) prunes configurations already explored. Iterative
 *    (explicit stack), flat typed arrays; our own implementation. The memo prunes by dominance over
 *    info ops (see ConfigCache). With no info ops this search gets the whole budget and is exact.
 * 2. Keys with info ops whose search runs past a share of the budget (info ops that may or may not
 *    have happened can make it redo work) go on to a breadth-first "layered" search over
 *    (ok-set, state) with antichains of info-sets — first in a relaxed form that lets info ops apply
 *    any number of times (cheap; if even that gets stuck, the history is certainly not linearizable),
 *    then exactly. See layeredSearch.
 *
 * Semantics: fail ops and info reads are dropped. Info writes / cas may take effect at any point after
 * their invocation, or never; they get no return event, and a search is finished once every ok op is
 * linearized (info ops still pending then simply "never happened"). An ok op with end = Infinity must
 * take effect (its result is known) but may do so at any time after its start.
 *
 * Time: an operation A precedes B iff A.end < B.start (strictly). Events are therefore sorted by time
 * with calls before returns at equal times: operations that touch at a single instant are concurrent.
 *
 * Budget: `maxStates` (default 2,000,000) bounds the work per key, counted in configurations visited
 * (plus memo entries compared / 8); when it runs out the answer is `unknown`, never a guess. The count
 * is deterministic, so a verdict replays exactly.
 */

export interface RegisterOp {
  key: string;
  kind: 'read' | 'write' | 'cas';
  /** write: value written; cas: new value. Values are numbers; null = absent (only as read output / cas expect). */
  value: number | null;
  /** cas only: the value expected (null = key must be absent). */
  expect: number | null;
  /** read: value observed (null = absent). */
  output: number | null;
  /** cas with status 'ok': whether the compare succeeded (false = executed but compare failed, register unchanged). */
  casOk: boolean;
  /** logical invoke time and completion time; end = Infinity for an op whose outcome is unknown ('info'). */
  start: number;
  end: number;
  /** ok: completed with the recorded result. info: may or may not have taken effect, at any time after start (reads with info are ignored).
   *  fail: certainly did not take effect (ignored entirely). */
  status: 'ok' | 'info' | 'fail';
  /** optional label for error messages (client/process id, op id) */
  label?: string;
}

export type CheckResult =
  | { ok: true }
  | { ok: false; key: string; message: string; ops: RegisterOp[] } // ops = the history of the offending key (for printing)
  | { ok: 'unknown'; key: string; message: string }; // search budget exhausted

const DEFAULT_MAX_STATES = 2_000_000;

const READ = 0;
const WRITE = 1;
const CAS = 2;

/**
 * Checks that `ops` is linearizable with respect to a map of registers, each starting at `initial`
 * (default null = absent). `maxStates` bounds the search work *per key* (default 2,000,000
 * configurations); when it is exhausted the answer is `unknown`.
 *
 * If several keys fail, the first violating key (in order of first appearance) is reported; a
 * definite violation on any key wins over `unknown` on another.
 */
export function checkLinearizable(
  ops: RegisterOp[],
  opts?: { initial?: number | null; maxStates?: number },
): CheckResult {
  const initial = opts?.initial ?? null;
  const maxStates = opts?.maxStates ?? DEFAULT_MAX_STATES;
  const byKey = new Map<string, RegisterOp[]>();
  for (const op of ops) {
    validate(op);
    let list = byKey.get(op.key);
    if (list === undefined) {
      list = [];
      byKey.set(op.key, list);
    }
    list.push(op);
  }
  let unknown: CheckResult | undefined;
  for (const [key, keyOps] of byKey) {
    const r = checkKey(key, keyOps, initial, maxStates);
    if (r.ok === false) return r;
    if (r.ok === 'unknown' && unknown === undefined) unknown = r;
  }
  return unknown ?? { ok: true };
}

function validate(op: RegisterOp): void {
  if (Number.isNaN(op.start) || Number.isNaN(op.end) || !(op.start <= op.end) || op.start === Infinity) {
    throw new RangeError(`lincheck: bad interval [${op.start}, ${op.end}] for ${describe(op)}`);
  }
  if (op.kind !== 'read' && op.kind !== 'write' && op.kind !== 'cas') {
    throw new RangeError(`lincheck: bad kind ${String(op.kind)}`);
  }
  if (op.status !== 'ok' && op.status !== 'info' && op.status !== 'fail') {
    throw new RangeError(`lincheck: bad status ${String(op.status)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Per-key search

/** Deterministic 32-bit hash values for the Zobrist hash of the linearized set. */
function zobristValue(i: number): number {
  // splitmix32-style finalizer of the index: fixed, well spread, no shared state.
  let z = (Math.imul(i + 1, 0x9e3779b9) ^ 0x5bd1e995) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) | 0;
}

function mixState(h: number, state: number): number {
  let z = (h ^ Math.imul(state + 0x632be5ab, 0x9e3779b1)) | 0;
  z = Math.imul(z ^ (z >>> 15), 0x2c1b3c6d);
  z = Math.imul(z ^ (z >>> 12), 0x297a2d39);
  return (z ^ (z >>> 15)) | 0;
}

/**
 * Memo cache of visited configurations (set of linearized ops, register state).
 *
 * Pruning is by *dominance*, which subsumes Porcupine's exact-match memo: a configuration X is
 * skipped if some visited configuration D has the same set of linearized ok-ops, the same register
 * state, and a subset of X's linearized info-ops. Info ops never constrain the search (they have no
 * return event), so every way to finish from X is also a way to finish from D; and D's children were
 * all tried (or were themselves dominated), so a linearization through X would already have been
 * found through D. This matters a lot for histories with many info ops, whose subsets otherwise
 * multiply the search space.
 *
 * The ok-set is stored windowed so memory stays proportional to the concurrency, not the history
 * length: ok-ops are indexed by start time, so the set is "every op below word `lo`" (all ones) plus
 * words lo..hi. Layout of an entry in the flat Int32Array arena:
 *   [hash, state, lo, len, nextInChain, okWords(len)..., infoWords(infoW)...]
 * The open-addressing table maps a (ok-set, state) key to the head of a chain of entries that differ
 * only in their info-set; entries made redundant by a smaller info-set are unlinked from the chain.
 */
class ConfigCache {
  private arena: Int32Array;
  private used = 0;
  private table: Int32Array; // arena offset + 1 of a chain head; 0 = empty
  private mask: number;
  private keys = 0;
  /** chain entries compared so far (part of the work budget) */
  scanned = 0;

  constructor(private readonly infoW: number) {
    this.arena = new Int32Array(1024);
    this.table = new Int32Array(1024);
    this.mask = 1023;
  }

  /** Records the configuration; returns false if it is dominated by (or equal to) a visited one. */
  visit(hash: number, state: number, okBits: Int32Array, lo: number, hi: number, infoBits: Int32Array): boolean {
    const len = hi - lo + 1;
    const infoW = this.infoW;
    const mask = this.mask;
    let idx = hash & mask;
    for (;;) {
      const e = this.table[idx]!;
      if (e === 0) break;
      if (this.sameKey(e - 1, hash, state, okBits, lo, hi)) {
        // walk the chain of info-sets for this (ok-set, state)
        const a = this.arena;
        const infoOff = 5 + len;
        let head = e - 1;
        let prev = -1;
        let cur = head;
        while (cur >= 0) {
          this.scanned++;
          let subset = true; // info(cur) ⊆ info(X)
          let superset = true; // info(X) ⊆ info(cur)
          for (let w = 0, p = cur + infoOff; w < infoW; w++, p++) {
            const d = a[p]!;
            const x = infoBits[w]!;
            if ((d & ~x) !== 0) subset = false;
            if ((x & ~d) !== 0) superset = false;
          }
          if (subset) return false;
          const nxt = a[cur + 4]!;
          if (superset) {
            // X dominates cur: cur is redundant from now on
            if (prev < 0) head = nxt;
            else a[prev + 4] = nxt;
          } else {
            prev = cur;
          }
          cur = nxt;
        }
        const off = this.append(hash, state, okBits, lo, hi, infoBits, head);
        this.table[idx] = off + 1;
        return true;
      }
      idx = (idx + 1) & mask;
    }
    const off = this.append(hash, state, okBits, lo, hi, infoBits, -1);
    this.table[idx] = off + 1;
    if (++this.keys * 2 > this.table.length) this.grow();
    return true;
  }

  private sameKey(off: number, hash: number, state: number, okBits: Int32Array, lo: number, hi: number): boolean {
    const a = this.arena;
    if (a[off] !== hash || a[off + 1] !== state || a[off + 2] !== lo || a[off + 3] !== hi - lo + 1) return false;
    for (let w = lo, p = off + 5; w <= hi; w++, p++) if (a[p] !== okBits[w]) return false;
    return true;
  }

  private append(hash: number, state: number, okBits: Int32Array, lo: number, hi: number, infoBits: Int32Array, next: number): number {
    const len = hi - lo + 1;
    const need = 5 + len + this.infoW;
    if (this.used + need > this.arena.length) {
      let cap = this.arena.length * 2;
      while (cap < this.used + need) cap *= 2;
      const bigger = new Int32Array(cap);
      bigger.set(this.arena.subarray(0, this.used));
      this.arena = bigger;
    }
    const a = this.arena;
    const off = this.used;
    a[off] = hash;
    a[off + 1] = state;
    a[off + 2] = lo;
    a[off + 3] = len;
    a[off + 4] = next;
    let p = off + 5;
    for (let w = lo; w <= hi; w++) a[p++] = okBits[w]!;
    for (let w = 0; w < this.infoW; w++) a[p++] = infoBits[w]!;
    this.used = p;
    return off;
  }

  private grow(): void {
    const old = this.table;
    const table = new Int32Array(old.length * 2);
    const mask = table.length - 1;
    for (let i = 0; i < old.length; i++) {
      const e = old[i]!;
      if (e === 0) continue;
      let idx = this.arena[e - 1]! & mask;
      while (table[idx] !== 0) idx = (idx + 1) & mask;
      table[idx] = e;
    }
    this.table = table;
    this.mask = mask;
  }
}

/** One key's history, prepared for the searches: op index = ok ops by start, then info ops by start. */
interface Problem {
  key: string;
  all: RegisterOp[];
  ops: RegisterOp[];
  nOk: number;
  n: number;
  values: (number | null)[];
  initState: number;
  kind: Uint8Array;
  arg: Int32Array; // write value / cas new value
  exp: Int32Array; // cas expected value
  out: Int32Array; // read output
  mustCasOk: Int8Array; // ok cas: 1 = compare succeeded, 0 = failed; info cas: -1 = either
  twinPrev: Int32Array; // info ops: previous identical info op, or -1
  start: Float64Array;
  end: Float64Array;
}

type SearchResult = { verdict: true; used?: number } | { verdict: false; message: string } | { verdict: 'budget'; used: number };

const byStart = (a: RegisterOp, b: RegisterOp) => a.start - b.start || a.end - b.end;

/** Budget share of the depth-first search when the key has info ops (then the layered searches follow). */
const DFS_SHARE_WITH_INFO = 100_000;

function checkKey(key: string, all: RegisterOp[], initial: number | null, maxStates: number): CheckResult {
  const p = prepare(key, all, initial);
  if (p === null) return { ok: true };
  const orphan = orphanObservation(p);
  if (orphan !== null) return { ok: false, key, message: orphan, ops: all.slice().sort(byStart) };
  // 1. Porcupine-style depth-first search: finds a linearization of a correct history with little
  //    work. With no info ops its memo is exact, so it is also the cheapest way to refute one.
  const hasInfo = p.n > p.nOk;
  let used = 0;
  let r = depthFirstSearch(p, hasInfo ? Math.min(maxStates, DFS_SHARE_WITH_INFO) : maxStates);
  if (r.verdict === 'budget') {
    used += r.used;
    // 2. Relaxed layered search, where info ops may be applied any number of times: an
    //    over-approximation (every real linearization is also a relaxed one), cheap because it
    //    needs no info-sets. If even this gets stuck, the history is certainly not linearizable.
    if (used < maxStates) {
      const relaxed = layeredSearch(p, maxStates - used, true);
      if (relaxed.verdict === false) r = relaxed;
      else used += relaxed.used ?? 0;
    }
    // 3. Exact layered search with the rest of the budget.
    if (r.verdict === 'budget' && used < maxStates) {
      r = layeredSearch(p, maxStates - used, false);
      if (r.verdict === 'budget') used += r.used;
    }
  }
  if (r.verdict === true) return { ok: true };
  if (r.verdict === false) return { ok: false, key, message: r.message, ops: all.slice().sort(byStart) };
  return {
    ok: 'unknown',
    key,
    message:
      `key ${JSON.stringify(key)}: linearizability search gave up after ${used} units of work ` +
      `(${p.nOk} ok ops, ${p.n - p.nOk} info writes/cas); raise maxStates or shorten the history`,
  };
}

function prepare(key: string, all: RegisterOp[], initial: number | null): Problem | null {
  // Ops that matter: ok ops, and info writes/cas. Fail ops and info reads carry no information.
  const okOps: RegisterOp[] = [];
  const infoOps: RegisterOp[] = [];
  for (const op of all) {
    if (op.status === 'ok') okOps.push(op);
    else if (op.status === 'info' && op.kind !== 'read') infoOps.push(op);
  }
  if (okOps.length === 0) return null; // info-only histories are trivially linearizable ("never")
  okOps.sort(byStart);
  infoOps.sort(byStart);
  const nOk = okOps.length;
  const n = nOk + infoOps.length;
  const ops = okOps.concat(infoOps);

  const ids = new Map<number | null, number>();
  const values: (number | null)[] = [];
  const intern = (v: number | null): number => {
    let id = ids.get(v);
    if (id === undefined) {
      id = values.length;
      ids.set(v, id);
      values.push(v);
    }
    return id;
  };
  const initState = intern(initial);
  const kind = new Uint8Array(n);
  const arg = new Int32Array(n);
  const exp = new Int32Array(n);
  const out = new Int32Array(n);
  const mustCasOk = new Int8Array(n);
  const twinPrev = new Int32Array(n).fill(-1);
  const start = new Float64Array(n);
  const end = new Float64Array(n);
  const twinLast = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const op = ops[i]!;
    start[i] = op.start;
    // Info ops may linearize at any time after their call, or never: their end is +inf.
    end[i] = i < nOk ? op.end : Infinity;
    if (op.kind === 'read') {
      kind[i] = READ;
      out[i] = intern(op.output);
    } else if (op.kind === 'write') {
      kind[i] = WRITE;
      arg[i] = intern(op.value);
    } else {
      kind[i] = CAS;
      arg[i] = intern(op.value);
      exp[i] = intern(op.expect);
      mustCasOk[i] = i < nOk ? (op.casOk ? 1 : 0) : -1;
    }
    if (i >= nOk) {
      // Symmetry reduction: identical info ops are interchangeable (all end at +inf), so only ever
      // linearize them in start order. Any linearization using a later twin but not an earlier one
      // (or both, in the other order) can swap them, because the earlier twin started no later.
      const sig = `${kind[i]}:${arg[i]}:${exp[i]}`;
      const prev = twinLast.get(sig);
      if (prev !== undefined) twinPrev[i] = prev;
      twinLast.set(sig, i);
    }
  }
  return { key, all, ops, nOk, n, values, initState, kind, arg, exp, out, mustCasOk, twinPrev, start, end };
}

/**
 * Cheap necessary condition, checked before searching: every value an ok op observes (a read's output,
 * a successful cas's expected value) is the initial value or was written by some op (ok or info)
 * invoked no later than the observer returned. Catches reads of never-written values and reads from
 * the future with a clear message, however large the history.
 */
function orphanObservation(p: Problem): string | null {
  const firstWriter = new Float64Array(p.values.length).fill(Infinity);
  for (let i = 0; i < p.n; i++) {
    const k = p.kind[i]!;
    if (k === READ || (k === CAS && p.mustCasOk[i] === 0)) continue;
    const v = p.arg[i]!;
    if (p.start[i]! < firstWriter[v]!) firstWriter[v] = p.start[i]!;
  }
  for (let i = 0; i < p.nOk; i++) {
    const k = p.kind[i]!;
    const v = k === READ ? p.out[i]! : k === CAS && p.mustCasOk[i] === 1 ? p.exp[i]! : -1;
    if (v < 0 || v === p.initState || firstWriter[v]! <= p.end[i]!) continue;
    const op = p.ops[i]!;
    const shown = fmtVal(p.values[v] ?? null);
    return (
      `key ${JSON.stringify(p.key)}: history is not linearizable: ${opLine(op)} observed ${shown}, but no operation ` +
      `writing ${shown} was invoked before it returned` +
      (firstWriter[v] === Infinity ? ' (no operation ever writes it)' : ` (first writer invoked at ${firstWriter[v]})`)
    );
  }
  return null;
}

/** Applies op `o` to register state `s`: the new state, or -1 if the op's recorded result is impossible. */
function step(p: Problem, o: number, s: number): number {
  const k = p.kind[o]!;
  if (k === READ) return s === p.out[o] ? s : -1;
  if (k === WRITE) return p.arg[o]!;
  const match = s === p.exp[o];
  const m = p.mustCasOk[o]!;
  if (m >= 0 && (m === 1) !== match) return -1;
  return match ? p.arg[o]! : s;
}

function firstPendingOk(okBits: Int32Array, nOk: number): number {
  for (let i = 0; i < nOk; i++) if ((okBits[i >>> 5]! & (1 << (i & 31))) === 0) return i;
  return -1;
}

/** First word of okBits that is not all ones, and the last non-zero word at or after it. */
function okWindow(okBits: Int32Array, okW: number): [number, number] {
  let lo = 0;
  while (lo < okW - 1 && okBits[lo] === -1) lo++;
  let hi = okW - 1;
  while (hi > lo && okBits[hi] === 0) hi--;
  return [lo, hi];
}

// ---------------------------------------------------------------------------------------------
// Depth-first search (Wing–Gong / Lowe, as in Porcupine)

function depthFirstSearch(p: Problem, budget: number): SearchResult {
  const { nOk, n, start, end, twinPrev } = p;
  const infoN = n - nOk;

  // --- event list: node 0 = head sentinel, nodes 1..E events, node E+1 = tail sentinel.
  // Calls before returns at equal times (precedence is strict: A before B iff A.end < B.start).
  // Info ops, and ok ops with end = +inf, get no return event.
  const evT: number[] = [];
  const evCode: number[] = []; // op index for calls, ~op for returns
  for (let i = 0; i < n; i++) {
    evT.push(start[i]!);
    evCode.push(i);
    if (end[i] !== Infinity) {
      evT.push(end[i]!);
      evCode.push(~i);
    }
  }
  const order = evT.map((_, j) => j);
  order.sort((x, y) => {
    const dt = evT[x]! - evT[y]!;
    if (dt !== 0) return dt;
    const cx = evCode[x]!;
    const cy = evCode[y]!;
    if (cx >= 0 !== cy >= 0) return cx >= 0 ? -1 : 1;
    return cx >= 0 ? cx - cy : cy - cx;
  });
  const E = order.length;
  const tail = E + 1;
  const next = new Int32Array(E + 2);
  const prev = new Int32Array(E + 2);
  const nodeOp = new Int32Array(E + 2);
  const nodeIsCall = new Uint8Array(E + 2);
  const retNode = new Int32Array(n).fill(-1);
  for (let j = 0; j < E; j++) {
    const code = evCode[order[j]!]!;
    const node = j + 1;
    if (code >= 0) {
      nodeOp[node] = code;
      nodeIsCall[node] = 1;
    } else {
      nodeOp[node] = ~code;
      retNode[~code] = node;
    }
  }
  for (let node = 0; node <= tail; node++) {
    next[node] = node + 1;
    prev[node] = node - 1;
  }

  // --- bitsets and hash
  const okW = (nOk + 31) >>> 5;
  const infoW = (infoN + 31) >>> 5;
  const okBits = new Int32Array(okW);
  const infoBits = new Int32Array(Math.max(infoW, 1));
  const zob = new Int32Array(nOk);
  for (let i = 0; i < nOk; i++) zob[i] = zobristValue(i);
  const cache = new ConfigCache(infoW);
  const infoSet = (i: number): boolean => (infoBits[(i - nOk) >>> 5]! & (1 << ((i - nOk) & 31))) !== 0;
  const flip = (i: number): void => {
    if (i < nOk) okBits[i >>> 5]! ^= 1 << (i & 31);
    else infoBits[(i - nOk) >>> 5]! ^= 1 << ((i - nOk) & 31);
  };

  // --- search stack
  const stackNode = new Int32Array(n);
  const stackState = new Int32Array(n);
  let depth = 0;
  let state = p.initState;
  let hash = 0;
  let okLeft = nOk;
  let explored = 0;
  // diagnostics: deepest point at which the search got stuck
  let bestDepth = -1;
  let bestBlocker = -1;
  let bestState = state;
  let bestPrefix: Int32Array = new Int32Array(0);

  // The root configuration is visited too (it dominates e.g. an info op that changes nothing).
  cache.visit(mixState(0, state), state, okBits, 0, 0, infoBits);

  // Search order: event-list order, i.e. pending ops by invocation time, info ops included (as in
  // Porcupine). Trying ok ops first and info ops last looks attractive for dominance pruning but
  // makes the search lose its way on correct histories whose reads observe info writes.
  let node = next[0]!;
  for (;;) {
    if (node !== tail && nodeIsCall[node] === 1) {
      const o = nodeOp[node]!;
      const isOk = o < nOk;
      let ns = step(p, o, state);
      if (!isOk && ns >= 0) {
        // an info op that changes nothing is never needed; twins go in start order
        if (ns === state || (twinPrev[o]! >= 0 && !infoSet(twinPrev[o]!))) ns = -1;
      }
      if (ns >= 0) {
        if (isOk && okLeft === 1) return { verdict: true };
        flip(o);
        const newHash = isOk ? hash ^ zob[o]! : hash;
        const [lo, hi] = okWindow(okBits, okW);
        const fresh = cache.visit(mixState(newHash, ns), ns, okBits, lo, hi, infoBits);
        if (fresh) explored++;
        const work = explored + (cache.scanned >>> 3);
        if (work >= budget) return { verdict: 'budget', used: work };
        if (fresh) {
          stackNode[depth] = node;
          stackState[depth] = state;
          depth++;
          state = ns;
          hash = newHash;
          if (isOk) okLeft--;
          // lift: unlink call, then return (restored in reverse order on backtrack)
          next[prev[node]!] = next[node]!;
          prev[next[node]!] = prev[node]!;
          const r = retNode[o]!;
          if (r >= 0) {
            next[prev[r]!] = next[r]!;
            prev[next[r]!] = prev[r]!;
          }
          node = next[0]!;
          continue;
        }
        flip(o); // dominated by a visited configuration: undo
      }
      node = next[node]!;
      continue;
    }
    // Reached the first return event (or the end of the list) with ok ops still pending, and every
    // candidate failed: the op whose return this is cannot be linearized after the current
    // prefix — backtrack.
    if (depth > bestDepth) {
      bestDepth = depth;
      bestBlocker = node === tail ? firstPendingOk(okBits, nOk) : nodeOp[node]!;
      bestState = state;
      bestPrefix = stackNode.slice(0, depth);
    }
    if (depth === 0) {
      const prefix = Array.from(bestPrefix, (nd) => nodeOp[nd]!);
      return { verdict: false, message: explainDfs(p, prefix, bestBlocker, bestState) };
    }
    depth--;
    const top = stackNode[depth]!;
    const o = nodeOp[top]!;
    state = stackState[depth]!;
    flip(o);
    if (o < nOk) {
      hash ^= zob[o]!;
      okLeft++;
    }
    const r = retNode[o]!;
    if (r >= 0) {
      next[prev[r]!] = r;
      prev[next[r]!] = r;
    }
    next[prev[top]!] = top;
    prev[next[top]!] = top;
    node = next[top]!;
  }
}

// ---------------------------------------------------------------------------------------------
// Layered search (fallback for histories with many info ops)
//
// Depth-first search with dominance pruning can visit a configuration (ok-set, state, info-set)
// before it finds a cheaper path to the same (ok-set, state) using fewer info ops, and then has to
// explore that subtree again. Histories with many info ops and few distinct values make this blow up.
// This search instead advances breadth-first, one linearized ok op per layer; in each layer it keeps,
// per (ok-set, state), only the minimal info-sets (an antichain), closing the layer under info ops
// before moving on, so nothing is explored twice. The same dominance argument makes it complete.

interface LayerEntry {
  bits: Int32Array; // info-set
  dead: boolean; // superseded by a smaller info-set
}
interface LayerGroup {
  lo: number;
  words: Int32Array; // ok-set words lo..lo+len-1 (words below lo are all ones, above are zero)
  sKey: string;
  state: number;
  entries: LayerEntry[];
  frontier: number; // min end of the pending ok ops (computed lazily, NaN = not yet)
}

function layeredSearch(p: Problem, budget: number, relaxed: boolean): SearchResult {
  const { nOk, n, start, end, twinPrev } = p;
  const infoN = n - nOk;
  const okW = (nOk + 31) >>> 5;
  const infoW = Math.max((infoN + 31) >>> 5, 1);
  // suffix minimum of ends over ok ops in start order: the frontier beyond a group's window
  const sufMinEnd = new Float64Array(nOk + 1).fill(Infinity);
  for (let i = nOk - 1; i >= 0; i--) sufMinEnd[i] = Math.min(end[i]!, sufMinEnd[i + 1]!);
  const scratch = new Int32Array(okW);
  let work = 0; // configurations added, plus antichain entries compared / 8

  const load = (g: LayerGroup): void => {
    scratch.fill(-1, 0, g.lo);
    scratch.set(g.words, g.lo);
    scratch.fill(0, g.lo + g.words.length);
  };
  const isOkSet = (i: number): boolean => (scratch[i >>> 5]! & (1 << (i & 31))) !== 0;
  /** min end of pending ok ops; scratch must hold g's ok-set */
  const frontierOf = (g: LayerGroup): number => {
    if (Number.isNaN(g.frontier)) {
      const from = g.lo * 32;
      const to = Math.min((g.lo + g.words.length) * 32, nOk);
      let m = sufMinEnd[to]!;
      for (let i = from; i < to; i++) if (!isOkSet(i) && end[i]! < m) m = end[i]!;
      g.frontier = m;
    }
    return g.frontier;
  };

  /** Adds a configuration to a layer; returns the new entry, or null if dominated. */
  const add = (
    layer: Map<string, LayerGroup>,
    sKey: string | null,
    lo: number,
    words: Int32Array | null,
    state: number,
    bits: Int32Array,
  ): [LayerGroup, LayerEntry] | null => {
    if (sKey === null) {
      const [l, hi] = okWindow(scratch, okW);
      lo = l;
      words = scratch.slice(l, hi + 1);
      sKey = `${lo}:${words.join(',')}`;
    }
    const gk = `${state}|${sKey}`;
    let g = layer.get(gk);
    work++;
    if (g === undefined) {
      g = { lo, words: words!, sKey, state, entries: [], frontier: Number.NaN };
      layer.set(gk, g);
    } else {
      work += g.entries.length >>> 3;
      let live = 0;
      for (const e of g.entries) {
        if (e.dead) continue;
        let subset = true;
        let superset = true;
        for (let w = 0; w < infoW; w++) {
          const d = e.bits[w]!;
          const x = bits[w]!;
          if ((d & ~x) !== 0) subset = false;
          if ((x & ~d) !== 0) superset = false;
        }
        if (subset) return null;
        if (superset) e.dead = true;
        else g.entries[live++] = e;
      }
      g.entries.length = live;
    }
    const e: LayerEntry = { bits: bits.slice(), dead: false };
    g.entries.push(e);
    return [g, e];
  };

  /** Closes a layer under info ops (which keep the ok-set and change the state). */
  const close = (layer: Map<string, LayerGroup>, queue: [LayerGroup, LayerEntry][]): void => {
    if (infoN === 0) return;
    const bits = new Int32Array(infoW);
    while (queue.length > 0 && work < budget) {
      const [g, e] = queue.pop()!;
      if (e.dead) continue;
      load(g);
      const m = frontierOf(g);
      for (let x = nOk; x < n && start[x]! <= m; x++) {
        const xi = x - nOk;
        if ((e.bits[xi >>> 5]! & (1 << (xi & 31))) !== 0) continue;
        const tp = twinPrev[x]!;
        if (tp >= 0 && (e.bits[(tp - nOk) >>> 5]! & (1 << ((tp - nOk) & 31))) === 0) continue;
        const ns = step(p, x, g.state);
        if (ns < 0 || ns === g.state) continue; // an info op that changes nothing is never needed
        bits.set(e.bits);
        if (!relaxed) bits[xi >>> 5]! |= 1 << (xi & 31);
        const added = add(layer, g.sKey, g.lo, g.words, ns, bits);
        if (added !== null) queue.push(added);
        if (e.dead) break;
      }
    }
  };

  let layer = new Map<string, LayerGroup>();
  {
    const [g, e] = add(layer, null, 0, null, p.initState, new Int32Array(infoW))!;
    close(layer, [[g, e]]);
  }
  for (let k = 0; k < nOk; k++) {
    if (work >= budget) return { verdict: 'budget', used: work };
    const nextLayer = new Map<string, LayerGroup>();
    const queue: [LayerGroup, LayerEntry][] = [];
    for (const g of layer.values()) {
      load(g);
      const m = frontierOf(g);
      for (let o = g.lo * 32; o < nOk && start[o]! <= m; o++) {
        if (isOkSet(o)) continue;
        const ns = step(p, o, g.state);
        if (ns < 0) continue;
        if (k + 1 === nOk) return { verdict: true, used: work };
        scratch[o >>> 5]! |= 1 << (o & 31);
        for (const e of g.entries) {
          if (e.dead) continue;
          const added = add(nextLayer, null, 0, null, ns, e.bits);
          if (added !== null) queue.push(added);
        }
        scratch[o >>> 5]! &= ~(1 << (o & 31));
      }
    }
    close(nextLayer, queue);
    if (work >= budget) return { verdict: 'budget', used: work };
    if (nextLayer.size === 0) return { verdict: false, message: explainLayer(p, layer, k) };
    layer = nextLayer;
  }
  return { verdict: true, used: work }; // unreachable: the last layer returns above
}

// ---------------------------------------------------------------------------------------------
// Violation messages

function opLine(op: RegisterOp): string {
  return `${describe(op)}  [${fmtTime(op.start)} → ${fmtTime(op.end)}]${op.label ? ` (${op.label})` : ''}`;
}

function explainDfs(p: Problem, prefix: number[], blocker: number, state: number): string {
  const lines: string[] = [];
  lines.push(`key ${JSON.stringify(p.key)}: history is not linearizable (${p.nOk} ok ops, ${p.n - p.nOk} info writes/cas).`);
  const b = p.ops[blocker];
  if (b !== undefined) {
    lines.push(
      `Longest valid partial linearization has ${prefix.length} ops and leaves the register at ${fmtVal(p.values[state] ?? null)}; ` +
        `no pending op can be placed next so that this op can complete:`,
    );
    lines.push(`  stuck at: ${opLine(b)}`);
  }
  const tailN = Math.min(prefix.length, 8);
  if (tailN > 0) {
    lines.push(`  last ${tailN} ops of that partial linearization (oldest first):`);
    for (let i = prefix.length - tailN; i < prefix.length; i++) lines.push(`    ${opLine(p.ops[prefix[i]!]!)}`);
  }
  return lines.join('\n');
}

function explainLayer(p: Problem, layer: Map<string, LayerGroup>, k: number): string {
  const lines: string[] = [];
  lines.push(`key ${JSON.stringify(p.key)}: history is not linearizable (${p.nOk} ok ops, ${p.n - p.nOk} info writes/cas).`);
  // the pending op with the earliest return, for the first surviving configuration
  const g = layer.values().next().value as LayerGroup | undefined;
  if (g !== undefined) {
    const bits = new Int32Array((p.nOk + 31) >>> 5);
    bits.fill(-1, 0, g.lo);
    bits.set(g.words, g.lo);
    let blocker = -1;
    for (let i = 0; i < p.nOk; i++) {
      if ((bits[i >>> 5]! & (1 << (i & 31))) !== 0) continue;
      if (blocker < 0 || p.end[i]! < p.end[blocker]!) blocker = i;
    }
    const states = [...new Set([...layer.values()].map((x) => fmtVal(p.values[x.state] ?? null)))];
    lines.push(
      `Every valid partial linearization gets stuck after ${k} ok ops (register then holds one of: ${states.join(', ')}); ` +
        `e.g. this op cannot be placed:`,
    );
    const b = p.ops[blocker];
    if (b !== undefined) lines.push(`  stuck at: ${opLine(b)}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Formatting

function fmtVal(v: number | null): string {
  return v === null ? 'nil' : String(v);
}

function fmtTime(t: number): string {
  return t === Infinity ? '∞' : String(t);
}

function describe(op: RegisterOp): string {
  const unknown = op.status !== 'ok';
  switch (op.kind) {
    case 'read':
      return `read() -> ${unknown ? '?' : fmtVal(op.output)}`;
    case 'write':
      return `write(${fmtVal(op.value)})`;
    case 'cas':
      return `cas(${fmtVal(op.expect)} => ${fmtVal(op.value)}) -> ${unknown ? '?' : op.casOk ? 'ok' : 'compare-failed'}`;
    default:
      return `<invalid op kind ${String(op.kind)}>`;
  }
}

/** Human-readable history, sorted by start time, one op per line. */
export function formatHistory(ops: RegisterOp[]): string {
  const sorted = ops.slice().sort((a, b) => a.start - b.start || a.end - b.end);
  const rows = sorted.map((op) => [
    fmtTime(op.start),
    fmtTime(op.end),
    op.status,
    op.key,
    describe(op),
    op.label ?? '',
  ]);
  const widths = [0, 0, 0, 0, 0];
  for (const r of rows) for (let i = 0; i < widths.length; i++) widths[i] = Math.max(widths[i]!, r[i]!.length);
  return rows
    .map(
      (r) =>
        `${r[0]!.padStart(widths[0]!)} → ${r[1]!.padEnd(widths[1]!)}  ${r[2]!.padEnd(widths[2]!)}  ` +
        `${r[3]!.padEnd(widths[3]!)}  ${r[4]!.padEnd(widths[4]!)}  ${r[5]!}`.trimEnd(),
    )
    .join('\n');
}
