/**
 * Everything the harness starts (clusters, etcd members, the ceiling server,
 * temp dirs) registers how to stop it here, so it is stopped on every way out:
 * the normal path (the caller's finally), SIGINT/SIGTERM, an uncaught error,
 * the watchdog, and as a last resort the process 'exit' event (synchronous:
 * SIGKILL by PID and rm -rf).
 */

export interface StopSignal { stopped: boolean }

interface Task {
  name: string;
  stop: () => Promise<unknown>;
  stopSync: () => void;
}

const tasks = new Set<Task>();
let exitHookInstalled = false;

/** Register a resource; the returned function unregisters it (call it after stopping it yourself). */
export function registerCleanup(name: string, stop: () => Promise<unknown>, stopSync: () => void): () => void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const t of [...tasks].reverse()) {
        try { t.stopSync(); } catch { /* best effort */ }
      }
    });
  }
  const t: Task = { name, stop, stopSync };
  tasks.add(t);
  return () => { tasks.delete(t); };
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
 * graceMs, or on a second signal, stop everything and exit 130. An uncaught
 * error stops everything and exits 1.
 */
export function installSignalHandlers(stop: StopSignal, log: (s: string) => void, graceMs = 20_000): void {
  const force = (code: number): void => {
    void cleanupAll(log).finally(() => process.exit(code));
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stop.stopped) {
      log(`${sig} again: stopping everything now`);
      force(130);
      return;
    }
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
