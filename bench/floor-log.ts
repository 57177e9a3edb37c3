/**
 * The least a replicated, durable write needs, for the `floor` target (bench/ceiling-server.ts
 * `--replicate`): each process appends batches of writes to a preallocated file opened O_DSYNC (one
 * writer per process, shared by its own batches and those its peers send it: group commit) and sends
 * its own batches to its peers over TCP; a batch is committed once it is durable here and on one peer
 * (a majority of three). No terms, no elections, no log in memory, no state on disk, no checksums, no
 * recovery: the file wraps around. What a write costs in Node on this machine with fsync on a majority
 * and nothing else, so the distance from the store to it is what Raft, LevelDB and the store's own
 * bookkeeping add, and the distance from it to etcd bounds what any such design could reach here.
 */
import { constants, mkdirSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';

const FILE_BYTES = 16 << 20;
const ZEROS = Buffer.alloc(1 << 20);

/** One process's file: writes queued while one is running go out together as the next one. */
class Appender {
  private offset = 0;
  private queued: Buffer[] = [];
  private waiting: Array<() => void> = [];
  private running = false;
  constructor(private readonly fh: FileHandle) {}

  static async create(dir: string): Promise<Appender> {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, 'floor.log');
    const init = await open(path, 'w');
    for (let at = 0; at < FILE_BYTES; at += ZEROS.length) await init.write(ZEROS, 0, ZEROS.length, at);
    await init.datasync();
    await init.close();
    return new Appender(await open(path, constants.O_RDWR | constants.O_DSYNC));
  }

  /** Resolves once `buf` is durable (with whatever else was queued beside it). */
  append(buf: Buffer): Promise<void> {
    return new Promise((resolve) => {
      this.queued.push(buf);
      this.waiting.push(resolve);
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.queued.length > 0) {
      const bufs = this.queued;
      const done = this.waiting;
      this.queued = [];
      this.waiting = [];
      const body = bufs.length === 1 ? (bufs[0] as Buffer) : Buffer.concat(bufs);
      if (body.length > FILE_BYTES) throw new Error('floor: batch larger than the file');
      if (this.offset + body.length > FILE_BYTES) this.offset = 0;
      await this.fh.write(body, 0, body.length, this.offset);
      this.offset += body.length;
      for (const d of done) d();
    }
    this.running = false;
  }
}

/** Length-prefixed frames ([u32 length][u32 id][body]) out of a byte stream. */
function frames(onFrame: (id: number, body: Buffer) => void): (chunk: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    let at = 0;
    while (buf.length - at >= 8) {
      const len = buf.readUInt32LE(at);
      if (buf.length - at < 8 + len) break;
      onFrame(buf.readUInt32LE(at + 4), buf.subarray(at + 8, at + 8 + len));
      at += 8 + len;
    }
    buf = at === buf.length ? Buffer.alloc(0) : buf.subarray(at);
  };
}

export class FloorLog {
  private pending: Buffer[] = [];
  private pendingDone: Array<() => void> = [];
  private inFlight = false;
  private nextId = 1;
  /** Per batch id in flight: peer acks still needed, and what to call when committed. */
  private readonly batches = new Map<number, { acks: number; local: boolean; done: Array<() => void> }>();
  private readonly out: net.Socket[] = [];

  private constructor(private readonly appender: Appender) {}

  /**
   * `peers`: every process's peer port by id, this one's included. Listens on its own, then dials the
   * others (retrying until they listen, up to 30 s).
   */
  static async start(id: number, peers: Map<number, number>, dir: string): Promise<FloorLog> {
    const f = new FloorLog(await Appender.create(dir));
    const own = peers.get(id);
    if (own === undefined) throw new Error(`floor: no peer port for id ${id}`);
    const server = net.createServer((s) => {
      s.setNoDelay(true);
      // A peer's batch: durable here, then acknowledged by id.
      s.on('data', frames((bid, body) => {
        void f.appender.append(Buffer.from(body)).then(() => {
          const ack = Buffer.alloc(8);
          ack.writeUInt32LE(0, 0);
          ack.writeUInt32LE(bid, 4);
          s.write(ack);
        });
      }));
      s.on('error', () => s.destroy());
    });
    await new Promise<void>((res, rej) => server.once('error', rej).listen(own, '127.0.0.1', () => res()));
    for (const [pid, port] of peers) {
      if (pid === id) continue;
      f.out.push(await dial(port, (bid) => f.acked(bid)));
    }
    return f;
  }

  /** Resolves once `record` is durable here and on one peer. */
  write(record: Buffer): Promise<void> {
    return new Promise((resolve) => {
      this.pending.push(record);
      this.pendingDone.push(resolve);
      if (!this.inFlight) this.flush();
    });
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    this.inFlight = true;
    const body = Buffer.concat(this.pending);
    const done = this.pendingDone;
    this.pending = [];
    this.pendingDone = [];
    const bid = this.nextId++;
    this.batches.set(bid, { acks: 1, local: false, done });
    const head = Buffer.alloc(8);
    head.writeUInt32LE(body.length, 0);
    head.writeUInt32LE(bid, 4);
    for (const s of this.out) {
      s.cork();
      s.write(head);
      s.write(body);
      s.uncork();
    }
    void this.appender.append(body).then(() => {
      const b = this.batches.get(bid);
      if (b === undefined) return;
      b.local = true;
      this.settle(bid);
    });
  }

  private acked(bid: number): void {
    const b = this.batches.get(bid);
    if (b === undefined) return;
    b.acks--;
    this.settle(bid);
  }

  private settle(bid: number): void {
    const b = this.batches.get(bid);
    if (b === undefined || !b.local || b.acks > 0) return;
    this.batches.delete(bid);
    for (const d of b.done) d();
    this.inFlight = false;
    this.flush();
  }
}

async function dial(port: number, onAck: (bid: number) => void): Promise<net.Socket> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await new Promise<net.Socket>((res, rej) => {
        const s = net.connect(port, '127.0.0.1');
        s.setNoDelay(true);
        s.once('connect', () => {
          s.off('error', rej);
          s.on('data', frames((bid) => onAck(bid)));
          s.on('error', () => s.destroy());
          res(s);
        });
        s.once('error', rej);
      });
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`floor: could not reach peer port ${port}: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
