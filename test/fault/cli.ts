/**
 * Jepsen-style fault run against a real local cluster:
 *
 *   npm run fault -- --seed 7 --nodes 3 --nemesis kill,pause --seconds 20 [--clients 8] [--keys 8] [--faults 1]
 *   npm run fault -- --seed 7 --plant stale-reads      # planted client bug: must be caught (exit 1)
 *   npm run fault -- --check .sim-failures/fault-7.json # re-check a saved history
 *
 * Prints a summary (ops by outcome, faults, checker verdict and time); exits 1 on failure, after
 * writing the history to .sim-failures/fault-<seed>.txt and printing the replay command.
 */
import { existsSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { checkLinearizable } from '../lincheck/checker.ts';
import { checkStaleEvidence, evidenceFromJson } from './checks.ts';
import { NEMESES, historyFromJson, runFaultTest, type Nemesis, type Plant } from './run.ts';

function usage(msg?: string): never {
  if (msg) console.error(msg);
  console.error('usage: npm run fault -- [--seed N] [--nodes 3|5] [--seconds S] [--nemesis kill,kill-leader,pause,pause-leader,partition,isolate-leader,bridge,delay,flap,combined,clock|none] [--clients C] [--keys K] [--faults F (at once, ≤ minority)] [--node-args "--lease ..."] [--max-states N] [--restart-all yes|no] [--clock-rate R] [--plant stale-reads|corrupt-reads|local-lin-reads|stale-read-cache|stale-empty-generation] | --check FILE.json');
  process.exit(2);
}

const argv = process.argv.slice(2);
const flags = new Map<string, string>();
for (let i = 0; i < argv.length; i++) {
  const a = argv[i] as string;
  if (a === '--help' || a === '-h') usage();
  if (!a.startsWith('--')) usage(`unexpected argument ${a}`);
  const v = argv[i + 1];
  if (v === undefined) usage(`missing value for ${a}`);
  flags.set(a.slice(2), v);
  i++;
}
for (const k of flags.keys()) if (!['seed', 'nodes', 'seconds', 'nemesis', 'clients', 'keys', 'plant', 'faults', 'node-args', 'check', 'max-states', 'restart-all', 'clock-rate'].includes(k)) usage(`unknown flag --${k}`);

const int = (k: string, d: number): number => {
  const v = flags.get(k);
  if (v === undefined) return d;
  const x = Number(v);
  if (!Number.isInteger(x) || x < 0) usage(`--${k} must be a non-negative integer`);
  return x;
};

const checkFile = flags.get('check');
if (checkFile !== undefined) {
  // re-check a saved history (written beside .sim-failures/fault-<seed>.txt)
  const history = historyFromJson(readFileSync(checkFile, 'utf8'));
  const t0 = performance.now();
  const v = checkLinearizable(history, { maxStates: int('max-states', 2_000_000) });
  const ms = Math.round(performance.now() - t0);
  if (v.ok === true) console.log(`linearizable (${history.length} ops, ${ms} ms)`);
  else console.log(`${v.ok === false ? 'NOT linearizable' : 'unknown'} (${history.length} ops, ${ms} ms)\n${v.message}`);
  // the stale reads, when saved beside it (fault-<seed>.stale.json)
  const staleFile = checkFile.replace(/\.json$/, '.stale.json');
  let staleOk = true;
  if (staleFile === checkFile || !existsSync(staleFile)) console.log(`stale reads: no evidence beside it (${staleFile})`);
  else {
    const e = evidenceFromJson(readFileSync(staleFile, 'utf8'));
    const problems = checkStaleEvidence(e);
    staleOk = problems.length === 0;
    console.log(staleOk ? `stale reads: ok (${e.reads.length})` : `stale reads: ${problems.length} problem lines of ${e.reads.length} reads\n${problems.join('\n')}`);
  }
  process.exit(v.ok === true && staleOk ? 0 : 1);
}

const seed = int('seed', Math.floor(Math.random() * 1e6));
const nodes = int('nodes', 3);
if (nodes !== 3 && nodes !== 5) usage('--nodes must be 3 or 5');
const nemRaw = flags.get('nemesis') ?? 'kill,kill-leader,pause,pause-leader';
const nemesis = nemRaw === 'none' ? [] : nemRaw.split(',').map((s) => s.trim()).filter((s) => s !== '');
for (const x of nemesis) if (!(NEMESES as readonly string[]).includes(x)) usage(`unknown nemesis ${x}`);
const plant = flags.get('plant');
if (plant !== undefined && plant !== 'stale-reads' && plant !== 'corrupt-reads' && plant !== 'local-lin-reads' && plant !== 'stale-read-cache' && plant !== 'stale-empty-generation') usage(`unknown plant ${plant}`);

const r = await runFaultTest({
  seed,
  nodes,
  seconds: int('seconds', 20),
  nemesis: nemesis as Nemesis[],
  clients: int('clients', 8),
  keys: int('keys', 8),
  maxConcurrentFaults: int('faults', 1),
  maxStates: int('max-states', 2_000_000),
  args: ['--shards', '4', '--tick-ms', '50', ...(flags.get('node-args') ?? '').split(' ').filter((x) => x !== '')],
  plant: plant as Plant | undefined,
  restartAll: flags.get('restart-all') !== 'no',
  ...(flags.get('clock-rate') !== undefined ? { clockRate: Number(flags.get('clock-rate')) } : {}),
  log: (l) => console.error(`[fault] ${l}`),
});
console.log(r.summary);
process.exit(r.ok ? 0 : 1);
