// The transport layer of the live client: WebTransport over QUIC when the
// browser has it and the WebTransport module was built in, else the
// WebSocket. Both give {name, send(obj), close()} and the same messages
// (docs/api.md, "WebSocket").
//
// The WebTransport module (web/src/transport/webtransport.js, delivered by
// the QUIC issue) is optional at build time: build.mjs resolves
// "virtual:webtransport" to it when the file exists and to a stub exporting
// connectWebTransport = null otherwise.
import { connectWebTransport } from 'virtual:webtransport';
import { connectWebSocket } from './websocket.js';

/** webTransportBuiltIn says whether this build carries the WebTransport module. */
export const webTransportBuiltIn = typeof connectWebTransport === 'function';

// Where the WebTransport endpoint is: the server's QUIC port (the page's
// data-quic-port when the server fills it, else 8081, the default) on the
// page's host; the certificate hash for a self-signed certificate comes
// from certHashUrl on this origin.
function webTransportTarget() {
  const port = document.body.dataset.quicPort || '8081';
  return { url: `https://${location.hostname}:${port}/`, certHashUrl: '/api/v1/quic' };
}

/**
 * connect opens the best transport: WebTransport first when possible,
 * falling back to the WebSocket when it is missing or fails.
 * onFallback(reason) reports why WebTransport was not used.
 */
export async function connect({ token, onMessage, onState, onFallback, preferWebSocket }) {
  if (!preferWebSocket && webTransportBuiltIn && typeof window.WebTransport === 'function') {
    try {
      const { url, certHashUrl } = webTransportTarget();
      const t = await connectWebTransport({ url, token, certHashUrl, onMessage, onState });
      return { name: t.name || 'webtransport', send: (o) => t.send(o), close: () => t.close() };
    } catch (e) {
      if (onFallback) onFallback('WebTransport failed: ' + (e && e.message ? e.message : e));
    }
  }
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return connectWebSocket({ url: `${scheme}//${location.host}/api/v1/ws`, token, onMessage, onState });
}
