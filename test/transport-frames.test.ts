import net from 'node:net';
import test from 'ava';
import { pino } from 'pino';
import { Transport, type Frame } from '../node/transport.ts';

const freePort = (): Promise<number> => new Promise((resolve, reject) => {
  const srv = net.createServer();
  srv.once('error', reject);
  srv.listen(0, '127.0.0.1', () => {
    const a = srv.address();
    srv.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
  });
});

test('frames of every size arrive whole and in order, however the stream is cut (large snapshot chunks, small messages between)', async (t) => {
  const [p1, p2] = [await freePort(), await freePort()];
  const peers = new Map([[1, `127.0.0.1:${p1}`], [2, `127.0.0.1:${p2}`]]);
  const got: Frame[] = [];
  let done: () => void = () => {};
  const all = new Promise<void>((r) => { done = r; });
  const sizes = [0, 1, 3, 65_536, 1 << 20, 7, 3 << 20, 100_000, 2, (1 << 20) + 13];
  const opts = (id: number, onFrame: (from: number, f: Frame) => void) => ({
    nodeId: id, clusterId: 'kv', listenHost: '127.0.0.1', listenPort: id === 1 ? p1 : p2, peers, log: pino({ level: 'silent' }),
    maxFrameBytes: 64 << 20, maxQueuedBytes: 32 << 20, connectTimeoutMs: 1000, onFrame,
  });
  const a = new Transport(opts(1, () => {}));
  const b = new Transport(opts(2, (_from, f) => {
    got.push(f);
    if (got.length === sizes.length * 2) done();
  }));
  t.teardown(async () => { await a.close(); await b.close(); });
  await b.listen();
  await a.listen();
  for (let i = 0; i < 200 && a.connectedPeers().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  const body = (n: number, seed: number): Buffer => {
    const x = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) x[i] = (i * 31 + seed) & 0xff;
    return x;
  };
  for (const [i, n] of sizes.entries()) {
    await a.sendWithBackpressure(2, ['sc', 1, `s${i}`, 'd', body(n, i)], 10_000);
    await a.sendWithBackpressure(2, ['p', `ping-${i}`], 10_000);
  }
  await all;
  for (const [i, n] of sizes.entries()) {
    const f = got[2 * i];
    t.is(f?.[0], 'sc');
    t.is(f?.[2], `s${i}`);
    t.true(Buffer.from(f?.[4] as Uint8Array).equals(body(n, i)), `chunk ${i} of ${n} bytes`);
    t.deepEqual(got[2 * i + 1], ['p', `ping-${i}`]);
  }
});

test('a frame handler that returns a promise holds the connection: nothing more is read, the sender feels backpressure, and reading resumes once it settles', async (t) => {
  const [p1, p2] = [await freePort(), await freePort()];
  const peers = new Map([[1, `127.0.0.1:${p1}`], [2, `127.0.0.1:${p2}`]]);
  const got: string[] = [];
  let release: () => void = () => {};
  let firstSeen: () => void = () => {};
  const first = new Promise<void>((r) => { firstSeen = r; });
  const n = 32;
  let allSeen: () => void = () => {};
  const all = new Promise<void>((r) => { allSeen = r; });
  const opts = (id: number, onFrame: (from: number, f: Frame) => Promise<void> | undefined) => ({
    nodeId: id, clusterId: 'kv', listenHost: '127.0.0.1', listenPort: id === 1 ? p1 : p2, peers, log: pino({ level: 'silent' }),
    maxFrameBytes: 64 << 20, maxQueuedBytes: 64 << 20, connectTimeoutMs: 1000, onFrame,
  });
  const a = new Transport(opts(1, () => undefined));
  const b = new Transport(opts(2, (_from, f) => {
    got.push(f[2] as string);
    if (got.length === n + 1) allSeen();
    if (f[2] !== 'hold') return undefined;
    firstSeen();
    return new Promise<void>((r) => { release = r; });
  }));
  t.teardown(async () => { await a.close(); await b.close(); });
  await b.listen();
  await a.listen();
  for (let i = 0; i < 200 && a.connectedPeers().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  await a.sendWithBackpressure(2, ['sc', 1, 'hold', 'd', Buffer.alloc(10)], 10_000);
  await first;
  // 32 MiB after the held frame: more than the loopback socket buffers hold, so the sender must block.
  let sent = false;
  const sending = (async () => {
    for (let i = 0; i < n; i++) await a.sendWithBackpressure(2, ['sc', 1, `c${i}`, 'd', Buffer.alloc(1 << 20, i)], 30_000);
    sent = true;
  })();
  const blocked = await Promise.race([sending.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 500))]);
  t.true(blocked, 'the sender could not push 32 MiB past a held connection');
  t.false(sent);
  t.true(got.length < n + 1, `frames read while held: ${got.length - 1}`);
  release();
  await sending;
  await all;
  t.deepEqual(got, ['hold', ...Array.from({ length: n }, (_, i) => `c${i}`)]);
});

test('each peer is spoken to in the lower of the two protocol versions: 1 until its hello says more, and again once that connection closes', async (t) => {
  const [p1, p2] = [await freePort(), await freePort()];
  const peers = new Map([[1, `127.0.0.1:${p1}`], [2, `127.0.0.1:${p2}`]]);
  const a = new Transport({
    nodeId: 1, clusterId: 'kv', listenHost: '127.0.0.1', listenPort: p1, peers, log: pino({ level: 'silent' }),
    maxFrameBytes: 1 << 20, maxQueuedBytes: 1 << 20, connectTimeoutMs: 1000, onFrame: () => {}, protocol: 2,
  });
  t.teardown(() => a.close());
  await a.listen();
  t.is(a.protocolOf(2), 1, 'nothing heard yet');
  const waitFor = async (want: number): Promise<void> => {
    for (let i = 0; i < 200 && a.protocolOf(2) !== want; i++) await new Promise((r) => setTimeout(r, 10));
    t.is(a.protocolOf(2), want);
  };
  const hello = async (frame: Frame): Promise<net.Socket> => {
    const s = net.connect({ host: '127.0.0.1', port: p1 });
    await new Promise((r) => s.once('connect', r));
    s.write(a.encode(frame));
    return s;
  };
  const closed = async (s: net.Socket, left: number): Promise<void> => {
    s.destroy();
    for (let i = 0; i < 200 && a.inboundCount() !== left; i++) await new Promise((r) => setTimeout(r, 10));
    t.is(a.inboundCount(), left, 'the transport saw the close');
  };
  // The latest connection's hello counts: a newer release (it speaks 3, we speak 2), then one without a
  // version (a node before versions: 1), then 2 again: reconnects that overlap the connections before.
  const v3 = await hello(['hello', 'kv', 2, 3]);
  await waitFor(2);
  const none = await hello(['hello', 'kv', 2]);
  await waitFor(1);
  const v2 = await hello(['hello', 'kv', 2, 2]);
  await waitFor(2);
  // Superseded connections closing change nothing; the current one closing forgets the version.
  await closed(none, 2);
  t.is(a.protocolOf(2), 2);
  await closed(v3, 1);
  t.is(a.protocolOf(2), 2);
  v2.destroy();
  await waitFor(1);
});
