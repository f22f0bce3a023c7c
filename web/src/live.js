// The live client: one connection (WebTransport or WebSocket, see
// transport/index.js) for the whole page, a filter the current page sets,
// reconnection with backoff, and a token refresh when the server closes
// with 4001 (access token expired).
//
// States: "connecting", "live", "reconnecting" (waiting before the next
// try), "stopped" (logged out). The header shows the state and the
// transport in use.
import { connect } from './transport/index.js';

export class Live {
  constructor(session) {
    this.session = session;
    this.filter = { type: 'subscribe' };
    this.listeners = new Set();
    this.stateListeners = new Set();
    this.conn = null;
    this.running = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.state = { state: 'stopped', transport: '', detail: '' };
    this.preferWebSocket = false;
    this.stats = { messages: 0, reconnects: 0, gaps: 0 };
  }

  /** on registers fn(msg) for every message; returns an unsubscribe function. */
  on(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }
  /** onState registers fn(state) for state changes; returns an unsubscribe function. */
  onState(fn) { this.stateListeners.add(fn); fn(this.state); return () => this.stateListeners.delete(fn); }

  setState(state, detail = '', transport = this.conn ? this.conn.name : '') {
    this.state = { state, transport, detail };
    for (const fn of this.stateListeners) fn(this.state);
  }

  /** subscribe replaces the filter (hosts, labels, metrics, kinds) and sends it when connected. */
  subscribe(filter) {
    this.filter = { type: 'subscribe', ...filter };
    if (this.conn) this.conn.send(this.filter);
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    this.open();
  }

  stop() {
    this.running = false;
    clearTimeout(this.retryTimer);
    const c = this.conn;
    this.conn = null;
    if (c) c.close();
    this.setState('stopped', '', '');
  }

  async open() {
    if (!this.running) return;
    this.setState(this.attempt ? 'reconnecting' : 'connecting', this.attempt ? `attempt ${this.attempt + 1}` : '', '');
    let token;
    try {
      token = await this.session.token();
    } catch (e) {
      this.retry('no token: ' + e.message);
      return;
    }
    const openedAt = Date.now();
    let conn;
    try {
      conn = await connect({
        token,
        preferWebSocket: this.preferWebSocket,
        onMessage: (msg) => this.dispatch(msg),
        onState: (s) => {
          if (s.state === 'closed') this.closed(conn, s, openedAt);
          else if (s.state === 'loss' && this.conn) this.setState('live', `${s.lost} of ${s.lost + s.received} datagrams lost (superseded by later values)`);
        },
        onFallback: (why) => { this.fallbackReason = why; },
      });
    } catch (e) {
      this.retry(e.message);
      return;
    }
    if (!this.running) { conn.close(); return; }
    this.conn = conn;
    this.attempt = 0;
    conn.send(this.filter);
    this.setState('live', this.fallbackReason || '', conn.name);
  }

  async closed(conn, s, openedAt) {
    if (this.conn !== conn) return; // stopped or replaced
    this.conn = null;
    this.stats.reconnects++;
    if (!this.running) return;
    // A WebTransport session that keeps dying young: use the WebSocket.
    if (conn && conn.name !== 'websocket' && Date.now() - openedAt < 5000) this.preferWebSocket = true;
    if (s.code === 4001) {
      // The access token expired: refresh and reconnect at once.
      this.setState('reconnecting', 'token expired, refreshing', '');
      try {
        await this.session.refresh();
        this.open();
      } catch (e) {
        this.retry('token refresh failed: ' + e.message);
      }
      return;
    }
    this.retry(`connection closed (code ${s.code}${s.reason ? ', ' + s.reason : ''})`);
  }

  retry(why) {
    if (!this.running) return;
    this.attempt++;
    const base = Math.min(15000, 500 * 2 ** Math.min(this.attempt, 5));
    const wait = Math.round(base * (0.75 + Math.random() * 0.5));
    this.setState('reconnecting', `${why}; retrying in ${Math.ceil(wait / 1000)} s`, '');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), wait);
  }

  dispatch(msg) {
    this.stats.messages++;
    if (msg.type === 'gap') this.stats.gaps++;
    for (const fn of this.listeners) {
      try { fn(msg); } catch (e) { console.error('live listener', e); }
    }
  }
}
