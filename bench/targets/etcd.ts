/**
 * Target `etcd`: a local etcd cluster (default 3 members, /usr/bin/etcd, 3.4)
 * on loopback, started by the harness: temp data dirs, free ports, a unique
 * cluster token, default settings (fsync on, 100 ms heartbeat, 1 s election).
 * Driven through its JSON gRPC gateway with undici pools (same settings as
 * the store's):
 *
 *   put   POST /v3/kv/put   {"key":b64,"value":b64}
 *   get   POST /v3/kv/range {"key":b64}                      linearizable (ReadIndex)
 *         POST /v3/kv/range {"key":b64,"serializable":true}  stale: the member's local state
 *   scan  POST /v3/kv/range {"key":b64(prefix),"range_end":b64(prefix+1),"limit":L[,"serializable":true]}
 *
 * Keys are "<tenant>/<bucket>/<key>" (bucket = floor(t / bucketMs)), so a
 * scan of one tenant's bucket is one prefix range.
 *
 * Routing: reads round-robin over the members (any member serves a
 * serializable read locally; a linearizable one after a ReadIndex round with
 * the leader), which spreads the JSON gateway's CPU — the dominant cost here —
 * over the three processes. Puts go to the leader by default
 * (`--etcd-put-route leader`), as the store's writes go straight to their
 * shard's leader: no forwarding hop. Measured here (alternating 5 s phases,
 * 64 clients) that is the faster choice: 2,550 / 3,104 / 3,320 / 2,172
 * writes/s to the leader against 755 / 1,690 / 2,049 / 2,422 round-robin
 * (a follower forwards each put to the leader over gRPC, which costs CPU on
 * both). `--etcd-put-route spread` sends puts round-robin, as a clientv3
 * client configured with every member would.
 *
 * Stopped by PID (SIGTERM, then SIGKILL after 10 s) and its data dirs removed.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'undici';
import { registerCleanup } from '../cleanup.ts';
import { alive, findFreePorts, killNow, spawnLogged, stopPid, waitFor } from '../proc.ts';
import type { Consistency, KeyRef } from '../workload.ts';
import { transportErrorCode, type OpResult, type Target, type TargetOptions } from './target.ts';

export const ETCD_BIN = process.env['ETCD_BIN'] ?? '/usr/bin/etcd';
export const ETCD_BASE_PORT = 17201;

let seq = 0;

interface Member { name: string; clientUrl: string; peerUrl: string; dataDir: string; logFile: string; pid?: number }

interface StatusReply { header?: { member_id?: string }; leader?: string; version?: string }

async function post(url: string, path: string, body: unknown, timeoutMs: number): Promise<{ status: number; json: unknown }> {
  const r = await fetch(`${url}${path}`, {
    method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await r.text();
  let json: unknown;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: r.status, json };
}

async function memberHealthy(m: Member): Promise<boolean> {
  try {
    const r = await fetch(`${m.clientUrl}/health`, { signal: AbortSignal.timeout(1_000) });
    const j = (await r.json()) as { health?: string };
    return r.ok && j.health === 'true';
  } catch {
    return false;
  }
}

/** Index of the leader among the members, if they all agree on one; and the version. */
async function leaderOf(members: Member[]): Promise<{ leader: number | undefined; version: string | undefined }> {
  const st = await Promise.all(members.map(async (m) => {
    try {
      const r = await post(m.clientUrl, '/v3/maintenance/status', {}, 1_000);
      return r.status === 200 ? (r.json as StatusReply) : undefined;
    } catch {
      return undefined;
    }
  }));
  const leaders = new Set(st.map((s) => s?.leader));
  if (leaders.size !== 1 || st.some((s) => s === undefined)) return { leader: undefined, version: st[0]?.version };
  const idx = st.findIndex((s) => s?.header?.member_id === st[0]?.leader);
  return { leader: idx < 0 ? undefined : idx, version: st[0]?.version };
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

export async function openEtcdTarget(o: TargetOptions): Promise<Target> {
  const n = o.nodes;
  const base = await findFreePorts(n, ETCD_BASE_PORT, [0, 1000]);
  const id = ++seq;
  const dir = join(o.workDir, `etcd-${id}`);
  mkdirSync(dir, { recursive: true });
  const members: Member[] = Array.from({ length: n }, (_, i) => ({
    name: `m${i + 1}`,
    clientUrl: `http://127.0.0.1:${base + i}`,
    peerUrl: `http://127.0.0.1:${base + 1000 + i}`,
    dataDir: join(dir, `m${i + 1}`),
    logFile: join(dir, `m${i + 1}.log`),
  }));
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  const token = `shardkv-bench-${process.pid}-${id}`;
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ETCD')) env[k] = v;

  const pids = (): number[] => members.map((m) => m.pid).filter((p): p is number => p !== undefined);
  const removeDirs = (): void => { for (const m of members) rmSync(m.dataDir, { recursive: true, force: true }); };
  const unregister = registerCleanup(`etcd cluster ${dir}`, async () => {
    await Promise.all(pids().map((p) => stopPid(p, 10_000)));
    removeDirs();
  }, () => { for (const p of pids()) killNow(p); removeDirs(); }, { pids, dirs: members.map((m) => m.dataDir) });

  let pools: Pool[] = [];
  let closing: Promise<string[]> | null = null;
  const close = (): Promise<string[]> => {
    closing ??= (async () => {
      await Promise.all(pools.map((p) => p.close().catch(() => {})));
      const notes = (await Promise.all(pids().map((p) => stopPid(p, 10_000)))).filter((x): x is string => x !== undefined);
      await waitFor('etcd members to exit', () => pids().every((p) => !alive(p)), 5_000, 50).catch(() => notes.push('an etcd member outlived SIGKILL'));
      removeDirs();
      unregister();
      return notes;
    })();
    return closing;
  };

  try {
    const cmds: string[] = [];
    for (const m of members) {
      const args = [
        '--name', m.name, '--data-dir', m.dataDir,
        '--listen-client-urls', m.clientUrl, '--advertise-client-urls', m.clientUrl,
        '--listen-peer-urls', m.peerUrl, '--initial-advertise-peer-urls', m.peerUrl,
        '--initial-cluster', initialCluster, '--initial-cluster-state', 'new', '--initial-cluster-token', token,
        '--logger', 'zap', '--log-outputs', 'stderr',
      ];
      cmds.push(`etcd ${args.join(' ')}`);
      const child = spawnLogged(ETCD_BIN, args, env, m.logFile);
      m.pid = child.pid;
      if (m.pid === undefined) throw new Error(`could not start ${ETCD_BIN} (is etcd installed?)`);
    }
    o.log(`etcd: ${n} members on ${members.map((m) => m.clientUrl).join(' ')} (pids ${pids().join(' ')}), data in ${dir}`);
    const t0 = performance.now();
    let leader: number | undefined;
    let version: string | undefined;
    await waitFor(`etcd to be healthy with one leader (logs ${dir}/m*.log)`, async () => {
      for (const m of members) if (m.pid === undefined || !alive(m.pid)) throw new Error(`etcd member ${m.name} exited; see ${m.logFile}`);
      if (!(await Promise.all(members.map(memberHealthy))).every(Boolean)) return false;
      ({ leader, version } = await leaderOf(members));
      return leader !== undefined;
    }, 30_000, 200);
    const startMs = performance.now() - t0;
    o.log(`etcd ${version ?? '?'}: healthy in ${(startMs / 1000).toFixed(1)} s, leader ${members[leader ?? 0]?.name}`);

    pools = members.map((m) => new Pool(m.clientUrl, {
      connections: o.connections, pipelining: 1, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 60_000,
      connectTimeout: 2_000, headersTimeout: o.timeoutMs, bodyTimeout: o.timeoutMs,
    }));
    const leaderIdx = leader ?? 0;
    let rr = 0;
    const next = (): Pool => pools[(rr = (rr + 1) % pools.length)]!;
    const valueB64Cache = new WeakMap<Buffer, string>();
    const keyOf = (ref: KeyRef): string => `${ref.tenant}/${Math.floor(ref.t / o.keyspace.bucketMs)}/${ref.key}`;

    const call = async (pool: Pool, path: string, body: string): Promise<{ status: number; json: Record<string, unknown> | undefined }> => {
      const res = await pool.request({ method: 'POST', path, body, headers: { 'content-type': 'application/json' } });
      const text = await res.body.text();
      let json: Record<string, unknown> | undefined;
      try { json = JSON.parse(text) as Record<string, unknown>; } catch { json = undefined; }
      return { status: res.statusCode, json };
    };
    const fail = (status: number, json: Record<string, unknown> | undefined): OpResult => {
      const msg = typeof json?.['message'] === 'string' ? json['message'] : typeof json?.['error'] === 'string' ? json['error'] : 'no_message';
      return { ok: false, code: `${status} ${msg}` };
    };

    const target: Target = {
      kind: 'etcd',
      info: {
        endpoints: members.map((m) => m.clientUrl),
        version,
        started: cmds,
        startMs: Math.round(startMs),
        routing: o.etcdPutRoute === 'leader'
          ? 'puts to the leader, reads round-robin over the members'
          : 'puts and reads round-robin over the members (followers forward puts to the leader)',
        gateway: 'JSON gRPC gateway: POST /v3/kv/put, /v3/kv/range',
      },
      async put(ref: KeyRef, value: Buffer): Promise<OpResult> {
        let v = valueB64Cache.get(value);
        if (v === undefined) valueB64Cache.set(value, (v = value.toString('base64')));
        const pool = o.etcdPutRoute === 'leader' ? pools[leaderIdx]! : next();
        try {
          const r = await call(pool, '/v3/kv/put', `{"key":"${b64(keyOf(ref))}","value":"${v}"}`);
          return r.status === 200 && r.json?.['header'] !== undefined ? { ok: true } : fail(r.status, r.json);
        } catch (e) {
          return { ok: false, code: transportErrorCode(e) };
        }
      },
      async get(ref: KeyRef, consistency: Consistency): Promise<OpResult> {
        const body = `{"key":"${b64(keyOf(ref))}"${consistency === 'stale' ? ',"serializable":true' : ''}}`;
        try {
          const r = await call(consistency === 'stale' && o.staleReadsTo === 'one' ? pools[0]! : next(), '/v3/kv/range', body);
          if (r.status !== 200 || r.json === undefined) return fail(r.status, r.json);
          const kvs = r.json['kvs'] as Array<{ value?: string }> | undefined;
          const val = kvs?.[0]?.value;
          if (val === undefined) return { ok: false, code: '404 not_found' };
          const len = Buffer.byteLength(val, 'base64');
          if (o.verify && len !== o.valueBytes) return { ok: false, code: `200 bad_value_length(${len})` };
          return { ok: true };
        } catch (e) {
          return { ok: false, code: transportErrorCode(e) };
        }
      },
      async scan(ref: KeyRef, limit: number, consistency: Consistency): Promise<OpResult> {
        const prefix = `${ref.tenant}/${Math.floor(ref.t / o.keyspace.bucketMs)}/`;
        const end = `${prefix.slice(0, -1)}0`; // '/' + 1 = '0': the first key after the prefix
        const body = `{"key":"${b64(prefix)}","range_end":"${b64(end)}","limit":${limit}${consistency === 'stale' ? ',"serializable":true' : ''}}`;
        try {
          const r = await call(next(), '/v3/kv/range', body);
          if (r.status !== 200 || r.json === undefined) return fail(r.status, r.json);
          const kvs = r.json['kvs'];
          return { ok: true, items: Array.isArray(kvs) ? kvs.length : 0 };
        } catch (e) {
          return { ok: false, code: transportErrorCode(e) };
        }
      },
      serverPids: pids,
      close,
    };
    return target;
  } catch (e) {
    await close();
    throw e;
  }
}
