// Minimal status page: the host list with liveness, data freshness and the
// latest CPU and memory use, re-read from the JSON API every pull_interval.
// Values from agents are only ever set as text, never as HTML.
//
// The API needs a login: the tokens live in sessionStorage (this tab only);
// an expired access token is refreshed once, else the login form returns.
"use strict";

const refreshMs = Number(document.body.dataset.refreshMs) || 2000;
const latestConcurrency = 6;
let busy = false;

function tokens() {
  try { return JSON.parse(sessionStorage.getItem("monitor.tokens")) || null; } catch (_) { return null; }
}

function setTokens(t) {
  if (t) sessionStorage.setItem("monitor.tokens", JSON.stringify(t));
  else sessionStorage.removeItem("monitor.tokens");
}

async function postJSON(url, body) {
  const resp = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  let data = null;
  try { data = await resp.json(); } catch (_) { /* not JSON */ }
  if (!resp.ok) throw new Error((data && data.error) || resp.status + " " + resp.statusText);
  return data;
}

async function refreshTokens() {
  const t = tokens();
  if (!t || !t.refresh_token) return false;
  try {
    setTokens(await postJSON("/api/v1/auth/refresh", { refresh_token: t.refresh_token }));
    return true;
  } catch (_) {
    setTokens(null);
    return false;
  }
}

function showLogin(message) {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("hosts").hidden = true;
  if (message) {
    const errorBox = document.getElementById("error");
    errorBox.textContent = message;
    errorBox.hidden = false;
  }
}

document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  try {
    setTokens(await postJSON("/api/v1/auth/login", { username: form.username.value, password: form.password.value }));
    form.password.value = "";
    form.hidden = true;
    document.getElementById("hosts").hidden = false;
    document.getElementById("error").hidden = true;
    refresh();
  } catch (e) {
    showLogin("Login failed: " + e.message);
  }
});

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function ago(unix) {
  if (!unix) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

async function getJSON(url, retried) {
  const t = tokens();
  const headers = { Accept: "application/json" };
  if (t) headers.Authorization = "Bearer " + t.access_token;
  const resp = await fetch(url, { headers });
  if (resp.status === 401 && !retried && (await refreshTokens())) return getJSON(url, true);
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  if (!resp.ok) {
    const err = new Error((body && body.error) || resp.status + " " + resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return body;
}

// pick returns the value of metric name: the series without labels when
// there is one (the host total), else the first.
function pick(latest, name) {
  if (!latest) return null;
  let found = null;
  for (const m of latest.metrics) {
    if (m.name !== name) continue;
    if (Object.keys(m.labels).length === 0) return m.value;
    if (found === null) found = m.value;
  }
  return found;
}

function percent(v) {
  return v === null || v === undefined ? "–" : v.toFixed(1) + " %";
}

async function latestOf(hosts) {
  const out = new Map();
  const queue = hosts.filter((h) => h.last_data > 0);
  async function worker() {
    while (queue.length) {
      const h = queue.shift();
      try {
        out.set(h.id, await getJSON("/api/v1/hosts/" + encodeURIComponent(h.id) + "/latest"));
      } catch (e) {
        if (e.status !== 404) out.set(h.id, { error: e.message, metrics: [] });
      }
    }
  }
  await Promise.all(Array.from({ length: latestConcurrency }, worker));
  return out;
}

function row(h, latest) {
  const tr = document.createElement("tr");
  tr.dataset.host = h.id;

  const name = el("td", h.hostname || h.id);
  if (h.hostname && h.hostname !== h.id) name.append(el("span", h.id, "sub"));
  tr.append(name);

  const status = el("td");
  status.append(el("span", h.online ? "online" : "offline", "badge " + (h.online ? "online" : "offline")));
  status.append(el("span", "seen " + ago(Math.max(h.last_heartbeat, h.last_registered)), "sub"));
  tr.append(status);

  const data = el("td", h.fresh ? "fresh" : "stale", h.fresh ? "fresh" : "stale");
  data.append(el("span", "last data " + ago(h.last_data), "sub"));
  if (latest && latest.error) data.append(el("span", latest.error, "sub"));
  tr.append(data);

  tr.append(el("td", percent(pick(latest, "cpu.usage_percent")), "num cpu"));
  tr.append(el("td", percent(pick(latest, "mem.used_percent")), "num mem"));

  const sys = [h.os, h.platform, h.arch].filter(Boolean).join(" · ");
  const system = el("td", sys || "–");
  if (h.cpu_count) system.append(el("span", h.cpu_count + " CPUs", "sub"));
  tr.append(system);
  return tr;
}

async function refresh() {
  if (busy) return;
  if (!tokens()) {
    showLogin();
    return;
  }
  busy = true;
  const errorBox = document.getElementById("error");
  try {
    const { hosts } = await getJSON("/api/v1/hosts");
    const latest = await latestOf(hosts);
    const tbody = document.querySelector("#hosts tbody");
    tbody.replaceChildren(...hosts.map((h) => row(h, latest.get(h.id))));
    document.getElementById("empty").hidden = hosts.length > 0;
    const online = hosts.filter((h) => h.online).length;
    const stale = hosts.filter((h) => !h.fresh).length;
    document.getElementById("summary").textContent =
      hosts.length + (hosts.length === 1 ? " host · " : " hosts · ") + online + " online · " + stale + " without fresh data · updated " +
      new Date().toLocaleTimeString();
    errorBox.hidden = true;
  } catch (e) {
    if (e.status === 401) {
      setTokens(null);
      showLogin("Your session ended; log in again.");
      return;
    }
    errorBox.textContent = "Cannot read the API: " + e.message;
    errorBox.hidden = false;
  } finally {
    busy = false;
  }
}

refresh();
setInterval(refresh, refreshMs);
