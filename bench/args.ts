/** Command-line flags shared by `npm run bench` and `npm run bench:compare`. */
import { DEFAULT_KEYSPACE, type Keyspace } from './workload.ts';

export interface CommonArgs {
  nodes: number;
  shards: number;
  replicas: number;
  keys: number;
  valueBytes: number;
  tenants: number;
  buckets: number;
  scanLimit: number;
  concurrency: number;
  /** Open loop when set (requests/s). */
  rate?: number;
  maxOutstanding: number;
  warmupS: number;
  durationS: number;
  seed: number;
  timeoutMs: number;
  /** Connections per endpoint (default: concurrency). */
  connections?: number;
  maxOps: number;
  storeClient: 'raw' | 'sdk';
  etcdPutRoute: 'spread' | 'leader';
  /** ceiling: server processes, each holding its own partitions (default 1). */
  ceilingProcs: number;
  verify: boolean;
  html?: string;
  keepLogs: boolean;
  quiet: boolean;
}

export function defaultCommonArgs(): CommonArgs {
  return {
    nodes: 3, shards: 16, replicas: 3,
    keys: 10_000, valueBytes: 256, tenants: 64, buckets: 8, scanLimit: 100,
    concurrency: 64, maxOutstanding: 1_000,
    warmupS: 2, durationS: 10, seed: 1, timeoutMs: 10_000, maxOps: 50_000_000,
    storeClient: 'raw', etcdPutRoute: 'leader', ceilingProcs: 1, verify: true, keepLogs: false, quiet: false,
  };
}

export const COMMON_HELP = `  cluster started by the harness (store, etcd):
    --nodes N            store nodes / etcd members (default 3)
    --shards N           store shards (default 16)
    --replicas N         store replicas per shard (default 3)
  keyspace and values:
    --keys N             distinct keys (default 10000); key i: tenant i % T, bucket (i / T) % K
    --value-size B       value bytes (default 256)
    --tenants T          tenants (default 64)
    --buckets K          hourly event-time buckets per tenant (default 8)
    --scan-limit L       records per scan (default 100, at most 1000)
  load:
    --concurrency C      closed loop: C clients, each one request at a time (default 64)
    --rate R             open loop instead: R requests/s on a fixed schedule, latency from the intended
                         send time (no coordinated omission)
    --max-outstanding M  open loop: at most M requests outstanding; a request due beyond that is
                         dropped and counted (default 1000)
    --warmup S           unmeasured seconds first (default 2)
    --duration S         measured seconds (default 10)
    --seed N             seed of key choice, op mix and values (default 1)
    --timeout-ms N       per-request timeout (default 10000)
    --connections N      connections per endpoint (default: --concurrency)
    --max-ops N          cap on requests per phase (default 50000000)
    --no-verify          do not check the length of read values
  target details:
    --store-client raw|sdk      store: raw HTTP routed to the shard leader (default) or the SDK (client/)
    --etcd-put-route leader|spread  etcd: puts to the leader (default) or round-robin over the members
    --ceiling-procs N             ceiling: N server processes, a partition (tenant, bucket) on one of them by
                                  hash (default 1); 3 shows what three processes' HTTP costs on this machine
  output:
    --html FILE          also write a self-contained HTML report
    --keep-logs          keep the temp dir with the logs of the processes started (else removed on success)
    --quiet              no progress lines on stderr
`;

export function num(name: string, v: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER, integer = true): number {
  const n = Number(v);
  if (v === undefined || v === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw new Error(`${name} needs ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got '${v ?? ''}'`);
  }
  return n;
}

export function oneOf<T extends string>(name: string, v: string | undefined, allowed: readonly T[]): T {
  if (v === undefined || !(allowed as readonly string[]).includes(v)) throw new Error(`${name} is one of ${allowed.join('|')}, got '${v ?? ''}'`);
  return v as T;
}

/** Apply one shared flag; false when the flag is not a shared one. `value()` takes the flag's value. */
export function parseCommonFlag(a: CommonArgs, flag: string, value: () => string | undefined): boolean {
  switch (flag) {
    case '--nodes': a.nodes = num(flag, value(), 1, 9); break;
    case '--shards': a.shards = num(flag, value(), 1, 4096); break;
    case '--replicas': a.replicas = num(flag, value(), 1, 9); break;
    case '--keys': a.keys = num(flag, value(), 1, 10_000_000); break;
    case '--value-size': a.valueBytes = num(flag, value(), 1, 1 << 20); break;
    case '--tenants': a.tenants = num(flag, value(), 1, 1_000_000); break;
    case '--buckets': a.buckets = num(flag, value(), 1, 100_000); break;
    case '--scan-limit': a.scanLimit = num(flag, value(), 1, 1000); break;
    case '--concurrency': a.concurrency = num(flag, value(), 1, 10_000); break;
    case '--rate': a.rate = num(flag, value(), 1, 1_000_000, false); break;
    case '--max-outstanding': a.maxOutstanding = num(flag, value(), 1, 100_000); break;
    case '--warmup': a.warmupS = num(flag, value(), 0, 3600, false); break;
    case '--duration': a.durationS = num(flag, value(), 0.1, 3600, false); break;
    case '--seed': a.seed = num(flag, value(), 0, 2 ** 31); break;
    case '--timeout-ms': a.timeoutMs = num(flag, value(), 1, 600_000); break;
    case '--connections': a.connections = num(flag, value(), 1, 10_000); break;
    case '--max-ops': a.maxOps = num(flag, value(), 1); break;
    case '--no-verify': a.verify = false; break;
    case '--store-client': a.storeClient = oneOf(flag, value(), ['raw', 'sdk'] as const); break;
    case '--etcd-put-route': a.etcdPutRoute = oneOf(flag, value(), ['spread', 'leader'] as const); break;
    case '--ceiling-procs': a.ceilingProcs = num(flag, value(), 1, 9); break;
    case '--html': { const v = value(); if (v === undefined || v === '') throw new Error('--html needs a file name'); a.html = v; break; }
    case '--keep-logs': a.keepLogs = true; break;
    case '--quiet': a.quiet = true; break;
    default: return false;
  }
  return true;
}

export function keyspaceOf(a: CommonArgs): Keyspace {
  return { ...DEFAULT_KEYSPACE, keys: a.keys, tenants: a.tenants, buckets: a.buckets };
}

/** Progress and log lines on stderr: on a terminal the progress line overwrites itself. */
export function stderrWriters(quiet: boolean): { log: (s: string) => void; progress: ((s: string) => void) | undefined } {
  const tty = process.stderr.isTTY === true;
  let onProgress = false;
  const log = (s: string): void => {
    process.stderr.write(`${onProgress ? '\r\x1b[K' : ''}${s}\n`);
    onProgress = false;
  };
  const progress = quiet ? undefined : (s: string): void => {
    if (tty) {
      process.stderr.write(`\r\x1b[K${s}`);
      onProgress = true;
    } else {
      process.stderr.write(`${s}\n`);
    }
  };
  return { log, progress };
}
