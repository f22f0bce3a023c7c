// One host: live charts (CPU total and per core, load, memory and swap,
// filesystems, disk IO, network per interface), top processes, ranges
// 5 min / 1 h / 24 h / 7 d (long ranges read rollups through step), and
// the host's facts from the registry.
import { h, replace, ago, clock, fmtValue, bytes, duration, parseSeries, seriesKey, labelText, messageOf } from '../util.js';
import { TimeChart } from '../charts.js';

const RANGES = [
  { id: '5m', label: '5 min', seconds: 300, step: 0 },
  { id: '1h', label: '1 h', seconds: 3600, step: 10 },
  { id: '24h', label: '24 h', seconds: 86400, step: 60 },
  { id: '7d', label: '7 d', seconds: 7 * 86400, step: 3600 },
];

const short = (key) => {
  const { name, labels } = parseSeries(key);
  const l = labelText(labels);
  const n = name.replace(/^(cpu|mem|swap|load|disk|net)\./, '').replace(/_percent$/, '').replace(/_bytes_per_sec$/, '').replace(/_/g, ' ');
  return l ? `${n} ${Object.values(labels).join(' ')}` : n;
};

// Each chart: which series (families) it shows and how.
const CHARTS = [
  { id: 'cpu', title: 'CPU', unit: '%', max: 100, families: ['cpu.usage_percent', 'cpu.user_percent', 'cpu.system_percent', 'cpu.iowait_percent', 'cpu.steal_percent'], label: short },
  { id: 'cores', title: 'CPU per core', unit: '%', max: 100, families: ['cpu.core_usage_percent'], label: (k) => parseSeries(k).labels.cpu || k },
  { id: 'load', title: 'Load average', unit: '', families: ['load.1', 'load.5', 'load.15'], label: (k) => k.replace('load.', '') + ' min' },
  { id: 'mem', title: 'Memory and swap', unit: '%', max: 100, families: ['mem.used_percent', 'swap.used_percent'], label: (k) => k.startsWith('mem') ? 'memory used' : 'swap used' },
  { id: 'fs', title: 'Filesystems', unit: '%', max: 100, families: ['disk.used_percent'], label: (k) => parseSeries(k).labels.mount || k },
  { id: 'diskio', title: 'Disk IO', unit: 'bytes/s', families: ['disk.read_bytes_per_sec', 'disk.write_bytes_per_sec'], label: (k) => { const p = parseSeries(k); return `${p.labels.device || ''} ${p.name.includes('read') ? 'read' : 'write'}`; } },
  { id: 'net', title: 'Network', unit: 'bytes/s', families: ['net.rx_bytes_per_sec', 'net.tx_bytes_per_sec'], label: (k) => { const p = parseSeries(k); return `${p.labels.interface || ''} ${p.name.includes('rx') ? 'in' : 'out'}`; } },
];

function chartFor(series) {
  const name = parseSeries(series).name;
  return CHARTS.find((c) => c.families.includes(name));
}

export function hostPage(app, view, id) {
  const { session, live } = app;
  let destroyed = false;
  const timers = [];
  const offs = [];
  let range = RANGES[0];
  let lastTs = 0;
  let livePoints = 0;

  const title = h('h2', { id: 'host-title' }, id);
  const status = h('span', { class: 'status' });
  const age = h('span', { id: 'host-age', class: 'age' });
  const livePill = h('span', { id: 'live-points', class: 'muted small', dataset: { count: '0' } }, '');
  const rangeButtons = RANGES.map((r) => h('button', {
    type: 'button', class: 'seg' + (r === range ? ' active' : ''), dataset: { range: r.id },
    onclick: () => { range = r; for (const b of rangeButtons) b.classList.toggle('active', b.dataset.range === r.id); loadHistory(); },
  }, r.label));
  const resolution = h('span', { id: 'resolution', class: 'muted small' });
  const facts = h('dl', { id: 'facts', class: 'facts' }, h('dt', {}, 'Loading facts…'));
  const procBody = h('tbody');
  const procState = h('p', { class: 'state small' }, 'Waiting for process metrics (process.cpu_percent, process.rss_bytes)…');
  const procs = new Map(); // pid:comm → {comm, pid, cpu, rss, ts}
  const pageState = h('div', { class: 'state', hidden: true });

  const charts = new Map(); // chart id → {def, chart, state}
  const chartEls = CHARTS.map((def) => {
    const canvas = h('canvas', { id: 'chart-' + def.id, 'aria-label': def.title + ' chart', role: 'img' });
    const state = h('p', { class: 'chart-state' }, 'Loading…');
    const chart = new TimeChart(canvas, { unit: def.unit, max: def.max, label: def.label });
    charts.set(def.id, { def, chart, state });
    return h('section', { class: 'panel chart-panel', dataset: { chart: def.id } },
      h('div', { class: 'panel-head' }, h('h3', {}, def.title)), h('div', { class: 'chart-box' }, canvas, state));
  });

  replace(view, h('div', { class: 'host' },
    h('div', { class: 'host-head' },
      h('a', { href: '#/fleet', class: 'back' }, '← Fleet'), title, status, age,
      h('span', { class: 'spacer' }),
      h('div', { class: 'segmented', role: 'group', 'aria-label': 'Range' }, rangeButtons), resolution, livePill),
    pageState,
    h('div', { class: 'host-grid' },
      h('div', { class: 'charts' }, chartEls),
      h('aside', { class: 'side' },
        h('section', { class: 'panel' }, h('h3', {}, 'Host facts'), facts),
        h('section', { class: 'panel' }, h('h3', {}, 'Top processes'), procState,
          h('table', { id: 'processes', class: 'compact' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Process'), h('th', {}, 'PID'), h('th', { class: 'num' }, 'CPU'), h('th', { class: 'num' }, 'RSS'))),
            procBody))))));

  function setChartState(c, text) {
    c.state.textContent = text;
    c.state.hidden = !text;
  }

  async function loadHistory() {
    const to = Math.floor(Date.now() / 1000);
    const from = to - range.seconds;
    for (const c of charts.values()) { c.chart.clear(); c.chart.setWindow(range.seconds * 1000); setChartState(c, 'Loading…'); }
    const names = CHARTS.flatMap((c) => c.families).join(',');
    const thisRange = range;
    try {
      const res = await session.get(`/api/v1/hosts/${encodeURIComponent(id)}/metrics?names=${names}&from=${from}&to=${to}&step=${range.step}`);
      if (destroyed || thisRange !== range) return;
      resolution.textContent = `${res.resolution === 'raw' ? 'raw samples' : res.resolution + ' rollups'}${res.step ? ', ' + duration(res.step).trim() + ' steps' : ''}`;
      resolution.title = 'what the broker read for this range';
      for (const s of res.series || []) {
        const key = seriesKey(s.name, s.labels);
        const def = chartFor(key);
        if (def) charts.get(def.id).chart.setSeries(key, s.points);
      }
      for (const c of charts.values()) {
        setChartState(c, c.chart.series.size ? '' : `No data for ${c.def.families.join(', ')} in the last ${range.label}.`);
      }
    } catch (e) {
      if (destroyed) return;
      for (const c of charts.values()) setChartState(c, 'Could not load history: ' + messageOf(e));
    }
  }

  async function loadFacts() {
    try {
      const res = await session.get('/api/v1/hosts');
      if (destroyed) return;
      const host = (res.hosts || []).find((x) => x.id === id);
      if (!host) {
        pageState.hidden = false;
        pageState.className = 'state error';
        replace(pageState, `No host "${id}" is registered or has data. `, h('a', { href: '#/fleet' }, 'Back to the fleet.'));
        replace(facts, h('dt', {}, 'Unknown host'));
        return;
      }
      pageState.hidden = true;
      status.className = 'status status-' + (host.online ? 'online' : 'offline');
      status.textContent = host.online ? 'online' : 'offline';
      lastTs = Math.max(lastTs, host.last_data);
      const f = [
        ['Hostname', host.hostname || '—'], ['OS', [host.os, host.platform].filter(Boolean).join(' · ') || '—'],
        ['Kernel', host.kernel || '—'], ['Architecture', host.arch || '—'],
        ['CPUs', host.cpu_count || '—'], ['Memory', host.memory_bytes ? bytes(host.memory_bytes) : '—'],
        ['Labels', labelText(host.labels) || '—'], ['Agent', host.agent_version || '—'],
        ['Booted', host.boot_time ? `${clock(host.boot_time)} (up ${duration(Date.now() / 1000 - host.boot_time).trim()})` : '—'],
        ['First seen', clock(host.first_seen)], ['Registered', ago(host.last_registered)],
        ['Heartbeat', ago(host.last_heartbeat)], ['Newest data', ago(host.last_data)],
        ['Fresh', host.fresh ? 'yes' : 'no (collectors may be stuck)'],
      ];
      replace(facts, f.map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
    } catch (e) {
      if (!destroyed) replace(facts, h('dt', { class: 'error' }, 'Could not load facts: ' + messageOf(e)));
    }
  }

  function renderProcs() {
    const now = lastTs;
    for (const [k, p] of procs) if (now - p.ts > 30) procs.delete(k);
    const list = [...procs.values()].sort((a, b) => (b.cpu ?? -1) - (a.cpu ?? -1));
    procState.hidden = list.length > 0;
    replace(procBody, list.slice(0, 15).map((p) => h('tr', {},
      h('td', {}, p.comm), h('td', { class: 'muted' }, p.pid),
      h('td', { class: 'num' }, fmtValue(p.cpu, '%')), h('td', { class: 'num' }, p.rss === undefined ? '—' : bytes(p.rss)))));
  }

  async function loadLatest() {
    try {
      const res = await session.get(`/api/v1/hosts/${encodeURIComponent(id)}/latest`);
      if (destroyed) return;
      for (const m of res.metrics || []) noteProcess(m.name, m.labels, m.value, res.timestamp);
      lastTs = Math.max(lastTs, res.timestamp);
      renderProcs();
    } catch { /* no data yet: the state says so */ }
  }

  function noteProcess(name, labels, value, ts) {
    if (name !== 'process.cpu_percent' && name !== 'process.rss_bytes') return;
    const k = labels.pid + ':' + labels.comm;
    const p = procs.get(k) || { pid: labels.pid, comm: labels.comm };
    if (name === 'process.cpu_percent') p.cpu = value; else p.rss = value;
    p.ts = ts;
    procs.set(k, p);
  }

  offs.push(live.on((msg) => {
    if (msg.type === 'gap') { loadHistory(); return; }
    if (msg.type !== 'sample' || msg.host !== id) return;
    lastTs = Math.max(lastTs, msg.ts);
    let procSeen = false;
    for (const s of msg.samples || []) {
      const def = chartFor(s.series);
      if (def) {
        const c = charts.get(def.id);
        if (c.chart.add(s.series, msg.ts, s.value)) livePoints++;
        if (!c.state.hidden) setChartState(c, '');
      } else if (s.series.startsWith('process.')) {
        const p = parseSeries(s.series);
        noteProcess(p.name, p.labels, s.value, msg.ts);
        procSeen = true;
      }
    }
    if (procSeen) renderProcs();
    livePill.dataset.count = String(livePoints);
    livePill.textContent = `${livePoints} live points`;
    age.textContent = 'data ' + ago(lastTs);
  }));

  live.subscribe({ hosts: [id], kinds: ['sample', 'topk', 'anomaly', 'alert'] });
  loadHistory();
  loadFacts();
  loadLatest();
  timers.push(setInterval(loadFacts, Math.max(app.refreshMs, 5000)));
  timers.push(setInterval(() => { age.textContent = lastTs ? 'data ' + ago(lastTs) : 'no data yet'; for (const c of charts.values()) c.chart.invalidate(); }, 1000));

  return {
    destroy() {
      destroyed = true;
      for (const t of timers) clearInterval(t);
      for (const off of offs) off();
      for (const c of charts.values()) c.chart.destroy();
    },
  };
}
