/**
 * Pure-ish policies, driven by an injected clock and random source so tests
 * can check them with a fake clock: backoff with full jitter, the retry
 * budget, the per-node circuit breaker.
 */
import type { BreakerOptions, BreakerState, Clock, Random, RetryBudgetOptions } from './types.ts';

/** The real clock. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimer(ms, fn) {
    const h = setTimeout(fn, Math.max(0, ms));
    return () => clearTimeout(h);
  },
};

/** Sleep on `clock`; rejects with the signal's reason when it aborts. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      cancel();
      reject(signal?.reason);
    };
    const cancel = clock.setTimer(ms, () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Exponential backoff with full jitter (AWS architecture blog): the n-th retry
 * (n ≥ 1) waits uniformly in [0, min(maxMs, baseMs·2^(n-1))). A Retry-After
 * (ms, capped by `maxRetryAfterMs`) is a floor.
 */
export function backoffDelay(retry: number, baseMs: number, maxMs: number, random: Random, retryAfterMs: number | null = null, maxRetryAfterMs = Infinity): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.max(0, retry - 1));
  const jittered = Math.floor(random() * cap);
  const floor = retryAfterMs === null ? 0 : Math.min(retryAfterMs, maxRetryAfterMs);
  return Math.max(jittered, floor);
}

/**
 * Retry budget over a sliding window (split into 10 slots): a retry is allowed
 * while retries < ratio × first attempts + minRetries in the window, so a
 * failing cluster sees at most ~(1 + ratio)× its normal load from this client.
 */
export class RetryBudget {
  private readonly ratio: number;
  private readonly minRetries: number;
  private readonly slotMs: number;
  private readonly slots = 10;
  private readonly firsts: number[];
  private readonly retries: number[];
  private readonly slotIds: number[];

  constructor(private readonly clock: Clock, opts: RetryBudgetOptions = {}) {
    this.ratio = opts.ratio ?? 0.2;
    this.minRetries = opts.minRetries ?? 10;
    this.slotMs = (opts.windowMs ?? 10_000) / this.slots;
    this.firsts = new Array<number>(this.slots).fill(0);
    this.retries = new Array<number>(this.slots).fill(0);
    this.slotIds = new Array<number>(this.slots).fill(-1);
  }

  private slot(): number {
    const id = Math.floor(this.clock.now() / this.slotMs);
    const i = ((id % this.slots) + this.slots) % this.slots;
    if (this.slotIds[i] !== id) {
      this.slotIds[i] = id;
      this.firsts[i] = 0;
      this.retries[i] = 0;
    }
    return i;
  }

  private sums(): { firsts: number; retries: number } {
    const id = Math.floor(this.clock.now() / this.slotMs);
    let firsts = 0;
    let retries = 0;
    for (let i = 0; i < this.slots; i++) {
      const sid = this.slotIds[i] as number;
      if (sid > id - this.slots && sid <= id) {
        firsts += this.firsts[i] as number;
        retries += this.retries[i] as number;
      }
    }
    return { firsts, retries };
  }

  /** Record a call's first attempt. */
  recordFirst(): void {
    const i = this.slot();
    this.firsts[i] = (this.firsts[i] as number) + 1;
  }

  /** Take a retry from the budget; false when spent (the caller gives up). */
  tryRetry(): boolean {
    const { firsts, retries } = this.sums();
    if (retries >= this.ratio * firsts + this.minRetries) return false;
    const i = this.slot();
    this.retries[i] = (this.retries[i] as number) + 1;
    return true;
  }

  /** Counts in the current window (for tests and metrics). */
  stats(): { firsts: number; retries: number } {
    return this.sums();
  }
}

/**
 * A per-node circuit breaker. Closed: requests flow; `failureThreshold`
 * consecutive failures open it. Open: the node is skipped; after `openMs` it
 * turns half-open and one probe is allowed (the SDK sends `GET /health`).
 * The probe's success closes it; its failure reopens it with a doubled open
 * time (up to 8×).
 */
export class CircuitBreaker {
  private st: BreakerState = 'closed';
  private failures = 0;
  private openedAt = 0;
  private backoffFactor = 1;
  private probing = false;
  readonly failureThreshold: number;
  readonly openMs: number;

  constructor(
    private readonly clock: Clock,
    opts: BreakerOptions = {},
    private readonly onChange: (from: BreakerState, to: BreakerState) => void = () => {},
  ) {
    this.failureThreshold = opts.failureThreshold ?? 3;
    this.openMs = opts.openMs ?? 1000;
  }

  /** The state now (an open breaker whose time is up reads as half_open). */
  get state(): BreakerState {
    if (this.st === 'open' && this.clock.now() - this.openedAt >= this.openMs * this.backoffFactor) this.move('half_open');
    return this.st;
  }

  /** May ordinary traffic go to this node? */
  allows(): boolean {
    return this.state === 'closed';
  }

  /** In half-open: claim the single probe slot (true once until the probe reports). */
  tryStartProbe(): boolean {
    if (this.state !== 'half_open' || this.probing) return false;
    this.probing = true;
    return true;
  }

  onSuccess(): void {
    this.failures = 0;
    this.probing = false;
    this.backoffFactor = 1;
    if (this.st !== 'closed') this.move('closed');
  }

  onFailure(): void {
    this.probing = false;
    if (this.st === 'half_open') {
      this.backoffFactor = Math.min(8, this.backoffFactor * 2);
      this.open();
      return;
    }
    if (this.st === 'open') return;
    if (++this.failures >= this.failureThreshold) this.open();
  }

  private open(): void {
    this.openedAt = this.clock.now();
    this.failures = 0;
    this.move('open');
  }

  private move(to: BreakerState): void {
    const from = this.st;
    if (from === to) return;
    this.st = to;
    this.onChange(from, to);
  }
}
