/**
 * The harness's dead-man switch: a detached process that outlives a SIGKILLed
 * harness (kill -9, an OOM kill, or tsx killing a child that did not answer a
 * relayed signal in time) and then stops what it had started.
 *
 *   node --import tsx bench/reaper.ts --parent PID --state FILE
 *
 * Every 500 ms it checks whether PID is alive. Once it is not, it reads FILE
 * (JSON {pids: number[], dirs: string[]}, kept current by bench/cleanup.ts),
 * adds the PIDs in any `node-*.pid` file of those dirs (cluster.sh's), sends
 * them SIGTERM, SIGKILL after 5 s, removes the dirs and FILE (and FILE's dir
 * if that is then empty), and exits. While the harness lives it does nothing
 * else; the harness kills it on a clean exit. It gives up after 12 hours.
 */
import { readFileSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { dirname, join } from 'node:path';

const argOf = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
};
const parent = Number(argOf('--parent'));
const stateFile = argOf('--state');
if (!Number.isInteger(parent) || parent <= 1 || stateFile === undefined) process.exit(2);

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function state(): { pids: number[]; dirs: string[] } {
  try {
    const j = JSON.parse(readFileSync(stateFile as string, 'utf8')) as { pids?: unknown; dirs?: unknown };
    const pids = Array.isArray(j.pids) ? j.pids.filter((p): p is number => Number.isInteger(p) && p > 1) : [];
    const dirs = Array.isArray(j.dirs) ? j.dirs.filter((d): d is string => typeof d === 'string' && d.length > 1) : [];
    return { pids, dirs };
  } catch {
    return { pids: [], dirs: [] };
  }
}

function pidFilesIn(dir: string): number[] {
  try {
    return readdirSync(dir).filter((f) => /^node-\d+\.pid$/.test(f))
      .map((f) => Number(readFileSync(join(dir, f), 'utf8').trim())).filter((p) => Number.isInteger(p) && p > 1);
  } catch {
    return [];
  }
}

async function reap(): Promise<void> {
  const s = state();
  const pids = [...new Set([...s.pids, ...s.dirs.flatMap(pidFilesIn)])].filter(alive);
  for (const p of pids) {
    try { process.kill(p, 'SIGCONT'); process.kill(p, 'SIGTERM'); } catch { /* gone */ }
  }
  const t0 = Date.now();
  while (pids.some(alive) && Date.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 100));
  for (const p of pids) {
    try { if (alive(p)) process.kill(p, 'SIGKILL'); } catch { /* gone */ }
  }
  await new Promise((r) => setTimeout(r, 200));
  for (const d of s.dirs) rmSync(d, { recursive: true, force: true });
  rmSync(stateFile as string, { force: true });
  try { rmdirSync(dirname(stateFile as string)); } catch { /* not empty: logs stay */ }
}

const started = Date.now();
const timer = setInterval(() => {
  if (alive(parent)) {
    if (Date.now() - started > 12 * 3_600_000) process.exit(0);
    return;
  }
  clearInterval(timer);
  void reap().finally(() => process.exit(0));
}, 500);
