// Headless Chromium receives live updates over WebTransport, pinned by
// certificate hash, through web/src/transport/webtransport.js; a bad token
// is refused on the QUIC session. Driven by the Go test
// visualization/webtransport_e2e_test.go (`make e2e-quic`), which runs the
// server and publishes samples until this script exits.
//
// env: CHROMIUM_LOG=FILE writes a Chromium net log (QUIC errors show there).
// env: BASE (http://127.0.0.1:PORT of the visualization server),
//      USERNAME, PASSWORD (a viewer), MODULE (path of webtransport.js),
//      CHROMIUM (default /usr/bin/chromium).
// stdout: one JSON line with what the page saw. Exit 0 on success.
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const base = process.env.BASE;
const moduleSource = readFileSync(process.env.MODULE, 'utf8');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', ...(process.env.CHROMIUM_LOG ? ['--log-net-log=' + process.env.CHROMIUM_LOG] : [])],
});
let code = 1;
try {
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push('pageerror: ' + e.message));
  // The page is the server's own /healthz, really fetched from loopback:
  // Chromium's Local Network Access checks let a loopback page reach the
  // loopback QUIC port (a page fulfilled by the test would count as
  // public). The module is loaded from a blob of that origin, so the API
  // is same-origin and the QUIC port sees the UI's Origin.
  await page.goto(base + '/healthz');

  const result = await page.evaluate(async ({ username, password, moduleSource }) => {
    const moduleURL = URL.createObjectURL(new Blob([moduleSource], { type: 'text/javascript' }));
    const { connectWebTransport } = await import(moduleURL);
    const out = { hasWebTransport: typeof WebTransport === 'function', states: [], messages: [] };
    const login = await fetch('/api/v1/auth/login', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }) });
    const { access_token: token } = await login.json();

    // 1. A good token: hello, subscribe, then samples as datagrams.
    let gotSample;
    const sample = new Promise((r) => { gotSample = r; });
    const conn = await connectWebTransport({
      url: '', token, certHashUrl: '/api/v1/quic',
      onMessage: (m) => { out.messages.push(m); if (m.type === 'sample') gotSample(m); },
      onState: (s) => out.states.push(s),
    });
    out.transport = conn.name;
    conn.send({ type: 'subscribe', hosts: ['e2e-*'], metrics: ['cpu.'], kinds: ['sample'] });
    const timeout = (ms, what) => new Promise((_, rej) => setTimeout(() => rej(new Error('timeout: ' + what)), ms));
    out.sample = await Promise.race([sample, timeout(20000, 'no sample over WebTransport')]);
    conn.close();

    // 2. A bad token on the QUIC session (the API call uses the good one
    //    so that only the session's check is tested): refused with 4401.
    const info = await (await fetch('/api/v1/quic', { headers: { Authorization: 'Bearer ' + token } })).json();
    out.info = info;
    for (const [name, bad] of [['wrong', 'forged.token.value'], ['missing', '']]) {
      const wt = new WebTransport(info.url, { serverCertificateHashes: info.cert_hashes.map((h) => ({
        algorithm: h.algorithm, value: Uint8Array.from(atob(h.value), (c) => c.charCodeAt(0)) })) });
      await wt.ready;
      const s = await wt.createBidirectionalStream();
      const w = s.writable.getWriter();
      await w.write(new TextEncoder().encode(JSON.stringify({ type: 'auth', token: bad }) + '\n'));
      const r = s.readable.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      while (!text.includes('\n')) {
        const { value, done } = await r.read();
        if (done) break;
        text += value;
      }
      out[name + 'Token'] = JSON.parse(text.trim());
      wt.close();
    }

    // 3. The module reports a refusal as a rejected promise.
    try {
      await connectWebTransport({ url: '', token: 'forged', certHashUrl: '/api/v1/quic', onMessage() {}, onState() {} });
      out.moduleRefusal = 'resolved';
    } catch (e) {
      out.moduleRefusal = String(e.message);
    }
    return out;
  }, { username: process.env.USERNAME, password: process.env.PASSWORD, moduleSource });
  result.logs = logs;
  process.stdout.write(JSON.stringify(result) + '\n');
  code = 0;
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }) + '\n');
} finally {
  await browser.close();
}
process.exit(code);
