// The dashboard: a single page with hash routes.
//
//   #/login            log in (shown whenever there is no session)
//   #/fleet            hosts, sparklines, Top-K, anomalies, firing alerts
//   #/host/<id>        one host's live charts, ranges, facts, processes
//   #/alerts           rules (admins edit) and alert states
//   #/cluster          brokers, Raft, shards, ring, migration
//
// One live connection serves every page; each page sets its own filter.
// The session (tokens) is in memory only: see api.js.
import { Session } from './api.js';
import { Live } from './live.js';
import { Store } from './store.js';
import { h, replace, messageOf } from './util.js';
import { loginPage } from './pages/login.js';
import { fleetPage } from './pages/fleet.js';
import { hostPage } from './pages/host.js';
import { alertsPage } from './pages/alerts.js';
import { clusterPage } from './pages/cluster.js';

const session = new Session();
const live = new Live(session);
const store = new Store();
live.on((msg) => store.handle(msg));

const app = {
  session, live, store,
  refreshMs: Number(document.body.dataset.refreshMs) || 5000,
  navigate(hash) { if (location.hash === hash) route(); else location.hash = hash; },
  notice: '',
};

let current = null; // {destroy()}
let shell = null;

function buildShell() {
  const conn = h('span', { id: 'conn', class: 'conn', role: 'status', 'aria-live': 'polite' },
    h('span', { class: 'dot' }), h('span', { class: 'conn-text' }, 'Offline'));
  const badge = h('span', { id: 'alert-badge', class: 'badge', hidden: true });
  const nav = h('nav', { class: 'nav' },
    h('a', { href: '#/fleet', dataset: { nav: 'fleet' } }, 'Fleet'),
    h('a', { href: '#/alerts', dataset: { nav: 'alerts' } }, 'Alerts', badge),
    h('a', { href: '#/cluster', dataset: { nav: 'cluster' } }, 'Cluster'));
  const who = h('span', { id: 'who', class: 'who' });
  const logout = h('button', { id: 'logout', class: 'ghost', type: 'button', onclick: () => logOut('You are logged out.') }, 'Log out');
  const header = h('header', { class: 'top' }, h('a', { class: 'brand', href: '#/fleet' }, 'monitor'), nav, h('span', { class: 'spacer' }), conn, who, logout);
  const view = h('main', { id: 'view' });
  live.onState((s) => {
    conn.dataset.state = s.state;
    conn.dataset.transport = s.transport || '';
    const label = {
      live: 'Live' + (s.transport ? ' · ' + (s.transport === 'websocket' ? 'WebSocket' : 'WebTransport') : ''),
      connecting: 'Connecting…', reconnecting: 'Reconnecting…', stopped: 'Offline',
    }[s.state] || s.state;
    conn.querySelector('.conn-text').textContent = label;
    conn.title = s.detail || label;
  });
  const updateBadge = () => {
    const n = store.firingCount();
    badge.hidden = n === 0;
    badge.textContent = String(n);
    badge.title = `${n} alert${n === 1 ? '' : 's'} firing`;
  };
  store.on('alert', updateBadge);
  return { el: h('div', { class: 'shell' }, header, view), view, who, nav };
}

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  const name = parts[0] || 'fleet';
  return { name, arg: parts.slice(1).map(decodeURIComponent).join('/') };
}

async function route() {
  const root = document.getElementById('app');
  if (current) { try { current.destroy(); } catch (e) { console.error(e); } current = null; }
  const r = parseRoute();
  if (!session.loggedIn) {
    shell = null;
    live.stop();
    const next = r.name === 'login' ? '#/fleet' : location.hash || '#/fleet';
    current = loginPage(app, root, next);
    return;
  }
  if (r.name === 'login') { app.navigate('#/fleet'); return; }
  if (!shell) {
    shell = buildShell();
    replace(root, shell.el);
    live.start();
    seedStore();
  }
  shell.who.textContent = `${session.user} (${session.role})`;
  for (const a of shell.nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.nav === r.name);
  const pages = { fleet: fleetPage, host: hostPage, alerts: alertsPage, cluster: clusterPage };
  const page = pages[r.name];
  replace(shell.view);
  if (!page) {
    shell.view.append(h('section', { class: 'panel empty' }, h('h2', {}, 'Nothing here'), h('p', {}, `There is no page "${r.name}". `, h('a', { href: '#/fleet' }, 'Go to the fleet.'))));
    return;
  }
  document.title = 'monitor — ' + r.name + (r.arg ? ' ' + r.arg : '');
  try {
    current = page(app, shell.view, r.arg);
  } catch (e) {
    console.error(e);
    shell.view.append(h('p', { class: 'error', role: 'alert' }, 'This page failed: ' + messageOf(e)));
  }
}

// seedStore loads what the live stream only updates: alerts and anomalies
// now (Top-K panels load their own metrics).
async function seedStore() {
  try {
    const a = await session.get('/api/v1/alerts');
    store.setAlerts(a.alerts);
  } catch (e) { console.warn('alerts', e); }
  try {
    const an = await session.get('/api/v1/anomalies');
    store.setAnomalies(an.anomalies);
  } catch (e) { console.warn('anomalies', e); }
}

function logOut(notice) {
  live.stop();
  session.clear();
  app.notice = notice;
  shell = null;
  app.navigate('#/login');
}

session.onExpired = (reason) => logOut(reason);
app.logOut = logOut;
app.loggedIn = () => { app.notice = ''; };

window.addEventListener('hashchange', route);
route();
