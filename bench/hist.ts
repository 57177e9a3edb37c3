/**
 * Latency histograms for the benchmarks: HDR histograms (hdr-histogram-js) in
 * microseconds, 1 µs .. 10 min, 3 significant digits, and their summaries in ms.
 */
import hdr from 'hdr-histogram-js';

export function newHistogram() {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3, autoResize: true });
}
export type Histogram = ReturnType<typeof newHistogram>;

export interface LatencySummary {
  count: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

/** Record a latency given in ms (clamped to at least 1 µs). */
export function recordMs(h: Histogram, ms: number): void {
  h.recordValue(Math.max(1, Math.round(ms * 1000)));
}

export function summarize(h: Histogram): LatencySummary {
  const ms = (us: number) => us / 1000;
  if (h.totalCount === 0) return { count: 0, meanMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, p999Ms: 0, maxMs: 0 };
  return {
    count: h.totalCount,
    meanMs: ms(h.mean),
    p50Ms: ms(h.getValueAtPercentile(50)),
    p90Ms: ms(h.getValueAtPercentile(90)),
    p99Ms: ms(h.getValueAtPercentile(99)),
    p999Ms: ms(h.getValueAtPercentile(99.9)),
    maxMs: ms(h.maxValue),
  };
}

/** Percentiles at which the percentile curve (HTML report) is sampled: denser towards the tail. */
const CURVE_PERCENTILES = [
  0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 96, 97, 97.5, 98, 98.5, 99, 99.25, 99.5, 99.75,
  99.9, 99.925, 99.95, 99.975, 99.99, 99.995, 99.999, 100,
];

/** [percentile, latency ms] pairs of the histogram, up to the percentile its count can resolve. */
export function percentileCurve(h: Histogram): Array<[number, number]> {
  if (h.totalCount === 0) return [];
  const out: Array<[number, number]> = [];
  for (const p of CURVE_PERCENTILES) {
    // A percentile beyond 1 - 1/count says nothing more than the max.
    if (p < 100 && (100 - p) / 100 < 1 / h.totalCount) continue;
    out.push([p, (p === 100 ? h.maxValue : h.getValueAtPercentile(p)) / 1000]);
  }
  return out;
}

/** A new histogram holding the sum of the given ones. */
export function mergeHistograms(hs: Histogram[]): Histogram {
  const m = newHistogram();
  for (const h of hs) m.add(h);
  return m;
}
