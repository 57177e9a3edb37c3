/**
 * A raw HTTP client for the shardkv URL shapes (PUT/GET /v1/kv/:tenant/:key,
 * GET /v1/kv/:tenant?from&to&limit), on bench/load.ts's connection pools and
 * requests. Used by the `store` target (routed to the shard leader) and by the
 * `ceiling` target (one endpoint).
 *
 * Routing `leader`: bench/load.ts's leader route (shard -> leader from
 * GET /v1/cluster, refreshed every second and after a forwarded answer or a
 * 503), except that the shard of a partition key is computed up front with the
 * SDK's copy of the ring (client/ring.ts, which a test keeps equal to the
 * server's) instead of being learned from the first answer. Stale reads go
 * round-robin over the shard's replicas. Routing `spread`: round-robin.
 */
import { ClientRing, bucketOf } from '../../client/index.ts';
import { Endpoints, doRequest, type Outcome, type Route } from '../load.ts';
import type { Consistency, KeyRef } from '../workload.ts';
import { transportErrorCode, type OpResult } from './target.ts';

export interface Ring { ring: ClientRing; bucketMs: number }

export class HttpKv {
  readonly eps: Endpoints;
  private readonly shardOfPk = new Map<string, number>();
  /** Answers that said who served them, and how many of those came from another node than the one asked. */
  readonly counters = { answers: 0, forwarded: 0 };

  constructor(urls: string[], connections: number, private readonly timeoutMs: number, private readonly route: Route,
    private readonly ring: Ring | undefined, private readonly verify: boolean, private readonly valueBytes: number) {
    this.eps = new Endpoints(urls, connections, timeoutMs);
  }

  /** Learn node ids and leaders (leader routing only). */
  async init(): Promise<void> {
    if (this.route === 'leader') await this.eps.refresh();
  }

  /** The partition key as the server sees it, with its shard taught to the router. */
  private pk(tenant: string, t: number): string {
    if (this.ring === undefined) return tenant;
    const bucket = bucketOf(t, this.ring.bucketMs);
    const pk = `${tenant}\u0000${bucket}`;
    if (!this.shardOfPk.has(pk)) {
      const shard = this.ring.ring.shardFor(tenant, bucket);
      this.shardOfPk.set(pk, shard);
      this.eps.learn(pk, shard);
    }
    return pk;
  }

  private after(idx: number, out: Outcome): OpResult {
    const asked = this.eps.nodeIdOf[idx];
    const forwarded = out.servedBy !== undefined && asked !== undefined && out.servedBy !== asked;
    if (out.servedBy !== undefined && asked !== undefined) {
      this.counters.answers++;
      if (forwarded) this.counters.forwarded++;
    }
    if (this.route === 'leader') this.eps.maybeRefresh(forwarded || (!out.ok && out.err?.startsWith('503') === true));
    return out.ok ? { ok: true } : { ok: false, code: out.err ?? 'unknown' };
  }

  async put(ref: KeyRef, value: Buffer): Promise<OpResult> {
    return this.one('put', ref, value);
  }

  async get(ref: KeyRef, consistency: Consistency): Promise<OpResult> {
    return this.one(consistency === 'stale' ? 'get-stale' : 'get-lin', ref, EMPTY);
  }

  private async one(op: 'put' | 'get-lin' | 'get-stale', ref: KeyRef, value: Buffer): Promise<OpResult> {
    const idx = this.eps.pick(this.route, op, this.pk(ref.tenant, ref.t));
    try {
      const out = await doRequest(this.eps.pools[idx]!, op, ref, value, { route: this.route, verify: this.verify, valueBytes: this.valueBytes });
      return this.after(idx, out);
    } catch (e) {
      return { ok: false, code: transportErrorCode(e) };
    }
  }

  /** One page of one tenant's time bucket (the bucket of ref.t). */
  async scan(ref: KeyRef, limit: number, consistency: Consistency, bucketMs: number): Promise<OpResult> {
    const bucket = Math.floor(ref.t / bucketMs);
    const from = bucket * bucketMs;
    const idx = this.eps.pick(this.route, consistency === 'stale' ? 'get-stale' : 'get-lin', this.pk(ref.tenant, from));
    const path = `/v1/kv/${encodeURIComponent(ref.tenant)}?from=${from}&to=${from + bucketMs - 1}&limit=${limit}&consistency=${consistency}`;
    try {
      const res = await this.eps.pools[idx]!.request({ method: 'GET', path, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs });
      const sb = res.headers['x-served-by'];
      const servedBy = typeof sb === 'string' && /^\d+$/.test(sb) ? Number(sb) : undefined;
      const text = await res.body.text();
      let body: { items?: unknown; error?: { code?: unknown } } = {};
      try { body = JSON.parse(text) as typeof body; } catch { /* not JSON */ }
      if (res.statusCode === 200 && Array.isArray(body.items)) {
        this.after(idx, { ok: true, servedBy });
        return { ok: true, items: body.items.length };
      }
      const code = typeof body.error?.code === 'string' ? body.error.code : res.statusCode === 200 ? 'bad_scan_body' : 'no_code';
      return this.after(idx, { ok: false, err: `${res.statusCode} ${code}`, servedBy });
    } catch (e) {
      return { ok: false, code: transportErrorCode(e) };
    }
  }

  async close(): Promise<void> {
    await this.eps.close();
  }
}

const EMPTY = Buffer.alloc(0);
