// The fleet overview: every host with online/offline, data freshness and
// CPU/memory/disk sparklines (live), search and filters, Top-K panels,
// active anomalies and firing alerts.
import { h, replace, ago, fmtValue, labelText, parseSeries, messageOf, debounce, bytes } from '../util.js';
import { Sparkline } from '../charts.js';

const SPARK_METRICS = ['cpu.usage_percent', 'mem.used_percent', 'disk.used_percent'];

const TOPK = [
  { id: 'cpu', title: 'CPU', family: 'cpu.usage_percent', unit: '%' },
  { id: 'mem', title: 'Memory', family: 'mem.used_percent', unit: '%' },
  { id: 'disk', title: 'Disk', family: 'disk.used_percent', unit: '%', prefer: 'disk.used_percent{mount=/}' },
  { id: 'net', title: 'Network', family: 'net.rx_bytes_per_sec', also: 'net.tx_bytes_per_sec', unit: 'bytes/s' },
];

export function fleetPage(app, view) {
  const { session, live, store } = app;
  const timers = [];
  const offs = [];
  let destroyed = false;

  // --- hosts table ---------------------------------------------------------
  const rows = new Map(); // id → row state
  let hosts = [];
  let loaded = false;
  let loadError = '';
  const search = h('input', { id: 'host-search', type: 'search', placeholder: 'Search id, hostname or label=value', 'aria-label': 'Search hosts' });
  const labelSel = h('select', { id: 'label-filter', 'aria-label': 'Filter by label' }, h('option', { value: '' }, 'All labels'));
  const statusSel = h('select', { id: 'status-filter', 'aria-label': 'Filter by status' },
    h('option', { value: '' }, 'Any status'), h('option', { value: 'online' }, 'Online'),
    h('option', { value: 'offline' }, 'Offline'), h('option', { value: 'stale' }, 'Not fresh'));
  const sortSel = h('select', { id: 'host-sort', 'aria-label': 'Sort hosts' },
    h('option', { value: 'id' }, 'Sort: host'), h('option', { value: 'cpu' }, 'Sort: CPU'),
    h('option', { value: 'mem' }, 'Sort: memory'), h('option', { value: 'disk' }, 'Sort: disk'),
    h('option', { value: 'age' }, 'Sort: data age'));
  const summary = h('p', { id: 'fleet-summary', class: 'summary', 'aria-live': 'polite' }, 'Loading hosts…');
  const tbody = h('tbody');
  const table = h('table', { id: 'hosts', class: 'hosts' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Host'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Data'),
      h('th', { scope: 'col', class: 'spark-col' }, 'CPU'), h('th', { scope: 'col', class: 'spark-col' }, 'Memory'),
      h('th', { scope: 'col', class: 'spark-col' }, 'Disk (fullest)'), h('th', { scope: 'col' }, 'System'))),
    tbody);
  const tableState = h('div', { class: 'state', id: 'hosts-state' }, h('span', { class: 'spinner' }), 'Loading hosts…');

  const hostsPanel = h('section', { class: 'panel hosts-panel' },
    h('div', { class: 'panel-head' }, h('h2', {}, 'Hosts'), summary),
    h('div', { class: 'toolbar' }, search, labelSel, statusSel, sortSel),
    tableState, h('div', { class: 'table-wrap' }, table));

  function rowFor(host) {
    let r = rows.get(host.id);
    if (r) return r;
    const cell = () => {
      const canvas = h('canvas', { class: 'spark', width: 120, height: 24 });
      const val = h('span', { class: 'spark-val' }, '—');
      return { td: h('td', { class: 'spark-cell' }, canvas, val), canvas, val };
    };
    const cpu = cell(), mem = cell(), disk = cell();
    r = {
      id: host.id,
      link: h('a', { href: '#/host/' + encodeURIComponent(host.id), class: 'host-link' }, host.id),
      labels: h('span', { class: 'labels' }),
      status: h('span', { class: 'status' }),
      age: h('span', { class: 'age' }),
      system: h('td', { class: 'system' }),
      cpu, mem, disk,
      spark: {
        cpu: new Sparkline(cpu.canvas, { color: '#2563eb' }),
        mem: new Sparkline(mem.canvas, { color: '#7c3aed' }),
        disk: new Sparkline(disk.canvas, { color: '#d97706' }),
      },
      value: { cpu: undefined, mem: undefined, disk: undefined },
      mounts: new Map(),
      lastData: 0,
      historyLoaded: false,
    };
    r.tr = h('tr', { dataset: { host: host.id } },
      h('td', { class: 'host-cell' }, r.link, r.labels), h('td', {}, r.status), h('td', {}, r.age),
      cpu.td, mem.td, disk.td, r.system);
    rows.set(host.id, r);
    return r;
  }

  function fillRow(r, host) {
    r.host = host;
    r.lastData = Math.max(r.lastData, host.last_data || 0);
    replace(r.labels, Object.entries(host.labels || {}).map(([k, v]) => h('span', { class: 'chip' }, k + '=' + v)));
    let status = 'offline', text = 'offline';
    if (host.online) { status = 'online'; text = 'online'; } else if (!host.last_registered && !host.last_heartbeat && host.fresh) { status = 'unregistered'; text = 'sending, not registered'; }
    r.status.className = 'status status-' + status;
    r.status.textContent = text;
    r.status.title = host.online ? 'heartbeat or registration within the offline threshold' : (status === 'unregistered' ? 'data arrives but the host never registered (no heartbeat)' : 'no heartbeat within the offline threshold');
    const sys = [host.platform || host.os, host.cpu_count ? host.cpu_count + ' CPU' : '', host.memory_bytes ? bytes(host.memory_bytes) : ''].filter(Boolean).join(' · ');
    r.system.textContent = sys || '—';
    updateAge(r);
  }

  function updateAge(r) {
    const fresh = r.host ? r.host.fresh : false;
    const liveFresh = r.lastData && Date.now() / 1000 - r.lastData < 30;
    r.age.textContent = ago(r.lastData);
    r.age.className = 'age ' + (fresh || liveFresh ? 'fresh' : 'stale');
    r.age.title = r.lastData ? 'newest data ' + new Date(r.lastData * 1000).toLocaleString() : 'no data yet';
  }

  function setValue(r, which, ts, v, unit = '%') {
    r.value[which] = v;
    r[which].val.textContent = fmtValue(v, unit);
    r.spark[which].push(ts, v);
  }

  function diskMax(r) {
    let m;
    for (const v of r.mounts.values()) m = m === undefined ? v : Math.max(m, v);
    return m;
  }

  function matches(host) {
    const q = search.value.trim().toLowerCase();
    if (q) {
      for (const tok of q.split(/\s+/)) {
        if (tok.includes('=')) {
          const [k, v] = tok.split('=', 2);
          if (!Object.entries(host.labels || {}).some(([hk, hv]) => hk.toLowerCase() === k && hv.toLowerCase().startsWith(v))) return false;
        } else if (!host.id.toLowerCase().includes(tok) && !(host.hostname || '').toLowerCase().includes(tok) &&
          !labelText(host.labels).toLowerCase().includes(tok)) return false;
      }
    }
    const lab = labelSel.value;
    if (lab) {
      const [k, v] = lab.split('=', 2);
      if ((host.labels || {})[k] !== v) return false;
    }
    switch (statusSel.value) {
      case 'online': if (!host.online) return false; break;
      case 'offline': if (host.online) return false; break;
      case 'stale': if (host.fresh) return false; break;
      default:
    }
    return true;
  }

  function render() {
    if (!loaded) return;
    const visible = hosts.filter(matches);
    const key = sortSel.value;
    const val = (id) => {
      const r = rows.get(id);
      if (key === 'disk') return diskMax(r) ?? -1;
      if (key === 'age') return -(r.lastData || 0);
      return r.value[key] ?? -1;
    };
    if (key === 'id') visible.sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
    else visible.sort((a, b) => val(b.id) - val(a.id) || a.id.localeCompare(b.id));
    const trs = visible.map((host) => rows.get(host.id).tr);
    tbody.replaceChildren(...trs);
    for (const host of visible) for (const s of Object.values(rows.get(host.id).spark)) s.set(s.values);
    const online = hosts.filter((x) => x.online).length;
    const stale = hosts.filter((x) => !x.fresh).length;
    summary.textContent = `${hosts.length} host${hosts.length === 1 ? '' : 's'} · ${online} online · ${hosts.length - online} offline · ${stale} not fresh` +
      (visible.length !== hosts.length ? ` · ${visible.length} shown` : '');
    if (loadError) {
      tableState.className = 'state error';
      replace(tableState, 'Could not load hosts: ' + loadError + ' ', h('button', { class: 'ghost', onclick: loadHosts }, 'Retry'));
      tableState.hidden = false;
    } else if (!hosts.length) {
      tableState.className = 'state empty';
      replace(tableState, 'No host has reported yet. Start an agent pointed at a broker (', h('code', {}, 'bin/agent -broker HOST:9093'), ') and it appears here within seconds.');
      tableState.hidden = false;
    } else if (!visible.length) {
      tableState.className = 'state empty';
      replace(tableState, 'No host matches the search and filters. ', h('button', { class: 'ghost', onclick: () => { search.value = ''; labelSel.value = ''; statusSel.value = ''; render(); } }, 'Clear filters'));
      tableState.hidden = false;
    } else {
      tableState.hidden = true;
    }
  }

  function fillLabelOptions() {
    const all = new Set();
    for (const host of hosts) for (const [k, v] of Object.entries(host.labels || {})) all.add(k + '=' + v);
    const have = new Set([...labelSel.options].map((o) => o.value));
    const want = [...all].sort();
    if (want.length + 1 === have.size && want.every((x) => have.has(x))) return;
    const keep = labelSel.value;
    replace(labelSel, h('option', { value: '' }, 'All labels'), want.map((x) => h('option', { value: x }, x)));
    labelSel.value = want.includes(keep) ? keep : '';
  }

  async function loadHosts() {
    try {
      const res = await session.get('/api/v1/hosts');
      if (destroyed) return;
      hosts = res.hosts || [];
      loadError = '';
      for (const host of hosts) fillRow(rowFor(host), host);
      for (const id of [...rows.keys()]) if (!hosts.some((x) => x.id === id)) rows.delete(id);
      fillLabelOptions();
      loaded = true;
      render();
      loadHistory();
    } catch (e) {
      if (destroyed) return;
      loadError = messageOf(e);
      loaded = true;
      render();
    }
  }

  // Sparkline history (last 10 minutes at 10 s), a few hosts at a time.
  let historyRunning = false;
  async function loadHistory() {
    if (historyRunning) return;
    historyRunning = true;
    try {
      const todo = [...rows.values()].filter((r) => !r.historyLoaded && r.lastData);
      const worker = async () => {
        while (todo.length && !destroyed) {
          const r = todo.shift();
          r.historyLoaded = true;
          const to = Math.floor(Date.now() / 1000);
          try {
            const res = await session.get(`/api/v1/hosts/${encodeURIComponent(r.id)}/metrics?names=${SPARK_METRICS.join(',')}&from=${to - 600}&to=${to}&step=10`);
            const disk = new Map();
            for (const s of res.series || []) {
              if (!s.points.length) continue;
              if (s.name === 'cpu.usage_percent') mergeHistory(r, 'cpu', s.points);
              else if (s.name === 'mem.used_percent') mergeHistory(r, 'mem', s.points);
              else if (s.name === 'disk.used_percent') for (const [t, v] of s.points) disk.set(t, Math.max(disk.get(t) ?? 0, v));
            }
            if (disk.size) mergeHistory(r, 'disk', [...disk.entries()].sort((a, b) => a[0] - b[0]));
          } catch (e) {
            console.warn('history of', r.id, e);
          }
        }
      };
      await Promise.all([worker(), worker(), worker(), worker()]);
    } finally {
      historyRunning = false;
    }
  }

  function mergeHistory(r, which, points) {
    const sp = r.spark[which];
    const firstLive = sp.values.length ? sp.values[0][0] : Infinity;
    sp.set([...points.filter(([t]) => t < firstLive), ...sp.values]);
    if (r.value[which] === undefined) {
      const [, v] = points[points.length - 1];
      r.value[which] = v;
      r[which].val.textContent = fmtValue(v, '%');
    }
  }

  const resort = debounce(() => { if (sortSel.value !== 'id' && !destroyed) render(); }, 2000);
  offs.push(live.on((msg) => {
    if (msg.type !== 'sample') return;
    let r = rows.get(msg.host);
    if (!r) { loadHostsSoon(); return; }
    r.lastData = Math.max(r.lastData, msg.ts);
    for (const s of msg.samples || []) {
      if (s.series === 'cpu.usage_percent') setValue(r, 'cpu', msg.ts, s.value);
      else if (s.series === 'mem.used_percent') setValue(r, 'mem', msg.ts, s.value);
      else if (s.series.startsWith('disk.used_percent')) r.mounts.set(parseSeries(s.series).labels.mount || s.series, s.value);
    }
    const d = diskMax(r);
    if (d !== undefined) setValue(r, 'disk', msg.ts, d);
    updateAge(r);
    resort();
  }));
  const loadHostsSoon = debounce(loadHosts, 500);
  for (const el of [search]) el.addEventListener('input', debounce(render, 120));
  for (const el of [labelSel, statusSel, sortSel]) el.addEventListener('change', render);

  // --- Top-K ----------------------------------------------------------------
  const topkPanels = TOPK.map((def) => {
    const select = h('select', { class: 'topk-select', 'aria-label': def.title + ' series', hidden: true });
    const list = h('ol', { class: 'topk-list', id: 'topk-' + def.id });
    const state = h('p', { class: 'state small' }, 'Loading…');
    const p = { def, select, list, state, metric: def.prefer || def.family, el: null };
    p.el = h('section', { class: 'panel topk', dataset: { topk: def.id } },
      h('div', { class: 'panel-head' }, h('h3', {}, 'Top ', def.title), select), state, list);
    select.addEventListener('change', () => { p.metric = select.value; loadTopK(p); });
    return p;
  });

  function renderTopK(p) {
    const entry = store.topk.get(p.metric);
    const entries = entry ? entry.entries : [];
    if (!entry) return;
    p.state.hidden = entries.length > 0;
    p.state.textContent = `No host reports ${p.metric} right now.`;
    const max = Math.max(...entries.map((e) => e.value), p.def.unit === '%' ? 100 : 0) || 1;
    replace(p.list, entries.map((e, i) => {
      const bar = h('span', { class: 'bar' });
      bar.style.width = Math.max(1, (e.value / max) * 100).toFixed(1) + '%';
      return h('li', { dataset: { host: e.host, rank: i + 1 } },
        h('span', { class: 'rank' }, String(i + 1)),
        h('a', { href: '#/host/' + encodeURIComponent(e.host), class: 'topk-host' }, e.host),
        h('span', { class: 'bar-track' }, bar),
        h('span', { class: 'topk-value' }, fmtValue(e.value, p.def.unit)));
    }));
  }

  async function loadTopK(p) {
    try {
      const res = await session.get(`/api/v1/topk?metric=${encodeURIComponent(p.metric)}&k=10`);
      if (destroyed) return;
      store.setTopK(p.metric, res.entries);
    } catch (e) {
      p.state.hidden = false;
      p.state.className = 'state small error';
      p.state.textContent = 'Could not load: ' + messageOf(e);
    }
  }

  async function loadTopKMetrics() {
    try {
      const res = await session.get('/api/v1/topk');
      if (destroyed) return;
      const metrics = res.metrics || [];
      for (const p of topkPanels) {
        const fams = [p.def.family, p.def.also].filter(Boolean);
        const options = metrics.filter((m) => fams.some((f) => m === f || m.startsWith(f + '{'))).sort();
        if (options.length > 1 || (options.length === 1 && options[0] !== p.def.family)) {
          if (!options.includes(p.metric)) p.metric = options.find((m) => m === p.def.prefer) || options.find((m) => m.startsWith(p.def.family)) || options[0];
          replace(p.select, options.map((m) => h('option', { value: m }, m)));
          p.select.value = p.metric;
          p.select.hidden = false;
        }
        loadTopK(p);
      }
    } catch (e) {
      for (const p of topkPanels) { p.state.className = 'state small error'; p.state.textContent = 'Could not load: ' + messageOf(e); }
    }
  }
  offs.push(store.on('topk', (metric) => { for (const p of topkPanels) if (p.metric === metric) renderTopK(p); }));

  // --- anomalies and firing alerts -----------------------------------------
  const anomalyList = h('ul', { id: 'anomalies', class: 'event-list' });
  const anomalyState = h('p', { class: 'state small' }, 'No active anomaly: every series is within its expected band.');
  const anomalyCount = h('span', { class: 'count' });
  const alertList = h('ul', { id: 'firing-alerts', class: 'event-list' });
  const alertState = h('p', { class: 'state small' }, 'No alert is firing.');
  const alertCount = h('span', { class: 'count' });

  function renderAnomalies() {
    const all = [...store.anomalies.values()].sort((a, b) => Math.abs(b.z) - Math.abs(a.z));
    anomalyCount.textContent = String(all.length);
    anomalyState.hidden = all.length > 0;
    replace(anomalyList, all.slice(0, 12).map((a) => h('li', { class: 'sev-' + a.severity, dataset: { host: a.host, series: a.series } },
      h('span', { class: 'sev' }, a.severity),
      h('a', { href: '#/host/' + encodeURIComponent(a.host) }, a.host), ' ',
      h('code', {}, a.series),
      h('span', { class: 'muted' }, ` ${fmtValue(a.value)} (expected ${fmtValue(a.expected)}, z ${a.z.toFixed(1)}) since ${ago(a.started)}`))),
    all.length > 12 ? h('li', { class: 'muted' }, `and ${all.length - 12} more`) : null);
  }

  function renderAlerts() {
    const all = [...store.alerts.values()].filter((a) => a.state === 'firing' || a.state === 'stale')
      .sort((a, b) => (b.fired_at || 0) - (a.fired_at || 0));
    alertCount.textContent = String(all.length);
    alertState.hidden = all.length > 0;
    replace(alertList, all.slice(0, 12).map((a) => h('li', { class: 'alert-' + a.state, dataset: { rule: a.rule_id, host: a.host } },
      h('span', { class: 'sev' }, a.state),
      h('a', { href: '#/host/' + encodeURIComponent(a.host) }, a.host), ' ',
      h('code', {}, a.series),
      h('span', { class: 'muted' }, ` ${fmtValue(a.value)} ${a.op} ${fmtValue(a.threshold)} · rule ${a.rule_id} · since ${ago(a.fired_at || a.since)}`))),
    all.length > 12 ? h('li', { class: 'muted' }, h('a', { href: '#/alerts' }, `and ${all.length - 12} more`)) : null);
  }
  offs.push(store.on('anomaly', renderAnomalies));
  offs.push(store.on('alert', renderAlerts));

  const side = h('aside', { class: 'side' },
    h('div', { class: 'topk-grid' }, topkPanels.map((p) => p.el)),
    h('section', { class: 'panel', id: 'alerts-panel' }, h('div', { class: 'panel-head' }, h('h3', {}, 'Firing alerts ', alertCount), h('a', { href: '#/alerts' }, 'Rules →')), alertState, alertList),
    h('section', { class: 'panel', id: 'anomalies-panel' }, h('div', { class: 'panel-head' }, h('h3', {}, 'Active anomalies ', anomalyCount)), anomalyState, anomalyList));

  replace(view, h('div', { class: 'fleet' }, hostsPanel, side));

  live.subscribe({ metrics: SPARK_METRICS, kinds: ['sample', 'topk', 'anomaly', 'alert'] });
  loadHosts();
  loadTopKMetrics();
  renderAnomalies();
  renderAlerts();
  timers.push(setInterval(loadHosts, app.refreshMs));
  timers.push(setInterval(loadTopKMetrics, 30000));
  timers.push(setInterval(() => { for (const r of rows.values()) if (r.tr.isConnected) updateAge(r); }, 1000));

  return {
    destroy() {
      destroyed = true;
      for (const t of timers) clearInterval(t);
      for (const off of offs) off();
    },
  };
}
