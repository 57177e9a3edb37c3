/**
 * Metrics touched on every request, kept as plain numbers and handed to
 * prom-client only at a scrape.
 *
 * prom-client's labelled children hash their label object on every inc() and
 * observe(), and allocate while doing it (≈ 1 KB and 2–4 µs per request in a
 * sampling heap profile and a CPU profile under load, bench/README session 12).
 * Here a child is an object with a count; the scrape folds the counts in.
 */
import type client from 'prom-client';

/** A counter child whose increments wait for the next scrape. */
export class PendingCount {
  private n = 0;
  constructor(private readonly child: client.Counter.Internal) {}
  inc(v = 1): void {
    this.n += v;
  }
  /** Called from the counter's collect(): before every scrape. */
  flush(): void {
    if (this.n === 0) return;
    this.child.inc(this.n);
    this.n = 0;
  }
}

/** One label set of a CheapHistogram: a count per bucket (not cumulative), the sum and the count. */
export class HistogramSeries {
  readonly perBucket: Float64Array;
  sum = 0;
  count = 0;
  constructor(readonly labels: Readonly<Record<string, string>>, private readonly bounds: readonly number[]) {
    this.perBucket = new Float64Array(bounds.length + 1);
  }
  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > (b[i] as number)) i++;
    this.perBucket[i] = (this.perBucket[i] as number) + 1;
    this.sum += v;
    this.count++;
  }
}

type Value = { labels: Record<string, string | number>; sharedLabels?: Readonly<Record<string, string>>; value: number; metricName: string; exemplar?: null };
type Exposition = { name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Value[] };

/**
 * A histogram with prom-client's exposition (name_bucket{le}, name_sum,
 * name_count; cumulative buckets, le="+Inf"), registered as a custom metric.
 */
export class CheapHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, HistogramSeries>();

  constructor(readonly name: string, readonly help: string, private readonly bounds: readonly number[], registry: client.Registry) {
    for (let i = 1; i < bounds.length; i++) if (!((bounds[i] as number) > (bounds[i - 1] as number))) throw new Error(`${name}: bucket bounds must increase`);
    registry.registerMetric(this as unknown as client.Metric);
  }

  /** The series of one label set (keep it: looking it up builds a key). */
  child(labels: Record<string, string>): HistogramSeries {
    const k = Object.keys(labels).sort().map((l) => `${l}\u0000${labels[l]}`).join('\u0001');
    let s = this.series.get(k);
    if (s === undefined) this.series.set(k, (s = new HistogramSeries({ ...labels }, this.bounds)));
    return s;
  }

  /** For the text exposition: as prom-client's Histogram gives it (series labels shared, `le` per bucket). */
  getForPromString(): Exposition {
    const values: Value[] = [];
    for (const s of this.series.values()) {
      let acc = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        acc += s.perBucket[i] as number;
        const le = i < this.bounds.length ? (this.bounds[i] as number) : '+Inf';
        values.push({ labels: { le }, sharedLabels: s.labels, value: acc, metricName: `${this.name}_bucket`, exemplar: null });
      }
      values.push({ labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** For JSON (getMetricsAsJSON): every label on the value itself. */
  get(): Exposition {
    const e = this.getForPromString();
    e.values = e.values.map(({ labels, sharedLabels, ...rest }) => ({ ...rest, labels: { ...sharedLabels, ...labels } }));
    return e;
  }

  reset(): void {
    for (const s of this.series.values()) {
      s.perBucket.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
}
