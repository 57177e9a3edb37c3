/** Start (or connect to) the system under test named by `kind`. */
import { openCeilingTarget } from './ceiling.ts';
import { openEtcdTarget } from './etcd.ts';
import { openStoreTarget } from './store.ts';
import type { Target, TargetKind, TargetOptions } from './target.ts';

export function openTarget(kind: TargetKind, o: TargetOptions): Promise<Target> {
  switch (kind) {
    case 'store': return openStoreTarget(o);
    case 'etcd': return openEtcdTarget(o);
    case 'ceiling': return openCeilingTarget(o);
    case 'ceiling3': return openCeilingTarget({ ...o, ceilingProcs: 3 }, 'ceiling3');
    case 'floor': return openCeilingTarget(o, 'floor');
  }
}
