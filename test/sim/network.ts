/**
 * Simulated network: every message gets a random delay (so messages are
 * reordered), may be lost or duplicated, and is subject to the current
 * partition, both when sent and when it would be delivered (a partition that
 * starts while a message is in flight drops it). Time is measured in
 * simulation steps (one step = one Raft tick).
 */
import type { Message, NodeId } from '../../raft/index.ts';
import type { Prng } from './prng.ts';

export interface NetFaults {
  /** Probability that a message is lost. */
  loss: number;
  /** Probability that a message is delivered twice (with independent delays). */
  dup: number;
  /** Delay bounds in steps (inclusive), minDelay >= 1. */
  minDelay: number;
  maxDelay: number;
  /** Probability of an exceptionally long delay (stale messages). */
  longDelay: number;
  longDelayMax: number;
}

export const CALM_NET: NetFaults = { loss: 0, dup: 0, minDelay: 1, maxDelay: 2, longDelay: 0, longDelayMax: 0 };

export interface Envelope {
  m: Message;
  sentAt: number;
  /** Incarnation of the sender when sent (restarts bump it). */
  senderInc: number;
}

export type DropReason = 'loss' | 'partition' | 'down';

export class Network {
  private buckets = new Map<number, Envelope[]>();
  /** Directed blocked links, key from * 65536 + to. */
  private blocked = new Set<number>();
  private partitionDesc = '';
  faults: NetFaults;
  sent = 0;
  delivered = 0;
  dropped = 0;
  duplicated = 0;

  constructor(
    private rng: Prng,
    faults: NetFaults,
    private onDrop: (env: Envelope, reason: DropReason) => void,
  ) {
    this.faults = faults;
  }

  isBlocked(from: NodeId, to: NodeId): boolean {
    return this.blocked.size > 0 && this.blocked.has(from * 65536 + to);
  }

  get partitioned(): boolean {
    return this.blocked.size > 0;
  }

  describePartition(): string {
    return this.blocked.size === 0 ? 'none' : this.partitionDesc;
  }

  /** Split into groups that cannot talk to each other; `bridges` talk to everyone.
   *  Nodes not mentioned anywhere are unaffected. */
  setGroups(groups: NodeId[][], bridges: NodeId[] = []): void {
    this.blocked.clear();
    for (let i = 0; i < groups.length; i++) {
      for (let j = 0; j < groups.length; j++) {
        if (i === j) continue;
        for (const a of groups[i] as NodeId[]) {
          for (const b of groups[j] as NodeId[]) this.blocked.add(a * 65536 + b);
        }
      }
    }
    this.partitionDesc = groups.map((g) => `{${g.join(',')}}`).join(' | ') +
      (bridges.length ? ` bridge ${bridges.join(',')}` : '');
  }

  /** Block the directed links from -> each of `to` (asymmetric partition). */
  blockOneWay(from: NodeId, to: NodeId[]): void {
    this.blocked.clear();
    for (const b of to) this.blocked.add(from * 65536 + b);
    this.partitionDesc = `${from} -/-> {${to.join(',')}}`;
  }

  heal(): void {
    this.blocked.clear();
    this.partitionDesc = '';
  }

  send(m: Message, now: number, senderInc: number): void {
    this.sent++;
    const env: Envelope = { m, sentAt: now, senderInc };
    if (this.isBlocked(m.from, m.to)) {
      this.drop(env, 'partition');
      return;
    }
    if (this.rng.chance(this.faults.loss)) {
      this.drop(env, 'loss');
      return;
    }
    this.enqueue(env, now);
    if (this.rng.chance(this.faults.dup)) {
      this.duplicated++;
      this.enqueue({ m, sentAt: now, senderInc }, now);
    }
  }

  /** Put an envelope back for later delivery (target paused). */
  requeue(env: Envelope, at: number): void {
    this.push(at, env);
  }

  private enqueue(env: Envelope, now: number): void {
    const f = this.faults;
    let delay = f.minDelay + this.rng.int(f.maxDelay - f.minDelay + 1);
    if (f.longDelay > 0 && this.rng.chance(f.longDelay)) delay += 1 + this.rng.int(f.longDelayMax);
    this.push(now + delay, env);
  }

  private push(at: number, env: Envelope): void {
    const b = this.buckets.get(at);
    if (b) b.push(env);
    else this.buckets.set(at, [env]);
  }

  /** Envelopes due at `now`, in a random order; removed from the network.
   *  The caller still has to check partitions/liveness at delivery. */
  takeDue(now: number): Envelope[] | undefined {
    const b = this.buckets.get(now);
    if (!b) return undefined;
    this.buckets.delete(now);
    if (b.length > 1) this.rng.shuffle(b);
    return b;
  }

  drop(env: Envelope, reason: DropReason): void {
    this.dropped++;
    this.onDrop(env, reason);
  }

  inFlight(): number {
    let n = 0;
    for (const b of this.buckets.values()) n += b.length;
    return n;
  }
}
