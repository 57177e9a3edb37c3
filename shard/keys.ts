/**
 * Records are addressed by (tenant, key, optional event time t). The
 * partition key is (tenant, bucket) with bucket = floor(t / bucketMs), or the
 * tenant's static bucket when t is absent. Validation here is the single
 * source of the contract's limits; every failure has a stable code.
 */

export const STATIC_BUCKET = -1;

export interface Limits {
  tenantMaxChars: number;
  keyMaxBytes: number;
  valueMaxBytes: number;
  idempotencyKeyMaxChars: number;
  scanLimitMax: number;
}

export const DEFAULT_LIMITS: Limits = {
  tenantMaxChars: 64,
  keyMaxBytes: 512,
  valueMaxBytes: 1 << 20,
  idempotencyKeyMaxChars: 128,
  scanLimitMax: 1000,
};

export type InputErrorCode = 'invalid_tenant' | 'invalid_key' | 'invalid_time' | 'invalid_argument' | 'value_too_large';

export class InputError extends Error {
  constructor(readonly code: InputErrorCode, message: string) {
    super(message);
  }
}

const TENANT_RE = /^[A-Za-z0-9._-]+$/;
const utf8 = new TextEncoder();

export function checkTenant(tenant: string, limits: Limits = DEFAULT_LIMITS): void {
  if (tenant.length < 1 || tenant.length > limits.tenantMaxChars || !TENANT_RE.test(tenant)) {
    throw new InputError('invalid_tenant', `tenant must be 1-${limits.tenantMaxChars} characters of [A-Za-z0-9._-]`);
  }
}

/** Returns the key's UTF-8 bytes. */
export function checkKey(key: string, limits: Limits = DEFAULT_LIMITS): Uint8Array {
  const bytes = utf8.encode(key);
  if (bytes.length < 1 || bytes.length > limits.keyMaxBytes) {
    throw new InputError('invalid_key', `key must be 1-${limits.keyMaxBytes} bytes of UTF-8`);
  }
  if (key.includes('\uFFFD')) throw new InputError('invalid_key', 'key is not valid UTF-8');
  return bytes;
}

/** Parse an optional event time from a query string value. */
export function parseTime(raw: string | undefined, name = 't'): number | undefined {
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d{1,16}$/.test(raw)) throw new InputError('invalid_time', `${name} must be an integer number of milliseconds in [0, 2^53)`);
  const t = Number(raw);
  if (!Number.isSafeInteger(t)) throw new InputError('invalid_time', `${name} must be an integer number of milliseconds in [0, 2^53)`);
  return t;
}

/** The ifVersion of a compare-and-set: null when absent or empty (no condition). */
export function parseIfVersion(raw: string | undefined): number | null {
  if (raw === undefined || raw === '') return null;
  if (!/^\d{1,16}$/.test(raw)) throw new InputError('invalid_argument', 'ifVersion must be a non-negative integer');
  return Number(raw);
}

export function checkValue(value: Uint8Array, limits: Limits = DEFAULT_LIMITS): void {
  if (value.length > limits.valueMaxBytes) {
    throw new InputError('value_too_large', `value is ${value.length} bytes; the limit is ${limits.valueMaxBytes}`);
  }
}

export function checkIdempotencyKey(k: string | undefined, limits: Limits = DEFAULT_LIMITS): void {
  if (k === undefined) return;
  if (k.length < 1 || k.length > limits.idempotencyKeyMaxChars) {
    throw new InputError('invalid_argument', `Idempotency-Key must be 1-${limits.idempotencyKeyMaxChars} characters`);
  }
}

export function bucketOf(t: number | undefined, bucketMs: number): number {
  return t === undefined ? STATIC_BUCKET : Math.floor(t / bucketMs);
}

/** The partition key hashed onto the ring: tenant, a 0 character, then the bucket (or "s" for static). */
export function partitionKeyString(tenant: string, bucket: number): string {
  return bucket === STATIC_BUCKET ? `${tenant}\u0000s` : `${tenant}\u0000${bucket}`;
}

/** Its UTF-8 bytes (what is hashed). */
export function partitionKeyBytes(tenant: string, bucket: number): Uint8Array {
  return utf8.encode(partitionKeyString(tenant, bucket));
}
