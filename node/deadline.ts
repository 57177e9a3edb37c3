/**
 * `done` at most once: with the outcome, or `onTimeout()` after `ms`. Each
 * runs through `guard`, which must not throw: completions run inside the
 * Store's rounds and timers. The HTTP routes (http.ts) and the single-key fast
 * path (fast-kv.ts) each pass their own guard (a fastify reply, a raw response).
 */
export function withDeadline<T>(ms: number, guard: (fn: () => void) => void, done: (v: T) => void, onTimeout: () => void): (v: T) => void {
  let settled = false;
  const timer = setTimeout(() => {
    if (settled) return;
    settled = true;
    guard(onTimeout);
  }, ms);
  return (v) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    guard(() => done(v));
  };
}
