/**
 * Deterministic cluster simulation (FoundationDB / TigerBeetle VOPR style).
 *
 * One seed fixes everything: the fault profile ("swarm testing": each seed
 * draws its own mix of loss, duplication, delays, partitions, crashes,
 * pauses, slow clocks, compactions, membership changes and core flow-control
 * limits), the network, the clients and every core's `random` (forked from
 * the seed's Prng; nothing reads Math.random or the wall clock). Time
 * advances in steps; one step is one Raft tick:
 *
 *   1. faults: restarts/heals/resumes that are due, then new faults,
 *      compaction, membership changes, leadership transfers;
 *   2. deliver the messages due now (random order) and tick every live,
 *      unpaused node (a node may skip ticks: clock skew / slow clock);
 *      clients act either before or after this (random interleaving);
 *   3. clients time out stale ops and start new ones;
 *   4. per-step invariant checks (Invariants + per-node status). Most
 *      checks run even earlier, on every Ready the hosts process.
 *
 * After `steps` steps everything heals, crashed nodes restart, clients stop
 * starting ops, and the members of the final configuration must converge
 * (same commit = last index, same applied, same state), making progress at
 * least every `convergeSteps` steps. Then the client history is checked for
 * linearizability; mutations whose outcome the client never learned are
 * first settled from what the simulator saw applied (see Workload.settle;
 * `clientView` turns that off).
 *
 * Membership: the leader removes non-leader voters (never below 3 voters),
 * adds a fresh spare as learner, promotes learners, removes learners, and
 * transfers leadership. A removed node is LEFT RUNNING (and keeps crashing
 * and restarting like any other) until the end of the run: pre-vote and
 * check-quorum must keep it from disrupting the cluster. It is excluded from
 * the convergence check. Node ids are never reused: each join uses a fresh id.
 */
import {
  LOST_VOTE, Role, MsgType, defaultRaftConfig,
  type ConfState, type Message, type NodeId, type PlantedBugs, type RaftConfig, type Status,
} from '../../raft/index.ts';
import { checkLinearizable, formatHistory } from '../lincheck/checker.ts';
import { Invariants, Violation } from './invariants.ts';
import { CALM_NET, Network, type DropReason, type Envelope, type NetFaults } from './network.ts';
import { Prng, hashString } from './prng.ts';
import { SimNode, type NodeHost } from './sim-node.ts';
import {
  Workload, type AppliedOp, type Cmd, type PendingOp, type WorkloadConfig, type WorkloadHost,
} from './workload.ts';

export type BugName = keyof PlantedBugs;
export const BUG_NAMES: BugName[] = ['commitOldTerm', 'skipVotePersist', 'readIndexNoConfirm', 'voteIgnoresLog'];

export interface FaultProfile {
  preset: Preset;
  net: NetFaults;
  /** Per-step probability of crashing a random live node. */
  crash: number;
  /** Probability that a crash is a quick bounce (restart within 1-3 steps). */
  quickRestart: number;
  downMin: number;
  downMax: number;
  /** Per-step probability, while some node campaigns, of bouncing a random voter. */
  electionCrash: number;
  /** Per-step probability of starting a partition (when none is active). */
  partition: number;
  partitionMin: number;
  partitionMax: number;
  /** Per-step probability of replacing the active partition by a new one (flapping). */
  repartition: number;
  /** Per-step probability of pausing a node (GC pause / VM freeze). */
  pause: number;
  pauseMax: number;
  /** Probability a pause hits the leader. */
  pauseLeader: number;
  /** Per-step probability that a random node compacts its log. */
  compact: number;
  /** Per-step probability of a membership change attempt. */
  confChange: number;
  /** Per-step probability of a leadership transfer attempt. */
  transfer: number;
  /** Per node per step probability of skipping a tick. */
  clockSkew: number;
  /** Probability that a crash also loses hard-state writes of Readies with
   *  mustSync=false (the host only fsyncs when told to). */
  unsyncedLoss: number;
  /** Per-step probability of crashing the current leader. */
  leaderCrash: number;
  /** Probability that a newly elected leader crashes 1-15 steps into its term. */
  newLeaderCrash: number;
  /** Probability that a newly elected leader is cut off by a partition 1-12
   *  steps into its term (its first Apps die in flight; it keeps taking
   *  proposals it cannot commit). */
  newLeaderIsolate: number;
  /** Per-step probability of a leader-churn burst: for 50-200 steps almost
   *  every new leader crashes or is cut off early (divergent uncommitted
   *  suffixes from several terms: the ground for Figure 8). */
  churnBurst: number;
  /** Per-step probability of a slow-clock episode on the leader (ticks at 20-50% rate). */
  slowLeader: number;
  /** Core flow-control knobs (small values split Apps and exercise flow control). */
  maxMsgBytes: number;
  maxInflightMsgs: number;
  /** Small values make proposals fail with 'overloaded' / apply in chunks. */
  maxUncommittedBytes: number;
  maxApplyBytes: number;
  /** Asynchronous disk (the pipelined host): a write takes 0..diskDelay steps; 0 = the synchronous host. */
  diskDelay: number;
  /** A planted bug in the host (teeth for the pipelined host): 'earlyAcks' sends
   *  every message of a Ready before it is durable (needs diskDelay > 0). */
  hostBug: 'none' | 'earlyAcks';
  /** Snapshots sent are fresh cuts at the sender's applied index, the log left whole (as the node sends them). */
  freshSnapshots: boolean;
  /** Probability that a crash of a founding voter also loses its whole storage (a lost data
   *  directory): it restarts as on its first start. Drawn from its own stream, and only for seeds
   *  without membership changes (the recovery assumes the founders are the voters) and while no
   *  other node is recovering from such a loss (one at a time). */
  diskLoss: number;
  /** Cores recover lost state before voting (RaftConfig.recoverLostState); false shows what that guards. */
  lostStateGuard: boolean;
  workload: WorkloadConfig;
}

/** Overrides of a seed's fault profile (nested objects may be partial too). */
export type ProfileOverride = Partial<Omit<FaultProfile, 'net' | 'workload'>> & {
  net?: Partial<NetFaults>;
  workload?: Partial<WorkloadConfig>;
};

export interface SimOptions {
  seed: number;
  /** Fault-phase steps (default 3000). */
  steps?: number;
  /** Initial voters (default: 3 for odd seeds, 5 for even seeds). */
  nodes?: 3 | 5;
  bug?: BugName;
  /** Trace to `log`. */
  verbose?: boolean;
  log?: (line: string) => void;
  /** Convergence must make progress (some node applies an entry or its log moves) at
   *  least every `convergeSteps` steps (default 300), and finish within
   *  20 x convergeSteps steps. */
  convergeSteps?: number;
  /** Override parts of the seed's fault profile. */
  profile?: ProfileOverride;
  /** Disable membership changes (bisecting failures; CLI --no-conf). */
  noConfChanges?: boolean;
  /** Check protocol rules directly (§5.4.2 commit rule, ReadIndex bound); default true.
   *  With false only end-to-end consequences (safety invariants, linearizability) are checked. */
  protocolChecks?: boolean;
  /** Do not settle unknown ('info') mutations from the simulator's view of what
   *  was applied; check the history exactly as the clients saw it. */
  clientView?: boolean;
  /** Skip the linearizability check (debugging). */
  skipLincheck?: boolean;
}

export interface SimStats {
  steps: number;
  elections: number;
  maxTerm: number;
  commit: number;
  crashes: number;
  partitions: number;
  pauses: number;
  compactions: number;
  snapshotsInstalled: number;
  /** Times a leader advanced commit to an old-term entry (only with the commitOldTerm bug). */
  oldTermCommits: number;
  confChanges: number;
  transfers: number;
  messages: number;
  dropped: number;
  ops: number;
  okOps: number;
  infoOps: number;
  failOps: number;
  /** Why proposals were rejected, e.g. 'not_leader:120 overloaded:3'. */
  failReasons: string;
  /** Info mutations settled from the simulator's view at the end. */
  settledOps: number;
  finalVoters: number[];
  finalLearners: number[];
}

export interface SimResult {
  seed: number;
  nodes: number;
  steps: number;
  bug: BugName | undefined;
  ok: boolean;
  /** Violation kind, e.g. 'election-safety', 'linearizability', 'lincheck-unknown', 'core-exception'. */
  kind?: string;
  message?: string;
  failedAtStep?: number;
  replay: string;
  digest: string;
  stats: SimStats;
  profile: string;
}

export function replayCommand(
  seed: number, nodes: number, steps: number, bug?: BugName, noConf = false, noProtocolChecks = false,
  profile?: ProfileOverride, clientView = false,
): string {
  return `npm run sim -- --seed ${seed} --nodes ${nodes} --steps ${steps}${bug ? ` --bug ${bug}` : ''}` +
    `${noConf ? ' --no-conf' : ''}${noProtocolChecks ? ' --no-protocol-checks' : ''}` +
    `${clientView ? ' --client-view' : ''}` +
    `${profile !== undefined && Object.keys(profile).length > 0 ? ` --profile '${JSON.stringify(profile)}'` : ''}`;
}

export function defaultNodesForSeed(seed: number): 3 | 5 {
  return (seed & 1) === 1 ? 3 : 5;
}

/** Swarm testing: every seed gets its own fault mix. */
export type Preset = 'mixed' | 'elections' | 'gray';

/**
 * Swarm testing: every seed draws its own fault mix. Half the seeds get a
 * fully random mix; a quarter lean on leader churn ('elections': leaders
 * crash early in their term, partitions flap, Apps carry one entry — the
 * ground for Figure-8 style log divergence); a quarter on gray failures of
 * the leader ('gray': paused, slow-clocked, isolated leaders while clients
 * keep talking to them).
 */
export function chooseProfile(rng: Prng): FaultProfile {
  const base = randomProfile(rng);
  const preset = rng.pick<Preset>(['mixed', 'mixed', 'elections', 'gray']);
  base.preset = preset;
  if (preset === 'elections') {
    Object.assign(base, {
      maxMsgBytes: rng.pick([1, 64]),
      maxInflightMsgs: rng.pick([1, 4]),
      leaderCrash: rng.pick([0.01, 0.02]),
      newLeaderCrash: rng.pick([0.1, 0.3]),
      newLeaderIsolate: rng.pick([0.1, 0.3]),
      churnBurst: rng.pick([0.005, 0.02]),
      quickRestart: 0.8,
      electionCrash: rng.pick([0, 0.2]),
      partition: rng.pick([0.02, 0.05]),
      partitionMax: rng.pick([20, 30]),
      repartition: rng.pick([0.05, 0.1]),
    });
    base.workload.rate = 0.9;
  } else if (preset === 'gray') {
    Object.assign(base, {
      pause: rng.pick([0.005, 0.01]),
      pauseLeader: 0.8,
      slowLeader: rng.pick([0.005, 0.01]),
      partition: rng.pick([0.01, 0.02]),
      partitionMax: rng.pick([30, 60]),
    });
    base.workload.read = 4;
    base.workload.rate = rng.pick([0.5, 0.9]);
  }
  return base;
}

function randomProfile(rng: Prng): FaultProfile {
  const maxDelay = rng.pick([2, 3, 5, 8]);
  const clients = rng.range(3, 6);
  return {
    preset: 'mixed',
    net: {
      loss: rng.pick([0, 0, 0.01, 0.03, 0.1]),
      dup: rng.pick([0, 0.01, 0.05]),
      minDelay: 1,
      maxDelay,
      longDelay: rng.pick([0, 0.002, 0.01]),
      longDelayMax: rng.pick([10, 30, 200]),
    },
    crash: rng.pick([0, 0.002, 0.005, 0.01]),
    quickRestart: rng.pick([0.2, 0.5, 0.8]),
    downMin: 2,
    downMax: rng.pick([20, 60, 150]),
    electionCrash: rng.pick([0, 0, 0.05, 0.2]),
    partition: rng.pick([0.002, 0.005, 0.01, 0.02]),
    partitionMin: 5,
    partitionMax: rng.pick([20, 40, 100, 250]),
    repartition: rng.pick([0, 0, 0.02, 0.1]),
    pause: rng.pick([0, 0.002, 0.01]),
    pauseMax: rng.pick([10, 30]),
    pauseLeader: 0.5,
    compact: rng.pick([0.002, 0.01, 0.03]),
    confChange: rng.pick([0, 0.003, 0.01]),
    transfer: rng.pick([0, 0.002, 0.01]),
    clockSkew: rng.pick([0, 0.02, 0.1]),
    leaderCrash: rng.pick([0, 0, 0.002, 0.01]),
    unsyncedLoss: rng.pick([0, 0.5]),
    newLeaderCrash: rng.pick([0, 0, 0.1, 0.3]),
    newLeaderIsolate: rng.pick([0, 0, 0.1]),
    churnBurst: rng.pick([0, 0, 0.001]),
    slowLeader: rng.pick([0, 0.003, 0.01]),
    maxMsgBytes: rng.pick([1 << 20, 1 << 20, 1, 64, 256]),
    maxInflightMsgs: rng.pick([256, 256, 4, 1]),
    maxUncommittedBytes: rng.pick([64 << 20, 64 << 20, 64]),
    maxApplyBytes: rng.pick([4 << 20, 4 << 20, 40]),
    diskDelay: 0, // drawn from its own stream (see Simulation), so older seeds keep their profiles
    hostBug: 'none',
    freshSnapshots: false, // drawn from its own stream (see Simulation)
    diskLoss: 0, // drawn from its own stream (see Simulation)
    lostStateGuard: true,
    workload: {
      clients,
      keys: rng.range(3, 5),
      rate: rng.pick([0.2, 0.5, 0.9]),
      write: 3,
      cas: 2,
      read: rng.pick([2, 4]),
      logRead: 1,
      timeout: rng.pick([30, 60]),
    },
  };
}

function describeProfile(p: FaultProfile): string {
  const n = p.net;
  return `${p.preset}: loss=${n.loss} dup=${n.dup} delay=${n.minDelay}..${n.maxDelay} long=${n.longDelay} crash=${p.crash} ` +
    `quick=${p.quickRestart} down<=${p.downMax} ecrash=${p.electionCrash} part=${p.partition}/${p.partitionMax}/${p.repartition} ` +
    `pause=${p.pause}/${p.pauseMax} compact=${p.compact} conf=${p.confChange} transfer=${p.transfer} skew=${p.clockSkew} lcrash=${p.leaderCrash} ` +
    `nlcrash=${p.newLeaderCrash} nliso=${p.newLeaderIsolate} burst=${p.churnBurst} unsynced=${p.unsyncedLoss} diskLoss=${p.diskLoss}${p.lostStateGuard ? '' : ' UNGUARDED'} ` +
    `slow=${p.slowLeader} msgBytes=${p.maxMsgBytes} inflight=${p.maxInflightMsgs} ` +
    `uncommitted=${p.maxUncommittedBytes} applyBytes=${p.maxApplyBytes} disk=${p.diskDelay === 0 ? 'sync' : `async<=${p.diskDelay}`}${p.hostBug === 'none' ? '' : ` hostBug=${p.hostBug}`}${p.freshSnapshots ? ' freshSnaps' : ''} ` +
    `clients=${p.workload.clients} keys=${p.workload.keys} rate=${p.workload.rate} timeout=${p.workload.timeout}`;
}

const MAX_EXTRA_IDS = 4;

class Simulation implements NodeHost, WorkloadHost {
  now = 0;
  readonly inv = new Invariants();
  readonly net: Network;
  readonly workload: Workload;
  readonly keys: number;
  readonly verbose: boolean;
  readonly protocolChecks: boolean;
  readonly asyncDisk: boolean;
  readonly earlyAcks: boolean;
  readonly freshSnapshots: boolean;
  private readonly diskRng: Prng;
  private readonly diskLossRng: Prng;
  private readonly log: (line: string) => void;
  private readonly nodes = new Map<NodeId, SimNode>();
  /** Sorted node ids (deterministic iteration order). */
  private ids: NodeId[] = [];
  private nextId: number;
  private readonly faultRng: Prng;
  private readonly coreRng: Prng;
  private readonly clientRng: Prng;
  readonly profile: FaultProfile;
  private partitionUntil = 0;
  private burstUntil = 0;
  private snapReports: { env: Envelope; ok: boolean }[] = [];
  /** opId -> first application anywhere. */
  private readonly firstApply = new Map<number, AppliedOp>();
  private settled = 0;
  private stats = { partitions: 0, pauses: 0, confChanges: 0, transfers: 0 };
  private phase: 'faults' | 'converge' = 'faults';

  constructor(readonly opts: Required<Pick<SimOptions, 'seed' | 'steps' | 'nodes' | 'convergeSteps'>> & SimOptions) {
    const master = new Prng(opts.seed);
    const profileRng = master.fork('profile');
    this.faultRng = master.fork('faults');
    this.coreRng = master.fork('cores');
    this.clientRng = master.fork('clients');
    const netRng = master.fork('net');
    this.diskRng = master.fork('disk');
    const base = chooseProfile(profileRng);
    // Half the seeds run the pipelined host on an asynchronous disk.
    base.diskDelay = this.diskRng.pick([0, 0, 1, 3]);
    this.profile = {
      ...base, ...opts.profile,
      net: { ...base.net, ...opts.profile?.net },
      workload: { ...base.workload, ...opts.profile?.workload },
    };
    // Half the seeds send snapshots as the node does (a fresh cut at applied, the log left whole).
    this.profile.freshSnapshots = opts.profile?.freshSnapshots ?? master.fork('snapshots').pick([false, true]);
    if (opts.noConfChanges === true) this.profile.confChange = 0;
    // A third of the seeds without membership changes lose a crashed node's disk now and then.
    this.profile.diskLoss = opts.profile?.diskLoss ??
      (this.profile.confChange === 0 ? master.fork('diskloss').pick([0, 0, 0, 0.1, 0.2, 0.5]) : 0);
    this.diskLossRng = master.fork('diskloss-events');
    this.asyncDisk = this.profile.diskDelay > 0;
    this.earlyAcks = this.profile.hostBug === 'earlyAcks';
    this.freshSnapshots = this.profile.freshSnapshots;
    this.keys = this.profile.workload.keys;
    this.verbose = opts.verbose === true;
    this.protocolChecks = opts.protocolChecks !== false;
    this.log = opts.log ?? ((line) => console.log(line));
    this.net = new Network(netRng, { ...this.profile.net }, (env, reason) => this.onDrop(env, reason));
    this.workload = new Workload(this.clientRng, this.profile.workload);
    this.nextId = opts.nodes + 1;
  }

  private setup(): void {
    const voters: NodeId[] = [];
    for (let i = 1; i <= this.opts.nodes; i++) voters.push(i);
    for (const id of voters) this.addNode(id, { voters, learners: [] });
  }

  onApplied(who: SimNode, cmd: Cmd, index: number, casOk: boolean): void {
    const a = this.firstApply.get(cmd.opId);
    if (a === undefined) {
      this.firstApply.set(cmd.opId, { index, clock: this.workload.tickClock(), casOk });
    } else if (a.index !== index) {
      this.inv.fail('duplicate-apply', `${who.name}: command op${cmd.opId} applied at index ${index}, but it was applied at ${a.index} before`);
    }
  }

  onLeader(n: SimNode): void {
    if (this.phase !== 'faults') return;
    const rng = this.faultRng;
    const burst = this.now < this.burstUntil;
    if (rng.chance(burst ? 0.45 : this.profile.newLeaderCrash)) {
      n.crashAt = this.now + rng.range(1, 15);
    } else if (rng.chance(burst ? 0.8 : this.profile.newLeaderIsolate)) {
      n.isolateAt = this.now + rng.range(1, 12);
    }
  }

  trace(line: string): void {
    if (this.verbose) this.log(`${String(this.now).padStart(5)} ${line}`);
  }

  diskDelay(): number {
    return this.diskRng.int(this.profile.diskDelay + 1);
  }

  makeConfig(id: NodeId, initialConf: ConfState): RaftConfig {
    const cfg = defaultRaftConfig(id, initialConf, this.coreRng.fork(`core-${id}`).asRandom());
    cfg.maxMsgBytes = this.profile.maxMsgBytes;
    cfg.maxInflightMsgs = this.profile.maxInflightMsgs;
    cfg.maxUncommittedBytes = this.profile.maxUncommittedBytes;
    cfg.maxApplyBytes = this.profile.maxApplyBytes;
    // Readies cut at multiples of 7 too where they are already cut small (no draw of its own: older seeds keep their profiles).
    cfg.applyBreakEvery = this.profile.maxApplyBytes === 40 ? 7 : 0;
    if (this.opts.bug) cfg.bugs = { [this.opts.bug]: true };
    cfg.recoverLostState = this.profile.lostStateGuard;
    if (this.verbose) cfg.trace = (line) => this.log(`${String(this.now).padStart(5)}   core ${line}`);
    return cfg;
  }

  private addNode(id: NodeId, initialConf: ConfState): SimNode {
    const n = new SimNode(id, initialConf, this);
    this.nodes.set(id, n);
    this.ids.push(id);
    this.ids.sort((a, b) => a - b);
    n.boot();
    return n;
  }

  private node(id: NodeId): SimNode | undefined {
    return this.nodes.get(id);
  }

  // ------------------------------------------------------------ network

  send(from: SimNode, m: Message): void {
    if (m.from !== from.id) this.inv.fail('bad-message', `${from.name} sent a message with from=${m.from}`);
    this.net.send(m, this.now, from.incarnation);
  }

  private onDrop(env: Envelope, reason: DropReason): void {
    if (env.m.type === MsgType.Snap) this.snapReports.push({ env, ok: false });
    void reason;
  }

  private flushSnapReports(): void {
    if (this.snapReports.length === 0) return;
    const reports = this.snapReports;
    this.snapReports = [];
    for (const { env, ok } of reports) {
      const s = this.node(env.m.from);
      if (s === undefined || s.raft === null || s.paused || s.incarnation !== env.senderInc) continue;
      s.raft.reportSnapshot(env.m.to, ok);
      s.processReady();
    }
  }

  private deliver(): void {
    this.flushSnapReports();
    const due = this.net.takeDue(this.now);
    if (due === undefined) return;
    for (const env of due) {
      const m = env.m;
      const to = this.node(m.to);
      if (to === undefined || to.raft === null) {
        this.net.drop(env, 'down');
        continue;
      }
      if (this.net.isBlocked(m.from, m.to)) {
        this.net.drop(env, 'partition');
        continue;
      }
      if (to.paused) {
        to.held.push(env);
        continue;
      }
      this.net.delivered++;
      to.receive(m);
      // The node never reports a finished stream (see startSnapshotSends): the follower's answer to the
      // install moves the leader's progress on, from the Snapshot state. Seeds sending fresh cuts do the same.
      if (m.type === MsgType.Snap && !this.freshSnapshots) this.snapReports.push({ env, ok: true });
    }
    this.flushSnapReports();
  }

  // ------------------------------------------------------------ clients

  submit(p: PendingOp): boolean {
    const n = this.node(p.node);
    if (n === undefined || n.raft === null || n.paused) return false;
    n.submit(p);
    return true;
  }

  randomNode(): NodeId | 0 {
    const alive = this.ids.filter((id) => this.nodes.get(id)?.alive === true);
    return alive.length === 0 ? 0 : this.clientRng.pick(alive);
  }

  // ------------------------------------------------------------ faults

  private liveNodes(): SimNode[] {
    const out: SimNode[] = [];
    for (const id of this.ids) {
      const n = this.nodes.get(id) as SimNode;
      if (n.raft !== null) out.push(n);
    }
    return out;
  }

  /** The live leader with the highest term (there may be stale ones). */
  private currentLeader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.liveNodes()) {
      if (n.role === Role.Leader && !n.paused && (best === undefined || n.hardState.term > best.hardState.term)) best = n;
    }
    return best;
  }

  private crash(n: SimNode, downFor: number): void {
    n.crash(this.faultRng.chance(this.profile.unsyncedLoss));
    n.restartAt = this.now + downFor;
    if (this.profile.diskLoss > 0 && this.diskLossRng.chance(this.profile.diskLoss) && this.mayLoseDisk(n)) n.loseDisk();
  }

  /** A founding voter, while every other node is up and not recovering lost state, nor could after a crash (one loss at a time). */
  private mayLoseDisk(n: SimNode): boolean {
    if (!n.initialConf.voters.includes(n.id)) return false;
    for (const id of this.ids) {
      const o = this.nodes.get(id) as SimNode;
      // A node whose recovery ended but whose new vote is not durable yet would recover again after a crash.
      if (o !== n && (o.raft === null || o.raft.status().recovery !== null || o.hardState.vote === LOST_VOTE)) return false;
    }
    return true;
  }

  private resume(n: SimNode): void {
    n.paused = false;
    const held = n.held;
    n.held = [];
    for (const env of held) this.net.requeue(env, this.now + 1 + this.faultRng.int(3));
    this.trace(`${n.name} resumes (${held.length} held messages)`);
  }

  private faultStep(): void {
    const p = this.profile;
    const rng = this.faultRng;
    const now = this.now;
    // Due restarts, heals, resumes.
    for (const id of this.ids) {
      const n = this.nodes.get(id) as SimNode;
      if (n.raft === null && n.restartAt <= now) n.boot();
      else if (n.paused && n.pausedUntil <= now) this.resume(n);
      else if (n.raft !== null && n.crashAt === now) {
        this.trace(`${n.name} crash of a new leader`);
        this.crash(n, rng.chance(p.quickRestart) ? rng.range(1, 3) : rng.range(p.downMin, p.downMax));
      } else if (n.raft !== null && n.isolateAt === now) {
        this.net.setGroups([[n.id], this.ids.filter((i) => i !== n.id)]);
        this.partitionUntil = now + rng.range(10, 40);
        this.stats.partitions++;
        this.trace(`PARTITION new leader ${n.name} cut off: ${this.net.describePartition()} until ${this.partitionUntil}`);
      }
    }
    if (this.net.partitioned && this.partitionUntil <= now) {
      this.net.heal();
      this.trace('partition healed');
    }

    const live = this.liveNodes();
    if (live.length > 0 && rng.chance(p.crash)) {
      const victim = rng.pick(live);
      const down = rng.chance(p.quickRestart) ? rng.range(1, 3) : rng.range(p.downMin, p.downMax);
      this.crash(victim, down);
    }
    if (p.electionCrash > 0 && rng.chance(p.electionCrash)) {
      const campaigning = live.some((n) => n.raft !== null && (n.role === Role.Candidate || n.role === Role.PreCandidate));
      if (campaigning) {
        const cand = live.filter((n) => n.raft !== null && n.role === Role.Follower);
        if (cand.length > 0) {
          const v = rng.pick(cand);
          this.trace(`${v.name} bounce during election`);
          this.crash(v, rng.range(1, 2));
        }
      }
    }
    if (this.burstUntil <= now && rng.chance(p.churnBurst)) {
      this.burstUntil = now + rng.range(50, 200);
      this.trace(`leader churn burst until ${this.burstUntil}`);
    }
    if (rng.chance(p.leaderCrash)) {
      const l = this.currentLeader();
      if (l !== undefined) {
        this.trace(`${l.name} leader crash`);
        this.crash(l, rng.chance(p.quickRestart) ? rng.range(1, 3) : rng.range(p.downMin, p.downMax));
      }
    }
    if (rng.chance(p.slowLeader)) {
      const l = this.currentLeader();
      if (l !== undefined) {
        l.tickRate = rng.pick([0.2, 0.35, 0.5]);
        l.slowUntil = now + rng.range(10, 60);
        this.trace(`${l.name} slow clock (rate ${l.tickRate}) until ${l.slowUntil}`);
      }
    }
    if (this.net.partitioned ? rng.chance(p.repartition) : rng.chance(p.partition)) this.makePartition();
    if (rng.chance(p.pause)) {
      const alive = this.liveNodes().filter((n) => !n.paused);
      const leader = this.currentLeader();
      const v = leader !== undefined && rng.chance(p.pauseLeader) ? leader : alive.length > 0 ? rng.pick(alive) : undefined;
      if (v !== undefined) {
        v.paused = true;
        v.pausedUntil = now + rng.range(2, p.pauseMax);
        this.stats.pauses++;
        this.trace(`${v.name} PAUSED until ${v.pausedUntil}`);
      }
    }
    if (rng.chance(p.compact)) {
      const alive = this.liveNodes().filter((n) => !n.paused);
      if (alive.length > 0) rng.pick(alive).compact();
    }
    if (rng.chance(p.confChange)) this.membershipChange();
    if (rng.chance(p.transfer)) this.leadershipTransfer();
  }

  private makePartition(): void {
    const rng = this.faultRng;
    const ids = rng.shuffle([...this.ids]);
    const leader = this.currentLeader();
    const kind = rng.pick(['split', 'isolate-leader', 'isolate-leader', 'bridge', 'isolate-one', 'one-way'] as const);
    const until = this.now + rng.range(this.profile.partitionMin, this.profile.partitionMax);
    if (kind === 'isolate-leader' && leader !== undefined) {
      this.net.setGroups([[leader.id], ids.filter((i) => i !== leader.id)]);
      if (rng.chance(0.5)) {
        // A sick leader: cut off and with a slow clock, so it notices late.
        leader.tickRate = rng.pick([0.2, 0.35, 0.5]);
        leader.slowUntil = until;
      }
    } else if (kind === 'bridge' && ids.length >= 3) {
      const bridge = ids[0] as NodeId;
      const rest = ids.slice(1);
      const k = rng.range(1, rest.length - 1);
      this.net.setGroups([rest.slice(0, k), rest.slice(k)], [bridge]);
    } else if (kind === 'one-way') {
      const from = leader !== undefined && rng.chance(0.5) ? leader.id : rng.pick(ids);
      this.net.blockOneWay(from, ids.filter((i) => i !== from));
    } else if (kind === 'split') {
      const k = rng.range(1, ids.length - 1);
      this.net.setGroups([ids.slice(0, k), ids.slice(k)]);
    } else {
      const v = rng.pick(ids);
      this.net.setGroups([[v], ids.filter((i) => i !== v)]);
    }
    this.partitionUntil = until;
    this.stats.partitions++;
    this.trace(`PARTITION ${kind}: ${this.net.describePartition()} until ${this.partitionUntil}`);
  }

  private membershipChange(): void {
    const rng = this.faultRng;
    const leader = this.currentLeader();
    if (leader === undefined || leader.raft === null) return;
    const st = leader.raft.status();
    const conf = st.conf;
    const members = new Set([...conf.voters, ...conf.learners]);
    const options: (() => void)[] = [];
    const propose = (type: 'addVoter' | 'addLearner' | 'remove', node: NodeId): void => {
      const r = (leader.raft as NonNullable<SimNode['raft']>).proposeConfChange({ type, node });
      this.trace(`${leader.name} conf change ${type} ${node}: ${r.ok ? `index ${r.index}` : r.code}`);
      if (r.ok) this.stats.confChanges++;
      leader.processReady();
    };
    if (conf.voters.length > 3) {
      const removable = conf.voters.filter((v) => v !== leader.id);
      options.push(() => propose('remove', rng.pick(removable)));
    }
    if (conf.learners.length > 0) {
      if (conf.voters.length < 6) options.push(() => propose('addVoter', rng.pick(conf.learners)));
      options.push(() => propose('remove', rng.pick(conf.learners)));
    } else if (members.size < 7) {
      // A fresh spare (never a member) — reuse an idle one or create a new id.
      const spare = this.ids.map((i) => this.nodes.get(i) as SimNode)
        .find((n) => !n.everMember && !members.has(n.id));
      if (spare !== undefined) {
        options.push(() => {
          spare.everMember = true;
          propose('addLearner', spare.id);
        });
      } else if (this.nextId <= this.opts.nodes + MAX_EXTRA_IDS) {
        options.push(() => {
          const id = this.nextId++;
          const n = this.addNode(id, { voters: [], learners: [] });
          n.everMember = true;
          this.trace(`${n.name} created as a spare`);
          propose('addLearner', id);
        });
      }
    }
    if (options.length > 0) rng.pick(options)();
  }

  private leadershipTransfer(): void {
    const leader = this.currentLeader();
    if (leader === undefined || leader.raft === null) return;
    const voters = leader.raft.status().conf.voters.filter((v) => v !== leader.id);
    if (voters.length === 0) return;
    const to = this.faultRng.pick(voters);
    const ok = leader.raft.transferLeadership(to);
    this.trace(`${leader.name} transfer leadership to n${to}: ${ok}`);
    if (ok) this.stats.transfers++;
    leader.processReady();
  }

  // ------------------------------------------------------------ stepping

  private tickAll(): void {
    const skew = this.profile.clockSkew;
    for (const id of this.ids) {
      const n = this.nodes.get(id) as SimNode;
      if (n.raft === null || n.paused) continue;
      if (skew > 0 && this.faultRng.chance(skew)) continue;
      if (n.slowUntil > this.now && !this.faultRng.chance(n.tickRate)) continue;
      n.tick();
    }
  }

  /** Cheap per-step checks on every live node. */
  private checkStep(): void {
    for (const id of this.ids) {
      const n = this.nodes.get(id) as SimNode;
      if (n.raft === null) continue;
      const st = n.raft.status();
      if (st.role === Role.Leader) this.inv.leader(st.term, n.id, this.now);
      if (st.applied > st.commit) this.inv.fail('applied-beyond-commit', `${n.name}: applied ${st.applied} > commit ${st.commit}`);
      if (st.commit < n.commit) this.inv.fail('commit-regress', `${n.name}: commit ${st.commit} < previously reported ${n.commit}`);
      if (st.applied !== n.applied) this.inv.fail('applied-mismatch', `${n.name}: core applied ${st.applied}, host applied ${n.applied}`);
      if (st.commit > st.lastIndex) this.inv.fail('commit-beyond-log', `${n.name}: commit ${st.commit} > last index ${st.lastIndex}`);
    }
  }

  private step(): void {
    this.now++;
    if (this.phase === 'faults') this.faultStep();
    // Clients act before or after this step's deliveries (interleaving).
    const clientsFirst = this.faultRng.chance(0.5);
    if (clientsFirst) this.workload.step(this);
    this.deliver();
    this.tickAll();
    if (!clientsFirst) this.workload.step(this);
    if (this.asyncDisk) for (const id of this.ids) (this.nodes.get(id) as SimNode).flushDisk();
    this.checkStep();
  }

  /** Heal everything, restart everyone, and wait for the members to agree. */
  private converge(): string | null {
    this.phase = 'converge';
    this.net.heal();
    this.net.faults = { ...CALM_NET };
    this.workload.stopped = true;
    this.trace('=== converge: heal everything, restart crashed nodes ===');
    for (const id of this.ids) {
      const n = this.nodes.get(id) as SimNode;
      n.slowUntil = 0;
      if (n.raft === null) n.boot();
      else if (n.paused) this.resume(n);
    }
    let why = 'not started';
    const bound = this.opts.convergeSteps;
    let progressAt = this.now;
    let progressSum = -1;
    for (let i = 0; i < 20 * bound; i++) {
      this.step();
      why = this.convergedWhy();
      if (why === '') return null;
      // Progress: something applied, or a log moved (a follower far behind, after a lost disk or a long
      // divergent suffix sent one entry per App, may take longer than `bound` before the next commit).
      let sum = 0;
      for (const n of this.nodes.values()) sum += n.applied + n.lastPersistedIndex;
      if (sum !== progressSum) {
        progressSum = sum;
        progressAt = this.now;
      } else if (this.now - progressAt >= bound) {
        return `no progress for ${bound} steps (${i + 1} steps after healing): ${why}`;
      }
    }
    return `still not converged after ${20 * bound} steps: ${why}`;
  }

  /** '' when converged, else the reason it is not. */
  private convergedWhy(): string {
    const leader = this.currentLeader();
    if (leader === undefined || leader.raft === null) return 'no leader';
    const ls = leader.raft.status();
    if (ls.commit !== ls.lastIndex) return `leader n${ls.id} commit ${ls.commit} < last ${ls.lastIndex}`;
    if (leader.applied !== ls.commit) return `leader n${ls.id} applied ${leader.applied} < commit ${ls.commit}`;
    const fp = leader.sm.fingerprint();
    for (const id of [...ls.conf.voters, ...ls.conf.learners]) {
      const n = this.nodes.get(id);
      if (n === undefined || n.raft === null) return `member n${id} is down`;
      const s = n.raft.status();
      if (s.commit !== ls.commit || n.applied !== ls.commit || s.lastIndex !== ls.lastIndex) {
        return `member n${id} commit ${s.commit} applied ${n.applied} last ${s.lastIndex} vs leader n${ls.id} ${ls.commit}/${ls.lastIndex}`;
      }
      if (n.sm.fingerprint() !== fp) return `member n${id} state ${n.sm.fingerprint()} != leader ${fp}`;
    }
    return '';
  }

  private statusLines(): string {
    const lines: string[] = [];
    for (const id of this.ids) {
      const n = this.nodes.get(id) as SimNode;
      if (n.raft === null) {
        lines.push(`  n${id}: down (persisted term ${n.hardState.term} commit ${n.hardState.commit})`);
        continue;
      }
      const s: Status = n.raft.status();
      lines.push(`  n${id}: ${s.role} term ${s.term} leader ${s.leader} commit ${s.commit} applied ${s.applied} ` +
        `last ${s.lastIndex} first ${s.firstIndex} voters [${s.conf.voters}] learners [${s.conf.learners}]` +
        `${n.paused ? ' PAUSED' : ''}`);
    }
    return lines.join('\n');
  }

  run(): Omit<SimResult, 'seed' | 'nodes' | 'steps' | 'bug' | 'replay' | 'profile'> {
    let kind: string | undefined;
    let message: string | undefined;
    let failedAtStep: number | undefined;
    try {
      this.trace(`profile: ${describeProfile(this.profile)}`);
      this.setup();
      for (let i = 0; i < this.opts.steps; i++) this.step();
      const why = this.converge();
      if (why !== null) {
        throw new Violation('no-convergence',
          `cluster did not converge after healing: ${why}\n${this.statusLines()}`);
      }
      // Ops still outstanding have unknown outcomes.
      for (const c of this.workload.clients) if (c.pending !== null) this.workload.unknown(c.pending, 'end of run', this.now);
      const mismatch = this.workload.crossCheck(this.firstApply);
      if (mismatch !== null) throw new Violation('client-result', mismatch);
      if (this.opts.clientView !== true) this.settled = this.workload.settle(this.firstApply);
      if (this.opts.skipLincheck !== true) {
        const res = checkLinearizable(this.workload.history, { initial: null });
        if (res.ok === false) {
          throw new Violation('linearizability',
            `history is not linearizable (key ${res.key}): ${res.message}\n${truncate(formatHistory(res.ops), 12000)}`);
        }
        if (res.ok === 'unknown') {
          throw new Violation('lincheck-unknown',
            `linearizability checker gave up (search budget exhausted) on key ${res.key}: ${res.message}`);
        }
      }
    } catch (e) {
      failedAtStep = this.now;
      if (e instanceof Violation) {
        kind = e.kind;
        message = e.message;
      } else {
        kind = 'core-exception';
        const err = e as Error;
        message = `exception at step ${this.now}: ${err.stack ?? String(err)}`;
      }
    }
    return {
      ok: kind === undefined,
      ...(kind !== undefined ? { kind, message, failedAtStep } : {}),
      digest: this.digest(),
      stats: this.collectStats(),
    };
  }

  private collectStats(): SimStats {
    let crashes = 0;
    let compactions = 0;
    let snaps = 0;
    let oldTermCommits = 0;
    let commit = 0;
    for (const n of this.nodes.values()) {
      crashes += n.crashes;
      compactions += n.compactions;
      snaps += n.snapshotsInstalled;
      oldTermCommits += n.oldTermCommits;
      if (n.commit > commit) commit = n.commit;
    }
    const leader = this.currentLeader();
    const conf = leader?.raft?.status().conf ?? { voters: [], learners: [] };
    const wl = this.workload;
    return {
      steps: this.now,
      elections: this.inv.elections,
      maxTerm: this.inv.maxTerm,
      commit,
      crashes,
      partitions: this.stats.partitions,
      pauses: this.stats.pauses,
      compactions,
      snapshotsInstalled: snaps,
      oldTermCommits,
      confChanges: this.stats.confChanges,
      transfers: this.stats.transfers,
      messages: this.net.sent,
      dropped: this.net.dropped,
      ops: wl.invoked,
      okOps: wl.okCount,
      infoOps: wl.infoCount,
      failOps: wl.failCount,
      settledOps: this.settled,
      failReasons: [...wl.failReasons].sort((a, b) => a[0].localeCompare(b[0])).map(([k, v]) => `${k}:${v}`).join(' '),
      finalVoters: conf.voters,
      finalLearners: conf.learners,
    };
  }

  /** Hash of the observable outcome: node states + client history. */
  private digest(): string {
    let h = 0x811c9dc5;
    h = hashString(`now=${this.now};`, h);
    for (const id of this.ids) {
      const n = this.nodes.get(id) as SimNode;
      h = hashString(`n${id}:${n.alive}:${n.hardState.term}:${n.hardState.vote}:${n.commit}:${n.applied}:` +
        `${n.lastPersistedIndex}:${n.sm.fingerprint()};`, h);
    }
    for (const op of this.workload.history) {
      h = hashString(`${op.key}${op.kind}${op.value}/${op.expect}/${op.output}/${op.casOk}/${op.start}/${op.end}/${op.status};`, h);
    }
    h = hashString(`sent=${this.net.sent};dropped=${this.net.dropped}`, h);
    return (h >>> 0).toString(16).padStart(8, '0');
  }
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}\n... (${s.length - max} more characters)`;
}

export function runSimulation(options: SimOptions): SimResult {
  const steps = options.steps ?? 3000;
  const nodes = options.nodes ?? defaultNodesForSeed(options.seed);
  const convergeSteps = options.convergeSteps ?? 300;
  const sim = new Simulation({ ...options, steps, nodes, convergeSteps });
  const r = sim.run();
  return {
    seed: options.seed,
    nodes,
    steps,
    bug: options.bug,
    replay: replayCommand(options.seed, nodes, steps, options.bug, options.noConfChanges === true,
      options.protocolChecks === false, options.profile, options.clientView === true),
    profile: describeProfile(sim.profile),
    ...r,
  };
}
