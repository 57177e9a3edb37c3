/**
 * Static placement: shard s gets `replicas` distinct nodes, starting at
 * position s mod N in the sorted node list. Every node then holds
 * floor(S·R/N) or ceil(S·R/N) replicas, within the contract's ⌈S·R/N⌉+1 bound.
 */
export function placeReplicas(shardIds: readonly number[], nodeIds: readonly number[], replicas: number): Map<number, number[]> {
  const nodes = [...nodeIds].sort((a, b) => a - b);
  if (replicas < 1 || replicas > nodes.length) {
    throw new Error(`replicas must be in [1, ${nodes.length}] (one per node), got ${replicas}`);
  }
  const out = new Map<number, number[]>();
  shardIds.forEach((s, i) => {
    const r: number[] = [];
    for (let k = 0; k < replicas; k++) r.push(nodes[(i + k) % nodes.length] as number);
    out.set(s, r);
  });
  return out;
}
