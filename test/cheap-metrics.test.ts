import test from 'ava';
import client from 'prom-client';
import { CheapHistogram, PendingCount } from '../node/cheap-metrics.ts';

const BOUNDS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

test('CheapHistogram exposes what a prom-client Histogram fed the same values exposes', async (t) => {
  const a = new client.Registry();
  const b = new client.Registry();
  a.setDefaultLabels({ node: '1' });
  b.setDefaultLabels({ node: '1' });
  const real = new client.Histogram({ name: 'h_seconds', help: 'x', labelNames: ['route', 'method'], buckets: BOUNDS, registers: [a] });
  const cheap = new CheapHistogram('h_seconds', 'x', BOUNDS, b);
  const values = [0, 0.0005, 0.00051, 0.003, 0.003, 0.7, 5, 6, 1e9, 0.1];
  for (const [i, v] of values.entries()) {
    const labels = { route: i % 2 === 0 ? '/v1/kv/:tenant/:key' : '/v1/cluster', method: 'GET' };
    real.observe(labels, v);
    cheap.child(labels).observe(v);
  }
  // One series looked up again by the same labels in another key order is the same series.
  cheap.child({ route: '/x', method: 'PUT' }).observe(0.01);
  cheap.child({ method: 'PUT', route: '/x' }).observe(0.02);
  real.observe({ route: '/x', method: 'PUT' }, 0.01);
  real.observe({ route: '/x', method: 'PUT' }, 0.02);
  t.is(await b.metrics(), await a.metrics());
  const json = async (r: client.Registry): Promise<unknown> => JSON.parse(JSON.stringify(await r.getMetricsAsJSON())) as unknown;
  t.deepEqual(await json(b), await json(a));
  real.reset();
  b.resetMetrics();
  t.regex(await b.metrics(), /h_seconds_count\{node="1",route="\/x",method="PUT"\} 0/);
});

test('PendingCount reaches the counter at each scrape, not before', async (t) => {
  const r = new client.Registry();
  const pending: PendingCount[] = [];
  const c = new client.Counter({ name: 'c_total', help: 'x', labelNames: ['k'], registers: [r], collect: () => pending.forEach((p) => p.flush()) });
  pending.push(new PendingCount(c.labels({ k: 'a' })));
  (pending[0] as PendingCount).inc();
  (pending[0] as PendingCount).inc(4);
  t.regex(await r.metrics(), /c_total\{k="a"\} 5/);
  (pending[0] as PendingCount).inc();
  t.regex(await r.metrics(), /c_total\{k="a"\} 6/);
});
