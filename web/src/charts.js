// Chart.js set-up for live time series, and hand-drawn sparklines.
//
// Live charts update in place: points are appended to the datasets' arrays
// and the chart redrawn with update('none') at most once per animation
// frame (every chart that changed, together). Animation is off, points are
// not drawn, parsing is off (data are {x, y} in ms) and the decimation
// plugin (LTTB) thins long ranges to about two samples per pixel.
import {
  Chart, LineController, LineElement, PointElement, LinearScale, Legend, Tooltip, Decimation, Filler,
} from 'chart.js';
import { fmtValue } from './util.js';

Chart.register(LineController, LineElement, PointElement, LinearScale, Legend, Tooltip, Decimation, Filler);
Chart.defaults.animation = false;
Chart.defaults.font.family = getComputedStyle(document.documentElement).getPropertyValue('--font').trim() || 'system-ui, sans-serif';
Chart.defaults.color = '#5b6473';

const palette = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#9333ea', '#ea580c', '#0d9488', '#4f46e5'];

/** color returns the i-th colour of the palette. */
export function color(i) { return palette[i % palette.length]; }

const dirty = new Set();
let frame = 0;

function scheduleDraw(chart) {
  dirty.add(chart);
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    const charts = [...dirty];
    dirty.clear();
    for (const c of charts) c.draw();
  });
}

function timeLabel(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs > 2 * 86400e3) return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' }) + ' ' + d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  if (spanMs > 600e3) return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/**
 * TimeChart is one Chart.js line chart of several series over a moving
 * window. add(key, ts, value) appends a live point; setSeries replaces a
 * series' history; setWindow changes the visible range.
 */
export class TimeChart {
  constructor(canvas, { unit, max, min = 0, stacked = false, label = (k) => k }) {
    this.unit = unit;
    this.label = label;
    this.windowMs = 300e3;
    this.series = new Map(); // key → dataset
    this.points = 0;
    this.chart = new Chart(canvas, {
      type: 'line',
      data: { datasets: [] },
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: 'nearest', axis: 'x', intersect: false },
        elements: { point: { radius: 0, hitRadius: 4 }, line: { borderWidth: 1.5, tension: 0 } },
        scales: {
          x: {
            type: 'linear',
            ticks: { maxTicksLimit: 6, maxRotation: 0, callback: (v) => timeLabel(v, this.windowMs) },
            grid: { color: '#eef0f3' },
          },
          y: {
            min, max, stacked,
            ticks: { maxTicksLimit: 5, callback: (v) => fmtValue(v, unit) },
            grid: { color: '#eef0f3' },
          },
        },
        plugins: {
          legend: { position: 'bottom', labels: { boxWidth: 10, boxHeight: 10, font: { size: 11 } } },
          tooltip: {
            callbacks: {
              title: (items) => items.length ? new Date(items[0].parsed.x).toLocaleString() : '',
              label: (item) => `${item.dataset.label}: ${fmtValue(item.parsed.y, unit)}`,
            },
          },
          decimation: { enabled: true, algorithm: 'lttb', samples: 400, threshold: 600 },
        },
      },
    });
  }

  dataset(key) {
    let ds = this.series.get(key);
    if (!ds) {
      const i = this.series.size;
      ds = { label: this.label(key), data: [], borderColor: color(i), backgroundColor: color(i) + '33', fill: false, spanGaps: false };
      this.series.set(key, ds);
      this.chart.data.datasets.push(ds);
      this.chart.data.datasets.sort((a, b) => a.label.localeCompare(b.label, undefined, { numeric: true }));
      this.chart.data.datasets.forEach((d, j) => { d.borderColor = color(j); d.backgroundColor = color(j) + '33'; });
    }
    return ds;
  }

  /** setSeries replaces the history of key with points [[unixSeconds, value], ...]. */
  setSeries(key, points) {
    const ds = this.dataset(key);
    // Once decimation ran, ds.data is its getter/setter over ds._data (the
    // full data): assigning sets the full data either way.
    ds.data = points.map(([t, v]) => ({ x: t * 1000, y: v }));
    this.trim();
    this.invalidate();
  }

  /** add appends a live point; out-of-order points are dropped. */
  add(key, ts, value) {
    const ds = this.dataset(key);
    const data = ds._data || ds.data;
    const x = ts * 1000;
    const last = data.length ? data[data.length - 1].x : -Infinity;
    if (x < last) return false;
    if (x === last) data[data.length - 1] = { x, y: value };
    else data.push({ x, y: value });
    this.points++;
    this.invalidate();
    return true;
  }

  setWindow(ms) {
    this.windowMs = ms;
    this.invalidate();
  }

  trim() {
    const from = Date.now() - this.windowMs - 60e3;
    for (const ds of this.series.values()) {
      const data = ds._data || ds.data;
      let i = 0;
      while (i < data.length && data[i].x < from) i++;
      if (i > 0) data.splice(0, i);
    }
  }

  clear() {
    this.series.clear();
    this.chart.data.datasets = [];
    this.invalidate();
  }

  invalidate() { scheduleDraw(this); }

  draw() {
    this.trim();
    const now = Date.now();
    this.chart.options.scales.x.min = now - this.windowMs;
    this.chart.options.scales.x.max = now;
    this.chart.update('none');
  }

  destroy() {
    dirty.delete(this);
    this.chart.destroy();
  }

  /** count returns how many points the chart holds (for tests and the footer). */
  count() {
    let n = 0;
    for (const ds of this.series.values()) n += (ds._data || ds.data).length;
    return n;
  }
}

/**
 * Sparkline draws the last values of a series on a small canvas by hand
 * (a Chart.js instance per cell would cost too much for 50 hosts × 3).
 */
export class Sparkline {
  constructor(canvas, { max = 100, capacity = 120, color: c = '#2563eb' } = {}) {
    this.canvas = canvas;
    this.max = max;
    this.capacity = capacity;
    this.color = c;
    this.values = [];
  }

  push(ts, v) {
    const last = this.values[this.values.length - 1];
    if (last && ts < last[0]) return;
    if (last && ts === last[0]) last[1] = v;
    else this.values.push([ts, v]);
    if (this.values.length > this.capacity) this.values.splice(0, this.values.length - this.capacity);
    sparkDirty(this);
  }

  set(points) {
    this.values = points.slice(-this.capacity);
    sparkDirty(this);
  }

  draw() {
    const c = this.canvas;
    if (!c.isConnected) return;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 100;
    const hgt = c.clientHeight || 24;
    if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(hgt * dpr); }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, hgt);
    const n = this.values.length;
    c.dataset.points = String(n);
    if (n < 2) return;
    const t0 = this.values[0][0];
    const span = Math.max(1, this.values[n - 1][0] - t0);
    g.beginPath();
    for (let i = 0; i < n; i++) {
      const [t, v] = this.values[i];
      const x = ((t - t0) / span) * (w - 2) + 1;
      const y = hgt - 1 - Math.max(0, Math.min(1, v / this.max)) * (hgt - 2);
      if (i) g.lineTo(x, y); else g.moveTo(x, y);
    }
    g.strokeStyle = this.color;
    g.lineWidth = 1.25;
    g.stroke();
    g.lineTo(w - 1, hgt);
    g.lineTo(1, hgt);
    g.closePath();
    g.fillStyle = this.color + '22';
    g.fill();
  }
}

const sparks = new Set();
let sparkFrame = 0;
function sparkDirty(s) {
  sparks.add(s);
  if (sparkFrame) return;
  sparkFrame = requestAnimationFrame(() => {
    sparkFrame = 0;
    const all = [...sparks];
    sparks.clear();
    for (const x of all) x.draw();
  });
}
