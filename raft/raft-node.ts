// STUB: the real implementation is being written. Signatures are final.
import type {
  ConfChange, Message, NodeId, Persisted, ProposeResult, RaftConfig, Ready, Snapshot, Status,
} from './types.ts';

export type ReadIndexResult = { ok: true } | { ok: false; code: 'not_leader' | 'transferring' };

export class RaftNode {
  constructor(config: RaftConfig, persisted: Persisted | null) { void config; void persisted; }
  /** Advance logical time by one tick. */
  tick(): void {}
  /** Feed one message received from a peer. */
  step(m: Message): void { void m; }
  propose(data: Uint8Array): ProposeResult { void data; throw new Error('stub'); }
  /** Propose many entries at once; result carries the index of the first. */
  proposeMany(data: Uint8Array[]): ProposeResult { void data; throw new Error('stub'); }
  proposeConfChange(change: ConfChange): ProposeResult { void change; throw new Error('stub'); }
  /** Request a linearizable read point; answered later in Ready.readStates with the same context. */
  readIndex(context: number): ReadIndexResult { void context; throw new Error('stub'); }
  transferLeadership(to: NodeId): boolean { void to; return false; }
  /** Start an election now (tests, golden transcripts). */
  campaign(): void {}
  hasReady(): boolean { return false; }
  ready(): Ready { throw new Error('stub'); }
  /** Call after the ready has been persisted, sent and applied. */
  advance(rd: Ready): void { void rd; }
  /** Take a snapshot at `index` (<= applied) whose state-machine image is `data`, and drop the log up to it. */
  compact(index: number, data: Uint8Array): void { void index; void data; }
  reportUnreachable(id: NodeId): void { void id; }
  reportSnapshot(id: NodeId, ok: boolean): void { void id; void ok; }
  currentSnapshot(): Snapshot | null { return null; }
  status(): Status { throw new Error('stub'); }
}

export function defaultRaftConfig(id: NodeId, conf: { voters: NodeId[]; learners: NodeId[] }, random: () => number): RaftConfig {
  return {
    id, initialConf: conf, electionTicks: 10, heartbeatTicks: 1, random,
    preVote: true, checkQuorum: true, readOnly: 'safe', leaseDriftTicks: 2,
    maxMsgBytes: 1 << 20, maxInflightMsgs: 256, maxUncommittedBytes: 64 << 20,
    maxApplyBytes: 4 << 20, applied: 0,
  };
}
