import { placeReplicas } from './placement.ts';
import type { RingParams } from './ring.ts';

export interface NodeInfo {
  id: number;
  /** Base URL of the node's HTTP API, e.g. http://127.0.0.1:7001 */
  apiUrl: string;
  /** host:port of the node's peer (Raft) listener. */
  peerAddr: string;
}

export interface ShardInfo {
  id: number;
  /** Node ids holding a replica; the founding members of the shard's Raft group. */
  replicas: number[];
}

/**
 * The cluster map. Every node and the SDK check its epoch: a map with a
 * higher epoch replaces a lower one, so placement can later change without
 * rework. With static membership the epoch is 1.
 */
export interface ClusterMap {
  epoch: number;
  bucketMs: number;
  ring: RingParams;
  nodes: NodeInfo[];
  shards: ShardInfo[];
}

export interface ClusterSpec {
  nodes: NodeInfo[];
  shardCount: number;
  replicas: number;
  bucketMs: number;
  vnodes: number;
}

export function buildClusterMap(spec: ClusterSpec): ClusterMap {
  if (!Number.isInteger(spec.shardCount) || spec.shardCount < 1) throw new Error('shard count must be a positive integer');
  if (!Number.isInteger(spec.bucketMs) || spec.bucketMs < 1) throw new Error('bucketMs must be a positive integer');
  if (!Number.isInteger(spec.vnodes) || spec.vnodes < 1) throw new Error('vnodes must be a positive integer');
  const ids = spec.nodes.map((n) => n.id);
  if (new Set(ids).size !== ids.length) throw new Error('node ids must be unique');
  const shardIds = Array.from({ length: spec.shardCount }, (_, i) => i + 1);
  const placement = placeReplicas(shardIds, ids, spec.replicas);
  return {
    epoch: 1,
    bucketMs: spec.bucketMs,
    ring: { vnodes: spec.vnodes, hash: 'xxh64-hi32' },
    nodes: [...spec.nodes].sort((a, b) => a.id - b.id),
    shards: shardIds.map((id) => ({ id, replicas: placement.get(id) as number[] })),
  };
}
