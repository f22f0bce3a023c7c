// The broker cluster: brokers followed, Raft leader and term, members,
// storage shards with their host counts, ring version and the progress of
// a ring change. Polled (the cluster changes rarely).
import { h, replace, clock, messageOf } from '../util.js';

export function clusterPage(app, view) {
  const { session, live } = app;
  let destroyed = false;
  const body = h('div', { class: 'cluster', id: 'cluster' }, h('div', { class: 'state' }, h('span', { class: 'spinner' }), 'Loading the cluster…'));
  replace(view, body);
  live.subscribe({ kinds: ['topk', 'anomaly', 'alert'] });

  const yes = (b) => (b ? 'yes' : 'no');
  function card(label, value, id) {
    return h('div', { class: 'card', id }, h('div', { class: 'card-label' }, label), h('div', { class: 'card-value', title: String(value) }, String(value)));
  }

  function render(c) {
    const m = c.migration;
    let migration;
    if (!m) migration = h('p', { class: 'state small', id: 'migration' }, 'No ring change has run: hosts stay where the ring puts them.');
    else {
      const total = m.hosts_total || 0;
      const pct = total ? Math.round((m.hosts_moved / total) * 100) : (m.done ? 100 : 0);
      const bar = h('span', { class: 'bar' });
      bar.style.width = pct + '%';
      migration = h('div', { id: 'migration' },
        h('p', {}, `Ring ${m.from_version} → ${m.ring_version}: ${(m.from_shards || []).join(', ') || '—'} → ${(m.to_shards || []).join(', ') || '—'} · `,
          h('strong', {}, m.done ? 'done' : 'moving hosts')),
        h('div', { class: 'progress', role: 'progressbar', 'aria-valuenow': pct, 'aria-valuemin': 0, 'aria-valuemax': 100 }, bar),
        h('p', { class: 'muted' }, `${m.hosts_moved} of ${total} hosts moved (${pct} %), ${m.hosts_scanned} scanned, ${m.keys_copied} keys copied · started ${m.started_unix_ms ? clock(m.started_unix_ms / 1000) : '—'}` +
          (m.finished_unix_ms ? ` · finished ${clock(m.finished_unix_ms / 1000)}` : '')));
    }
    replace(body,
      c.control_plane ? null : h('p', { class: 'state error' }, 'The control plane did not answer: ' + (c.status_error || 'no broker reachable') + '. Brokers below are the ones this server follows.'),
      h('div', { class: 'cards' },
        card('Leader', c.leader || '—', 'leader'), card('Term', c.term ?? '—', 'term'),
        card('Commit / applied', `${c.commit_index ?? '—'} / ${c.applied_index ?? '—'}`, 'index'),
        card('Ring version', c.ring_version ?? '—', 'ring-version'), card('Shards', (c.shards || []).length, 'shard-count'),
        card('Answered by', c.node_id || '—', 'node')),
      h('section', { class: 'panel' }, h('h2', {}, 'Brokers'),
        h('p', { class: 'muted' }, 'The brokers this visualization server follows, and whether its live stream to each is open.'),
        h('table', { id: 'brokers' }, h('thead', {}, h('tr', {}, h('th', {}, 'Broker'), h('th', {}, 'gRPC address'), h('th', {}, 'Leader'), h('th', {}, 'Live stream'))),
          h('tbody', {}, (c.brokers || []).map((b) => h('tr', { dataset: { broker: b.id } }, h('td', {}, b.id || '—'), h('td', {}, h('code', {}, b.addr)),
            h('td', {}, b.leader ? h('span', { class: 'status status-online' }, 'leader') : 'follower'),
            h('td', {}, h('span', { class: 'status status-' + (b.streaming ? 'online' : 'offline') }, b.streaming ? 'open' : 'closed'))))))),
      h('section', { class: 'panel' }, h('h2', {}, 'Raft members'),
        (c.members || []).length ? h('table', { id: 'members' }, h('thead', {}, h('tr', {}, h('th', {}, 'Member'), h('th', {}, 'gRPC'), h('th', {}, 'Raft'), h('th', {}, 'Voter'), h('th', {}, 'Role'))),
          h('tbody', {}, c.members.map((x) => h('tr', {}, h('td', {}, x.id), h('td', {}, h('code', {}, x.grpc_addr)), h('td', {}, h('code', {}, x.raft_addr)),
            h('td', {}, yes(x.voter)), h('td', {}, x.leader ? 'leader' : 'follower'))))) : h('p', { class: 'state small' }, 'No member list.')),
      h('section', { class: 'panel' }, h('h2', {}, 'Storage shards'),
        (c.shards || []).length ? h('table', { id: 'shards' }, h('thead', {}, h('tr', {}, h('th', {}, 'Shard'), h('th', {}, 'Addresses'), h('th', {}, 'DB'), h('th', {}, 'Cluster'), h('th', {}, 'TLS'), h('th', {}, 'State'), h('th', { class: 'num' }, 'Hosts'))),
          h('tbody', {}, c.shards.map((s) => h('tr', { dataset: { shard: s.id } }, h('td', {}, s.id), h('td', {}, h('code', {}, (s.addrs || []).join(', '))), h('td', {}, String(s.db)),
            h('td', {}, yes(s.cluster)), h('td', {}, yes(s.tls)), h('td', {}, s.draining ? h('span', { class: 'status status-offline' }, 'draining') : 'serving'), h('td', { class: 'num' }, String(s.hosts))))))
          : h('p', { class: 'state small', id: 'no-shards' }, 'No Redis shards on the ring: the brokers store on embedded storage (standalone), or no shard was added yet (monitorctl shard add).')),
      h('section', { class: 'panel' }, h('h2', {}, 'Ring change'), migration),
      h('p', { class: 'muted small' }, 'Updated ', new Date().toLocaleTimeString(), ' · refreshes every 5 s'));
  }

  async function load() {
    try {
      const c = await session.get('/api/v1/cluster');
      if (!destroyed) render(c);
    } catch (e) {
      if (!destroyed) replace(body, h('div', { class: 'state error' }, 'Could not load the cluster: ' + messageOf(e) + ' ', h('button', { class: 'ghost', onclick: load }, 'Retry')));
    }
  }
  load();
  const t = setInterval(load, 5000);
  return { destroy() { destroyed = true; clearInterval(t); } };
}
