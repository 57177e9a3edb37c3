/**
 * Target `store`: shardkv over its HTTP API — a running cluster
 * (--endpoints) or a throwaway one started through ./cluster.sh in a temp
 * KV_DATA_DIR on free non-default ports, stopped and cleaned by close() (and by
 * the cleanup registry on any other way out).
 *
 * Client `raw` (default): HttpKv with leader routing (see http-kv.ts): each
 * request goes straight to the shard's leader, as the SDK would send it, with
 * no retries (errors are counted). Client `sdk`: the KvClient of client/, with
 * its own routing, timeouts and retries (errors are what is left after them).
 */
import { join } from 'node:path';
import { ClientRing, KvClient, KvError, loadHash32, type ClusterMapWire } from '../../client/index.ts';
import { registerCleanup } from '../cleanup.ts';
import { LocalCluster } from '../local-cluster.ts';
import { findFreePorts } from '../proc.ts';
import { bucketRange, type Consistency, type KeyRef } from '../workload.ts';
import { HttpKv } from './http-kv.ts';
import { transportErrorCode, type OpResult, type Target, type TargetOptions } from './target.ts';

/** Where a started cluster's HTTP ports begin (peers at +1000); the next free block of 10 is taken. */
export const STORE_BASE_PORT = 17101;

let clusterSeq = 0;

async function fetchMap(urls: string[], timeoutMs: number): Promise<ClusterMapWire> {
  const errs: string[] = [];
  for (const u of urls) {
    try {
      const r = await fetch(`${u}/v1/cluster`, { signal: AbortSignal.timeout(timeoutMs) });
      if (r.ok) return (await r.json()) as ClusterMapWire;
      errs.push(`${u}: HTTP ${r.status}`);
    } catch (e) {
      errs.push(`${u}: ${(e as Error).message}`);
    }
  }
  throw new Error(`no node answered GET /v1/cluster: ${errs.join('; ')}`);
}

export async function openStoreTarget(o: TargetOptions): Promise<Target> {
  let cluster: LocalCluster | undefined;
  let unregister = (): void => {};
  let urls = o.endpoints;
  const info: Record<string, unknown> = { client: o.storeClient };
  try {
    if (urls === undefined || urls.length === 0) {
      const base = await findFreePorts(o.nodes, STORE_BASE_PORT, [0, 1000]);
      cluster = new LocalCluster(join(o.workDir, `store-${++clusterSeq}`), {
        nodes: o.nodes, shards: o.shards, replicas: o.replicas, basePort: base, peerBasePort: base + 1000,
      }, join(o.workDir, `store-${clusterSeq}-logs`));
      const c = cluster;
      unregister = registerCleanup(`store cluster ${c.dataDir}`, () => c.teardown(), () => c.teardownSync(), { pids: () => c.nodePids(), dirs: [c.dataDir] });
      o.log(`store: ${c.command()}`);
      const ms = await c.start();
      o.log(`store: ${o.nodes} nodes up in ${(ms / 1000).toFixed(1)} s (pids ${c.nodePids().join(' ')})`);
      urls = c.endpoints();
      info['started'] = c.command();
      info['startMs'] = Math.round(ms);
    }
    const map = await fetchMap(urls, 2_000);
    info['endpoints'] = urls;
    info['shards'] = map.shards.length;
    info['replicas'] = map.shards[0]?.replicas.length;
    info['bucketMs'] = map.bucketMs;
    info['routing'] = o.storeClient === 'sdk'
      ? 'the SDK (client/KvClient): its ring, leader routing, retries and timeouts'
      : `writes and linearizable reads to the shard leader (ring from client/ring.ts, leaders from GET /v1/cluster), stale reads ${o.staleReadsTo === 'one' ? 'to node 1 (it holds a replica of every shard it serves)' : 'round-robin over the shard replicas'}`;
    if (map.bucketMs !== o.keyspace.bucketMs) {
      o.log(`store: the cluster's bucketMs is ${map.bucketMs}, the keyspace's ${o.keyspace.bucketMs}: keys are placed by the keyspace's, routed and scanned by the cluster's`);
    }
    const bucketMs = map.bucketMs;
    if (o.storeClient === 'sdk') {
      const kv = new KvClient({ endpoints: urls, connectionsPerNode: o.connections, attemptTimeoutMs: o.timeoutMs, deadlineMs: o.timeoutMs });
      return sdkTarget(kv, o, info, bucketMs, cluster, unregister);
    }
    const ring = new ClientRing(map.shards.map((s) => s.id), map.ring.vnodes, await loadHash32());
    const http = new HttpKv(urls, o.connections, o.timeoutMs, 'leader', { ring, bucketMs }, o.verify, o.valueBytes);
    http.eps.staleToFirst = o.staleReadsTo === 'one';
    await http.init();
    return rawTarget(http, info, bucketMs, cluster, unregister);
  } catch (e) {
    if (cluster !== undefined) {
      await cluster.teardown();
      unregister();
    }
    throw e;
  }
}

function closer(cluster: LocalCluster | undefined, unregister: () => void, closeClient: () => Promise<void>): () => Promise<string[]> {
  let closing: Promise<string[]> | null = null;
  return () => {
    closing ??= (async () => {
      await closeClient().catch(() => {});
      const notes = cluster === undefined ? [] : await cluster.teardown();
      unregister();
      return notes;
    })();
    return closing;
  };
}

function rawTarget(http: HttpKv, info: Record<string, unknown>, bucketMs: number, cluster: LocalCluster | undefined, unregister: () => void): Target {
  return {
    kind: 'store',
    info,
    put: (ref, value) => http.put(ref, value),
    get: (ref, c) => http.get(ref, c),
    scan: (ref, limit, c) => http.scan(ref, limit, c, bucketMs),
    serverPids: () => cluster?.nodePids() ?? [],
    counters: () => ({ ...http.counters }),
    close: closer(cluster, unregister, () => http.close()),
  };
}

function sdkError(e: unknown): OpResult {
  if (e instanceof KvError) return { ok: false, code: `${e.status ?? 'sdk'} ${e.code}` };
  return { ok: false, code: transportErrorCode(e) };
}

function sdkTarget(kv: KvClient, o: TargetOptions, info: Record<string, unknown>, bucketMs: number, cluster: LocalCluster | undefined, unregister: () => void): Target {
  const ks = { ...o.keyspace, bucketMs };
  return {
    kind: 'store',
    info,
    async put(ref: KeyRef, value: Buffer): Promise<OpResult> {
      try {
        await kv.put({ tenant: ref.tenant, key: ref.key, t: ref.t, value });
        return { ok: true };
      } catch (e) {
        return sdkError(e);
      }
    },
    async get(ref: KeyRef, consistency: Consistency): Promise<OpResult> {
      try {
        const r = await kv.get({ tenant: ref.tenant, key: ref.key, t: ref.t, consistency });
        if (r === null) return { ok: false, code: '404 not_found' };
        if (o.verify && r.value.length !== o.valueBytes) return { ok: false, code: `200 bad_value_length(${r.value.length})` };
        return { ok: true };
      } catch (e) {
        return sdkError(e);
      }
    },
    async scan(ref: KeyRef, limit: number, consistency: Consistency): Promise<OpResult> {
      const { from, to } = bucketRange(ks, ref.t);
      let items = 0;
      try {
        for await (const _item of kv.scan({ tenant: ref.tenant, from, to, pageSize: limit, consistency })) {
          if (++items >= limit) break;
        }
        return { ok: true, items };
      } catch (e) {
        return sdkError(e);
      }
    },
    serverPids: () => cluster?.nodePids() ?? [],
    close: closer(cluster, unregister, () => kv.close()),
  };
}
