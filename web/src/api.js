// Session: login, tokens and authenticated requests.
//
// Tokens live in memory only (this object): nothing is written to
// localStorage, sessionStorage or cookies, so a script injected into another
// tab or a stolen disk never finds them; reloading the page asks for the
// password again. The access token is refreshed one minute before it
// expires (refresh tokens rotate: each works once), and a request answered
// 401 triggers one refresh and one retry. Concurrent callers share a single
// refresh in flight.

/** ApiError is a non-2xx answer: status and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Session {
  constructor() {
    this.access = null;
    this.refreshToken = null;
    this.user = null;
    this.role = null;
    this.expiresAt = 0; // ms
    this.inflight = null;
    this.timer = null;
    /** onExpired(reason) is called when the session ends without logout(). */
    this.onExpired = null;
  }

  get loggedIn() { return !!this.access; }
  get isAdmin() { return this.role === 'admin'; }

  async login(username, password) {
    let r;
    try {
      r = await fetch('/api/v1/auth/login', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ username, password }),
      });
    } catch (e) {
      throw new Error('The server did not answer (' + e.message + '). Is it running?');
    }
    const body = await r.json().catch(() => ({}));
    if (r.status === 429) {
      const wait = r.headers.get('Retry-After');
      throw new ApiError(429, 'Too many login attempts' + (wait ? `: try again in ${wait} s.` : '.'));
    }
    if (!r.ok) throw new ApiError(r.status, body.error ? capital(body.error) + '.' : `Login failed (${r.status}).`);
    this.accept(body);
  }

  accept(body) {
    this.access = body.access_token;
    this.refreshToken = body.refresh_token;
    this.user = body.username;
    this.role = body.role;
    const exp = Date.parse(body.expires_at);
    this.expiresAt = Number.isFinite(exp) ? exp : Date.now() + (body.expires_in || 900) * 1000;
    clearTimeout(this.timer);
    const lead = Math.max(5000, this.expiresAt - Date.now() - 60000);
    this.timer = setTimeout(() => { this.refresh().catch(() => {}); }, lead);
  }

  /** refresh exchanges the refresh token for a new pair (single-flight). */
  refresh() {
    if (!this.refreshToken) return Promise.reject(new ApiError(401, 'not logged in'));
    if (this.inflight) return this.inflight;
    const token = this.refreshToken;
    this.inflight = (async () => {
      let r;
      try {
        r = await fetch('/api/v1/auth/refresh', {
          method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ refresh_token: token }),
        });
      } catch (e) {
        throw new Error('token refresh failed: the server did not answer');
      }
      const body = await r.json().catch(() => ({}));
      if (!r.ok) {
        if (r.status === 401) this.expire('Your session ended (' + (body.error || 'refresh refused') + '). Log in again.');
        throw new ApiError(r.status, body.error || 'token refresh failed');
      }
      this.accept(body);
      return this.access;
    })().finally(() => { this.inflight = null; });
    return this.inflight;
  }

  /** token returns a valid access token, refreshing first when it is about to expire. */
  async token() {
    if (!this.access) throw new ApiError(401, 'not logged in');
    if (this.expiresAt - Date.now() < 15000) await this.refresh();
    return this.access;
  }

  expire(reason) {
    const was = this.loggedIn;
    this.clear();
    if (was && this.onExpired) this.onExpired(reason);
  }

  clear() {
    clearTimeout(this.timer);
    this.access = this.refreshToken = this.user = this.role = null;
    this.expiresAt = 0;
  }

  /** request sends an authenticated request; one 401 triggers a refresh and a retry. */
  async request(path, opts = {}) {
    for (let attempt = 0; ; attempt++) {
      const token = await this.token();
      const headers = { Authorization: 'Bearer ' + token, ...(opts.headers || {}) };
      if (opts.body !== undefined && typeof opts.body !== 'string') {
        headers['Content-Type'] = 'application/json';
        opts = { ...opts, body: JSON.stringify(opts.body) };
      }
      let r;
      try {
        r = await fetch(path, { ...opts, headers });
      } catch (e) {
        throw new Error('The server did not answer: ' + e.message);
      }
      if (r.status === 401 && attempt === 0) {
        await this.refresh();
        continue;
      }
      const body = await r.json().catch(() => null);
      if (!r.ok) {
        const msg = body && body.error ? body.error : r.statusText;
        throw new ApiError(r.status, `${describeStatus(r.status)}: ${msg}`);
      }
      return body;
    }
  }

  get(path) { return this.request(path); }
}

function describeStatus(s) {
  switch (s) {
    case 400: return 'Bad request';
    case 401: return 'Not logged in';
    case 403: return 'Not allowed for your role';
    case 404: return 'Not found';
    case 409: return 'Already exists';
    case 422: return 'Not enough data';
    case 429: return 'Too many requests';
    case 502: return 'Broker error';
    case 503: return 'No broker reachable';
    case 504: return 'Broker timed out';
    default: return 'Error ' + s;
  }
}

function capital(s) { return s ? s[0].toUpperCase() + s.slice(1) : s; }
