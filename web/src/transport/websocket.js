// The WebSocket transport: the same shape as the WebTransport module
// (transport/webtransport.js, when it exists):
//
//   connectWebSocket({url, token, onMessage, onState}) → Promise<{name, send(obj), close()}>
//
// The promise resolves once the connection is open and rejects when it
// fails before that. onMessage gets each parsed JSON message; onState gets
// {state: 'closed', code, reason} once when the connection ends (after it
// was open). The token travels in the subprotocol list ("bearer.<token>"
// next to "monitor.v1"): browsers cannot set headers on a WebSocket, and a
// token in the URL would end up in logs.

export function connectWebSocket({ url, token, onMessage, onState }) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(url, ['monitor.v1', 'bearer.' + token]);
    } catch (e) {
      reject(e);
      return;
    }
    let open = false;
    ws.onopen = () => {
      open = true;
      resolve({
        name: 'websocket',
        send(obj) { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj)); },
        close(code = 1000, reason = 'client closed') { try { ws.close(code, reason); } catch { /* already closed */ } },
      });
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (!open) {
        const err = new Error(`WebSocket refused (code ${ev.code}${ev.reason ? ': ' + ev.reason : ''})`);
        err.code = ev.code;
        reject(err);
        return;
      }
      onState({ state: 'closed', code: ev.code, reason: ev.reason });
    };
  });
}
