// Small helpers shared by the pages: DOM building without innerHTML (the
// page's CSP forbids inline styles and scripts, and text never becomes
// markup), number and time formatting, series keys.

/**
 * h builds an element: h('a', {href: '#/x', class: 'c', onclick: fn}, 'text', child...).
 * Attributes starting with "on" are listeners; "dataset" is an object;
 * null/undefined/false children are skipped; strings become text nodes.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** clear removes every child of el and appends the given children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** bytes formats a byte count with binary units: 1536 → "1.5 KiB". */
export function bytes(v) {
  if (v === undefined || v === null || !Number.isFinite(v)) return '—';
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
  const s = x >= 100 || i === 0 ? x.toFixed(0) : x.toFixed(1);
  return (v < 0 ? '-' : '') + s + ' ' + units[i];
}

/** fmtValue formats a value by its unit (%, bytes, bytes/s, …). */
export function fmtValue(v, unit) {
  if (v === undefined || v === null || !Number.isFinite(v)) return '—';
  switch (unit) {
    case '%': return v.toFixed(1) + ' %';
    case 'bytes': return bytes(v);
    case 'bytes/s': return bytes(v) + '/s';
    case 'seconds': return duration(v);
    default: {
      const a = Math.abs(v);
      const s = a >= 1e6 ? (v / 1e6).toFixed(1) + 'M' : a >= 1e4 ? (v / 1e3).toFixed(1) + 'k' : a >= 100 ? v.toFixed(0) : v.toFixed(2);
      return unit ? s + ' ' + unit : s;
    }
  }
}

/** duration formats seconds as "3 d 4 h", "5 min", "12 s". */
export function duration(s) {
  if (!Number.isFinite(s)) return '—';
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60 ? (s % 60) + ' s' : '');
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
}

/** ago formats a Unix time as its age: "4 s ago"; 0 is "never". */
export function ago(unix, nowMs = Date.now()) {
  if (!unix) return 'never';
  const d = nowMs / 1000 - unix;
  if (d < -2) return 'in ' + duration(-d);
  if (d < 1) return 'just now';
  return duration(d).trim() + ' ago';
}

/** clock formats a Unix time (s) as a local date and time. */
export function clock(unix) {
  if (!unix) return '—';
  return new Date(unix * 1000).toLocaleString();
}

/** seriesKey renders name and labels as the store's key: name{a=1,b=2}. */
export function seriesKey(name, labels) {
  const keys = Object.keys(labels || {}).sort();
  if (!keys.length) return name;
  return name + '{' + keys.map((k) => k + '=' + labels[k]).join(',') + '}';
}

/** parseSeries splits "name{a=1,b=2}" into {name, labels}. */
export function parseSeries(key) {
  const i = key.indexOf('{');
  if (i < 0 || !key.endsWith('}')) return { name: key, labels: {} };
  const labels = {};
  for (const part of key.slice(i + 1, -1).split(',')) {
    const j = part.indexOf('=');
    if (j > 0) labels[part.slice(0, j)] = part.slice(j + 1);
  }
  return { name: key.slice(0, i), labels };
}

/** labelText renders labels as "a=1 b=2". */
export function labelText(labels) {
  return Object.entries(labels || {}).map(([k, v]) => k + '=' + v).join(' ');
}

/** debounce returns fn delayed until ms passed without another call. */
export function debounce(fn, ms) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

/** messageOf turns anything thrown into a sentence for the page. */
export function messageOf(err) {
  if (!err) return 'unknown error';
  return err.message || String(err);
}
