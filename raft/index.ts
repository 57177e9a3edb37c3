export * from './types.ts';
export { RaftNode, defaultRaftConfig, type ReadIndexResult } from './raft-node.ts';
