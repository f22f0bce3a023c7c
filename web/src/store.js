// The fleet-wide state every page shares, fed by the live stream and
// seeded from the API: Top-K per metric, active anomalies, alerts.
// Pages listen with on(kind, fn) and get called after each change.

export class Store {
  constructor() {
    this.topk = new Map(); // metric → {entries, at}
    this.anomalies = new Map(); // host + series → anomaly
    this.alerts = new Map(); // rule + host + series → alert
    this.listeners = new Map();
  }

  on(kind, fn) {
    if (!this.listeners.has(kind)) this.listeners.set(kind, new Set());
    this.listeners.get(kind).add(fn);
    return () => this.listeners.get(kind).delete(fn);
  }

  emit(kind, detail) {
    for (const fn of this.listeners.get(kind) || []) {
      try { fn(detail); } catch (e) { console.error('store listener', e); }
    }
  }

  /** handle applies one live message. */
  handle(msg) {
    switch (msg.type) {
      case 'topk': {
        const d = msg.data || {};
        if (!d.metric) return;
        this.topk.set(d.metric, { entries: d.entries || [], at: Date.now() });
        this.emit('topk', d.metric);
        return;
      }
      case 'anomaly': {
        const d = msg.data || {};
        const a = d.anomaly;
        if (!a) return;
        const key = a.host + '\u0000' + a.series;
        if (d.state === 'resolved' || d.state === 'evicted') this.anomalies.delete(key);
        else this.anomalies.set(key, a);
        this.emit('anomaly', a);
        return;
      }
      case 'alert': {
        const a = (msg.data || {}).alert;
        if (!a) return;
        const key = alertKey(a);
        if (a.state === 'resolved' || a.state === 'inactive') this.alerts.delete(key);
        else this.alerts.set(key, a);
        this.emit('alert', a);
        return;
      }
      default:
    }
  }

  setTopK(metric, entries) {
    this.topk.set(metric, { entries: entries || [], at: Date.now() });
    this.emit('topk', metric);
  }

  setAnomalies(list) {
    this.anomalies.clear();
    for (const a of list || []) this.anomalies.set(a.host + '\u0000' + a.series, a);
    this.emit('anomaly', null);
  }

  setAlerts(list) {
    this.alerts.clear();
    for (const a of list || []) if (a.state !== 'resolved') this.alerts.set(alertKey(a), a);
    this.emit('alert', null);
  }

  firingCount() {
    let n = 0;
    for (const a of this.alerts.values()) if (a.state === 'firing') n++;
    return n;
  }
}

function alertKey(a) { return a.rule_id + '\u0000' + a.host + '\u0000' + a.series; }
