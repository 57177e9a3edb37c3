/**
 * The single-key read, answered straight from node:http, ahead of fastify.
 *
 * Reads are the store's most frequent request. Through fastify a stale read
 * cost a node ≈ 98 µs of its main thread against the ceiling server's 35
 * (bench/README, session 6): routing, schema checks, hooks, a logger per
 * request and headers set one by one. Here a plain
 * `GET /v1/kv/:tenant/:key?t=&consistency=&maxStalenessMs=` is parsed by hand
 * and answered with one writeHead.
 *
 * Every other case goes to fastify unchanged (`handle` returns false), as long
 * as nothing was done yet: any percent-encoding or unknown query parameter,
 * invalid input (fastify's route gives the 4xx), a replica that must forward
 * or wait for a bounded staleness, a node that failed, is closing or is at its
 * in-flight limit, the planted bug of the tests. What is answered here is
 * answered as the fastify route would: same status, headers, error body,
 * metrics and request-ID rules (test/integration/fast-get.test.ts compares the two).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { InputError, bucketOf, checkKey, checkTenant, parseTime } from '../shard/keys.ts';
import { decodeRecord } from '../shard/kv-machine.ts';
import { dataKey } from '../shard/layout.ts';
import type { ReadOutcome } from '../shard/store.ts';
import { ApiError, noLeader, noQuorum, overloaded } from './errors.ts';
import { monoNowMs } from './clock.ts';
import type { KvNode } from './runtime.ts';

const PREFIX = '/v1/kv/';
const ROUTE = '/v1/kv/:tenant/:key';
const MAX_URL = 2048;
/** Printable ASCII without '%', '+' or '#': nothing to decode, nothing fastify's parsers could read differently. */
const PLAIN = /^[\x21-\x22\x24\x26-\x2a\x2c-\x7e]*$/;

export interface FastGetDeps {
  node: KvNode;
  log: Logger;
  /** Requests in flight on this node (shared with fastify's hooks). */
  load: { inFlight: number };
  closing: () => boolean;
  requestIdOf: (req: IncomingMessage) => string;
  /** This node, another (forward) or a throw (no leader, no quorum); see http.ts. */
  consistentTarget: (shard: number) => 'local' | number;
}

interface Parsed { tenant: string; key: string; t: string | undefined; consistency: string | undefined; maxStalenessMs: string | undefined }

/** The plain form only; null for anything fastify should judge (encoded characters, other parameters, repeats). */
export function parseGet(url: string): Parsed | null {
  if (url.length > MAX_URL || !url.startsWith(PREFIX) || !PLAIN.test(url)) return null;
  const q = url.indexOf('?');
  const path = q < 0 ? url.slice(PREFIX.length) : url.slice(PREFIX.length, q);
  const slash = path.indexOf('/');
  if (slash <= 0 || slash === path.length - 1 || path.indexOf('/', slash + 1) >= 0) return null;
  const out: Parsed = { tenant: path.slice(0, slash), key: path.slice(slash + 1), t: undefined, consistency: undefined, maxStalenessMs: undefined };
  if (q < 0 || q === url.length - 1) return out;
  const query = url.slice(q + 1);
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) return null;
    const k = part.slice(0, eq);
    const v = part.slice(eq + 1);
    if (k === 't' || k === 'consistency' || k === 'maxStalenessMs') {
      if (out[k] !== undefined) return null;
      out[k] = v;
    } else return null;
  }
  return out;
}

export function fastGet(d: FastGetDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { node, log, load } = d;
  const cfg = node.cfg;
  const served = String(cfg.id);

  function finish(res: ServerResponse, started: number, status: number, consistency: string, headers: string[], body: Buffer, requestId: string): void {
    // Accounting first: it happens once even if writing throws (the server's listener then drops the socket).
    load.inFlight--;
    node.metrics.fastGets++;
    const m = node.metrics.httpChildren(ROUTE, 'GET', status, consistency);
    m.count.inc();
    const ms = performance.now() - started;
    m.duration.observe(ms / 1000);
    if (status >= 500) log.warn({ reqId: requestId, status, route: ROUTE, ms }, 'request failed');
    headers.push('content-length', String(body.length));
    res.writeHead(status, headers);
    res.end(body);
  }

  function fail(res: ServerResponse, started: number, consistency: string, head: string[], requestId: string, e: unknown): void {
    let err: ApiError;
    if (e instanceof ApiError) err = e;
    else if (e instanceof InputError) err = new ApiError(e.code === 'value_too_large' ? 413 : 400, e.code, e.message);
    else {
      log.error({ reqId: requestId, err: e }, 'internal error');
      err = new ApiError(500, 'internal', 'internal error', 'unknown');
    }
    if (err.retryAfterS !== undefined) head.push('retry-after', String(err.retryAfterS));
    head.push('content-type', 'application/json; charset=utf-8');
    const body = Buffer.from(JSON.stringify({ error: { code: err.code, message: err.message, requestId, outcome: err.outcome, ...err.extra } }));
    finish(res, started, err.status, consistency, head, body, requestId);
  }

  /** 200 with the value, or 404; the stale path reads only what has landed in LevelDB (see http.ts serveRecord). */
  function serve(res: ServerResponse, started: number, p: Parsed, keyBytes: Uint8Array, shard: number, bucket: number, consistency: 'linearizable' | 'stale', head: string[], requestId: string): void {
    let value: Buffer;
    try {
      const k = dataKey(shard, node.store.generation(shard), p.tenant, bucket, keyBytes);
      const raw = consistency === 'stale' ? node.readLanded(k) : node.readState(k);
      head.push('x-shard', String(shard), 'x-consistency', consistency, 'x-served-by', served);
      if (raw === undefined) throw new ApiError(404, 'not_found', `${p.tenant}/${p.key} does not exist`);
      const rec = decodeRecord(raw);
      head.push('x-version', String(rec.version), 'content-type', 'application/octet-stream');
      value = Buffer.from(rec.value.buffer, rec.value.byteOffset, rec.value.byteLength);
    } catch (e) {
      fail(res, started, consistency, head, requestId, e);
      return;
    }
    finish(res, started, 200, consistency, head, value, requestId);
  }

  return (req, res) => {
    if (req.method !== 'GET') return false;
    const url = req.url ?? '';
    if (!url.startsWith(PREFIX)) return false;
    const p = parseGet(url);
    if (p === null) return false;
    if (node.fatal !== null || d.closing() || load.inFlight >= cfg.maxInFlight) return false;
    if (cfg.plantBug !== null) return false;
    if (p.consistency !== undefined && p.consistency !== 'stale' && p.consistency !== 'linearizable') return false;
    const consistency = p.consistency === 'stale' ? 'stale' : 'linearizable';
    let keyBytes: Uint8Array;
    let shard: number;
    let bucket: number;
    let staleness = '';
    try {
      if (p.tenant.length > 256) return false;
      checkTenant(p.tenant);
      keyBytes = checkKey(p.key);
      bucket = bucketOf(parseTime(p.t), node.map.bucketMs);
      shard = node.ring.shardFor(p.tenant, bucket);
      if (consistency === 'stale') {
        if (!node.store.has(shard)) return false;
        const s = node.store.stalenessMs(shard, monoNowMs());
        if (p.maxStalenessMs !== undefined) {
          if (p.maxStalenessMs.length > 12) return false;
          const max = Number(p.maxStalenessMs);
          if (p.maxStalenessMs === '' || !Number.isFinite(max) || max < 0 || !(s <= max)) return false;
        }
        staleness = Number.isFinite(s) ? String(Math.round(s)) : 'unknown';
      } else if (d.consistentTarget(shard) !== 'local') return false;
    } catch {
      // Invalid input, no leader, no quorum: fastify's route answers it (nothing was done here).
      return false;
    }
    const started = performance.now();
    const requestId = d.requestIdOf(req);
    load.inFlight++;
    const head = ['x-request-id', requestId, 'x-cluster-epoch', String(node.map.epoch)];
    if (consistency === 'stale') {
      head.push('x-staleness-ms', staleness);
      serve(res, started, p, keyBytes, shard, bucket, 'stale', head, requestId);
      return true;
    }
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      try {
        fail(res, started, consistency, head, requestId, noQuorum(shard));
      } catch (e) {
        log.error({ reqId: requestId, err: e }, 'could not answer a request');
        res.destroy();
      }
    }, cfg.requestTimeoutMs);
    node.store.readIndex(shard, (out: ReadOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // This runs inside a Store round: nothing may be thrown out of it.
      try {
        if (out.ok) serve(res, started, p, keyBytes, shard, bucket, 'linearizable', head, requestId);
        else fail(res, started, consistency, head, requestId, out.code === 'overloaded' ? overloaded(`shard ${shard} read queue`) : out.code === 'no_quorum' ? noQuorum(shard) : noLeader(shard));
      } catch (e) {
        log.error({ reqId: requestId, err: e }, 'could not answer a request');
        res.destroy();
      }
    });
    node.wake();
    return true;
  };
}
