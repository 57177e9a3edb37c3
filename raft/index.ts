export * from './types.ts';
export { RaftNode, defaultRaftConfig, applyConfChange, type ReadIndexResult } from './raft-node.ts';
export { RaftInvariantError } from './assert.ts';
