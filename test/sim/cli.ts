/**
 * Simulator command line:  npm run sim -- [options]
 *
 *   --seed S          run one seed
 *   --seeds A..B      run seeds A through B (inclusive)
 *   --steps N         fault-phase steps per seed (default 3000)
 *   --nodes 3|5       initial voters (default: 3 for odd seeds, 5 for even)
 *   --bug NAME        plant a bug in every core (commitOldTerm, skipVotePersist,
 *                     readIndexNoConfirm, voteIgnoresLog)
 *   --long SECONDS    run consecutive seeds (from --seed, else a time-derived
 *                     start) until the time is up
 *   --jobs N          worker processes (default 2 when running many seeds)
 *   --no-conf         no membership changes (to bisect a failure)
 *   --no-protocol-checks  only end-to-end checks (no direct §5.4.2 commit-rule
 *                     and ReadIndex-bound checks)
 *   --client-view     check the history exactly as clients saw it (do not
 *                     settle unknown mutations from the simulator's view)
 *   --profile JSON    override fault-profile fields, e.g. '{"crash":0.01}'
 *   --quiet           only failures and the summary line
 *   --verbose         full trace (single seed)
 *
 * Ends with a line `sim: N passed, M failed` and exits non-zero on any
 * failure. Full failure reports are also written to .sim-failures/.
 */
import { fork } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BUG_NAMES, runSimulation, type BugName, type ProfileOverride, type SimResult } from './simulation.ts';

interface Args {
  from: number;
  to: number;
  steps: number;
  nodes: 3 | 5 | undefined;
  bug: BugName | undefined;
  long: number;
  jobs: number;
  quiet: boolean;
  verbose: boolean;
  child: boolean;
  noConf: boolean;
  noProtocolChecks: boolean;
  clientView: boolean;
  profile: string;
  stride: number;
  deadline: number;
}

function usage(msg: string): never {
  console.error(`sim: ${msg}`);
  console.error('usage: npm run sim -- [--seed S | --seeds A..B] [--steps N] [--nodes 3|5] [--bug NAME] ' +
    '[--long SECONDS] [--jobs N] [--quiet | --verbose]');
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    from: 1, to: 1, steps: 3000, nodes: undefined, bug: undefined, long: 0, jobs: 0,
    quiet: false, verbose: false, child: false, noConf: false, noProtocolChecks: false, clientView: false, profile: '', stride: 1, deadline: 0,
  };
  let seedGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) usage(`${arg} needs a value`);
      return v;
    };
    const int = (s: string): number => {
      if (!/^-?\d+$/.test(s)) usage(`not an integer: ${s}`);
      return Number(s);
    };
    switch (arg) {
      case '--seed': a.from = a.to = int(val()); seedGiven = true; break;
      case '--seeds': {
        const m = /^(\d+)\.\.(\d+)$/.exec(val());
        if (!m) usage('--seeds wants A..B');
        a.from = Number(m[1]);
        a.to = Number(m[2]);
        if (a.to < a.from) usage('--seeds A..B needs A <= B');
        seedGiven = true;
        break;
      }
      case '--steps': a.steps = int(val()); break;
      case '--nodes': {
        const n = int(val());
        if (n !== 3 && n !== 5) usage('--nodes must be 3 or 5');
        a.nodes = n;
        break;
      }
      case '--bug': {
        const b = val();
        if (!(BUG_NAMES as string[]).includes(b)) usage(`unknown bug ${b}; one of ${BUG_NAMES.join(', ')}`);
        a.bug = b as BugName;
        break;
      }
      case '--long': a.long = int(val()); break;
      case '--jobs': a.jobs = int(val()); break;
      case '--quiet': a.quiet = true; break;
      case '--verbose': a.verbose = true; break;
      case '--child': a.child = true; break;
      case '--no-conf': a.noConf = true; break;
      case '--no-protocol-checks': a.noProtocolChecks = true; break;
      case '--client-view': a.clientView = true; break;
      case '--profile': {
        a.profile = val();
        try {
          JSON.parse(a.profile);
        } catch {
          usage('--profile wants a JSON object of FaultProfile fields');
        }
        break;
      }
      case '--stride': a.stride = int(val()); break;
      case '--deadline': a.deadline = int(val()); break;
      default: usage(`unknown argument ${arg}`);
    }
  }
  if (a.long > 0 && !seedGiven && !a.child) {
    // Only the starting point of a long run comes from the clock; each seed is still deterministic.
    a.from = (Date.now() % 1_000_000_000) + 1;
  }
  return a;
}

function oneLine(r: SimResult, ms: number): string {
  const s = r.stats;
  return `seed ${r.seed} ${r.ok ? 'ok  ' : 'FAIL'} n=${r.nodes} steps=${s.steps} term=${s.maxTerm} commit=${s.commit} ` +
    `ops=${s.ops} (ok ${s.okOps}, info ${s.infoOps}, fail ${s.failOps}) crashes=${s.crashes} parts=${s.partitions} ` +
    `snaps=${s.snapshotsInstalled} conf=${s.confChanges} voters=[${s.finalVoters}] ${ms.toFixed(0)}ms digest=${r.digest}`;
}

function failureReport(r: SimResult): string {
  return `FAILED seed ${r.seed}${r.bug ? ` (bug ${r.bug})` : ''} at step ${r.failedAtStep}: [${r.kind}] ${r.message}\n` +
    `  profile: ${r.profile}\n  replay: ${r.replay}`;
}

function headOf(s: string, lines: number): string {
  const parts = s.split('\n');
  return parts.length <= lines ? s : `${parts.slice(0, lines).join('\n')}\n  ... (${parts.length - lines} more lines in the report file)`;
}

function saveFailure(r: SimResult): string | null {
  try {
    mkdirSync('.sim-failures', { recursive: true });
    const file = `.sim-failures/seed-${r.seed}${r.bug ? `-${r.bug}` : ''}.txt`;
    writeFileSync(file, `${failureReport(r)}\n`);
    return file;
  } catch {
    return null;
  }
}

interface WorkerMsg {
  result: SimResult;
  ms: number;
}

/** Run seeds from..to with a stride, until the deadline (ms since epoch, 0 = none). */
function* runSeeds(a: Args): Generator<WorkerMsg> {
  for (let seed = a.from; seed <= a.to; seed += a.stride) {
    if (a.deadline > 0 && Date.now() >= a.deadline) return;
    const t0 = performance.now();
    const result = runSimulation({
      seed, steps: a.steps, ...(a.nodes ? { nodes: a.nodes } : {}), ...(a.bug ? { bug: a.bug } : {}),
      verbose: a.verbose, noConfChanges: a.noConf, protocolChecks: !a.noProtocolChecks, clientView: a.clientView,
      ...(a.profile ? { profile: JSON.parse(a.profile) as ProfileOverride } : {}),
    });
    yield { result, ms: performance.now() - t0 };
  }
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (a.long > 0 && !a.child) {
    a.deadline = Date.now() + a.long * 1000;
    a.to = Number.MAX_SAFE_INTEGER;
  }

  if (a.child) {
    for (const msg of runSeeds(a)) process.send?.(msg);
    return;
  }

  const count = a.to - a.from + 1;
  const jobs = a.verbose ? 1 : a.jobs > 0 ? a.jobs : count >= 20 ? 2 : 1;
  let passed = 0;
  let failed = 0;
  const failures: SimResult[] = [];
  let totalMs = 0;
  const t0 = Date.now();

  const onResult = ({ result: r, ms }: WorkerMsg): void => {
    totalMs += ms;
    if (r.ok) passed++;
    else {
      failed++;
      failures.push(r);
      const file = saveFailure(r);
      console.log(headOf(failureReport(r), 60) + (file ? `\n  report: ${file}` : ''));
    }
    if (!a.quiet) console.log(oneLine(r, ms));
  };

  if (jobs <= 1) {
    for (const msg of runSeeds(a)) onResult(msg);
  } else {
    const script = fileURLToPath(import.meta.url);
    const base = ['--steps', String(a.steps), '--child', '--stride', String(jobs), '--deadline', String(a.deadline)];
    if (a.nodes) base.push('--nodes', String(a.nodes));
    if (a.bug) base.push('--bug', a.bug);
    if (a.noConf) base.push('--no-conf');
    if (a.noProtocolChecks) base.push('--no-protocol-checks');
    if (a.clientView) base.push('--client-view');
    if (a.profile) base.push('--profile', a.profile);
    const runs: Promise<void>[] = [];
    for (let j = 0; j < jobs; j++) {
      const from = a.from + j;
      if (from > a.to) break;
      const child = fork(script, ['--seeds', `${from}..${a.to}`, ...base], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      child.on('message', (m) => onResult(m as WorkerMsg));
      runs.push(new Promise<void>((resolve) => {
        child.on('exit', (code, signal) => {
          if (code !== 0) {
            failed++;
            console.log(`FAILED worker ${j} exited with ${signal ?? code}`);
          }
          resolve();
        });
      }));
    }
    await Promise.all(runs);
  }

  const wall = (Date.now() - t0) / 1000;
  const n = passed + failed;
  if (!a.quiet || failed > 0) {
    console.log(`timing: ${n} seeds in ${wall.toFixed(1)}s wall, ${(totalMs / Math.max(1, n)).toFixed(1)} ms/seed, ` +
      `${jobs} job(s)${a.bug ? `, bug ${a.bug}` : ''}`);
  }
  if (failed > 0) {
    console.log('failures:');
    for (const r of failures.sort((x, y) => x.seed - y.seed)) console.log(`  seed ${r.seed} [${r.kind}]  ${r.replay}`);
  }
  console.log(`sim: ${passed} passed, ${failed} failed`);
  process.exitCode = failed > 0 ? 1 : 0;
}

await main();
