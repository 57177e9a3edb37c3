/**
 * Long fault run: `npm run chaos -- --duration 600 --seed S [--nodes 3|5] [--clients 8] [--node-args "..."]`.
 *
 * One real cluster for the whole duration, every nemesis in turn (crashes and pauses of nodes and
 * shard leaders, silent and flapping partitions, an isolated leader, a bridge, delays, a crash inside a
 * partition, and — when libfaketime is installed — a slow clock on an isolated leader), with up to a
 * minority of nodes faulty at once. Clients move to fresh keys every 30 s so that each key's history
 * stays small enough for the linearizability search; every key ever used gets a final linearizable
 * read after every node is killed and restarted at once, and replicas are compared by digest.
 * Prints the same report as `npm run fault`; exits 1 on any violation, with the history saved.
 */
import { faketimeLibrary } from './clock.ts';
import { NEMESES, runFaultTest, type Nemesis } from './run.ts';

function usage(msg?: string): never {
  if (msg) console.error(msg);
  console.error('usage: npm run chaos -- [--duration S (default 600)] [--seed N] [--nodes 3|5] [--clients C] [--keys K] [--epoch S (default 30)] [--node-args "--lease ..."]');
  process.exit(2);
}

const argv = process.argv.slice(2);
const flags = new Map<string, string>();
for (let i = 0; i < argv.length; i += 2) {
  const a = argv[i] as string;
  const v = argv[i + 1];
  if (a === '--help' || a === '-h') usage();
  if (!a.startsWith('--') || v === undefined) usage(`bad argument ${a}`);
  if (!['duration', 'seed', 'nodes', 'clients', 'keys', 'epoch', 'node-args'].includes(a.slice(2))) usage(`unknown flag ${a}`);
  flags.set(a.slice(2), v);
}
const int = (k: string, d: number): number => {
  const v = flags.get(k);
  if (v === undefined) return d;
  const x = Number(v);
  if (!Number.isInteger(x) || x <= 0) usage(`--${k} must be a positive integer`);
  return x;
};
const nodes = int('nodes', 3);
if (nodes !== 3 && nodes !== 5) usage('--nodes must be 3 or 5');
const nemesis = NEMESES.filter((x) => x !== 'clock' || faketimeLibrary() !== null) as Nemesis[];
if (!nemesis.includes('clock')) console.error('[chaos] libfaketime not installed (apt-get install faketime): no clock faults');
const seed = int('seed', 1 + Math.floor(Math.random() * 1e6));
const t0 = Date.now();
const r = await runFaultTest({
  seed,
  nodes,
  seconds: int('duration', 600),
  nemesis,
  clients: int('clients', 8),
  keys: int('keys', 8),
  keyEpochSeconds: int('epoch', 30),
  maxConcurrentFaults: nodes === 5 ? 2 : 1,
  args: ['--shards', '4', '--tick-ms', '50', ...(flags.get('node-args') ?? '').split(' ').filter((x) => x !== '')],
  log: (l) => console.error(`[chaos ${((Date.now() - t0) / 1000).toFixed(0)}s] ${l}`),
});
console.log(r.summary);
if (!r.ok) console.log(`replay the same schedule: npm run chaos -- --duration ${int('duration', 600)} --seed ${seed} --nodes ${nodes}`);
process.exit(r.ok ? 0 : 1);
