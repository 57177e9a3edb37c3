/**
 * Client workload: a register-per-key state machine replicated through Raft,
 * its command encoding, and the client processes that drive it and record
 * the history for the linearizability checker.
 *
 * Commands are proposed as Normal entries whose payload is the text
 * `<opId> <kind> <key> <value> <expect>` (kind w = write, c = cas,
 * r = read through the log). An empty Normal entry is the leader's no-op.
 */
import type { RegisterOp } from '../lincheck/checker.ts';
import type { NodeId } from '../../raft/index.ts';
import type { Prng } from './prng.ts';

export type CmdKind = 'w' | 'c' | 'r';
export interface Cmd {
  opId: number;
  kind: CmdKind;
  key: number;
  value: number;
  expect: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const textCache = new WeakMap<Uint8Array, string>();
const cmdCache = new WeakMap<Uint8Array, Cmd | null>();

export function encodeCmd(c: Cmd): Uint8Array {
  const data = encoder.encode(`${c.opId} ${c.kind} ${c.key} ${c.value} ${c.expect}`);
  cmdCache.set(data, c);
  return data;
}

/** Payload text (cached by buffer identity; payloads are never mutated). */
export function payloadText(data: Uint8Array): string {
  if (data.length === 0) return '';
  let s = textCache.get(data);
  if (s === undefined) {
    s = decoder.decode(data);
    textCache.set(data, s);
  }
  return s;
}

/** Decode a command; null for the empty no-op. Throws on garbage (a core
 *  that corrupts payloads is a violation the caller reports). */
export function decodeCmd(data: Uint8Array): Cmd | null {
  if (data.length === 0) return null;
  const cached = cmdCache.get(data);
  if (cached !== undefined) return cached;
  const parts = payloadText(data).split(' ');
  const kind = parts[1];
  if (parts.length !== 5 || (kind !== 'w' && kind !== 'c' && kind !== 'r')) {
    throw new Error(`undecodable entry payload ${JSON.stringify(payloadText(data))}`);
  }
  const cmd: Cmd = {
    opId: Number(parts[0]), kind, key: Number(parts[2]), value: Number(parts[3]), expect: Number(parts[4]),
  };
  cmdCache.set(data, cmd);
  return cmd;
}

export function keyName(k: number): string {
  return String.fromCharCode(97 + k);
}

/** The replicated state machine: one integer register per key (null = unset). */
export class RegisterSM {
  values: (number | null)[];

  constructor(keys: number, values?: (number | null)[]) {
    this.values = values ?? new Array<number | null>(keys).fill(null);
  }

  apply(cmd: Cmd): { output: number | null; casOk: boolean } {
    const cur = this.values[cmd.key] ?? null;
    switch (cmd.kind) {
      case 'w':
        this.values[cmd.key] = cmd.value;
        return { output: null, casOk: false };
      case 'c':
        if (cur === cmd.expect) {
          this.values[cmd.key] = cmd.value;
          return { output: null, casOk: true };
        }
        return { output: null, casOk: false };
      case 'r':
        return { output: cur, casOk: false };
    }
  }

  read(key: number): number | null {
    return this.values[key] ?? null;
  }

  fingerprint(): string {
    let s = '';
    for (const v of this.values) s += v === null ? '_,' : `${v},`;
    return s;
  }

  image(): Uint8Array {
    return encoder.encode(JSON.stringify(this.values));
  }

  static fromImage(data: Uint8Array, keys: number): RegisterSM {
    const parsed: unknown = JSON.parse(decoder.decode(data));
    if (!Array.isArray(parsed) || parsed.length !== keys ||
      !parsed.every((v) => v === null || typeof v === 'number')) {
      throw new Error(`bad state-machine image ${decoder.decode(data).slice(0, 80)}`);
    }
    return new RegisterSM(keys, parsed as (number | null)[]);
  }
}

/** First application of a command anywhere in the cluster. */
export interface AppliedOp {
  index: number;
  /** History clock at that moment. */
  clock: number;
  casOk: boolean;
}

export type PendingKind = 'mut' | 'logread' | 'read';

export interface PendingOp {
  rec: RegisterOp;
  client: Client;
  kind: PendingKind;
  cmd: Cmd | null;
  node: NodeId;
  /** Proposal index (mut/logread), 0 before proposing. */
  index: number;
  /** ReadIndex context (read). */
  ctx: number;
  /** ReadState index once known (read), -1 before. */
  readIndex: number;
  /** Highest index known committed when the read reached the node. */
  minIndex: number;
  deadline: number;
  done: boolean;
}

export class Client {
  pending: PendingOp | null = null;
  nextAt = 0;
  /** Node believed to be the leader (0 = unknown). */
  target: NodeId = 0;
  /** Last value this client saw per key (to build CASes likely to succeed). */
  known: (number | null)[];

  constructor(readonly id: number, keys: number) {
    this.known = new Array<number | null>(keys).fill(null);
  }
}

export interface WorkloadConfig {
  clients: number;
  keys: number;
  /** Probability per step that an idle client starts an op (after think time). */
  rate: number;
  /** Op mix weights. */
  write: number;
  cas: number;
  read: number;
  logRead: number;
  /** Steps before an outstanding op is abandoned. */
  timeout: number;
}

/** Where a new op goes; implemented by the simulation. */
export interface WorkloadHost {
  now: number;
  /** Try to start `p` at node `p.node`; returns false when the node is
   *  unreachable for clients (down/paused/unknown). On a synchronous
   *  rejection the host calls Workload.fail / drop itself. */
  submit(p: PendingOp): boolean;
  /** A node to try when the client has no good guess. */
  randomNode(): NodeId | 0;
}

export class Workload {
  readonly history: RegisterOp[] = [];
  /** opId of each mutation in `history`. */
  private readonly opIdOf = new Map<RegisterOp, number>();
  readonly clients: Client[] = [];
  private clock = 0;
  private nextOpId = 1;
  private nextValue = 1;
  private nextCtx = 1;
  private recent: number[][];
  invoked = 0;
  okCount = 0;
  infoCount = 0;
  failCount = 0;
  readonly failReasons = new Map<string, number>();
  dropped = 0;
  stopped = false;

  constructor(private rng: Prng, readonly cfg: WorkloadConfig) {
    for (let i = 0; i < cfg.clients; i++) this.clients.push(new Client(i + 1, cfg.keys));
    this.recent = Array.from({ length: cfg.keys }, () => []);
  }

  /** Logical time for the history: strictly increasing over all events. */
  tickClock(): number {
    return ++this.clock;
  }

  /** One simulation step: time out stale ops, start new ones. */
  step(host: WorkloadHost): void {
    const now = host.now;
    for (const c of this.clients) {
      const p = c.pending;
      if (p !== null) {
        if (now >= p.deadline) this.unknown(p, 'timeout', now);
        continue;
      }
      if (this.stopped || now < c.nextAt || !this.rng.chance(this.cfg.rate)) continue;
      this.start(c, host);
    }
  }

  private start(c: Client, host: WorkloadHost): void {
    const cfg = this.cfg;
    const key = this.rng.int(cfg.keys);
    const total = cfg.write + cfg.cas + cfg.read + cfg.logRead;
    let r = this.rng.next() * total;
    let kind: 'write' | 'cas' | 'read' | 'logread';
    if ((r -= cfg.write) < 0) kind = 'write';
    else if ((r -= cfg.cas) < 0) kind = 'cas';
    else if ((r -= cfg.read) < 0) kind = 'read';
    else kind = 'logread';

    let expect: number | null = null;
    if (kind === 'cas') {
      const known = c.known[key] ?? null;
      const recent = this.recent[key] as number[];
      if (known !== null && this.rng.chance(0.7)) expect = known;
      else if (recent.length > 0) expect = this.rng.pick(recent);
      else kind = 'write';
    }

    let target = c.target;
    if (target === 0 || this.rng.chance(0.05)) target = host.randomNode();
    if (target === 0) return;

    const opId = this.nextOpId++;
    let cmd: Cmd | null = null;
    let value: number | null = null;
    if (kind === 'write' || kind === 'cas') {
      value = this.nextValue++;
      cmd = { opId, kind: kind === 'write' ? 'w' : 'c', key, value, expect: expect ?? 0 };
    } else if (kind === 'logread') {
      cmd = { opId, kind: 'r', key, value: 0, expect: 0 };
    }
    const rec: RegisterOp = {
      key: keyName(key),
      kind: kind === 'logread' ? 'read' : kind,
      value,
      expect,
      output: null,
      casOk: false,
      start: 0,
      end: Infinity,
      status: 'info',
      label: `op${opId} c${c.id} n${target} ${kind}`,
    };
    const p: PendingOp = {
      rec, client: c, kind: kind === 'write' || kind === 'cas' ? 'mut' : kind, cmd, node: target,
      index: 0, ctx: kind === 'read' ? this.nextCtx++ : 0, readIndex: -1, minIndex: 0,
      deadline: host.now + cfg.timeout, done: false,
    };
    rec.start = this.tickClock();
    c.pending = p;
    if (p.kind === 'mut') {
      this.history.push(rec);
      this.opIdOf.set(rec, opId);
    }
    this.invoked++;
    if (!host.submit(p)) {
      // Could not even connect: nothing was sent.
      if (p.kind === 'mut') this.fail(p, 'unreachable', host.now);
      else this.drop(p, 'unreachable', host.now);
      // A client often keeps retrying the node it believes is the leader.
      if (this.rng.chance(0.2)) c.target = 0;
    }
  }

  /** The op took effect with this result. */
  complete(p: PendingOp, output: number | null, casOk: boolean, now: number): void {
    if (p.done) return;
    p.done = true;
    const rec = p.rec;
    rec.end = this.tickClock();
    rec.status = 'ok';
    rec.output = output;
    rec.casOk = casOk;
    rec.label += ` idx${p.index || p.readIndex}`;
    if (p.kind !== 'mut') this.history.push(rec);
    const key = p.cmd?.key ?? keyIndex(rec.key);
    const c = p.client;
    if (rec.kind === 'read') c.known[key] = output;
    else if (rec.kind === 'write' || casOk) {
      c.known[key] = rec.value;
      const recent = this.recent[key] as number[];
      recent.push(rec.value as number);
      if (recent.length > 4) recent.shift();
    }
    this.okCount++;
    this.release(p, now);
  }

  /** Certainly not applied (proposal rejected). */
  fail(p: PendingOp, why: string, now = 0): void {
    if (p.done) return;
    p.done = true;
    p.rec.end = this.tickClock();
    p.rec.status = 'fail';
    p.rec.label += ` fail:${why}`;
    this.failCount++;
    this.failReasons.set(why, (this.failReasons.get(why) ?? 0) + 1);
    this.release(p, now);
  }

  /** Outcome unknown: mutations become info (may or may not take effect,
   *  at any time after start); reads are simply dropped. */
  unknown(p: PendingOp, why: string, now = 0): void {
    if (p.done) return;
    if (p.kind !== 'mut') {
      this.drop(p, why, now);
      return;
    }
    p.done = true;
    p.rec.end = Infinity;
    p.rec.status = 'info';
    p.rec.label += ` info:${why}${p.index ? ` idx${p.index}` : ''}`;
    this.infoCount++;
    this.release(p, now);
  }

  drop(p: PendingOp, why: string, now = 0): void {
    if (p.done) return;
    p.done = true;
    void why;
    this.dropped++;
    this.release(p, now);
  }

  private release(p: PendingOp, now: number): void {
    const c = p.client;
    if (c.pending === p) {
      c.pending = null;
      c.nextAt = now + 1 + this.rng.int(3);
    }
  }

  /**
   * End of run, after convergence: settle mutations whose outcome the client
   * never learned, using what the simulator saw happen. An op whose entry some
   * node applied took effect between its start and the first apply (commit
   * precedes every apply), with the result that apply computed; an op whose
   * entry no node ever applied had no effect anywhere (every member has
   * applied its whole log by now). This only adds constraints for the
   * checker — it can reveal more violations, never hide one — and it keeps
   * the search small. Returns how many ops were settled.
   */
  settle(firstApply: ReadonlyMap<number, AppliedOp>): number {
    let n = 0;
    for (const rec of this.history) {
      if (rec.status !== 'info') continue;
      const opId = this.opIdOf.get(rec);
      if (opId === undefined) continue;
      const a = firstApply.get(opId);
      n++;
      if (a === undefined) {
        rec.status = 'fail';
        rec.end = rec.start;
        rec.label += ' settled:never-applied';
      } else {
        rec.status = 'ok';
        rec.end = a.clock;
        rec.casOk = a.casOk;
        rec.label += ` settled:applied@${a.index}`;
      }
    }
    return n;
  }

  /** Client-visible ok results must match what the state machines computed. */
  crossCheck(firstApply: ReadonlyMap<number, AppliedOp>): string | null {
    for (const rec of this.history) {
      const opId = this.opIdOf.get(rec);
      if (opId === undefined) continue;
      const a = firstApply.get(opId);
      if (rec.status === 'fail' && a !== undefined) {
        return `${rec.label}: the proposal was rejected, yet the command was applied at index ${a.index}`;
      }
      if (rec.status !== 'ok') continue;
      if (a === undefined) return `${rec.label}: acknowledged but never applied by any node`;
      if (rec.kind === 'cas' && a.casOk !== rec.casOk) {
        return `${rec.label}: client saw casOk=${rec.casOk} but the first apply (index ${a.index}) computed ${a.casOk}`;
      }
      if (a.clock > rec.end) return `${rec.label}: first applied after the client got the answer`;
    }
    return null;
  }

  outstanding(): number {
    let n = 0;
    for (const c of this.clients) if (c.pending) n++;
    return n;
  }
}

function keyIndex(name: string): number {
  return name.charCodeAt(0) - 97;
}
