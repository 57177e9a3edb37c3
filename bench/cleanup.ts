/**
 * Everything the harness starts (clusters, etcd members, the ceiling server,
 * temp dirs) registers how to stop it here, so it is stopped on every way out:
 * the normal path (the caller's finally), SIGINT/SIGTERM, an uncaught error,
 * the watchdog, and as a last resort the process 'exit' event (synchronous:
 * SIGKILL by PID and rm -rf). If the harness itself is SIGKILLed, the reaper
 * (bench/reaper.ts, started by startReaper) stops what is still registered.
 */
import { spawn } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, killNow } from './proc.ts';

export interface StopSignal { stopped: boolean }

/** What the reaper must stop and remove if the harness dies without cleaning up. */
export interface Resources {
  pids: () => number[];
  dirs: string[];
}

interface Task {
  name: string;
  stop: () => Promise<unknown>;
  stopSync: () => void;
  resources?: Resources;
}

const tasks = new Set<Task>();
let exitHookInstalled = false;

/** Register a resource; the returned function unregisters it (call it after stopping it yourself). */
export function registerCleanup(name: string, stop: () => Promise<unknown>, stopSync: () => void, resources?: Resources): () => void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const t of [...tasks].reverse()) {
        try { t.stopSync(); } catch { /* best effort */ }
      }
    });
  }
  const t: Task = { name, stop, stopSync, ...(resources !== undefined ? { resources } : {}) };
  tasks.add(t);
  writeReaperState();
  return () => { tasks.delete(t); writeReaperState(); };
}

// ------------------------------------------------------------------ the reaper

let reaperState: string | undefined;
let lastState = '';

function writeReaperState(): void {
  if (reaperState === undefined) return;
  const pids: number[] = [];
  const dirs: string[] = [];
  for (const t of tasks) {
    if (t.resources === undefined) continue;
    pids.push(...t.resources.pids());
    dirs.push(...t.resources.dirs);
  }
  const json = JSON.stringify({ pids, dirs });
  if (json === lastState) return;
  try {
    writeFileSync(`${reaperState}.tmp`, json);
    renameSync(`${reaperState}.tmp`, reaperState);
    lastState = json;
  } catch { /* the dir may be gone at the very end */ }
}

/**
 * Start the dead-man switch: a detached process (own process group, so a
 * Ctrl-C does not reach it) that stops the registered resources if this
 * process dies without doing so. It exits by itself once we are gone.
 */
export function startReaper(stateDir: string): void {
  reaperState = join(stateDir, 'reaper-state.json');
  writeReaperState();
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'reaper.ts'), '--parent', String(process.pid), '--state', reaperState], {
    cwd: ROOT, detached: true, stdio: 'ignore',
  });
  child.on('error', () => { /* best effort */ });
  child.unref();
  const pid = child.pid;
  // PIDs appear after a target starts: refresh the state file every second.
  setInterval(writeReaperState, 1_000).unref();
  // On a clean exit everything is stopped already: stop the reaper too.
  process.on('exit', () => { writeReaperState(); if (pid !== undefined) killNow(pid); });
}

let running: Promise<void> | null = null;

/** Stop everything still registered, newest first. Never throws; a second call waits for the first. */
export function cleanupAll(log: (s: string) => void = () => {}): Promise<void> {
  running ??= (async () => {
    for (const t of [...tasks].reverse()) {
      log(`cleanup: stopping ${t.name}`);
      try {
        await t.stop();
      } catch (e) {
        log(`cleanup: ${t.name}: ${(e as Error).message}; SIGKILL`);
        try { t.stopSync(); } catch { /* best effort */ }
      }
      tasks.delete(t);
    }
  })().finally(() => { running = null; });
  return running;
}

/**
 * First SIGINT/SIGTERM: set stop.stopped (the run ends its phase early and the
 * caller's finally stops what it started); if that has not finished within
 * graceMs, or on a second signal, stop everything and exit 130. Signals within
 * 1.5 s of the first count as the same one: under `npm run` a single Ctrl-C
 * arrives twice (from the terminal's process group, and relayed by npm and tsx).
 * An uncaught error stops everything and exits 1. `atForcedExit` runs after
 * the forced cleanup, before exiting.
 */
export function installSignalHandlers(stop: StopSignal, log: (s: string) => void, graceMs = 20_000, atForcedExit: () => void = () => {}): void {
  const force = (code: number): void => {
    void cleanupAll(log).finally(() => {
      try { atForcedExit(); } catch { /* best effort */ }
      process.exit(code);
    });
  };
  let firstAt = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stop.stopped && firstAt > 0) {
      if (Date.now() - firstAt < 1_500) return;
      log(`${sig} again: stopping everything now`);
      force(130);
      return;
    }
    firstAt = Date.now();
    stop.stopped = true;
    process.exitCode = 130;
    log(`${sig}: finishing the phase and stopping what was started (again to force)`);
    setTimeout(() => { log(`still running ${graceMs / 1000} s after ${sig}: forcing`); force(130); }, graceMs).unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('uncaughtException', (e) => { log(`uncaught: ${e.stack ?? e.message}`); force(1); });
  process.on('unhandledRejection', (e) => { log(`unhandled rejection: ${(e as Error)?.stack ?? String(e)}`); force(1); });
}

/** After ms: stop the run, stop everything, exit 1. Unref'd: it never keeps the process alive. */
export function startWatchdog(ms: number, stop: StopSignal, log: (s: string) => void): NodeJS.Timeout {
  const t = setTimeout(() => {
    log(`watchdog: still running after ${(ms / 1000).toFixed(0)} s; stopping everything`);
    stop.stopped = true;
    void cleanupAll(log).finally(() => process.exit(1));
  }, ms);
  t.unref();
  return t;
}
