import type { ProposeOutcome } from '../shard/store.ts';

/** API errors: a stable code, an HTTP status, and whether the operation certainly did not happen. */
export type Outcome = 'not_applied' | 'unknown';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly outcome: Outcome = 'not_applied',
    readonly extra: Record<string, unknown> = {},
    readonly retryAfterS?: number,
  ) {
    super(message);
  }
}

export const noLeader = (shard: number): ApiError =>
  new ApiError(503, 'no_leader', `shard ${shard} has no known leader (election in progress)`, 'not_applied', { shard }, 1);
export const noQuorum = (shard: number): ApiError =>
  new ApiError(503, 'no_quorum', `shard ${shard} cannot reach a quorum of its replicas; writes and linearizable reads are refused (stale reads still work)`, 'not_applied', { shard }, 1);
export const overloaded = (what: string): ApiError => new ApiError(503, 'overloaded', `overloaded: ${what}`, 'not_applied', {}, 1);
export const timeout = (what: string, outcome: Outcome): ApiError => new ApiError(504, 'timeout', `timed out ${what}`, outcome);

/** The answer to a proposal the Store refused or lost. */
export function proposeError(shard: number, out: Exclude<ProposeOutcome, { ok: true }>): ApiError {
  if (out.code === 'overloaded') return overloaded(`shard ${shard} has too many queued requests`);
  if (out.code === 'no_quorum') return new ApiError(503, 'no_quorum', `shard ${shard} lost its quorum while the write was in flight`, out.outcome, { shard }, 1);
  if (out.code === 'not_leader') return new ApiError(503, 'no_leader', `this node lost leadership of shard ${shard}`, out.outcome, { shard }, 1);
  return new ApiError(503, 'no_leader', `shard ${shard}: ${out.code}`, out.outcome, { shard }, 1);
}
