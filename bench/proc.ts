/** Process helpers shared by the benchmark scripts. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export interface ShResult { code: number | null; out: string }

/** Run a command in the repo root with a time limit; on timeout the child (ours) gets SIGTERM then SIGKILL. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<ShResult> {
  return new Promise((res) => {
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const timer = setTimeout(() => {
      out += `\n[timed out after ${timeoutMs} ms]`;
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 2_000).unref();
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, out });
    });
  });
}

/** Whether something accepts TCP connections on 127.0.0.1:port (500 ms limit). */
export function portOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection({ host: '127.0.0.1', port });
    const done = (v: boolean): void => { s.destroy(); res(v); };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(500, () => done(false));
  });
}

/** The pid cluster.sh recorded for node i under dataDir, if any. */
export function readPid(dataDir: string, i: number): number | undefined {
  try {
    const n = Number(readFileSync(join(dataDir, `node-${i}.pid`), 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether 127.0.0.1:port can be bound right now (nothing listens there). */
export function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => res(false));
    srv.listen({ host: '127.0.0.1', port, exclusive: true }, () => srv.close(() => res(true)));
  });
}

/**
 * The first base port b = start, start + step, ... (at most `tries`) such that
 * for every offset o in `offsets` the ports b + o .. b + o + count - 1 are free.
 * Another process may still take them before we do: callers fail loudly then.
 */
export async function findFreePorts(count: number, start: number, offsets: number[] = [0], step = 10, tries = 200): Promise<number> {
  for (let k = 0; k < tries; k++) {
    const base = start + k * step;
    if (base + Math.max(...offsets) + count > 65_535) break;
    let ok = true;
    for (const o of offsets) {
      for (let i = 0; i < count && ok; i++) ok = await portFree(base + o + i);
      if (!ok) break;
    }
    if (ok) return base;
  }
  throw new Error(`no block of ${count} free ports (offsets ${offsets.join(',')}) from ${start} in ${tries} tries`);
}

/** Wait until a predicate holds, polling every intervalMs, for at most timeoutMs. */
export async function waitFor(what: string, pred: () => Promise<boolean> | boolean, timeoutMs: number, intervalMs = 200): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    if (await pred()) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** SIGTERM the process (one we started), wait up to graceMs, then SIGKILL. Returns a note when it had to kill. */
export async function stopPid(pid: number, graceMs = 10_000): Promise<string | undefined> {
  if (!alive(pid)) return undefined;
  try { process.kill(pid, 'SIGCONT'); process.kill(pid, 'SIGTERM'); } catch { return undefined; }
  const t0 = Date.now();
  while (alive(pid) && Date.now() - t0 < graceMs) await new Promise((r) => setTimeout(r, 50));
  if (!alive(pid)) return undefined;
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  return `pid ${pid} did not stop on SIGTERM within ${graceMs} ms: SIGKILL`;
}

/** SIGKILL without waiting (for process 'exit' handlers, which cannot wait). */
export function killNow(pid: number): void {
  try { if (alive(pid)) process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
}

/**
 * Start a long-running child (ours) with stdout and stderr appended to logFile.
 * It stays in our process group, so a Ctrl-C in the terminal reaches it too.
 */
export function spawnLogged(cmd: string, args: string[], env: NodeJS.ProcessEnv, logFile: string, cwd = ROOT): ChildProcess {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', fd, fd] });
    child.on('error', () => { /* reported by the caller's readiness wait */ });
    return child;
  } finally {
    closeSync(fd);
  }
}

/** utime + stime of a process in clock ticks (all threads), from /proc/<pid>/stat. */
export function cpuTicks(pid: number): number | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return undefined;
  }
}

let clkTckCached: number | undefined;
/** Clock ticks per second (getconf CLK_TCK; 100 when unknown). */
export function clkTck(): number {
  if (clkTckCached === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5_000 });
    const n = Number(r.stdout?.trim());
    clkTckCached = Number.isFinite(n) && n > 0 ? n : 100;
  }
  return clkTckCached;
}

/** Machine-wide busy and total jiffies (all cores) from /proc/stat. */
export function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((x, y) => x + y, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}
