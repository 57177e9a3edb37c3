/** Invariant checks kept on in production: a failure is a programmer error. */
export class RaftInvariantError extends Error {
  override name = 'RaftInvariantError';
}

export function invariant(cond: unknown, what: string): asserts cond {
  if (!cond) throw new RaftInvariantError(`raft invariant violated: ${what}`);
}
