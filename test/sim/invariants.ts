/**
 * Safety invariants checked incrementally while the simulation runs. Every
 * check is O(1) per observation except the leader-completeness check, which
 * runs once per election over the leader's uncompacted persisted log.
 *
 *  - Election safety: at most one leader per term (recorded from every
 *    node's soft state after each message/tick, and from status each step).
 *  - Log matching / state machine safety: every entry any node applies is
 *    identical (term, type, payload) to what every other node applied at the
 *    same index; a node never truncates entries at or below its own commit.
 *  - Applied/commit sanity: applied <= commit, commit never decreases while
 *    a node is alive, committed entries are handed out contiguously.
 *  - State machine agreement: two state machines that applied the same
 *    index have the same state (including states restored from snapshots).
 *  - Leader completeness: a leader of term T holds every entry known to be
 *    committed in a term < T.
 */
import { EntryType, type Entry, type NodeId } from '../../raft/index.ts';
import { payloadText } from './workload.ts';

export class Violation extends Error {
  constructor(readonly kind: string, message: string) {
    super(message);
    this.name = 'Violation';
  }
}

export function entryFingerprint(e: Entry): string {
  if (e.type === EntryType.ConfChange) {
    return `${e.term}:cc:${e.change ? `${e.change.type}/${e.change.node}` : 'null'}`;
  }
  return `${e.term}:${e.type}:${payloadText(e.data)}`;
}

interface LeaderRecord {
  id: NodeId;
  at: number;
}

export class Invariants {
  readonly leaderByTerm = new Map<number, LeaderRecord>();
  /** index -> fingerprint of the committed entry (first observation). */
  private entryFp: (string | undefined)[] = [];
  private entryTerm: number[] = [];
  /** index -> upper bound of the term in which the entry was committed. */
  private commitTermUB: number[] = [];
  private entryWho: string[] = [];
  /** index -> state machine fingerprint after applying it. */
  private stateFp: (string | undefined)[] = [];
  private stateWho: string[] = [];
  /** Highest index known committed. */
  maxCommitted = 0;
  maxTerm = 0;
  elections = 0;

  fail(kind: string, message: string): never {
    throw new Violation(kind, message);
  }

  leader(term: number, id: NodeId, now: number): void {
    const prev = this.leaderByTerm.get(term);
    if (prev === undefined) {
      this.leaderByTerm.set(term, { id, at: now });
      this.elections++;
      if (term > this.maxTerm) this.maxTerm = term;
      return;
    }
    if (prev.id !== id) {
      this.fail('election-safety',
        `two leaders in term ${term}: node ${prev.id} (since step ${prev.at}) and node ${id} (step ${now})`);
    }
  }

  /** A node applied (or is about to apply) committed entry `e`. */
  committed(who: string, e: Entry, observerTerm: number, now: number): void {
    const i = e.index;
    const fp = entryFingerprint(e);
    const known = this.entryFp[i];
    if (known === undefined) {
      this.entryFp[i] = fp;
      this.entryTerm[i] = e.term;
      this.commitTermUB[i] = observerTerm;
      this.entryWho[i] = `${who}@${now}`;
      if (i > this.maxCommitted) this.maxCommitted = i;
      return;
    }
    if (known !== fp) {
      this.fail('log-mismatch',
        `committed entry ${i} differs: ${who} applied [${fp}] at step ${now}, but ${this.entryWho[i]} applied [${known}]`);
    }
  }

  /** Fingerprint of the committed entry at `i`, if any node applied it. */
  committedAt(i: number): string | undefined {
    return this.entryFp[i];
  }

  commitTermBound(i: number): number | undefined {
    return this.commitTermUB[i];
  }

  committedTerm(i: number): number | undefined {
    return this.entryTerm[i];
  }

  state(who: string, index: number, fp: string, now: number, how: string): void {
    const known = this.stateFp[index];
    if (known === undefined) {
      this.stateFp[index] = fp;
      this.stateWho[index] = `${who}@${now}(${how})`;
      return;
    }
    if (known !== fp) {
      this.fail('state-divergence',
        `state machines differ at applied index ${index}: ${who} has [${fp}] (${how}, step ${now}) but ` +
        `${this.stateWho[index]} had [${known}]`);
    }
  }

  stateAt(index: number): string | undefined {
    return this.stateFp[index];
  }
}
