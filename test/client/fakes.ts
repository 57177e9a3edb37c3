/** A fake clock, a seeded random source and a scripted transport for SDK unit tests. */
import type { Clock, Transport, TransportRequest, TransportResponse } from '../../client/types.ts';

export class FakeClock implements Clock {
  t = 0;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private nextId = 0;
  now(): number {
    return this.t;
  }
  setTimer(ms: number, fn: () => void): () => void {
    const id = this.nextId++;
    this.timers.push({ at: this.t + Math.max(0, ms), fn, id });
    return () => {
      this.timers = this.timers.filter((x) => x.id !== id);
    };
  }
  /** Move time forward, firing due timers in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (next === undefined || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
  /** Jump to the next timer (if any) and fire it. */
  step(): boolean {
    this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
    const next = this.timers[0];
    if (next === undefined) return false;
    this.advance(next.at - this.t);
    return true;
  }
  pending(): number {
    return this.timers.length;
  }
}

/** Run `p` to completion, letting real I/O-free microtasks settle and then jumping the fake clock. */
export async function drive<T>(clock: FakeClock, p: Promise<T>): Promise<T> {
  let settled = false;
  const out = p.finally(() => {
    settled = true;
  });
  out.catch(() => {});
  for (let i = 0; i < 100_000 && !settled; i++) {
    await new Promise((r) => setImmediate(r));
    if (!settled) clock.step();
  }
  return out;
}

export function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Handler = (url: string, req: TransportRequest) => TransportResponse | Error | 'hang' | Promise<TransportResponse>;

/** A transport answering from a handler; 'hang' never answers (until aborted). Records every request. */
export class FakeTransport implements Transport {
  log: Array<{ url: string; method: string; path: string; headers: Record<string, string> }> = [];
  constructor(public handler: Handler) {}
  request(url: string, req: TransportRequest): Promise<TransportResponse> {
    this.log.push({ url, method: req.method, path: req.path, headers: req.headers });
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(Object.assign(new Error('aborted'), { name: 'AbortError', code: 'UND_ERR_ABORTED' }));
      if (req.signal.aborted) return onAbort();
      req.signal.addEventListener('abort', onAbort, { once: true });
      let r: ReturnType<Handler>;
      try {
        r = this.handler(url, req);
      } catch (e) {
        return reject(e);
      }
      if (r === 'hang') return;
      if (r instanceof Error) return reject(r);
      Promise.resolve(r).then(resolve, reject);
    });
  }
  async close(): Promise<void> {}
}

const enc = new TextEncoder();

export function jsonRes(status: number, body: unknown, headers: Record<string, string> = {}): TransportResponse {
  return { status, headers: { 'content-type': 'application/json', ...headers }, body: enc.encode(JSON.stringify(body)) };
}

export function errRes(status: number, code: string, outcome: 'not_applied' | 'unknown', headers: Record<string, string> = {}, extra: Record<string, unknown> = {}): TransportResponse {
  return jsonRes(status, { error: { code, message: code, requestId: 'srv', outcome, ...extra } }, headers);
}

/** A 3-node, 2-shard map: node 1 leads shard 1, node 2 leads shard 2. */
export function mapRes(leaders: Record<number, number | null> = { 1: 1, 2: 2 }, term = 1): TransportResponse {
  return jsonRes(200, {
    epoch: 1, bucketMs: 3_600_000, ring: { vnodes: 64, hash: 'xxh64-hi32' },
    nodes: [1, 2, 3].map((id) => ({ id, apiUrl: `http://n${id}`, state: 'up' })),
    shards: [1, 2].map((id) => ({ id, replicas: [1, 2, 3], leader: leaders[id] ?? null, term, commitIndex: 1, appliedIndex: 1 })),
  });
}

export function connRefused(): Error {
  return Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
}
