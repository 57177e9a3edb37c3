import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { Pool } from 'undici';
import { InputError, STATIC_BUCKET, bucketOf, checkIdempotencyKey, checkKey, checkTenant, checkValue, parseIfVersion, parseTime, DEFAULT_LIMITS } from '../shard/keys.ts';
import { decodeRecord, type KvResult } from '../shard/kv-machine.ts';
import { bucketPrefix, dataKey, prefixEnd } from '../shard/layout.ts';
import type { ProposeOutcome, ReadOutcome } from '../shard/store.ts';
import { withDeadline } from './deadline.ts';
import { ApiError, noLeader, noQuorum, overloaded, proposeError, timeout } from './errors.ts';
import type { KvNode } from './runtime.ts';
import { shardDigest } from './digest.ts';
import type { CheckResult } from './replica-check.ts';
import { monoNowMs } from './clock.ts';
import { fastKv } from './fast-kv.ts';

const FORWARD_HEADER = 'x-kv-forwarded';
const MAX_BUCKETS_PER_SCAN = 1000;

type Consistency = 'linearizable' | 'stale';

interface KvParams { tenant: string; key: string }
interface KvQuery { t?: string; ifVersion?: string; consistency?: string; maxStalenessMs?: string }
interface ScanQuery { from?: string; to?: string; static?: string; prefix?: string; limit?: string; cursor?: string; consistency?: string; maxStalenessMs?: string }

function requestIdOf(req: { headers: Record<string, string | string[] | undefined> }): string {
  const h = req.headers['x-request-id'];
  if (typeof h === 'string' && h.length > 0 && h.length <= 128) return h;
  const tp = req.headers['traceparent'];
  if (typeof tp === 'string') {
    const m = /^[0-9a-f]{2}-([0-9a-f]{32})-/.exec(tp);
    if (m !== null) return m[1] as string;
  }
  return randomUUID();
}

/**
 * Run fn; a throw goes to fastify's error handler as if thrown by the route.
 * Never throws: completions run inside the Store's rounds.
 */
function guarded(reply: FastifyReply, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    try {
      void reply.send(e);
    } catch (e2) {
      reply.log.error({ err: e2 }, 'could not answer a request');
    }
  }
}

export function buildApp(node: KvNode, log: Logger) {
  const cfg = node.cfg;
  const app = Fastify({
    loggerInstance: log,
    bodyLimit: DEFAULT_LIMITS.valueMaxBytes + 1024,
    genReqId: requestIdOf,
    // fastify 5.12 moved these two into a log controller (the top-level options print FSTDEP023/024 and go in fastify 6).
    logController: new LogController({ requestIdLogLabel: 'reqId', disableRequestLogging: true }),
    routerOptions: { maxParamLength: 2048 },
    return503OnClosing: true,
    // Plain single-key reads and writes are answered by fast-kv.ts before fastify sees them; the rest goes on to fastify.
    // A request (headers and body) must come within the request deadline, checked every second; plain
    // writes are timed exactly (fast-kv.ts). A slow sender cannot keep an in-flight slot.
    serverFactory: (handler) => {
      const opts = { requestTimeout: cfg.requestTimeoutMs, headersTimeout: cfg.requestTimeoutMs, connectionsCheckingInterval: 1000 };
      const server = createServer(opts, (req: IncomingMessage, res: ServerResponse) => {
        let taken: boolean;
        try {
          taken = fast(req, res);
        } catch (e) {
          // Writing the answer failed (its accounting is done): drop the connection, as node does.
          log.error({ err: e, url: req.url }, 'fast read path failed');
          res.destroy();
          return;
        }
        if (!taken) handler(req, res);
      });
      server.keepAliveTimeout = 72_000;
      return server;
    },
  });
  let fast: (req: IncomingMessage, res: ServerResponse) => boolean = () => false;
  let closing = false;
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });
  const pools = new Map<number, Pool>();
  const pool = (id: number): Pool => {
    let p = pools.get(id);
    if (p === undefined) {
      const n = node.map.nodes.find((x) => x.id === id);
      if (n === undefined) throw noLeader(0);
      p = new Pool(n.apiUrl, { connections: 32, connectTimeout: 1000, headersTimeout: cfg.requestTimeoutMs, bodyTimeout: cfg.requestTimeoutMs, keepAliveTimeout: 10_000 });
      pools.set(id, p);
    }
    return p;
  };
  const load = { inFlight: 0 };
  node.metrics.httpInFlight = () => load.inFlight;

  // Any body is the raw value (curl --data-binary just works).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  // Callback-style hooks: async ones cost a promise per request and hook.
  app.addHook('onRequest', (req, reply, done) => {
    reply.header('x-request-id', req.id);
    // Clients compare this with the epoch of the map they cached; a higher one means: refresh it.
    reply.header('x-cluster-epoch', String(node.map.epoch));
    if (node.fatal !== null && !['/health', '/metrics', '/ready'].includes(req.url)) {
      done(new ApiError(503, 'not_ready', `node ${cfg.id} stopped serving after an internal failure: ${node.fatal.message}`, 'not_applied', {}, 5));
      return;
    }
    if (++load.inFlight > cfg.maxInFlight) {
      done(overloaded(`${load.inFlight} requests in flight on node ${cfg.id}`));
      return;
    }
    done();
  });
  app.addHook('onResponse', (req, reply, done) => {
    load.inFlight--;
    const route = req.routeOptions.url ?? 'unknown';
    const asked = (req.query as { consistency?: string } | undefined)?.consistency;
    // A label value from the query string only if it is one we know: label sets must stay bounded.
    const consistency = asked === undefined ? (req.method === 'GET' && route.startsWith('/v1/kv') ? 'linearizable' : 'none') : asked === 'linearizable' || asked === 'stale' ? asked : 'invalid';
    const m = node.metrics.httpChildren(route, req.method, reply.statusCode, consistency);
    m.count.inc();
    m.duration.observe(reply.elapsedTime / 1000);
    if (reply.statusCode >= 500) req.log.warn({ status: reply.statusCode, route, ms: reply.elapsedTime }, 'request failed');
    done();
  });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    let e: ApiError;
    if (err instanceof ApiError) e = err;
    else if (err instanceof InputError) e = new ApiError(err.code === 'value_too_large' ? 413 : 400, err.code, err.message);
    else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') e = new ApiError(413, 'value_too_large', `value exceeds ${DEFAULT_LIMITS.valueMaxBytes} bytes`);
    else if ((err.statusCode ?? 500) < 500) e = new ApiError(err.statusCode ?? 400, 'invalid_argument', err.message);
    else {
      req.log.error({ err }, 'internal error');
      e = new ApiError(500, 'internal', 'internal error', 'unknown');
    }
    if (e.retryAfterS !== undefined) reply.header('retry-after', String(e.retryAfterS));
    void reply.code(e.status).send({ error: { code: e.code, message: e.message, requestId: req.id, outcome: e.outcome, ...e.extra } });
  });

  const kvParams = {
    type: 'object', required: ['tenant', 'key'],
    properties: { tenant: { type: 'string', maxLength: 256 }, key: { type: 'string', maxLength: 4096 } },
  } as const;
  const kvQuery = {
    type: 'object', additionalProperties: false,
    properties: {
      t: { type: 'string', maxLength: 20 }, ifVersion: { type: 'string', maxLength: 20 },
      consistency: { type: 'string', enum: ['linearizable', 'stale'] }, maxStalenessMs: { type: 'string', maxLength: 12 },
    },
  } as const;

  // ---------------------------------------------------------------- helpers

  function locate(tenant: string, t: number | undefined): { shard: number; bucket: number } {
    const bucket = bucketOf(t, node.map.bucketMs);
    return { shard: node.ring.shardFor(tenant, bucket), bucket };
  }

  function replicasOf(shard: number): number[] {
    return node.map.shards.find((s) => s.id === shard)?.replicas ?? [];
  }

  /**
   * Why a shard cannot serve consistent operations here. An election takes
   * one to two election timeouts; leaderless for longer (or too few replicas
   * reachable at all) means no quorum can be formed.
   */
  function unavailable(shard: number): ApiError {
    const reps = replicasOf(shard);
    const reachable = new Set([cfg.id, ...node.reachablePeers()]);
    const up = reps.filter((r) => reachable.has(r)).length;
    const longLeaderless = node.store.leaderlessTicks(shard) > 2 * cfg.raft.electionTicks;
    return up < Math.floor(reps.length / 2) + 1 || longLeaderless ? noQuorum(shard) : noLeader(shard);
  }

  async function forward(req: FastifyRequest, reply: FastifyReply, to: number): Promise<FastifyReply> {
    const hops = Number(req.headers[FORWARD_HEADER] ?? 0);
    if (hops >= 2) throw noLeader(0);
    const headers: Record<string, string> = { 'x-request-id': req.id, [FORWARD_HEADER]: String(hops + 1) };
    const idem = req.headers['idempotency-key'];
    if (typeof idem === 'string') headers['idempotency-key'] = idem;
    if (req.body !== undefined && req.body !== null) headers['content-type'] = 'application/octet-stream';
    let res;
    try {
      res = await pool(to).request({
        method: req.method as 'GET', path: req.url, headers, body: req.body as Buffer | undefined,
        headersTimeout: cfg.requestTimeoutMs, bodyTimeout: cfg.requestTimeoutMs,
      });
    } catch (e) {
      req.log.warn({ to, err: (e as Error).message }, 'forward failed');
      const code = (e as { code?: string }).code ?? '';
      // No connection was made: the request certainly did not reach the leader.
      const notSent = code === 'ECONNREFUSED' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND';
      if (req.method === 'GET' || notSent) {
        throw new ApiError(503, 'no_leader', `could not reach node ${to} (the shard's last known leader): ${(e as Error).message}`, 'not_applied', {}, 1);
      }
      // It may have reached the leader before the failure: unknown for mutations.
      throw timeout(`forwarding to node ${to}: ${(e as Error).message}`, 'unknown');
    }
    const body = Buffer.from(await res.body.arrayBuffer());
    for (const h of ['content-type', 'x-version', 'x-shard', 'x-consistency', 'x-staleness-ms', 'retry-after']) {
      const v = res.headers[h];
      if (typeof v === 'string') reply.header(h, v);
    }
    reply.header('x-served-by', String(res.headers['x-served-by'] ?? to));
    return reply.code(res.statusCode).send(body);
  }

  /** The node that should serve a consistent operation on shard: this one, another (forward), or none. */
  function consistentTarget(shard: number): 'local' | number {
    if (!node.store.has(shard)) {
      const reps = replicasOf(shard);
      return reps[Math.floor(Math.random() * reps.length)] as number;
    }
    if (node.store.roleOf(shard) === 'leader') {
      // A leader that has not heard from a quorum for a few heartbeats is cut off: fail fast.
      if (node.store.cutOff(shard)) throw noQuorum(shard);
      return 'local';
    }
    const leader = node.store.leaderOf(shard);
    if (leader !== 0 && leader !== cfg.id) return leader;
    throw unavailable(shard);
  }

  function consistencyOf(raw: string | undefined): Consistency {
    return raw === 'stale' ? 'stale' : 'linearizable';
  }

  /** Propose and answer from the outcome (callbacks, not promises: this is the write path). */
  function propose(reply: FastifyReply, shard: number, cmd: Parameters<KvNode['store']['propose']>[1], answer: (r: KvResult & { index: number }) => void): FastifyReply {
    node.store.propose(shard, cmd, withDeadline<ProposeOutcome>(cfg.requestTimeoutMs, (fn) => guarded(reply, fn), (out) => {
      if (!out.ok) void reply.send(proposeError(shard, out));
      else answer({ ...out.result, index: out.index });
    }, () => void reply.send(timeout(`waiting for shard ${shard} to commit`, 'unknown'))));
    node.wake();
    return reply;
  }

  /** Call `then` once a ReadIndex round shows this replica is current (else answer with the error). */
  function linearizableBarrier(reply: FastifyReply, shard: number, then: () => void): void {
    node.store.readIndex(shard, withDeadline<ReadOutcome>(cfg.requestTimeoutMs, (fn) => guarded(reply, fn), (out) => {
      if (!out.ok) void reply.send(out.code === 'overloaded' ? overloaded(`shard ${shard} read queue`) : out.code === 'no_quorum' ? noQuorum(shard) : noLeader(shard));
      else then();
    }, () => void reply.send(noQuorum(shard))));
    node.wake();
  }

  function barrier(shard: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        reject(noQuorum(shard));
      }, cfg.requestTimeoutMs);
      node.store.readIndex(shard, (out) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (!out.ok) reject(out.code === 'overloaded' ? overloaded(`shard ${shard} read queue`) : out.code === 'no_quorum' ? noQuorum(shard) : noLeader(shard));
        else resolve();
      });
      node.wake();
    });
  }

  const lostStateError = (shard: number): ApiError => new ApiError(503, 'not_ready',
    `the replica of shard ${shard} on node ${cfg.id} started without its state (a new cluster, or a lost data directory) and is recovering: it has nothing to serve yet`,
    'not_applied', { shard }, 1);

  /**
   * Enforce maxStalenessMs. A quiesced (idle) replica has heard nothing for a
   * while, so it cannot show it is fresh: wake its group and wait for a
   * heartbeat to prove it — a wake-up takes a round trip and a tick or two, far
   * more on an overloaded machine (a CI run at load 8 needed > 500 ms), so up to
   * 2 s (bounded by half the request deadline) — else answer too_stale.
   */
  function staleCheck(shard: number, q: { maxStalenessMs?: string }, reply?: FastifyReply): Promise<void> | undefined {
    if (node.store.lostStateUnserved(shard)) throw lostStateError(shard);
    const s = node.store.stalenessMs(shard, monoNowMs());
    if (q.maxStalenessMs === undefined) {
      reply?.header('x-staleness-ms', Number.isFinite(s) ? String(Math.round(s)) : 'unknown');
      return undefined;
    }
    return staleCheckBounded(shard, q, s, reply);
  }

  async function staleCheckBounded(shard: number, q: { maxStalenessMs?: string }, first: number, reply?: FastifyReply): Promise<void> {
    let s = first;
    if (q.maxStalenessMs !== undefined) {
      const max = Number(q.maxStalenessMs);
      if (!Number.isFinite(max) || max < 0) throw new InputError('invalid_argument', 'maxStalenessMs must be a non-negative number');
      if (!(s <= max) && node.store.isQuiesced(shard)) {
        node.store.wakeShard(shard);
        node.wake();
        const until = Date.now() + Math.min(cfg.requestTimeoutMs / 2, Math.max(2000, cfg.raft.electionTicks * cfg.tickMs));
        while (!(s <= max) && Date.now() < until) {
          await new Promise((r) => setTimeout(r, Math.max(5, cfg.tickMs / 5)));
          s = node.store.stalenessMs(shard, monoNowMs());
        }
      }
      if (!(s <= max)) throw new ApiError(503, 'too_stale', `replica on node ${cfg.id} may be ${Number.isFinite(s) ? Math.round(s) : 'unboundedly'} ms behind (> ${max})`, 'not_applied', { shard }, 1);
    }
    reply?.header('x-staleness-ms', Number.isFinite(s) ? String(Math.round(s)) : 'unknown');
  }

  // ---------------------------------------------------------------- routes

  app.put<{ Params: KvParams; Querystring: KvQuery }>('/v1/kv/:tenant/:key', { schema: { params: kvParams, querystring: kvQuery } }, (req, reply) => {
    const { tenant, key } = req.params;
    checkTenant(tenant);
    const keyBytes = checkKey(key);
    const t = parseTime(req.query.t);
    const ifVersion = parseIfVersion(req.query.ifVersion);
    const value = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    checkValue(value);
    const idem = req.headers['idempotency-key'];
    checkIdempotencyKey(typeof idem === 'string' ? idem : undefined);
    const { shard, bucket } = locate(tenant, t);
    const target = consistentTarget(shard);
    if (target !== 'local') return forward(req, reply, target);
    return propose(reply, shard, { op: 'put', tenant, bucket, key: keyBytes, t: t ?? null, value, ifVersion, idem: typeof idem === 'string' ? idem : null, time: Date.now() }, (r) => {
      if (r.kind === 'conflict') throw new ApiError(409, 'version_mismatch', `version is ${r.currentVersion}, not ${ifVersion}`, 'not_applied', { currentVersion: r.currentVersion });
      reply.header('x-served-by', String(cfg.id));
      void reply.send({ version: r.kind === 'put' ? r.version : 0, shard });
    });
  });

  app.delete<{ Params: KvParams; Querystring: KvQuery }>('/v1/kv/:tenant/:key', { schema: { params: kvParams, querystring: kvQuery } }, (req, reply) => {
    const { tenant, key } = req.params;
    checkTenant(tenant);
    const keyBytes = checkKey(key);
    const t = parseTime(req.query.t);
    const ifVersion = parseIfVersion(req.query.ifVersion);
    const idem = req.headers['idempotency-key'];
    checkIdempotencyKey(typeof idem === 'string' ? idem : undefined);
    const { shard, bucket } = locate(tenant, t);
    const target = consistentTarget(shard);
    if (target !== 'local') return forward(req, reply, target);
    return propose(reply, shard, { op: 'del', tenant, bucket, key: keyBytes, t: t ?? null, value: null, ifVersion, idem: typeof idem === 'string' ? idem : null, time: Date.now() }, (r) => {
      if (r.kind === 'conflict') throw new ApiError(409, 'version_mismatch', `version is ${r.currentVersion}, not ${ifVersion}`, 'not_applied', { currentVersion: r.currentVersion });
      reply.header('x-served-by', String(cfg.id));
      void reply.send(r.kind === 'del' ? { deleted: r.deleted, version: r.version } : { deleted: false, version: 0 });
    });
  });

  // Not async: a stale read is answered synchronously, a linearizable one from the ReadIndex callback.
  app.get<{ Params: KvParams; Querystring: KvQuery }>('/v1/kv/:tenant/:key', { schema: { params: kvParams, querystring: kvQuery } }, (req, reply) => {
    const { tenant, key } = req.params;
    checkTenant(tenant);
    const keyBytes = checkKey(key);
    const t = parseTime(req.query.t);
    const consistency = consistencyOf(req.query.consistency);
    const { shard, bucket } = locate(tenant, t);
    if (consistency === 'stale') {
      // No replica here, or one recovering lost state (it has nothing to serve yet): another replica answers.
      if (!node.store.has(shard) || node.store.lostStateUnserved(shard)) {
        const reps = replicasOf(shard).filter((r) => r !== cfg.id);
        if (reps.length === 0) throw lostStateError(shard);
        return forward(req, reply, reps[Math.floor(Math.random() * reps.length)] as number);
      }
      const wait = staleCheck(shard, req.query, reply);
      if (wait !== undefined) return wait.then(() => serveRecord(reply, shard, bucket, tenant, key, keyBytes, consistency)).then(() => reply);
      serveRecord(reply, shard, bucket, tenant, key, keyBytes, consistency);
      return reply;
    }
    if (cfg.plantBug === 'local-lin-reads' && node.store.has(shard)) {
      // PLANTED BUG (--plant-bug, tests only): no leader, no ReadIndex — whatever this replica has
      serveRecord(reply, shard, bucket, tenant, key, keyBytes, consistency);
      return reply;
    }
    const target = consistentTarget(shard);
    if (target !== 'local') return forward(req, reply, target);
    linearizableBarrier(reply, shard, () => serveRecord(reply, shard, bucket, tenant, key, keyBytes, consistency));
    return reply;
  });

  /**
   * Stale reads see only state that has landed in LevelDB: applied state still in the overlay (it rides
   * in the next batch) would be lost by a kill -9, and a replica must never go back in time across a
   * restart. Linearizable reads may use the overlay: after a crash they wait for a new ReadIndex.
   */
  function serveRecord(reply: FastifyReply, shard: number, bucket: number, tenant: string, key: string, keyBytes: Uint8Array, consistency: Consistency): void {
    const planted = consistency === 'stale' && cfg.plantBug === 'stale-empty-generation' ? 1 : 0;
    const k = dataKey(shard, node.store.generation(shard) + planted, tenant, bucket, keyBytes);
    const raw = consistency === 'stale' ? node.readLanded(k) : node.readState(k);
    reply.header('x-shard', String(shard)).header('x-consistency', consistency).header('x-served-by', String(cfg.id));
    if (raw === undefined) throw new ApiError(404, 'not_found', `${tenant}/${key} does not exist`);
    const rec = decodeRecord(raw);
    reply.header('x-version', String(rec.version)).header('content-type', 'application/octet-stream');
    void reply.send(Buffer.from(rec.value.buffer, rec.value.byteOffset, rec.value.byteLength));
  }

  app.get<{ Params: { tenant: string }; Querystring: ScanQuery & { bucket?: string } }>('/v1/kv/:tenant', {
    schema: {
      params: { type: 'object', required: ['tenant'], properties: { tenant: { type: 'string', maxLength: 256 } } },
      querystring: {
        type: 'object', additionalProperties: false,
        properties: {
          from: { type: 'string', maxLength: 20 }, to: { type: 'string', maxLength: 20 }, static: { type: 'string', enum: ['true', 'false'] },
          prefix: { type: 'string', maxLength: 2048 }, limit: { type: 'string', maxLength: 6 }, cursor: { type: 'string', maxLength: 4096 },
          consistency: { type: 'string', enum: ['linearizable', 'stale'] }, maxStalenessMs: { type: 'string', maxLength: 12 }, bucket: { type: 'string', maxLength: 20 },
        },
      },
    },
  }, async (req) => {
    const { tenant } = req.params;
    checkTenant(tenant);
    const q = req.query;
    const consistency = consistencyOf(q.consistency);
    const limit = q.limit === undefined ? 100 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > DEFAULT_LIMITS.scanLimitMax) throw new InputError('invalid_argument', `limit must be 1-${DEFAULT_LIMITS.scanLimitMax}`);
    const prefix = q.prefix === undefined ? new Uint8Array(0) : new TextEncoder().encode(q.prefix);
    const isStatic = q.static === 'true';
    const from = parseTime(q.from, 'from');
    const to = parseTime(q.to, 'to');
    if (!isStatic && (from === undefined || to === undefined)) throw new InputError('invalid_argument', 'a scan needs from and to (event-time range, ms), or static=true');
    if (!isStatic && (to as number) < (from as number)) throw new InputError('invalid_argument', 'to must be >= from');
    let cursor: { b: number; k: string | null } | null = null;
    if (q.cursor !== undefined) {
      try {
        cursor = JSON.parse(Buffer.from(q.cursor, 'base64url').toString('utf8')) as { b: number; k: string | null };
        if (!Number.isSafeInteger(cursor.b) || (cursor.k !== null && typeof cursor.k !== 'string')) throw new Error('shape');
      } catch {
        throw new InputError('invalid_argument', 'cursor is not one this API returned');
      }
    }
    // Internal: one bucket of a scan forwarded to a node holding its shard.
    if (q.bucket !== undefined) {
      const bucket = Number(q.bucket);
      const after = cursor === null || cursor.k === null ? null : Buffer.from(cursor.k, 'base64url');
      return { items: await scanBucketRaw(tenant, bucket, prefix, after, limit, from, to, consistency, q), cursor: null };
    }
    const firstBucket = isStatic ? STATIC_BUCKET : bucketOf(from, node.map.bucketMs);
    const lastBucket = isStatic ? STATIC_BUCKET : bucketOf(to, node.map.bucketMs);
    const items: Array<{ key: string; t: number | null; version: number; value: string }> = [];
    let b = cursor?.b ?? firstBucket;
    let after: string | null = cursor?.k ?? null;
    let visited = 0;
    while (b <= lastBucket && items.length < limit && visited < MAX_BUCKETS_PER_SCAN) {
      const page = await scanBucket(req, tenant, b, q, after, limit - items.length);
      items.push(...page.items);
      if (page.more) {
        const last = page.items[page.items.length - 1];
        return { items, cursor: Buffer.from(JSON.stringify({ b, k: last === undefined ? after : Buffer.from(last.key).toString('base64url') })).toString('base64url') };
      }
      b++;
      after = null;
      visited++;
    }
    const next = b <= lastBucket ? Buffer.from(JSON.stringify({ b, k: null })).toString('base64url') : null;
    return { items, cursor: next };
  });

  async function scanBucket(req: FastifyRequest, tenant: string, bucket: number, q: ScanQuery, after: string | null, limit: number):
    Promise<{ items: Array<{ key: string; t: number | null; version: number; value: string }>; more: boolean }> {
    const shard = node.ring.shardFor(tenant, bucket);
    const consistency = consistencyOf(q.consistency);
    let target: 'local' | number;
    if (consistency === 'stale') target = node.store.has(shard) ? 'local' : (replicasOf(shard)[0] as number);
    else target = consistentTarget(shard);
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined && k !== 'cursor' && k !== 'limit') params.set(k, String(v));
    params.set('bucket', String(bucket));
    params.set('limit', String(limit + 1));
    if (after !== null) params.set('cursor', Buffer.from(JSON.stringify({ b: bucket, k: after })).toString('base64url'));
    if (target === 'local') {
      const afterBytes = after === null ? null : Buffer.from(after, 'base64url');
      const fromT = q.from === undefined ? undefined : Number(q.from);
      const toT = q.to === undefined ? undefined : Number(q.to);
      const r = await scanBucketRaw(tenant, bucket, q.prefix === undefined ? new Uint8Array(0) : new TextEncoder().encode(q.prefix), afterBytes, limit + 1, fromT, toT, consistency, q);
      return { items: r.slice(0, limit), more: r.length > limit };
    }
    const res = await pool(target).request({
      method: 'GET', path: `/v1/kv/${encodeURIComponent(tenant)}?${params.toString()}`,
      headers: { 'x-request-id': req.id, [FORWARD_HEADER]: '1' }, headersTimeout: cfg.requestTimeoutMs, bodyTimeout: cfg.requestTimeoutMs,
    });
    const body = (await res.body.json()) as { items?: Array<{ key: string; t: number | null; version: number; value: string }>; error?: { code: string; message: string } };
    if (res.statusCode !== 200 || body.items === undefined) throw new ApiError(res.statusCode, body.error?.code ?? 'internal', body.error?.message ?? 'scan failed', 'not_applied', {}, 1);
    return { items: body.items.slice(0, limit), more: body.items.length > limit };
  }

  async function scanBucketRaw(tenant: string, bucket: number, prefix: Uint8Array, after: Uint8Array | null, limit: number,
    from: number | undefined, to: number | undefined, consistency: Consistency, q: ScanQuery) {
    const shard = node.ring.shardFor(tenant, bucket);
    if (!node.store.has(shard)) throw noLeader(shard);
    if (consistency === 'linearizable') {
      if (consistentTarget(shard) !== 'local') throw noLeader(shard);
      await barrier(shard);
    } else {
      await staleCheck(shard, q);
    }
    // The scan reads LevelDB directly: first let the latest applied changes land there.
    await node.appliedWritten();
    const bp = bucketPrefix(shard, node.store.generation(shard), tenant, bucket);
    const lo = new Uint8Array(bp.length + prefix.length);
    lo.set(bp, 0);
    lo.set(prefix, bp.length);
    const hi = prefixEnd(lo);
    const opts: { gte?: Uint8Array; gt?: Uint8Array; lt: Uint8Array } = { lt: hi };
    if (after !== null) {
      const a = new Uint8Array(bp.length + after.length);
      a.set(bp, 0);
      a.set(after, bp.length);
      opts.gt = a;
    } else opts.gte = lo;
    const out: Array<{ key: string; t: number | null; version: number; value: string }> = [];
    const it = node.dbHandle().iterator(opts);
    try {
      while (out.length < limit) {
        const chunk = await it.nextv(Math.min(256, limit - out.length + 16));
        if (chunk.length === 0) break;
        for (const [k, v] of chunk) {
          const rec = decodeRecord(v);
          if (bucket !== STATIC_BUCKET && rec.t !== null && ((from !== undefined && rec.t < from) || (to !== undefined && rec.t > to))) continue;
          out.push({ key: Buffer.from(k.subarray(bp.length)).toString('utf8'), t: rec.t, version: rec.version, value: Buffer.from(rec.value).toString('base64') });
          if (out.length >= limit) break;
        }
      }
    } finally {
      await it.close();
    }
    return out;
  }

  app.get('/v1/cluster', async () => ({
    epoch: node.map.epoch,
    bucketMs: node.map.bucketMs,
    ring: node.map.ring,
    nodeId: cfg.id,
    // Another node's state is what this node's peer link says about it.
    nodes: node.map.nodes.map((n) => {
      const reachable = node.reachablePeers();
      const state = n.id === cfg.id ? (node.isReady() ? 'up' : 'starting') : reachable.includes(n.id) ? 'up' : 'unreachable';
      return { id: n.id, apiUrl: n.apiUrl, state };
    }),
    shards: node.map.shards.map((s) => {
      if (!node.store.has(s.id)) return { id: s.id, replicas: s.replicas, leader: null, term: null, commitIndex: null, appliedIndex: null };
      const st = node.store.status(s.id);
      return { id: s.id, replicas: s.replicas, leader: st.leader === 0 ? null : st.leader, term: st.term, commitIndex: st.commit, appliedIndex: st.applied };
    }),
  }));

  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', node.metrics.registry.contentType);
    return node.metrics.registry.metrics();
  });
  // Debug: digests of this node's replicas (fault tests compare replicas after healing).
  // The digest reads LevelDB directly: first let the latest applied changes land there.
  app.get('/v1/debug/digest', async () => {
    await node.appliedWritten();
    return { node: cfg.id, shards: await Promise.all(node.store.shards().map((s) => shardDigest(node.dbHandle(), s))) };
  });

  // Debug (tests; an operator draining a node): this node's leader replica of a shard hands its leadership to
  // another replica. 200 {transferring: true} once begun (the new leader shows in /v1/cluster when done).
  app.post('/v1/debug/transfer-leader', async (req) => {
    const q = req.query as { shard?: string; to?: string };
    const shard = Number(q.shard);
    const to = Number(q.to);
    if (!Number.isSafeInteger(shard) || !Number.isSafeInteger(to)) throw new ApiError(400, 'invalid_argument', 'shard and to must be integers');
    if (!node.store.has(shard)) throw new ApiError(404, 'not_found', `node ${cfg.id} holds no replica of shard ${shard}`);
    if (!node.store.transferLeadership(shard, to)) throw new ApiError(400, 'invalid_argument', `node ${cfg.id} does not lead shard ${shard} (send it to its leader, in /v1/cluster), or ${to} is not a voter of it`);
    node.wake();
    return { transferring: true, shard, to };
  });

  // Tests only, on a node started with --fault-slow-wal-ms: change the delay of its WAL appends (a disk that stalls, then recovers).
  const faultsOn = cfg.faultSlowWalMs > 0;
  app.post('/v1/debug/fault-slow-wal', async (req) => {
    if (!faultsOn) throw new ApiError(404, 'not_found', 'faults are off: start the node with --fault-slow-wal-ms to change them');
    const ms = Number((req.query as { ms?: string }).ms);
    if (!Number.isSafeInteger(ms) || ms < 1) throw new ApiError(400, 'invalid_argument', 'ms must be an integer >= 1');
    cfg.faultSlowWalMs = ms;
    log.warn({ faultSlowWalMs: ms }, 'FAULT INJECTED: WAL append delay changed');
    return { faultSlowWalMs: ms };
  });

  // Replica checks (node/replica-check.ts): this node's hashes at checkpoints, for its peers to compare.
  app.get('/v1/debug/checks', async () => ({ node: cfg.id, checks: node.checks.list() }));
  // Now and then, fetch each peer's hashes (2 s timeout; one pass at a time) and compare them with ours.
  let comparing = false;
  const compareTimer = setInterval(() => {
    if (comparing || closing) return;
    comparing = true;
    void compareWithPeers().finally(() => { comparing = false; });
  }, cfg.checkCompareMs);
  compareTimer.unref();
  async function compareWithPeers(): Promise<void> {
    for (const n of node.map.nodes) {
      if (n.id === cfg.id || closing) continue;
      try {
        const res = await pool(n.id).request({ method: 'GET', path: '/v1/debug/checks', headersTimeout: 2000, bodyTimeout: 2000, signal: AbortSignal.timeout(3000) });
        if (res.statusCode !== 200) {
          await res.body.dump();
          continue;
        }
        // At most 1 MiB (a node keeps 16 results per shard: a few KiB each).
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of res.body) {
          size += (chunk as Buffer).length;
          if (size > 1 << 20) throw new Error('replica checks of a peer: body over 1 MiB');
          chunks.push(chunk as Buffer);
        }
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { checks?: unknown };
        const list = Array.isArray(body.checks) ? (body.checks as CheckResult[]).filter((c) =>
          Number.isSafeInteger(c?.shard) && Number.isSafeInteger(c?.index) && Number.isSafeInteger(c?.records) && typeof c?.digest === 'string') : [];
        node.checks.compare(n.id, list);
      } catch { /* the peer is down, slow or its answer unusable: next time */ }
    }
  }

  app.get('/health', async () => ({ status: 'ok', node: cfg.id }));
  app.get('/ready', async (_req, reply) => {
    if (!node.isReady()) return reply.code(503).send({ error: { code: 'not_ready', message: 'node is starting or failed', requestId: _req.id, outcome: 'not_applied' } });
    return { status: 'ready', node: cfg.id };
  });

  fast = fastKv({ node, log, load, closing: () => closing, requestIdOf, consistentTarget });

  app.addHook('onClose', async () => {
    clearInterval(compareTimer);
    await Promise.all([...pools.values()].map((p) => p.close()));
  });
  return app;
}
