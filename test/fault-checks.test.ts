/**
 * The stale-read rules of the fault suite (test/fault/checks.ts) on small made-up histories: what a
 * replica may answer (old, but never older than what it has shown or said), and what it may not.
 */
import test from 'ava';
import { checkStaleEvidence, checkStaleReadsAcrossKeys, evidenceFromJson, evidenceToJson, type AckedPut, type StaleRead } from './fault/checks.ts';

/** Key a written at indexes 10 (value 1) and 30 (value 3); key b at 20 (value 2) and 40 (value 4); all in shard 0. */
const versions = (): Map<string, Map<number, number>> => new Map([
  ['a', new Map([[10, 1], [30, 3]])],
  ['b', new Map([[20, 2], [40, 4]])],
]);
const acked: AckedPut[] = [
  { key: 'a', shard: 0, version: 10, end: 100 },
  { key: 'b', shard: 0, version: 20, end: 200 },
  { key: 'a', shard: 0, version: 30, end: 300 },
  { key: 'b', shard: 0, version: 40, end: 400 },
];
let n = 0;
const read = (key: string, version: number | null, start: number, end: number, o: Partial<StaleRead> = {}): StaleRead =>
  ({ key, value: version === null ? null : (versions().get(key)?.get(version) ?? -1), version, node: 1, shard: 0, stalenessMs: null, start, end, label: `r${n++}`, ...o });
const check = (reads: StaleRead[], checkStaleness = true): string[] => checkStaleReadsAcrossKeys(reads, versions(), acked, { checkStaleness });

test('a replica may lag: old answers that are consistent with what it showed pass', (t) => {
  t.deepEqual(check([
    read('a', 10, 500, 510), // behind: b@20 exists, but it never showed more than 10
    read('b', 20, 520, 530), // shows 20; a@10 is a's latest write at or under 20
    read('a', 10, 540, 550),
    read('b', 40, 560, 570), // shows 40
    read('a', 30, 580, 590),
  ]), []);
  // overlapping reads are not ordered: the older answer may come from before the newer one's index
  t.deepEqual(check([read('b', 40, 500, 600), read('a', 10, 550, 560)]), []);
  // another node, or another shard, is not bound by what node 1 showed
  t.deepEqual(check([read('b', 40, 500, 510), read('a', 10, 520, 530, { node: 2 }), read('a', 10, 540, 550, { shard: 1 })]), []);
  // absent answers are not judged (a delete's index is not known)
  t.deepEqual(check([read('b', 40, 500, 510), read('a', null, 520, 530)]), []);
});

test('across keys: a replica that showed index 40 must not answer a key from before its write at 30', (t) => {
  const p = check([read('b', 40, 500, 510), read('a', 10, 520, 530)]);
  t.is(p.length, 1);
  t.regex(p[0] as string, /went back across keys.*answered a at version 10, missing its write at index 30/);
});

test('staleness: an answer that says it is at most s ms behind must hold every write acknowledged s ms before it started', (t) => {
  // a@30 was acknowledged at 300: a read starting at 500 that says 100 ms must have it, one that says 250 need not
  const p = check([read('a', 10, 500, 510, { stalenessMs: 100 })]);
  t.is(p.length, 1);
  t.regex(p[0] as string, /said it was at most 100 ms behind, but answered version 10, missing its write at index 30/);
  t.deepEqual(check([read('a', 10, 500, 510, { stalenessMs: 250 })]), []);
  // within the slack of the figure's rounding (2 ms): not judged
  t.deepEqual(check([read('a', 10, 301, 310, { stalenessMs: 0 })]), []);
  // writes of other keys count through the index: b@40 acknowledged at 400 puts the shard at 40, so a@30 must be there
  t.is(check([read('a', 10, 450, 460, { stalenessMs: 10 })]).length, 1);
  // off (clock faults): not judged
  t.deepEqual(check([read('a', 10, 500, 510, { stalenessMs: 100 })], false), []);
  // passed over one by one (a read during a clock fault), the others still judged
  const skipEarly = (r: StaleRead): boolean => r.start < 600;
  t.deepEqual(checkStaleReadsAcrossKeys([read('a', 10, 500, 510, { stalenessMs: 100, node: 2 })], versions(), acked, { checkStaleness: true, skipStaleness: skipEarly }), []);
  t.is(checkStaleReadsAcrossKeys([read('a', 10, 700, 710, { stalenessMs: 100, node: 2 })], versions(), acked, { checkStaleness: true, skipStaleness: skipEarly }).length, 1);
});

test('each rule lists its own problems: many of one kind do not hide the other', (t) => {
  const reads = [read('b', 40, 500, 510)];
  for (let i = 0; i < 8; i++) reads.push(read('a', 10, 520 + 10 * i, 525 + 10 * i));
  reads.push(read('a', 10, 700, 710, { stalenessMs: 100 }));
  const p = checkStaleReadsAcrossKeys(reads, versions(), acked, { checkStaleness: true, limit: 3 });
  t.is(p.filter((x) => x.includes('went back across keys')).length, 3);
  t.is(p.filter((x) => x.includes('said it was at most')).length, 1);
  t.true(p.some((x) => x.startsWith('… 6 more cross-key problems')));
});

test('saved evidence re-checks as the live run did: garbage values (NaN, Infinity) and open clock windows survive JSON', (t) => {
  const e = {
    reads: [read('a', 10, 500, 510, { value: Number.NaN }), read('b', 20, 520, 530, { value: Number.POSITIVE_INFINITY }), read('a', 10, 2_000, 2_010, { stalenessMs: 100 })],
    writeStart: [[1, 50], [2, 150], [3, 250], [4, 350]] as Array<[number, number]>,
    pairs: [...versions()].map(([k, m]) => [k, [...m]]) as Array<[string, Array<[number, number]>]>,
    acked,
    clockWindows: [[1_900, Number.POSITIVE_INFINITY]] as Array<[number, number]>,
  };
  const live = checkStaleEvidence(e);
  t.is(live.filter((p) => p.includes('which no write sent')).length, 2, 'both garbage values are caught');
  t.false(live.some((p) => p.includes('said it was at most')), 'the read inside the open clock window is not judged by its staleness');
  const back = evidenceFromJson(evidenceToJson(e));
  t.deepEqual(checkStaleEvidence(back), live);
});

test('absent answers: judged against the latest acknowledged put under the bound, unless a delete may have come after it', (t) => {
  // a@10 sent at 50, a@30 sent at 250 (acknowledged at 100 and 300); b@40 acknowledged at 400
  const puts: AckedPut[] = [
    { key: 'a', shard: 0, version: 10, start: 50, end: 100 },
    { key: 'b', shard: 0, version: 20, start: 150, end: 200 },
    { key: 'a', shard: 0, version: 30, start: 250, end: 300 },
    { key: 'b', shard: 0, version: 40, start: 350, end: 400 },
  ];
  const afterB40 = (o: Partial<StaleRead> = {}): StaleRead[] => [read('b', 40, 500, 510), read('a', null, 520, 530, o)];
  const judge = (reads: StaleRead[], deletes: Array<{ key: string; start: number; end: number }> | undefined): string[] =>
    checkStaleReadsAcrossKeys(reads, versions(), puts, { checkStaleness: true, ...(deletes === undefined ? {} : { deletes }) });
  const across = judge(afterB40(), []);
  t.is(across.length, 1);
  t.regex(across[0] as string, /answered a absent, though its put at index 30 was acknowledged and no delete of it came after/);
  t.deepEqual(judge(afterB40(), [{ key: 'a', start: 350, end: 360 }]), [], 'a delete sent after the put: may explain it');
  t.deepEqual(judge(afterB40(), [{ key: 'a', start: 510, end: Number.POSITIVE_INFINITY }]), [], 'a delete of unknown outcome sent before the read ended');
  t.is(judge(afterB40(), [{ key: 'a', start: 100, end: 200 }]).length, 1, 'a delete acknowledged before the put was sent came before it');
  t.is(judge(afterB40(), [{ key: 'a', start: 600, end: 610 }]).length, 1, 'a delete sent after the read ended');
  t.is(judge(afterB40(), [{ key: 'b', start: 350, end: 360 }]).length, 1, 'a delete of another key');
  t.deepEqual(judge(afterB40(), undefined), [], 'without the deletes: not judged');
  // staleness: absent 100 ms behind at 500 must hold a@30 (acknowledged at 300)
  const stale = judge([read('a', null, 500, 510, { stalenessMs: 100 })], []);
  t.is(stale.length, 1);
  t.regex(stale[0] as string, /said it was at most 100 ms behind, but answered absent, though its put at index 30/);
  t.deepEqual(judge([read('a', null, 500, 510, { stalenessMs: 450 })], []), [], 'before any put was acknowledged');
});
