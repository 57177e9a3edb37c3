import net from 'node:net';
import { Packr } from 'msgpackr';
import type { Logger } from 'pino';

/**
 * Peer transport: one outbound TCP connection to every peer (so one in each
 * direction per node pair), length-prefixed msgpack frames, one frame per
 * peer per round carrying every shard's messages. Messages to an unreachable
 * or slow peer are dropped, never buffered without bound: Raft retransmits.
 * A malformed frame closes that connection and is logged; it never crashes
 * the node.
 */

export type Frame =
  /** protocol: the peer protocol version the sender speaks (shard/raft-codec.ts); absent = 1. */
  | ['hello', clusterId: string, from: number, protocol?: number]
  | ['m', items: unknown[]]
  /** A snapshot chunk: records packed as in node/snapshot-chunks.ts. */
  // seq: the chunk's number in its stream from 0; chunks: how many the stream sent. Both absent from a
  // sender of an older release (the receiver then cannot tell a stream that lost chunks).
  | ['sc', shard: number, snapId: string, kind: 'd' | 'i', records: Uint8Array, seq?: number]
  | ['sd', shard: number, snapId: string, msg: unknown, chunks?: number]
  /** The receiver gave up stream snapId of that shard (peer protocol 3): its sender stops it and streams again. */
  | ['sx', shard: number, snapId: string, why: string]
  /** Node-level heartbeat, one per node pair per tick, whatever the shard count. */
  | ['p', incarnation: string];

export interface TransportOptions {
  nodeId: number;
  clusterId: string;
  listenHost: string;
  listenPort: number;
  peers: Map<number, string>; // id -> host:port
  log: Logger;
  maxFrameBytes: number;
  /** Bytes queued in a socket beyond which messages to that peer are dropped. */
  maxQueuedBytes: number;
  connectTimeoutMs: number;
  /** The peer protocol version this node speaks (announced in its hello; default 1). */
  protocol?: number;
  /**
   * A returned promise holds that connection: nothing more is read from it
   * until the promise settles (the kernel's socket buffers then push back on
   * the sender). The snapshot receiver bounds its write backlog this way.
   */
  onFrame: (from: number, f: Frame) => Promise<void> | undefined | void;
  metrics?: TransportMetrics;
}

export interface TransportMetrics {
  bytesSent(peer: number, n: number): void;
  bytesReceived(peer: number, n: number): void;
  reconnect(peer: number): void;
  dropped(peer: number, reason: string, n: number): void;
  badFrame(): void;
}

const packOpts = () => ({ useRecords: false, mapsAsObjects: true });

class PeerLink {
  socket: net.Socket | null = null;
  connected = false;
  attempt = 0;
  timer: NodeJS.Timeout | null = null;
  closed = false;
  drainWaiters: Array<() => void> = [];

  constructor(readonly id: number, readonly addr: string, private readonly t: Transport) {}

  start(): void {
    if (this.closed) return;
    const [host, portStr] = splitAddr(this.addr);
    const s = net.connect({ host, port: Number(portStr), noDelay: true });
    this.socket = s;
    s.setTimeout(this.t.opts.connectTimeoutMs);
    s.on('timeout', () => s.destroy(new Error('connect timeout')));
    s.on('connect', () => {
      s.setTimeout(0);
      s.setKeepAlive(true, 1000);
      this.connected = true;
      this.attempt = 0;
      s.write(this.t.encode(['hello', this.t.opts.clusterId, this.t.opts.nodeId, this.t.protocol]));
      this.t.opts.log.info({ peer: this.id }, 'peer connected');
    });
    s.on('drain', () => this.flushDrainWaiters());
    s.on('data', () => { /* peers never answer on our outbound link */ });
    s.on('error', () => { /* 'close' follows */ });
    s.on('close', () => {
      const was = this.connected;
      this.connected = false;
      this.socket = null;
      this.flushDrainWaiters();
      if (this.closed) return;
      if (was) this.t.opts.log.warn({ peer: this.id }, 'peer connection lost');
      this.t.opts.metrics?.reconnect(this.id);
      // Exponential backoff with full jitter, 50 ms .. 2 s.
      const cap = Math.min(2000, 50 * 2 ** Math.min(this.attempt++, 6));
      this.timer = setTimeout(() => this.start(), Math.random() * cap);
    });
  }

  flushDrainWaiters(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }

  stop(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.socket?.destroy();
  }
}

function splitAddr(addr: string): [string, string] {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), addr.slice(i + 1)];
}

export class Transport {
  private readonly links = new Map<number, PeerLink>();
  private server: net.Server | null = null;
  private readonly inbound = new Set<net.Socket>();
  private readonly packr = new Packr(packOpts());
  /** What each peer announced in the hello of its connection to us, and that connection. */
  private readonly heardProtocol = new Map<number, { protocol: number; socket: net.Socket }>();
  readonly protocol: number;

  constructor(readonly opts: TransportOptions) {
    this.protocol = opts.protocol ?? 1;
    for (const [id, addr] of opts.peers) if (id !== opts.nodeId) this.links.set(id, new PeerLink(id, addr, this));
  }

  encode(f: Frame): Buffer {
    const body = this.packr.pack(f);
    const out = Buffer.allocUnsafe(4 + body.length);
    out.writeUInt32BE(body.length, 0);
    body.copy(out, 4);
    return out;
  }

  async listen(): Promise<void> {
    const server = net.createServer((s) => this.accept(s));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.listenPort, this.opts.listenHost, () => resolve());
    });
    for (const l of this.links.values()) l.start();
  }

  private accept(s: net.Socket): void {
    this.inbound.add(s);
    s.setNoDelay(true);
    const unpackr = new Packr(packOpts());
    let buf: Buffer = Buffer.alloc(0);
    // Data received after buf, joined to it only once the frame it belongs to is complete: joining
    // on every read copied a 1 MiB snapshot chunk ~16 times (64 KiB reads).
    let held: Buffer[] = [];
    let heldBytes = 0;
    /** Bytes buf must hold before the next frame can be read. */
    let need = 4;
    let from = 0;
    /** Holds (promises from onFrame) not yet settled: the socket is paused while there are any. */
    let holds = 0;
    const fail = (why: string): void => {
      this.opts.metrics?.badFrame();
      this.opts.log.warn({ remote: s.remoteAddress, peer: from, why }, 'closing peer connection: bad frame');
      s.destroy();
    };
    s.on('data', (chunk: Buffer) => {
      if (buf.length + heldBytes + chunk.length < need) {
        held.push(chunk);
        heldBytes += chunk.length;
        return;
      }
      buf = buf.length === 0 && held.length === 0 ? chunk : Buffer.concat([buf, ...held, chunk]);
      held = [];
      heldBytes = 0;
      need = 4;
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (len > this.opts.maxFrameBytes) return fail(`frame of ${len} bytes`);
        if (buf.length < 4 + len) {
          need = 4 + len;
          break;
        }
        const body = buf.subarray(4, 4 + len);
        buf = buf.subarray(4 + len);
        let f: unknown;
        try {
          f = unpackr.unpack(body);
        } catch {
          return fail('undecodable frame');
        }
        if (!Array.isArray(f) || typeof f[0] !== 'string') return fail('frame is not a tagged array');
        if (from === 0) {
          if (f[0] !== 'hello' || f[1] !== this.opts.clusterId || !this.links.has(f[2] as number)) return fail('bad hello');
          from = f[2] as number;
          // A hello without a version is from a node before versions: protocol 1.
          const p = f.length >= 4 && Number.isSafeInteger(f[3]) && (f[3] as number) >= 1 ? (f[3] as number) : 1;
          const before = this.heardProtocol.get(from)?.protocol;
          this.heardProtocol.set(from, { protocol: p, socket: s });
          if (before !== p) this.opts.log.info({ peer: from, protocol: p, speaking: Math.min(p, this.protocol) }, 'peer protocol');
          continue;
        }
        this.opts.metrics?.bytesReceived(from, len + 4);
        let hold: Promise<void> | undefined | void;
        try {
          hold = this.opts.onFrame(from, f as Frame);
        } catch (e) {
          return fail(`rejected frame: ${(e as Error).message}`);
        }
        // The frames already read are handled; the socket reads nothing more until every hold settles.
        if (hold instanceof Promise) {
          if (holds++ === 0) s.pause();
          const release = (): void => {
            if (--holds === 0 && !s.destroyed) s.resume();
          };
          hold.then(release, release);
        }
      }
    });
    s.on('error', () => { /* close follows */ });
    s.on('close', () => {
      this.inbound.delete(s);
      // The peer may come back as another version (a rolling upgrade or a rollback): until its next
      // hello it gets the lowest version, which every node reads.
      if (this.heardProtocol.get(from)?.socket === s) this.heardProtocol.delete(from);
    });
  }

  /**
   * The protocol version to encode messages to `peer` with: the lower of ours
   * and the one its latest connection to us announced; 1 until it has said.
   */
  protocolOf(peer: number): number {
    return Math.min(this.protocol, this.heardProtocol.get(peer)?.protocol ?? 1);
  }

  /** Send one frame now, or drop it if the peer is down or too far behind. Returns whether it was sent. */
  send(to: number, f: Frame, count = 1): boolean {
    const l = this.links.get(to);
    if (l === undefined) return false;
    if (!l.connected || l.socket === null) {
      this.opts.metrics?.dropped(to, 'disconnected', count);
      return false;
    }
    if (l.socket.writableLength > this.opts.maxQueuedBytes) {
      this.opts.metrics?.dropped(to, 'backlog', count);
      return false;
    }
    const b = this.encode(f);
    this.opts.metrics?.bytesSent(to, b.length);
    l.socket.write(b);
    return true;
  }

  /** For bulk streams (snapshots): wait until the peer's socket has drained, or fail if it is down. */
  async sendWithBackpressure(to: number, f: Frame, timeoutMs: number): Promise<void> {
    const l = this.links.get(to);
    if (l === undefined || !l.connected || l.socket === null) throw new Error(`peer ${to} not connected`);
    const b = this.encode(f);
    this.opts.metrics?.bytesSent(to, b.length);
    if (l.socket.write(b)) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`peer ${to} did not drain within ${timeoutMs} ms`)), timeoutMs);
      l.drainWaiters.push(() => {
        clearTimeout(timer);
        if (l.connected) resolve();
        else reject(new Error(`peer ${to} disconnected`));
      });
    });
  }

  /** Connections from peers open now (for tests). */
  inboundCount(): number {
    return this.inbound.size;
  }

  connectedPeers(): number[] {
    return [...this.links.values()].filter((l) => l.connected).map((l) => l.id);
  }

  async close(): Promise<void> {
    for (const l of this.links.values()) l.stop();
    for (const s of this.inbound) s.destroy();
    await new Promise<void>((resolve) => (this.server === null ? resolve() : this.server.close(() => resolve())));
  }
}
