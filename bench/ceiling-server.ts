/**
 * The `ceiling` target's server: a trivial fastify server keeping values in a
 * Map — no consensus, no disk, no forwarding — with the store's URL shapes:
 *
 *   PUT /v1/kv/:tenant/:key?t=T      raw body -> 200 {"version":n,"shard":0}
 *   GET /v1/kv/:tenant/:key?t=T      200 raw value (X-Version) | 404 {"error":{...}}
 *   GET /v1/kv/:tenant?from&to&limit 200 {"items":[{key,t,version,value(base64)}],"cursor":null}
 *   GET /health
 *
 * What a request costs on this machine's HTTP stack alone: the ceiling for any
 * server here measured with the same load generator. One process (one core).
 *
 *   node --import tsx bench/ceiling-server.ts --port 17301 [--bucket-ms 3600000]
 * Prints "listening <url>" when ready; SIGTERM closes it.
 *
 * With `--replicate --id I --peers 1=PORT,2=PORT,3=PORT --dir D` (the `floor` target) a PUT is
 * answered only once its record is durable on this process and one peer (bench/floor-log.ts): the
 * least a replicated write with fsync on a majority costs here.
 */
import Fastify from 'fastify';
import { FloorLog } from './floor-log.ts';

interface Rec { value: Buffer; t: number | null; version: number }

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  const v = i < 0 ? undefined : Number(process.argv[i + 1]);
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${name} needs a positive integer`);
  return v;
}

const port = arg('--port', 17301);
const bucketMs = arg('--bucket-ms', 3_600_000);
const strArg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
};
const floor = process.argv.includes('--replicate')
  ? await FloorLog.start(arg('--id', 1), new Map((strArg('--peers') ?? '').split(',').map((p) => {
    const [id, peerPort] = p.split('=').map(Number);
    return [id as number, peerPort as number];
  })), strArg('--dir') ?? '.')
  : null;

/** partition ("tenant\0bucket") -> key -> record */
const data = new Map<string, Map<string, Rec>>();
let version = 0;

const partition = (tenant: string, t: number | null): string => `${tenant}\u0000${t === null ? 's' : Math.floor(t / bucketMs)}`;
const timeOf = (t: string | undefined): number | null => (t === undefined || t === '' ? null : Number(t));
const notFound = (tenant: string, key: string) => ({ error: { code: 'not_found', message: `${tenant}/${key} does not exist`, requestId: '', outcome: 'not_applied' } });

const app = Fastify({ logger: false, bodyLimit: 2 * 1024 * 1024, keepAliveTimeout: 60_000 });
app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

app.put<{ Params: { tenant: string; key: string }; Querystring: { t?: string } }>('/v1/kv/:tenant/:key', async (req) => {
  const t = timeOf(req.query.t);
  const pk = partition(req.params.tenant, t);
  let part = data.get(pk);
  if (part === undefined) data.set(pk, (part = new Map()));
  const body = req.body;
  const value = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : '');
  if (floor !== null) {
    const key = Buffer.from(`${pk}\u0000${req.params.key}`);
    const record = Buffer.allocUnsafe(6 + key.length + value.length);
    record.writeUInt16LE(key.length, 0);
    record.writeUInt32LE(value.length, 2);
    key.copy(record, 6);
    value.copy(record, 6 + key.length);
    await floor.write(record);
  }
  part.set(req.params.key, { value, t, version: ++version });
  return { version, shard: 0 };
});

app.get<{ Params: { tenant: string; key: string }; Querystring: { t?: string } }>('/v1/kv/:tenant/:key', async (req, reply) => {
  const rec = data.get(partition(req.params.tenant, timeOf(req.query.t)))?.get(req.params.key);
  if (rec === undefined) return reply.code(404).send(notFound(req.params.tenant, req.params.key));
  reply.header('x-version', String(rec.version)).header('x-shard', '0').header('content-type', 'application/octet-stream');
  return reply.send(rec.value);
});

app.get<{ Params: { tenant: string }; Querystring: { from?: string; to?: string; limit?: string } }>('/v1/kv/:tenant', async (req) => {
  const from = Number(req.query.from ?? 0);
  const to = Number(req.query.to ?? from);
  const limit = Math.min(1000, Number(req.query.limit ?? 100));
  const items: Array<{ key: string; t: number | null; version: number; value: string }> = [];
  const part = data.get(partition(req.params.tenant, from));
  if (part !== undefined) {
    for (const [key, r] of part) {
      if (r.t !== null && (r.t < from || r.t > to)) continue;
      items.push({ key, t: r.t, version: r.version, value: r.value.toString('base64') });
      if (items.length >= limit) break;
    }
  }
  return { items, cursor: null };
});

app.get('/health', async () => ({ status: 'ok', keys: [...data.values()].reduce((n, p) => n + p.size, 0) }));

const shutdown = (): void => { void app.close().finally(() => process.exit(0)); };
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

app.listen({ host: '127.0.0.1', port }).then((url) => {
  process.stdout.write(`listening ${url}\n`);
}, (e: unknown) => {
  process.stderr.write(`ceiling-server: ${(e as Error).message}\n`);
  process.exit(1);
});
