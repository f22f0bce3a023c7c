// The WebTransport transport of the live client (docs/api.md, "QUIC"):
//
//   connectWebTransport({url, token, certHashUrl, onMessage, onState})
//     → Promise<{name: 'webtransport', send(obj), close()}>
//
// 1. GET certHashUrl (the API's /api/v1/quic, with the access token) for
//    the session URL and, for the server's self-signed certificate, its
//    sha-256 hashes; they are fetched again on every connect, so a
//    certificate rotation costs at most one reconnect.
// 2. Open the WebTransport session pinned with serverCertificateHashes
//    (a configured CA certificate is verified the usual way instead).
// 3. Open one bidirectional stream and send the token as its first frame,
//    {"type":"auth","token":...} — never in the URL. Frames are JSON, one
//    per line, both ways.
// 4. Resolve after the server's hello; reject with the server's reason
//    (err.code 4401 for a missing or bad token) when it refuses.
//
// Messages: the stream carries hello, subscribed, error, gap and the
// events (topk, anomaly, alert) in order; datagrams carry sample messages
// with a leading "seq" (latest values: a lost one is superseded by the
// next). onMessage gets every parsed message from both; onState gets
// {state: 'open', transport} once the session is up, {state: 'loss',
// lost, received} when a hole appears in the datagram sequence, and
// {state: 'closed', code, reason} once when it ends (4001: the token
// expired, refresh it and reconnect; 1001: the server is shutting down).

const encoder = new TextEncoder();

function b64ToBytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// fetchInfo asks the API where the QUIC port is and which certificate
// hashes to pin. The documented route is /api/v1/quic; a caller naming
// another URL that does not exist falls back to it.
async function fetchInfo(certHashUrl, token) {
  const get = (u) => fetch(u, { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
  let resp = await get(certHashUrl || '/api/v1/quic');
  if (resp.status === 404 && certHashUrl && certHashUrl !== '/api/v1/quic') resp = await get('/api/v1/quic');
  if (!resp.ok) {
    let msg = resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch { /* not JSON */ }
    const err = new Error(`QUIC info: ${resp.status} ${msg}`);
    err.code = resp.status;
    throw err;
  }
  return resp.json();
}

// lines splits a byte stream into JSON messages, one per line.
async function readLines(readable, onLine) {
  const reader = readable.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) onLine(line);
    }
  }
  if (buf.trim()) onLine(buf.trim());
}

function parse(line) {
  try { return JSON.parse(line); } catch { return null; }
}

export async function connectWebTransport({ url, token, certHashUrl, onMessage, onState = () => {} }) {
  if (typeof WebTransport !== 'function') throw new Error('this browser has no WebTransport');
  if (!token) throw new Error('no access token');
  const info = await fetchInfo(certHashUrl, token);
  const target = info.url || url;
  const options = {};
  if (Array.isArray(info.cert_hashes) && info.cert_hashes.length > 0) {
    options.serverCertificateHashes = info.cert_hashes.map((h) => ({ algorithm: h.algorithm, value: b64ToBytes(h.value) }));
  }

  const wt = new WebTransport(target, options);
  let opened = false;
  let closedReported = false;
  const reportClosed = (code, reason) => {
    if (closedReported || !opened) return;
    closedReported = true;
    onState({ state: 'closed', code, reason });
  };

  try {
    await wt.ready;
  } catch (e) {
    throw new Error(`WebTransport to ${target} failed: ${e && e.message ? e.message : e}`);
  }
  const stream = await wt.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  const send = (obj) => writer.write(encoder.encode(JSON.stringify(obj) + '\n'));
  await send({ type: 'auth', token, datagrams: true });

  let refusal = null;
  let closeInfo = null;
  wt.closed.then(
    (i) => { closeInfo = { code: i.closeCode, reason: i.reason }; reportClosed(i.closeCode, i.reason); },
    (e) => { closeInfo = { code: 0, reason: String(e && e.message ? e.message : e) }; reportClosed(0, closeInfo.reason); },
  );

  return new Promise((resolve, reject) => {
    const conn = {
      name: 'webtransport',
      send(obj) { send(obj).catch(() => { /* the session is closing; onState tells */ }); },
      close(code = 0, reason = 'client closed') {
        try { wt.close({ closeCode: code, reason }); } catch { /* already closed */ }
      },
    };

    readLines(stream.readable, (line) => {
      const msg = parse(line);
      if (!msg) return;
      if (!opened) {
        if (msg.type === 'error') {
          refusal = msg;
          const err = new Error(`WebTransport refused (code ${msg.code}): ${msg.error}`);
          err.code = msg.code;
          conn.close(msg.code || 0, 'refused');
          reject(err);
          return;
        }
        if (msg.type === 'hello') {
          opened = true;
          onMessage(msg);
          onState({ state: 'open', transport: 'webtransport' });
          resolve(conn);
          readDatagrams();
          return;
        }
      }
      onMessage(msg);
    }).catch(() => { /* the session ended; wt.closed reports it */ })
      .finally(() => {
        if (!opened && !refusal) {
          const c = closeInfo || {};
          const err = new Error(`WebTransport closed before hello (code ${c.code ?? '?'}${c.reason ? ': ' + c.reason : ''})`);
          err.code = c.code;
          reject(err);
        }
      });

    let last = 0;
    let lost = 0;
    let received = 0;
    async function readDatagrams() {
      const reader = wt.datagrams.readable.getReader();
      const decoder = new TextDecoder();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          const msg = parse(decoder.decode(value));
          if (!msg) continue;
          received++;
          if (typeof msg.seq === 'number') {
            if (msg.seq > last + 1) {
              lost += msg.seq - last - 1;
              onState({ state: 'loss', lost, received });
            }
            if (msg.seq > last) last = msg.seq;
          }
          onMessage(msg);
        }
      } catch { /* the session ended */ }
    }
  });
}
