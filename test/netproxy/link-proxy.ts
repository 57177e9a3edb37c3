/**
 * A fault-injecting TCP proxy for the links between nodes: one listener per
 * ordered pair (from → to). Node `from` dials it as `to`'s peer address; it
 * forwards to `to`'s real peer port. Each link can be:
 *  - up (optionally with a delay per chunk, in order),
 *  - blackhole: a silent partition — nothing flows, connections stay open
 *    (no RST, keepalives answered), so only timeouts can tell,
 *  - reset: connections are cut and new ones refused.
 * No root, no netem (the kernel here has none): pure Node, on loopback.
 */
import net from 'node:net';

export type LinkMode = 'up' | 'blackhole' | 'reset';

interface Pipe {
  client: net.Socket;
  upstream: net.Socket;
}

class Link {
  mode: LinkMode = 'up';
  delayMs = 0;
  pipes = new Set<Pipe>();
  server!: net.Server;
  port = 0;

  constructor(readonly from: number, readonly to: number, readonly targetPort: number) {}

  async listen(): Promise<void> {
    this.server = net.createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  private accept(client: net.Socket): void {
    if (this.mode === 'reset') {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
    const pipe: Pipe = { client, upstream };
    this.pipes.add(pipe);
    const close = (): void => {
      client.destroy();
      upstream.destroy();
      this.pipes.delete(pipe);
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
    this.forward(client, upstream);
    this.forward(upstream, client);
    if (this.mode === 'blackhole') {
      client.pause();
      upstream.pause();
    }
  }

  /** Copy src → dst in order, holding each chunk for the link's delay. */
  private forward(src: net.Socket, dst: net.Socket): void {
    const queue: Array<{ at: number; chunk: Buffer }> = [];
    let timer: NodeJS.Timeout | null = null;
    const drain = (): void => {
      timer = null;
      const now = Date.now();
      while (queue.length > 0 && (queue[0] as { at: number }).at <= now) dst.write((queue.shift() as { chunk: Buffer }).chunk);
      if (queue.length > 0) timer = setTimeout(drain, (queue[0] as { at: number }).at - now);
    };
    src.on('data', (chunk: Buffer) => {
      if (this.delayMs <= 0 && queue.length === 0) {
        dst.write(chunk);
        return;
      }
      queue.push({ at: Date.now() + this.delayMs, chunk });
      if (timer === null) timer = setTimeout(drain, this.delayMs);
    });
  }

  set(mode: LinkMode, delayMs = 0): void {
    this.delayMs = delayMs;
    if (mode === this.mode) return;
    this.mode = mode;
    for (const p of this.pipes) {
      if (mode === 'reset') {
        p.client.destroy();
        p.upstream.destroy();
      } else if (mode === 'blackhole') {
        p.client.pause();
        p.upstream.pause();
      } else {
        p.client.resume();
        p.upstream.resume();
      }
    }
  }

  async close(): Promise<void> {
    for (const p of this.pipes) {
      p.client.destroy();
      p.upstream.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export class LinkProxy {
  private readonly links = new Map<string, Link>();

  private constructor(readonly ids: number[]) {}

  /** realPeerPorts: node id → the port it really listens on for peers. */
  static async start(realPeerPorts: Map<number, number>): Promise<LinkProxy> {
    const ids = [...realPeerPorts.keys()].sort((a, b) => a - b);
    const p = new LinkProxy(ids);
    for (const from of ids) {
      for (const to of ids) {
        if (from === to) continue;
        const l = new Link(from, to, realPeerPorts.get(to) as number);
        await l.listen();
        p.links.set(`${from}>${to}`, l);
      }
    }
    return p;
  }

  private link(from: number, to: number): Link {
    const l = this.links.get(`${from}>${to}`);
    if (l === undefined) throw new Error(`no link ${from}>${to}`);
    return l;
  }

  /** The port node `from` must dial to reach node `to`. */
  dialPort(from: number, to: number): number {
    return this.link(from, to).port;
  }

  set(from: number, to: number, mode: LinkMode, delayMs = 0): void {
    this.link(from, to).set(mode, delayMs);
  }

  /** Cut every link between different groups (both directions); links inside a group are healed. */
  partition(groups: number[][], mode: LinkMode = 'blackhole'): void {
    const groupOf = new Map<number, number>();
    groups.forEach((g, i) => g.forEach((id) => groupOf.set(id, i)));
    for (const l of this.links.values()) {
      const a = groupOf.get(l.from);
      const b = groupOf.get(l.to);
      l.set(a !== undefined && a === b ? 'up' : mode);
    }
  }

  /** A bridge: `bridge` sees both sides, the sides do not see each other. */
  bridge(left: number[], bridge: number, right: number[], mode: LinkMode = 'blackhole'): void {
    for (const l of this.links.values()) {
      const cross = (left.includes(l.from) && right.includes(l.to)) || (right.includes(l.from) && left.includes(l.to));
      l.set(cross ? mode : 'up');
    }
    void bridge;
  }

  /** Delay every link by ms (each chunk held, order kept). */
  delayAll(ms: number): void {
    for (const l of this.links.values()) l.set('up', ms);
  }

  heal(): void {
    for (const l of this.links.values()) l.set('up', 0);
  }

  async close(): Promise<void> {
    await Promise.all([...this.links.values()].map((l) => l.close()));
  }
}
