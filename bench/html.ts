/**
 * Self-contained HTML reports (inline SVG and CSS, no scripts, no external
 * assets): throughput and latency over time, and percentile curves.
 */
import type { BenchReport } from './report.ts';
import { errorSummary, fmtMs, fmtRate, modeText } from './report.ts';
import { OP_TYPES, WORKLOAD_DESCRIPTIONS, type OpType } from './workload.ts';

export const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export const OP_COLORS: Record<OpType, string> = { write: '#d62728', read: '#1f77b4', scan: '#2ca02c' };
export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

export interface Line {
  name: string;
  color: string;
  points: Array<[number, number]>;
  dash?: string;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  lines: Line[];
  /** 'percentile': x values are percentiles, drawn on a log scale of 1 / (1 - p). */
  xScale?: 'linear' | 'percentile';
  yLog?: boolean;
  /** A shaded x range (e.g. the warm-up) with a label. */
  shade?: { from: number; to: number; label: string };
  width?: number;
  height?: number;
}

const W = 760;
const H = 300;
const PAD = { l: 64, r: 40, t: 34, b: 44 };
const LEGEND_ROW = 15;

/** "nice" ticks for a linear axis. */
function linearTicks(lo: number, hi: number, n = 5): number[] {
  const span = hi - lo || 1;
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= n) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
    }
  }
  return out;
}

const tickText = (v: number): string => (Math.abs(v) >= 1000 ? fmtRate(v) : Number(v.toPrecision(3)).toString());
const pctX = (p: number): number => -Math.log10(Math.max(1 - p / 100, 1e-5));
const PCT_TICKS: Array<[number, string]> = [[0, '0%'], [1, '90%'], [2, '99%'], [3, '99.9%'], [4, '99.99%'], [5, '99.999%']];

export function lineChart(o: ChartOptions): string {
  const w = o.width ?? W;
  const legendRows = Math.ceil(o.lines.length / 3);
  const ph = (o.height ?? H) - PAD.t - PAD.b;
  const h = PAD.t + ph + PAD.b + legendRows * LEGEND_ROW + 4;
  const pw = w - PAD.l - PAD.r;
  const tx = o.xScale === 'percentile' ? pctX : (x: number) => x;
  const pts = o.lines.flatMap((l) => l.points).filter(([, y]) => Number.isFinite(y) && (!o.yLog || y > 0));
  if (pts.length === 0) return `<figure><figcaption>${esc(o.title)}</figcaption><p class="empty">no data</p></figure>`;
  const xs = pts.map(([x]) => tx(x));
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (o.xScale === 'percentile') { x0 = 0; x1 = Math.max(2, Math.ceil(x1)); }
  if (o.shade !== undefined) { x0 = Math.min(x0, o.shade.from); }
  if (x1 === x0) x1 = x0 + 1;
  const ys = pts.map(([, y]) => y);
  let y0 = o.yLog ? Math.min(...ys) : 0;
  let y1 = Math.max(...ys);
  if (o.yLog) {
    y0 = 10 ** Math.floor(Math.log10(y0));
    y1 = 10 ** Math.ceil(Math.log10(y1 * 1.0001));
  } else {
    y1 = y1 * 1.08 || 1;
  }
  const ty = o.yLog ? (y: number) => Math.log10(y) : (y: number) => y;
  const X = (x: number): number => PAD.l + ((tx(x) - x0) / (x1 - x0)) * pw;
  const Xraw = (x: number): number => PAD.l + ((x - x0) / (x1 - x0)) * pw;
  const Y = (y: number): number => PAD.t + ph - ((ty(y) - ty(y0)) / (ty(y1) - ty(y0))) * ph;
  const s: string[] = [];
  s.push(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${esc(o.title)}">`);
  s.push(`<text x="${PAD.l}" y="18" class="title">${esc(o.title)}</text>`);
  if (o.shade !== undefined) {
    const a = Xraw(o.shade.from);
    const b = Xraw(Math.min(o.shade.to, x1));
    if (b > a) s.push(`<rect x="${a.toFixed(1)}" y="${PAD.t}" width="${(b - a).toFixed(1)}" height="${ph}" class="shade"/><text x="${(a + 4).toFixed(1)}" y="${PAD.t + 12}" class="small">${esc(o.shade.label)}</text>`);
  }
  // axes and grid
  const yt = o.yLog ? logTicks(y0, y1) : linearTicks(y0, y1);
  for (const v of yt) {
    const y = Y(v).toFixed(1);
    s.push(`<line x1="${PAD.l}" x2="${PAD.l + pw}" y1="${y}" y2="${y}" class="grid"/><text x="${PAD.l - 6}" y="${y}" class="ytick">${tickText(v)}</text>`);
  }
  const xt: Array<[number, string]> = o.xScale === 'percentile'
    ? PCT_TICKS.filter(([v]) => v <= x1).map(([v, l]) => [v, l])
    : linearTicks(x0, x1, 8).map((v) => [v, tickText(v)]);
  for (const [v, label] of xt) {
    const x = Xraw(v).toFixed(1);
    s.push(`<line x1="${x}" x2="${x}" y1="${PAD.t}" y2="${PAD.t + ph}" class="grid"/><text x="${x}" y="${PAD.t + ph + 16}" class="xtick">${esc(label)}</text>`);
  }
  s.push(`<rect x="${PAD.l}" y="${PAD.t}" width="${pw}" height="${ph}" class="frame"/>`);
  s.push(`<text x="${PAD.l + pw / 2}" y="${PAD.t + ph + 34}" class="xlabel">${esc(o.xLabel)}</text>`);
  s.push(`<text x="14" y="${PAD.t + ph / 2}" class="ylabel" transform="rotate(-90 14 ${PAD.t + ph / 2})">${esc(o.yLabel)}</text>`);
  // lines
  for (const l of o.lines) {
    const p = l.points.filter(([, y]) => Number.isFinite(y) && (!o.yLog || y > 0));
    if (p.length === 0) continue;
    const d = p.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
    s.push(`<path d="${d}" fill="none" stroke="${l.color}" stroke-width="1.8"${l.dash !== undefined ? ` stroke-dasharray="${l.dash}"` : ''}><title>${esc(l.name)}</title></path>`);
    if (p.length === 1) {
      const [x, y] = p[0]!;
      s.push(`<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="3" fill="${l.color}"/>`);
    }
  }
  // legend, below the plot
  o.lines.forEach((l, i) => {
    const lx = PAD.l + 8 + (i % 3) * 220;
    const ly = PAD.t + ph + PAD.b + 8 + Math.floor(i / 3) * LEGEND_ROW;
    s.push(`<line x1="${lx}" x2="${lx + 18}" y1="${ly - 4}" y2="${ly - 4}" stroke="${l.color}" stroke-width="2"${l.dash !== undefined ? ` stroke-dasharray="${l.dash}"` : ''}/><text x="${lx + 22}" y="${ly}" class="legend">${esc(l.name)}</text>`);
  });
  s.push('</svg>');
  return `<figure>${s.join('')}</figure>`;
}

/** Horizontal bars: one group per category, one bar per series. */
export function barChart(title: string, unit: string, groups: Array<{ name: string; bars: Array<{ name: string; value: number; color: string }> }>): string {
  const barH = 16;
  const gap = 10;
  const labelW = 150;
  const w = W;
  const max = Math.max(1, ...groups.flatMap((g) => g.bars.map((b) => b.value)));
  const rows = groups.reduce((n, g) => n + g.bars.length, 0);
  const h = 30 + rows * (barH + 3) + groups.length * gap + 10;
  const s: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${esc(title)}">`];
  s.push(`<text x="8" y="18" class="title">${esc(title)}</text>`);
  let y = 30;
  for (const g of groups) {
    s.push(`<text x="8" y="${y + barH - 3}" class="legend">${esc(g.name)}</text>`);
    for (const b of g.bars) {
      const bw = ((w - labelW - 160) * b.value) / max;
      s.push(`<text x="${labelW - 6}" y="${y + barH - 4}" class="ytick">${esc(b.name)}</text>`);
      s.push(`<rect x="${labelW}" y="${y}" width="${bw.toFixed(1)}" height="${barH}" fill="${b.color}"/>`);
      s.push(`<text x="${(labelW + bw + 6).toFixed(1)}" y="${y + barH - 4}" class="legend">${esc(`${fmtRate(b.value)} ${unit}`)}</text>`);
      y += barH + 3;
    }
    y += gap;
  }
  s.push('</svg>');
  return `<figure>${s.join('')}</figure>`;
}

const CSS = `body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:980px;color:#222;padding:0 12px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:12px 0}svg text{font:11px system-ui,sans-serif;fill:#333}svg .title{font-size:13px;font-weight:600}
svg .grid{stroke:#e5e5e5}svg .frame{fill:none;stroke:#999}svg .shade{fill:#f2f2f2}svg .small{font-size:10px;fill:#777}
svg .ytick{text-anchor:end;dominant-baseline:middle}svg .xtick{text-anchor:middle}svg .xlabel{text-anchor:middle}svg .ylabel{text-anchor:middle}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}.empty{color:#777}code{background:#f3f3f3;padding:0 3px}`;

export function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title><style>${CSS}</style></head><body>${body}</body></html>\n`;
}

export function table(head: string[], rows: string[][]): string {
  return `<table><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>${rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('')}</table>`;
}

export function renderBenchHtml(rep: BenchReport): string {
  const p = rep.params;
  const r = rep.result;
  const ops = OP_TYPES.filter((o) => r.perOp[o] !== undefined);
  const b: string[] = [];
  b.push(`<h1>bench: ${esc(p.target)}, workload ${esc(p.workload)}</h1>`);
  b.push(`<p>${esc(WORKLOAD_DESCRIPTIONS[p.workload])}; reads ${esc(p.consistency)}; keys ${esc(p.distribution)} over ${fmtRate(p.keys)} keys; ` +
    `${p.valueBytes}-byte values; ${esc(modeText(r))}; ${p.warmupS} s warm-up + ${p.durationS} s measured. ${esc(rep.time)}, git ${esc(rep.git.commit.slice(0, 12))}${rep.git.dirty ? ' (dirty)' : ''}.</p>`);
  b.push(`<p><code>${esc(rep.command)}</code></p>`);
  const rows = ops.map((o) => {
    const s = r.perOp[o]!;
    return [o, String(s.ok), fmtRate(s.opsPerSec), fmtMs(s.latency.p50Ms), fmtMs(s.latency.p90Ms), fmtMs(s.latency.p99Ms), fmtMs(s.latency.p999Ms), fmtMs(s.latency.maxMs), s.errors === 0 ? '0' : `${s.errors}: ${errorSummary(s.errorCodes)}`];
  });
  if (ops.length > 1) rows.push(['all', String(r.ok), fmtRate(r.opsPerSec), fmtMs(r.latency.p50Ms), fmtMs(r.latency.p90Ms), fmtMs(r.latency.p99Ms), fmtMs(r.latency.p999Ms), fmtMs(r.latency.maxMs), String(r.errors)]);
  b.push(table(['op', 'ok', 'ops/s', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'errors'], rows));
  const shade = r.warmupS > 0 ? { from: 0, to: r.warmupS, label: 'warm-up' } : undefined;
  const ser = r.series;
  b.push('<h2>Throughput over time</h2>');
  b.push(lineChart({
    title: 'successful requests per second', xLabel: 'seconds since start', yLabel: 'ops/s',
    lines: ops.map((o) => ({ name: o, color: OP_COLORS[o], points: ser.map((pt) => [pt.t, pt.ops[o] ?? 0] as [number, number]) })),
    ...(shade !== undefined ? { shade } : {}),
  }));
  b.push('<h2>Latency over time</h2>');
  b.push(lineChart({
    title: 'latency per second: p50 (solid), p99 (dashed), max (dotted)', xLabel: 'seconds since start', yLabel: 'ms (log)', yLog: true,
    lines: ops.flatMap((o) => [
      { name: `${o} p50`, color: OP_COLORS[o], points: ser.filter((pt) => pt.p50[o] !== undefined).map((pt) => [pt.t, pt.p50[o]!] as [number, number]) },
      { name: `${o} p99`, color: OP_COLORS[o], dash: '6 3', points: ser.filter((pt) => pt.p99[o] !== undefined).map((pt) => [pt.t, pt.p99[o]!] as [number, number]) },
      { name: `${o} max`, color: OP_COLORS[o], dash: '1 3', points: ser.filter((pt) => pt.max[o] !== undefined).map((pt) => [pt.t, pt.max[o]!] as [number, number]) },
    ]),
    ...(shade !== undefined ? { shade } : {}),
  }));
  b.push('<h2>Latency by percentile (measured window)</h2>');
  b.push(lineChart({
    title: 'latency at each percentile', xLabel: 'percentile', yLabel: 'ms (log)', xScale: 'percentile', yLog: true,
    lines: ops.map((o) => ({ name: o, color: OP_COLORS[o], points: r.perOp[o]!.percentiles })),
  }));
  if (ser.some((pt) => pt.errors > 0 || pt.dropped > 0)) {
    b.push('<h2>Errors and drops over time</h2>');
    b.push(lineChart({
      title: 'failed (and, open loop, dropped) requests per interval', xLabel: 'seconds since start', yLabel: 'requests',
      lines: [
        { name: 'errors', color: '#d62728', points: ser.map((pt) => [pt.t, pt.errors] as [number, number]) },
        { name: 'dropped', color: '#7f7f7f', points: ser.map((pt) => [pt.t, pt.dropped] as [number, number]) },
      ],
      ...(shade !== undefined ? { shade } : {}),
    }));
  }
  b.push('<h2>Details</h2>');
  const { series: _s, ...rest } = r;
  b.push(`<pre>${esc(JSON.stringify({ params: p, target: rep.target, machine: rep.machine, git: rep.git, preload: rep.preload, notes: rep.notes, result: rest }, null, 2))}</pre>`);
  return page(`bench ${p.target} ${p.workload}`, b.join('\n'));
}
