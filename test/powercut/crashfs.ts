/**
 * Power cuts for test clusters: each node's data directory on its own crashfs
 * mount (test/powercut/crashfs.c, a FUSE passthrough that forgets, when it
 * exits, every write not made durable by fsync, fdatasync or O_DSYNC).
 *
 * A power cut of a node: SIGKILL the node, then stop its crashfs (SIGTERM: it
 * unmounts and puts every file back to its last sync), then mount again.
 * Needs /dev/fuse, gcc and libfuse3 (`apt-get install fuse3 libfuse3-dev
 * pkg-config`; `.ci/run` installs them).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';

const SOURCE = fileURLToPath(new URL('./crashfs.c', import.meta.url));

/** Why crashfs cannot run here, or null when it can. */
export function crashFsUnavailable(): string | null {
  if (!existsSync('/dev/fuse')) return 'no /dev/fuse';
  if (spawnSync('pkg-config', ['--exists', 'fuse3']).status !== 0) return 'no libfuse3 (apt-get install fuse3 libfuse3-dev pkg-config)';
  if (spawnSync('gcc', ['--version']).status !== 0) return 'no gcc';
  return null;
}

/** The crashfs binary, compiled once per source version (cached under the temp directory). */
export function crashFsBinary(): string {
  const src = readFileSync(SOURCE);
  const bin = join(tmpdir(), `kv-crashfs-${createHash('sha256').update(src).digest('hex').slice(0, 16)}`);
  if (existsSync(bin)) return bin;
  const flags = spawnSync('pkg-config', ['--cflags', '--libs', 'fuse3'], { encoding: 'utf8' });
  if (flags.status !== 0) throw new Error(`pkg-config fuse3 failed: ${flags.stderr}`);
  const tmp = `${bin}.${process.pid}.tmp`;
  const cc = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', tmp, SOURCE, ...flags.stdout.trim().split(/\s+/)], { encoding: 'utf8', timeout: 60_000 });
  if (cc.status !== 0) throw new Error(`compiling crashfs failed:\n${cc.stderr}`);
  renameSync(tmp, bin); // atomic: a parallel test worker sees the whole binary or none
  return bin;
}

function mounted(dir: string): boolean {
  // /proc/self/mountinfo field 5 is the mount point (spaces escaped as \040; our temp paths have none).
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === dir);
}

async function until(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One crashfs "disk": a backing directory, its mount point and the daemon serving it. */
export class CrashDisk {
  private proc: ChildProcess | null = null;
  private stderr = '';
  private constructor(readonly backing: string, readonly mountPoint: string) {}

  /** A new, empty disk, mounted; unmounted and removed in the test's teardown. */
  static async create(t: ExecutionContext): Promise<CrashDisk> {
    const root = mkdtempSync(join(tmpdir(), 'kv-crashfs-'));
    const d = new CrashDisk(join(root, 'backing'), join(root, 'mnt'));
    mkdirSync(d.backing);
    mkdirSync(d.mountPoint);
    t.teardown(async () => {
      await d.unmount(true);
      // A mount that would not go: leave its directory rather than walk into it.
      if (!mounted(d.mountPoint)) rmSync(root, { recursive: true, force: true });
    });
    await d.mount();
    return d;
  }

  /**
   * Mount (again). `seed` decides what the next cut leaves: 0, everything back to its last sync; above
   * 0, a random prefix of each file's unsynced appends kept and each unsynced overwrite kept or undone
   * at random (test/powercut/crashfs.c).
   */
  async mount(seed = 0): Promise<void> {
    if (this.proc !== null) throw new Error('crashfs already mounted');
    const p = spawn(crashFsBinary(), [this.backing, this.mountPoint, '-f', '-s', '-o', 'auto_unmount'], {
      stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CRASHFS_SEED: String(seed) },
    });
    this.stderr = '';
    p.stderr?.setEncoding('utf8');
    p.stderr?.on('data', (s: string) => { this.stderr += s; });
    this.proc = p;
    await until(`crashfs mount of ${this.mountPoint}`, () => {
      if (p.exitCode !== null) throw new Error(`crashfs exited (${p.exitCode}): ${this.stderr}`);
      return mounted(this.mountPoint);
    }, 10_000);
  }

  /**
   * The power cut, once the processes using the disk are dead: crashfs exits, unmounting and putting
   * every file back to its last sync. Returns its summary line. Then mount() again.
   */
  async cut(): Promise<string> {
    const status = await this.unmount(false);
    const line = this.stderr.split('\n').find((l) => l.startsWith('crashfs: power cut:'));
    if (line === undefined) throw new Error(`crashfs did not report its power cut (it ended with ${status}): ${this.stderr}`);
    return line;
  }

  /** Stop crashfs (its power cut); returns how it ended. */
  private async unmount(force: boolean): Promise<string> {
    const p = this.proc;
    if (p !== null && p.exitCode === null && p.signalCode === null) {
      // 'close', not 'exit': only then has everything it wrote to stderr (the summary) been read.
      const closed = new Promise((r) => p.once('close', r));
      p.kill(force ? 'SIGKILL' : 'SIGTERM');
      const timer = setTimeout(() => p.kill('SIGKILL'), 15_000);
      await closed;
      clearTimeout(timer);
    }
    this.proc = null;
    if (mounted(this.mountPoint)) spawnSync('fusermount3', ['-uz', this.mountPoint]);
    if (!force && mounted(this.mountPoint)) throw new Error(`crashfs: ${this.mountPoint} still mounted`);
    return p === null ? 'no process' : `exit code ${p.exitCode}, signal ${p.signalCode}`;
  }
}

/** Paths (in the backing directory) of the files a power cut put back, from crashfs's summary line. */
export function filesPutBack(summary: string): string[] {
  const m = /; files: (.*)$/.exec(summary);
  if (m === null) throw new Error(`not a crashfs summary: ${summary}`);
  return (m[1] as string).split(' ').filter(Boolean);
}
