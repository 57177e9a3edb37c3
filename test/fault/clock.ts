/**
 * Clock faults for one node process at a time, with libfaketime (Debian's `faketime` package; `.ci/run`
 * installs it). Every node starts under LD_PRELOAD with its own control file holding "+0" (real time),
 * re-read on every clock call (FAKETIME_NO_CACHE: a change applies at once). `setRate(i, r)` makes node
 * i's clocks — the monotonic clock that drives its timers and Raft ticks, and the wall clock — run at
 * r × real time from now on, without a jump.
 *
 * libfaketime computes fake = start + offset + (real − start) × rate, `start` being when the process
 * loaded it. Changing only the rate while the process runs would move the clock back — and Node aborts
 * when its monotonic clock goes back (`Assertion failed: (now) >= (timer_base())`), as real monotonic
 * clocks never do. So every change also sets the offset that keeps the clock continuous, computed from
 * the spawn time (a little before libfaketime's own start); a slowdown errs forward by a few ms, a
 * speed-up gets a forward margin of a quarter second: the clock may jump forward, never back.
 *
 * Why: a leader lease counts time on the leader's clock. If that clock runs slow, the leader believes
 * its lease for longer than the followers wait before electing someone else — the lease's bounded-drift
 * assumption, made testable.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const LIB_DIRS = ['/usr/lib/x86_64-linux-gnu/faketime', '/usr/lib/aarch64-linux-gnu/faketime', '/usr/lib/faketime', '/usr/local/lib/faketime'];

/** Path of libfaketimeMT (the thread-safe build Node needs), or null when it is not installed. */
export function faketimeLibrary(): string | null {
  for (const d of LIB_DIRS) {
    const p = join(d, 'libfaketimeMT.so.1');
    if (existsSync(p)) return p;
  }
  return null;
}

/** Forward margin (s) when a clock speeds up: more than the spawn-to-exec delay on a loaded machine. */
const MARGIN_S = 0.25;

export class ClockControl {
  private readonly dir = mkdtempSync(join(tmpdir(), 'kv-clock-'));
  /** per node: spawn time (performance.now, ms), current offset (s) and rate */
  private readonly state = new Map<number, { spawnedMs: number; offsetS: number; rate: number }>();

  constructor(private readonly lib: string) {}

  static create(): ClockControl {
    const lib = faketimeLibrary();
    if (lib === null) throw new Error('clock faults need libfaketime: apt-get install faketime');
    return new ClockControl(lib);
  }

  private file(i: number): string {
    return join(this.dir, `node-${i}.rc`);
  }

  /** Environment for node i's process; call it just before spawning (its clocks start at real time). */
  envFor(i: number): Record<string, string> {
    this.state.set(i, { spawnedMs: performance.now(), offsetS: 0, rate: 1 });
    this.write(i);
    return { LD_PRELOAD: this.lib, FAKETIME_TIMESTAMP_FILE: this.file(i), FAKETIME_NO_CACHE: '1' };
  }

  /** Node i's clocks run at `rate` × real time from now on (continuous: no jump back). */
  setRate(i: number, rate: number): void {
    const st = this.state.get(i);
    if (st === undefined) throw new Error(`node ${i} was not started under libfaketime`);
    if (!(rate > 0)) throw new Error('rate must be > 0');
    const elapsedS = (performance.now() - st.spawnedMs) / 1000;
    // Keep start + offset + elapsed × rate unchanged across the change. Our elapsed time counts from
    // the spawn, a little before libfaketime's start: slowing down, that errs forward (by a few ms);
    // speeding up it would err back, so add a forward margin then.
    st.offsetS += elapsedS * (st.rate - rate) + (rate > st.rate ? MARGIN_S : 0);
    st.rate = rate;
    this.write(i);
  }

  rate(i: number): number {
    return this.state.get(i)?.rate ?? 1;
  }

  private write(i: number): void {
    const st = this.state.get(i) as { offsetS: number; rate: number };
    const o = st.offsetS;
    writeFileSync(this.file(i), `${o >= 0 ? '+' : '-'}${Math.abs(o).toFixed(3)} x${st.rate}\n`);
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
