/** The default transport: one keep-alive undici Pool per node. */
import { Pool } from 'undici';
import type { Transport, TransportRequest, TransportResponse } from './types.ts';

export interface UndiciTransportOptions {
  /** Keep-alive connections per node. Default 16. */
  connections?: number;
  /** TCP connect timeout, ms. Default 1000. */
  connectTimeoutMs?: number;
  /** How long an idle connection is kept, ms. Default 30,000. */
  keepAliveTimeoutMs?: number;
}

/** Network error codes meaning the request never left this process. */
export const NOT_SENT_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);

export class UndiciTransport implements Transport {
  private readonly pools = new Map<string, Pool>();
  private closed = false;

  constructor(private readonly opts: UndiciTransportOptions = {}) {}

  private pool(baseUrl: string): Pool {
    let p = this.pools.get(baseUrl);
    if (p === undefined) {
      p = new Pool(baseUrl, {
        connections: this.opts.connections ?? 16,
        connectTimeout: this.opts.connectTimeoutMs ?? 1000,
        keepAliveTimeout: this.opts.keepAliveTimeoutMs ?? 30_000,
        // The SDK enforces its own per-attempt timeout through the signal.
        headersTimeout: 0,
        bodyTimeout: 0,
      });
      this.pools.set(baseUrl, p);
    }
    return p;
  }

  async request(baseUrl: string, req: TransportRequest): Promise<TransportResponse> {
    if (this.closed) throw Object.assign(new Error('client is closed'), { code: 'ECLIENTCLOSED' });
    const res = await this.pool(baseUrl).request({
      method: req.method, path: req.path, headers: req.headers, body: req.body === undefined ? null : Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength), signal: req.signal,
    });
    const body = new Uint8Array(await res.body.arrayBuffer());
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) {
      if (typeof v === 'string') headers[k.toLowerCase()] = v;
      else if (Array.isArray(v) && v.length > 0) headers[k.toLowerCase()] = v.join(', ');
    }
    return { status: res.statusCode, headers, body };
  }

  async close(): Promise<void> {
    this.closed = true;
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => {})));
  }
}
