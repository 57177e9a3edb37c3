/**
 * Single-key reads and writes, answered straight from node:http, ahead of fastify.
 *
 * They are the store's most frequent requests. Through fastify a stale read
 * cost a node ≈ 98 µs of its main thread against the ceiling server's 35
 * (bench/README, session 6): routing, schema checks, hooks, a logger per
 * request and headers set one by one. Here the plain forms
 *   GET /v1/kv/:tenant/:key?t=&consistency=&maxStalenessMs=
 *   PUT /v1/kv/:tenant/:key?t=&ifVersion=   (a Content-Length body and a Content-Type)
 * are parsed by hand and answered with one writeHead.
 *
 * Every other case goes to fastify unchanged (the handler returns false), as
 * long as nothing was done yet: any percent-encoding or other query parameter,
 * invalid input (fastify's route gives the 4xx), a replica that must forward or
 * wait for a bounded staleness, a node that failed, is closing or is at its
 * in-flight limit, the planted bugs of the tests. What is answered here is
 * answered as the fastify routes would: same status, headers, error body,
 * metrics and request-ID rules (test/integration/fast-kv.test.ts compares the two).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { DEFAULT_LIMITS, InputError, bucketOf, checkIdempotencyKey, checkKey, checkTenant, checkValue, parseIfVersion, parseTime } from '../shard/keys.ts';
import { readRecord } from '../shard/kv-machine.ts';
import { dataKey } from '../shard/layout.ts';
import type { ProposeOutcome, ReadOutcome } from '../shard/store.ts';
import { ApiError, noLeader, noQuorum, overloaded, proposeError, timeout } from './errors.ts';
import { monoNowMs } from './clock.ts';
import { withDeadline } from './deadline.ts';
import type { HttpChildren } from './metrics.ts';
import type { KvNode } from './runtime.ts';

const PREFIX = '/v1/kv/';
const ROUTE = '/v1/kv/:tenant/:key';
const MAX_URL = 2048;
/** Printable ASCII without '%', '+' or '#': nothing to decode, nothing fastify's parsers could read differently. */
const PLAIN = /^[\x21-\x22\x24\x26-\x2a\x2c-\x7e]*$/;
const GET_QUERY = ['t', 'consistency', 'maxStalenessMs'] as const;
/** A bare type/subtype: fastify's catch-all parser takes any such body (it answers 415 to a malformed type: `a`). */
const MEDIA_TYPE = /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/i;
const PUT_QUERY = ['t', 'ifVersion'] as const;
/**
 * A value up to this size is written as a latin1 string (one char per byte): node then sends head and
 * body as one string in one write, instead of a writev of the head and a Buffer chunk.
 */
const LATIN1_BODY_MAX = 16 * 1024;

export interface FastKvDeps {
  node: KvNode;
  log: Logger;
  /** Requests in flight on this node (shared with fastify's hooks). */
  load: { inFlight: number };
  closing: () => boolean;
  requestIdOf: (req: IncomingMessage) => string;
  /** This node, another (forward) or a throw (no leader, no quorum); see http.ts. */
  consistentTarget: (shard: number) => 'local' | number;
}

export interface ParsedKv { tenant: string; key: string; q: Map<string, string> }

/** The plain form only; null for anything fastify should judge (encoded characters, other parameters, repeats). */
export function parseKvUrl(url: string, allowed: readonly string[]): ParsedKv | null {
  if (url.length > MAX_URL || !url.startsWith(PREFIX) || !PLAIN.test(url)) return null;
  const qi = url.indexOf('?');
  const path = qi < 0 ? url.slice(PREFIX.length) : url.slice(PREFIX.length, qi);
  const slash = path.indexOf('/');
  if (slash <= 0 || slash === path.length - 1 || path.indexOf('/', slash + 1) >= 0) return null;
  const out: ParsedKv = { tenant: path.slice(0, slash), key: path.slice(slash + 1), q: new Map() };
  if (qi < 0 || qi === url.length - 1) return out;
  for (const part of url.slice(qi + 1).split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) return null;
    const k = part.slice(0, eq);
    if (!allowed.includes(k) || out.q.has(k)) return null;
    out.q.set(k, part.slice(eq + 1));
  }
  return out;
}

/** One request taken here: its answer is written once, with the accounting fastify's hooks would do. */
interface Taken { res: ServerResponse; method: 'GET' | 'PUT'; consistency: 'stale' | 'linearizable' | 'none'; started: number; requestId: string; head: string[] }

export function fastKv(d: FastKvDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { node, log, load } = d;
  const cfg = node.cfg;
  const served = String(cfg.id);

  function take(req: IncomingMessage, res: ServerResponse, method: 'GET' | 'PUT', consistency: Taken['consistency']): Taken {
    const requestId = d.requestIdOf(req);
    load.inFlight++;
    return { res, method, consistency, started: performance.now(), requestId, head: ['x-request-id', requestId, 'x-cluster-epoch', String(node.map.epoch)] };
  }

  /** The metric children of this route, by status and consistency (which implies the method; a number: no label string per request). */
  const children = new Map<number, HttpChildren>();
  function metricsOf(r: Taken, status: number): HttpChildren {
    const k = status * 4 + (r.consistency === 'stale' ? 0 : r.consistency === 'linearizable' ? 1 : 2);
    let m = children.get(k);
    if (m === undefined) children.set(k, (m = node.metrics.httpChildren(ROUTE, r.method, status, r.consistency)));
    return m;
  }

  function finish(r: Taken, status: number, body: Buffer, asLatin1 = false): void {
    // Accounting first: it happens once even if writing throws (the caller then drops the socket).
    load.inFlight--;
    node.metrics.fastRequests++;
    const m = metricsOf(r, status);
    m.count.inc();
    const ms = performance.now() - r.started;
    m.duration.observe(ms / 1000);
    if (status >= 500) log.warn({ reqId: r.requestId, status, route: ROUTE, ms }, 'request failed');
    r.head.push('content-length', String(body.length));
    r.res.writeHead(status, r.head);
    if (asLatin1 && body.length <= LATIN1_BODY_MAX) r.res.end(body.toString('latin1'), 'latin1');
    else r.res.end(body);
  }

  function fail(r: Taken, e: unknown): void {
    let err: ApiError;
    if (e instanceof ApiError) err = e;
    else if (e instanceof InputError) err = new ApiError(e.code === 'value_too_large' ? 413 : 400, e.code, e.message);
    else {
      log.error({ reqId: r.requestId, err: e }, 'internal error');
      err = new ApiError(500, 'internal', 'internal error', 'unknown');
    }
    if (err.retryAfterS !== undefined) r.head.push('retry-after', String(err.retryAfterS));
    r.head.push('content-type', 'application/json; charset=utf-8');
    finish(r, err.status, Buffer.from(JSON.stringify({ error: { code: err.code, message: err.message, requestId: r.requestId, outcome: err.outcome, ...err.extra } })));
  }

  /** For callbacks run inside a Store round or a timer: nothing may be thrown out of them. */
  function guarded(r: Taken, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      log.error({ reqId: r.requestId, err: e }, 'could not answer a request');
      r.res.destroy();
    }
  }

  /** `done` at most once: with the outcome, or `onTimeout` after the request deadline; both guarded. */
  const deadline = <T>(r: Taken, done: (v: T) => void, onTimeout: () => void): ((v: T) => void) =>
    withDeadline<T>(cfg.requestTimeoutMs, (fn) => guarded(r, fn), done, onTimeout);

  const usable = (): boolean => node.fatal === null && !d.closing() && load.inFlight < cfg.maxInFlight && cfg.plantBug === null;

  /** 200 with the value, or 404; the stale path reads only what has landed in LevelDB (see http.ts serveRecord). */
  function serve(r: Taken, p: ParsedKv, shard: number, bucket: number, consistency: 'linearizable' | 'stale'): void {
    let value: Buffer;
    try {
      const k = dataKey(shard, node.store.generation(shard), p.tenant, bucket, p.key);
      const raw = consistency === 'stale' ? node.readLanded(k) : node.readState(k);
      r.head.push('x-shard', String(shard), 'x-consistency', consistency, 'x-served-by', served);
      if (raw === undefined) throw new ApiError(404, 'not_found', `${p.tenant}/${p.key} does not exist`);
      const rec = readRecord(raw);
      r.head.push('x-version', String(rec.version), 'content-type', 'application/octet-stream');
      value = Buffer.from(rec.value.buffer, rec.value.byteOffset, rec.value.byteLength);
    } catch (e) {
      fail(r, e);
      return;
    }
    finish(r, 200, value, true);
  }

  function get(req: IncomingMessage, res: ServerResponse, url: string): boolean {
    const p = parseKvUrl(url, GET_QUERY);
    if (p === null || !usable()) return false;
    const asked = p.q.get('consistency');
    if (asked !== undefined && asked !== 'stale' && asked !== 'linearizable') return false;
    const consistency = asked === 'stale' ? 'stale' : 'linearizable';
    let shard: number;
    let bucket: number;
    let staleness = '';
    try {
      if (p.tenant.length > 256) return false;
      checkTenant(p.tenant);
      // A plain URL's key is printable ASCII: its UTF-8 bytes are its characters (checkKey, without encoding it).
      if (p.key.length > DEFAULT_LIMITS.keyMaxBytes) return false;
      bucket = bucketOf(parseTime(p.q.get('t')), node.map.bucketMs);
      shard = node.ring.shardFor(p.tenant, bucket);
      if (consistency === 'stale') {
        if (!node.store.has(shard) || node.store.lostStateUnserved(shard)) return false;
        const s = node.store.stalenessMs(shard, monoNowMs());
        const bound = p.q.get('maxStalenessMs');
        if (bound !== undefined) {
          const max = Number(bound);
          if (bound === '' || bound.length > 12 || !Number.isFinite(max) || max < 0 || !(s <= max)) return false;
        }
        staleness = Number.isFinite(s) ? String(Math.round(s)) : 'unknown';
      } else if (d.consistentTarget(shard) !== 'local') return false;
    } catch {
      // Invalid input, no leader, no quorum: fastify's route answers it (nothing was done here).
      return false;
    }
    const r = take(req, res, 'GET', consistency);
    if (consistency === 'stale') {
      r.head.push('x-staleness-ms', staleness);
      serve(r, p, shard, bucket, 'stale');
      return true;
    }
    node.store.readIndex(shard, deadline<ReadOutcome>(r, (out) => {
      if (out.ok) serve(r, p, shard, bucket, 'linearizable');
      else fail(r, out.code === 'overloaded' ? overloaded(`shard ${shard} read queue`) : out.code === 'no_quorum' ? noQuorum(shard) : noLeader(shard));
    }, () => fail(r, noQuorum(shard))));
    node.wake();
    return true;
  }

  function put(req: IncomingMessage, res: ServerResponse, url: string): boolean {
    const p = parseKvUrl(url, PUT_QUERY);
    if (p === null || !usable()) return false;
    // A body of known length (no chunked encoding) within the value limit, with a plain content type: else fastify's parser judges it.
    const h = req.headers;
    const length = Number(h['content-length']);
    if (typeof h['content-type'] !== 'string' || !MEDIA_TYPE.test(h['content-type']) || h['transfer-encoding'] !== undefined ||
      !Number.isInteger(length) || length < 1 || length > DEFAULT_LIMITS.valueMaxBytes) return false;
    const idemHeader = h['idempotency-key'];
    const idem = typeof idemHeader === 'string' ? idemHeader : undefined;
    let keyBytes: Uint8Array;
    let t: number | undefined;
    let ifVersion: number | null;
    let shard: number;
    let bucket: number;
    try {
      if (p.tenant.length > 256) return false;
      checkTenant(p.tenant);
      keyBytes = checkKey(p.key);
      t = parseTime(p.q.get('t'));
      ifVersion = parseIfVersion(p.q.get('ifVersion'));
      checkIdempotencyKey(idem);
      bucket = bucketOf(t, node.map.bucketMs);
      shard = node.ring.shardFor(p.tenant, bucket);
      if (d.consistentTarget(shard) !== 'local') return false;
    } catch {
      return false;
    }
    const r = take(req, res, 'PUT', 'none');
    const chunks: Buffer[] = [];
    let size = 0;
    let ended = false;
    req.on('data', (c: Buffer) => {
      chunks.push(c);
      size += c.length;
    });
    // A client gone before its body came, or too slow to send it within the request deadline: nothing
    // to answer, nothing proposed (the connection is dropped, and with it the in-flight slot).
    const bodyTimer = setTimeout(() => {
      if (!ended) req.destroy();
    }, cfg.requestTimeoutMs);
    req.on('close', () => {
      if (ended) return;
      ended = true;
      clearTimeout(bodyTimer);
      load.inFlight--;
    });
    req.on('end', () => {
      if (ended) return;
      ended = true;
      clearTimeout(bodyTimer);
      guarded(r, () => {
        const value = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
        try {
          checkValue(value);
        } catch (e) {
          fail(r, e);
          return;
        }
        // Leadership may have moved while the body came: propose answers not_leader then (503 no_leader).
        node.store.propose(shard, { op: 'put', tenant: p.tenant, bucket, key: keyBytes, t: t ?? null, value, ifVersion, idem: idem ?? null, time: Date.now() },
          deadline<ProposeOutcome>(r, (out) => {
            if (!out.ok) return fail(r, proposeError(shard, out));
            const res = out.result;
            if (res.kind === 'conflict') return fail(r, new ApiError(409, 'version_mismatch', `version is ${res.currentVersion}, not ${ifVersion}`, 'not_applied', { currentVersion: res.currentVersion }));
            r.head.push('x-served-by', served, 'content-type', 'application/json; charset=utf-8');
            finish(r, 200, Buffer.from(`{"version":${res.kind === 'put' ? res.version : 0},"shard":${shard}}`));
          }, () => fail(r, timeout(`waiting for shard ${shard} to commit`, 'unknown'))));
        node.wake();
      });
    });
    return true;
  }

  return (req, res) => {
    const url = req.url ?? '';
    if (!url.startsWith(PREFIX)) return false;
    if (req.method === 'GET') return get(req, res, url);
    if (req.method === 'PUT') return put(req, res, url);
    return false;
  };
}
