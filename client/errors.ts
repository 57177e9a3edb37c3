import type { Outcome } from './types.ts';

/**
 * Codes a {@link KvError} may carry: the server's codes (see API.md) plus the
 * SDK's own: `unreachable` (no connection), `attempt_timeout`,
 * `deadline_exceeded`, `aborted`, `circuit_open`, `no_endpoint`,
 * `bad_response`.
 */
export type KvErrorCode =
  | 'invalid_tenant' | 'invalid_key' | 'invalid_time' | 'invalid_argument' | 'unauthenticated' | 'forbidden'
  | 'not_found' | 'version_mismatch' | 'value_too_large' | 'rate_limited'
  | 'no_quorum' | 'no_leader' | 'overloaded' | 'too_stale' | 'not_ready' | 'timeout' | 'internal'
  | 'unreachable' | 'attempt_timeout' | 'deadline_exceeded' | 'aborted' | 'circuit_open' | 'no_endpoint' | 'bad_response'
  | (string & {});

/** Fields of a {@link KvError}. */
export interface KvErrorInit {
  code: KvErrorCode;
  message: string;
  outcome: Outcome;
  /** HTTP status, or null when no response came. */
  status?: number | null;
  requestId?: string | null;
  /** The node (id) of the last attempt, or null. */
  node?: number | null;
  /** The URL of the last attempt. */
  url?: string | null;
  /** Retry-After of the response, ms. */
  retryAfterMs?: number | null;
  /** 409 version_mismatch: the record's current version. */
  currentVersion?: number | null;
  /** Attempts made by the call. */
  attempts?: number;
  cause?: unknown;
}

/**
 * Every error the SDK throws. `outcome` is `not_applied` only when the
 * operation certainly did not and will not take effect; a mutation that timed
 * out after it may have reached the leader is `unknown`, never "failed".
 */
export class KvError extends Error {
  readonly code: KvErrorCode;
  readonly outcome: Outcome;
  readonly status: number | null;
  readonly requestId: string | null;
  readonly node: number | null;
  readonly url: string | null;
  readonly retryAfterMs: number | null;
  readonly currentVersion: number | null;
  attempts: number;

  constructor(init: KvErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'KvError';
    this.code = init.code;
    this.outcome = init.outcome;
    this.status = init.status ?? null;
    this.requestId = init.requestId ?? null;
    this.node = init.node ?? null;
    this.url = init.url ?? null;
    this.retryAfterMs = init.retryAfterMs ?? null;
    this.currentVersion = init.currentVersion ?? null;
    this.attempts = init.attempts ?? 1;
  }

  /** A copy with another outcome / code / message (used to report a whole call). */
  with(patch: Partial<KvErrorInit>): KvError {
    return new KvError({
      code: this.code, message: this.message, outcome: this.outcome, status: this.status, requestId: this.requestId,
      node: this.node, url: this.url, retryAfterMs: this.retryAfterMs, currentVersion: this.currentVersion,
      attempts: this.attempts, cause: this.cause, ...patch,
    });
  }
}

/** Server codes after which a retry (of a read, or of a mutation with its idempotency key) is safe and useful. */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set([
  'no_quorum', 'no_leader', 'overloaded', 'too_stale', 'not_ready', 'timeout', 'rate_limited', 'internal',
  'unreachable', 'attempt_timeout', 'circuit_open', 'bad_response', 'no_endpoint',
]);

/** Codes that mean the shard's leadership is not where the map says: refresh the map. */
export const MAP_STALE_CODES: ReadonlySet<string> = new Set(['no_leader', 'no_quorum', 'unreachable', 'attempt_timeout', 'circuit_open', 'not_ready']);
