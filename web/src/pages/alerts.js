// Alerts: the rules and every alert's state, live. Admins create, edit and
// delete rules; viewers read them (the API refuses their writes anyway).
import { h, replace, ago, fmtValue, labelText, messageOf } from '../util.js';

const OPS = ['>', '>=', '<', '<='];

export function alertsPage(app, view) {
  const { session, store, live } = app;
  const admin = session.isAdmin;
  let destroyed = false;
  let rules = [];
  const offs = [];
  const timers = [];

  const ruleBody = h('tbody');
  const ruleState = h('div', { class: 'state', id: 'rules-state' }, h('span', { class: 'spinner' }), 'Loading rules…');
  const alertBody = h('tbody');
  const alertState = h('p', { class: 'state', id: 'alerts-state' }, 'No alert is pending or firing.');
  const formMsg = h('p', { class: 'error', id: 'rule-error', role: 'alert', hidden: true });

  // --- the rule form (admins) ----------------------------------------------
  const f = {
    id: h('input', { name: 'id', id: 'rule-id', placeholder: 'generated when empty' }),
    metric: h('input', { name: 'metric', id: 'rule-metric', required: true, placeholder: 'cpu.usage_percent', list: 'metric-names' }),
    op: h('select', { name: 'op', id: 'rule-op' }, OPS.map((o) => h('option', { value: o }, o))),
    threshold: h('input', { name: 'threshold', id: 'rule-threshold', type: 'number', step: 'any', required: true, value: '90' }),
    forSeconds: h('input', { name: 'for_seconds', id: 'rule-for', type: 'number', min: '0', max: '604800', step: '1', value: '60' }),
    hosts: h('input', { name: 'host_ids', id: 'rule-hosts', placeholder: 'all hosts; or web-1, web-2' }),
    labels: h('input', { name: 'host_labels', id: 'rule-labels', placeholder: 'role=web zone=a' }),
    webhook: h('input', { name: 'webhook', id: 'rule-webhook', type: 'url', placeholder: 'https://hooks.example.com/…' }),
  };
  const saveBtn = h('button', { type: 'submit', id: 'rule-save' }, 'Create rule');
  const cancelBtn = h('button', { type: 'button', class: 'ghost', id: 'rule-cancel', hidden: true, onclick: () => resetForm() }, 'Cancel');
  let editing = null;
  const datalist = h('datalist', { id: 'metric-names' },
    ['cpu.usage_percent', 'mem.used_percent', 'swap.used_percent', 'disk.used_percent', 'load.1', 'net.rx_bytes_per_sec', 'net.tx_bytes_per_sec', 'disk.io_busy_percent', 'system.fds_used_percent']
      .map((m) => h('option', { value: m })));
  const formTitle = h('h3', {}, 'New rule');
  const form = h('form', { id: 'rule-form', class: 'panel rule-form', onsubmit: (ev) => { ev.preventDefault(); save(); } },
    formTitle, formMsg,
    h('div', { class: 'form-grid' },
      h('label', {}, 'Id', f.id), h('label', {}, 'Metric or series', f.metric, datalist),
      h('label', {}, 'Condition', h('span', { class: 'inline' }, f.op, f.threshold)),
      h('label', {}, 'For (seconds)', f.forSeconds), h('label', {}, 'Hosts', f.hosts),
      h('label', {}, 'Host labels', f.labels), h('label', { class: 'wide' }, 'Webhook (optional)', f.webhook)),
    h('div', { class: 'actions' }, saveBtn, cancelBtn));

  function resetForm() {
    editing = null;
    formTitle.textContent = 'New rule';
    saveBtn.textContent = 'Create rule';
    cancelBtn.hidden = true;
    f.id.disabled = false;
    f.id.value = ''; f.metric.value = ''; f.op.value = '>'; f.threshold.value = '90'; f.forSeconds.value = '60';
    f.hosts.value = ''; f.labels.value = ''; f.webhook.value = '';
    formMsg.hidden = true;
  }

  function edit(rule) {
    editing = rule.id;
    formTitle.textContent = 'Edit rule ' + rule.id;
    saveBtn.textContent = 'Save rule';
    cancelBtn.hidden = false;
    f.id.value = rule.id; f.id.disabled = true;
    f.metric.value = rule.metric; f.op.value = rule.op; f.threshold.value = String(rule.threshold);
    f.forSeconds.value = String(rule.for_seconds || 0);
    f.hosts.value = (rule.host_ids || []).join(', ');
    f.labels.value = labelText(rule.host_labels);
    // Listings redact webhooks (scheme://host/…): the user re-enters it to change it.
    f.webhook.value = '';
    f.webhook.placeholder = rule.webhook ? `unchanged only if re-entered (was ${rule.webhook})` : 'https://hooks.example.com/…';
    formMsg.hidden = true;
    form.scrollIntoView({ block: 'nearest' });
    f.metric.focus();
  }

  async function save() {
    formMsg.hidden = true;
    const labels = {};
    for (const tok of f.labels.value.split(/[\s,]+/).filter(Boolean)) {
      const i = tok.indexOf('=');
      if (i <= 0) { formMsg.textContent = `Host label "${tok}" must be name=value.`; formMsg.hidden = false; return; }
      labels[tok.slice(0, i)] = tok.slice(i + 1);
    }
    const rule = {
      id: f.id.value.trim(), metric: f.metric.value.trim(), op: f.op.value,
      threshold: Number(f.threshold.value), for_seconds: Math.round(Number(f.forSeconds.value || 0)),
      host_ids: f.hosts.value.split(/[\s,]+/).filter(Boolean), host_labels: labels,
    };
    if (f.webhook.value.trim()) rule.webhook = f.webhook.value.trim();
    if (!Number.isFinite(rule.threshold)) { formMsg.textContent = 'The threshold must be a number.'; formMsg.hidden = false; return; }
    saveBtn.disabled = true;
    try {
      if (editing) await session.request('/api/v1/alerts/rules/' + encodeURIComponent(editing), { method: 'PUT', body: rule });
      else await session.request('/api/v1/alerts/rules', { method: 'POST', body: rule });
      resetForm();
      await load();
    } catch (e) {
      formMsg.textContent = messageOf(e);
      formMsg.hidden = false;
    } finally {
      saveBtn.disabled = false;
    }
  }

  async function remove(rule) {
    if (!window.confirm(`Delete rule ${rule.id}? Its alerts resolve.`)) return;
    try {
      await session.request('/api/v1/alerts/rules/' + encodeURIComponent(rule.id), { method: 'DELETE' });
      if (editing === rule.id) resetForm();
      await load();
    } catch (e) {
      ruleState.hidden = false;
      ruleState.className = 'state error';
      ruleState.textContent = 'Could not delete: ' + messageOf(e);
    }
  }

  // --- rendering --------------------------------------------------------------
  function renderRules() {
    const firing = new Map();
    for (const a of store.alerts.values()) if (a.state === 'firing') firing.set(a.rule_id, (firing.get(a.rule_id) || 0) + 1);
    replace(ruleBody, rules.map((r) => h('tr', { dataset: { rule: r.id } },
      h('td', {}, h('code', {}, r.id)), h('td', {}, h('code', {}, r.metric)),
      h('td', {}, `${r.op} ${r.threshold}`), h('td', {}, r.for_seconds ? `${r.for_seconds} s` : 'at once'),
      h('td', {}, (r.host_ids || []).join(', ') || 'all'), h('td', {}, labelText(r.host_labels) || '—'),
      h('td', { class: 'muted' }, r.webhook || '—'),
      h('td', {}, firing.get(r.id) ? h('span', { class: 'badge' }, String(firing.get(r.id))) : '0'),
      admin ? h('td', { class: 'row-actions' },
        h('button', { type: 'button', class: 'ghost small', dataset: { action: 'edit' }, onclick: () => edit(r) }, 'Edit'),
        h('button', { type: 'button', class: 'ghost small danger', dataset: { action: 'delete' }, onclick: () => remove(r) }, 'Delete')) : null)));
  }

  function renderAlerts() {
    const all = [...store.alerts.values()].sort((a, b) => stateRank(a.state) - stateRank(b.state) || (b.since || 0) - (a.since || 0));
    alertState.hidden = all.length > 0;
    replace(alertBody, all.map((a) => h('tr', { class: 'alert-' + a.state, dataset: { rule: a.rule_id, host: a.host, state: a.state } },
      h('td', {}, h('span', { class: 'sev' }, a.state)), h('td', {}, h('code', {}, a.rule_id)),
      h('td', {}, h('a', { href: '#/host/' + encodeURIComponent(a.host) }, a.host)), h('td', {}, h('code', {}, a.series)),
      h('td', { class: 'num' }, `${fmtValue(a.value)} ${a.op} ${fmtValue(a.threshold)}`),
      h('td', {}, ago(a.since)), h('td', {}, a.fired_at ? ago(a.fired_at) : '—'), h('td', {}, ago(a.last_ts)),
      h('td', { class: 'muted' }, a.reason || ''))));
    renderRules();
  }

  async function load() {
    try {
      const res = await session.get('/api/v1/alerts');
      if (destroyed) return;
      rules = (res.rules || []).sort((a, b) => a.id.localeCompare(b.id));
      store.setAlerts(res.alerts);
      ruleState.hidden = rules.length > 0;
      ruleState.className = 'state empty';
      replace(ruleState, 'No alert rules yet. ', admin ? 'Create one below: for example cpu.usage_percent > 90 for 60 s.' : 'An admin can create them.');
      renderAlerts();
    } catch (e) {
      if (destroyed) return;
      ruleState.hidden = false;
      ruleState.className = 'state error';
      replace(ruleState, 'Could not load alerts: ' + messageOf(e) + ' ', h('button', { class: 'ghost', onclick: load }, 'Retry'));
    }
  }

  offs.push(store.on('alert', renderAlerts));
  live.subscribe({ kinds: ['topk', 'anomaly', 'alert'] });

  replace(view, h('div', { class: 'alerts-page' },
    h('section', { class: 'panel' },
      h('div', { class: 'panel-head' }, h('h2', {}, 'Alert rules'),
        admin ? h('span', { class: 'muted' }, 'You are an admin: create, edit and delete rules.') : h('span', { class: 'muted', id: 'read-only' }, 'Read-only: your role is viewer. An admin changes rules.')),
      ruleState,
      h('div', { class: 'table-wrap' }, h('table', { id: 'rules' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Id'), h('th', {}, 'Metric'), h('th', {}, 'Condition'), h('th', {}, 'For'),
          h('th', {}, 'Hosts'), h('th', {}, 'Labels'), h('th', {}, 'Webhook'), h('th', {}, 'Firing'), admin ? h('th', {}, '') : null)),
        ruleBody))),
    admin ? form : null,
    h('section', { class: 'panel' },
      h('div', { class: 'panel-head' }, h('h2', {}, 'Alerts'), h('span', { class: 'muted' }, 'pending → firing → resolved; a host that stops reporting goes stale, not resolved')),
      alertState,
      h('div', { class: 'table-wrap' }, h('table', { id: 'alert-states' },
        h('thead', {}, h('tr', {}, h('th', {}, 'State'), h('th', {}, 'Rule'), h('th', {}, 'Host'), h('th', {}, 'Series'),
          h('th', { class: 'num' }, 'Value'), h('th', {}, 'Since'), h('th', {}, 'Fired'), h('th', {}, 'Last sample'), h('th', {}, 'Reason'))),
        alertBody)))));

  load();
  timers.push(setInterval(load, 15000));
  return { destroy() { destroyed = true; for (const off of offs) off(); for (const t of timers) clearInterval(t); } };
}

function stateRank(s) { return { firing: 0, stale: 1, pending: 2 }[s] ?? 3; }
