/**
 * raft/ and shard/ must stay pure so the simulator can drive them: no I/O,
 * no clock, no Math.random, no timers, no async; and imports run one way
 * (raft ← shard ← node; client depends on no server code).
 */
import test from 'ava';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir))) {
    const rel = join(dir, name);
    if (statSync(join(root, rel)).isDirectory()) out.push(...tsFiles(rel));
    else if (name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

function code(f: string): string {
  // Comments may mention what the code must not do.
  return readFileSync(join(root, f), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
}

const impure = [
  /from ['"]node:/, /\brequire\(/, /Date\.now/, /new Date\(/, /Math\.random/, /setTimeout|setInterval|setImmediate/,
  /performance\.now/, /process\./, /\basync\b/, /\bawait\b/,
];

for (const dir of ['raft', 'shard']) {
  test(`${dir}/ is free of I/O, clocks, randomness and async`, (t) => {
    t.pass();
    for (const f of tsFiles(dir)) {
      const src = code(f);
      for (const re of impure) t.false(re.test(src), `${f} matches ${re}`);
    }
  });
}

const allowed: Record<string, string[]> = {
  raft: ['raft'],
  shard: ['raft', 'shard'],
  client: ['client'],
};

for (const [dir, ok] of Object.entries(allowed)) {
  test(`${dir}/ imports only from ${ok.join(', ')}`, (t) => {
    t.pass();
    for (const f of tsFiles(dir)) {
      const src = code(f);
      for (const m of src.matchAll(/from ['"](\.\.?\/[^'"]+)['"]/g)) {
        const target = join(f, '..', m[1] as string).split('/')[0] as string;
        t.true(ok.includes(target), `${f} imports ${m[1]}`);
      }
    }
  });
}
