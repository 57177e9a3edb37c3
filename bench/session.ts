/**
 * One measured phase on one target, start to finish: start the target (or
 * connect), preload the keyspace when the workload reads, run the phase, stop
 * the target. The target is stopped on every path out of here; the cleanup
 * registry covers the paths that do not return (signals, watchdog, exit).
 */
import type { CommonArgs } from './args.ts';
import { keyspaceOf } from './args.ts';
import type { StopSignal } from './cleanup.ts';
import { makeValue, preloadKeys, runPhase, type LoopMode, type PhaseOutput, type PreloadResult } from './runner.ts';
import { openTarget } from './targets/open.ts';
import type { TargetKind } from './targets/target.ts';
import { needsPreload, type Consistency, type Distribution, type WorkloadName } from './workload.ts';

export interface PhaseRequest {
  target: TargetKind;
  workload: WorkloadName;
  consistency: Consistency;
  distribution: Distribution;
  /** store: a running cluster. */
  endpoints?: string[];
  /** Preload before a reading workload (default true). */
  preload: boolean;
  /** Where stale reads go (TargetOptions.staleReadsTo; default spread). */
  staleReadsTo?: 'spread' | 'one';
  label: string;
}

export interface SessionContext {
  workDir: string;
  stop: StopSignal;
  log: (s: string) => void;
  progress?: (s: string) => void;
}

export interface SessionResult {
  targetInfo: Record<string, unknown>;
  preload?: PreloadResult;
  output?: PhaseOutput;
  notes: string[];
}

/** Preloading is bounded: 5 minutes or 2 ms a key, whichever is longer. */
export const preloadLimitMs = (keys: number): number => Math.max(300_000, keys * 2);

export function loopMode(a: CommonArgs): LoopMode {
  return a.rate !== undefined ? { kind: 'open', rate: a.rate, maxOutstanding: a.maxOutstanding } : { kind: 'closed', concurrency: a.concurrency };
}

export async function runSession(a: CommonArgs, req: PhaseRequest, ctx: SessionContext): Promise<SessionResult> {
  const keyspace = keyspaceOf(a);
  const value = makeValue(a.valueBytes, a.seed);
  const notes: string[] = [];
  const target = await openTarget(req.target, {
    ...(req.endpoints !== undefined ? { endpoints: req.endpoints } : {}),
    nodes: a.nodes, shards: a.shards, replicas: a.replicas,
    timeoutMs: a.timeoutMs, connections: a.connections ?? a.concurrency,
    valueBytes: a.valueBytes, keyspace, verify: a.verify,
    storeClient: a.storeClient, etcdPutRoute: a.etcdPutRoute, ceilingProcs: a.ceilingProcs,
    ...(req.staleReadsTo !== undefined ? { staleReadsTo: req.staleReadsTo } : {}),
    workDir: ctx.workDir, log: ctx.log,
  });
  const out: SessionResult = { targetInfo: target.info, notes };
  try {
    if (req.preload && needsPreload(req.workload) && !ctx.stop.stopped) {
      ctx.log(`${req.label}: preloading ${keyspace.keys} keys (not measured)`);
      const p = await preloadKeys(target, keyspace, value, Math.min(64, a.concurrency), preloadLimitMs(keyspace.keys), ctx.stop, ctx.progress);
      out.preload = p;
      ctx.log(`${req.label}: preload: ${p.written} written, ${p.failed} failed in ${(p.elapsedMs / 1000).toFixed(1)} s`);
      if (p.failed > 0 || p.written < keyspace.keys) notes.push(`preload wrote ${p.written} of ${keyspace.keys} keys: reads of the others fail with not_found`);
    }
    if (!ctx.stop.stopped) {
      const mode = loopMode(a);
      ctx.log(`${req.label}: ${mode.kind === 'closed' ? `${mode.concurrency} clients` : `${mode.rate} req/s`}, ${a.warmupS} s warm-up + ${a.durationS} s`);
      out.output = await runPhase(target, {
        label: req.label,
        workload: req.workload,
        distribution: req.distribution,
        consistency: req.consistency,
        scanLimit: a.scanLimit,
        keyspace,
        value,
        mode,
        warmupMs: a.warmupS * 1000,
        durationMs: a.durationS * 1000,
        maxOps: a.maxOps,
        seed: a.seed,
        errorBackoffMs: 10,
        requestTimeoutMs: a.timeoutMs,
        stop: ctx.stop,
        ...(ctx.progress !== undefined ? { progress: ctx.progress } : {}),
      });
    }
  } finally {
    const closeNotes = await target.close();
    notes.push(...closeNotes);
    const what = target.info['started'] === undefined ? 'connections closed (not started here, left running)' : 'stopped';
    ctx.log(`${req.label}: ${req.target} ${what}${closeNotes.length > 0 ? ` (${closeNotes.join('; ')})` : ''}`);
  }
  return out;
}
