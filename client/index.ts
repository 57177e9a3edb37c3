/** The shardkv client SDK. */
export { KvClient } from './client.ts';
export { KvError, RETRYABLE_CODES, type KvErrorCode, type KvErrorInit } from './errors.ts';
export { ClientRing, bucketOf, partitionKeyBytes, loadHash32, STATIC_BUCKET, type Hash32 } from './ring.ts';
export { CircuitBreaker, RetryBudget, backoffDelay, systemClock } from './policy.ts';
export { UndiciTransport, type UndiciTransportOptions } from './transport.ts';
export type * from './types.ts';
