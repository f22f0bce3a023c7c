// The stack the browser tests run against: bin/monitor standalone on free
// ports with a known admin and viewer password, bin/loadgen's simulated
// fleet, and simfleet (./simfleet, built here) for hosts with labels whose
// CPU a test can pin. Chromium is Debian's /usr/bin/chromium driven by
// playwright-core; no browser is downloaded.
//
// Nothing here sleeps for a fixed time: every wait polls a condition with a
// deadline (waitFor).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, '..', '..');
export const ADMIN_PASSWORD = 'e2e-admin-password';
export const VIEWER_PASSWORD = 'e2e-viewer-password';
export const LOADGEN_HOSTS = 6;
export const SIM_HOSTS = 4;

/** freePort returns a TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
  });
}

/** waitFor polls fn until it returns a truthy value or the deadline passes. */
export async function waitFor(what, fn, { timeout = 30000, interval = 200 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? ': ' + last.message : ''}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

function hasCommand(name) {
  try { execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }); return true; } catch { return false; }
}

function startProcess(name, cmd, args, opts = {}) {
  const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  p.output = '';
  p.lines = [];
  const note = (chunk) => {
    const s = chunk.toString();
    p.output += s;
    if (p.output.length > 200000) p.output = p.output.slice(-100000);
    p.lines.push(...s.split('\n').filter(Boolean));
  };
  p.stdout.on('data', note);
  p.stderr.on('data', note);
  p.exited = new Promise((r) => p.on('exit', (code, sig) => { p.exitCode_ = code ?? sig; r(); }));
  p.label = name;
  return p;
}

/** Stack is the running system under test. */
export class Stack {
  async start() {
    for (const bin of ['monitor', 'loadgen']) {
      if (!existsSync(join(root, 'bin', bin))) throw new Error(`bin/${bin} is missing: run make build first`);
    }
    this.dir = mkdtempSync(join(tmpdir(), 'monitor-e2e-ui-'));
    this.procs = [];
    const simfleet = join(this.dir, 'simfleet');
    execFileSync('go', ['build', '-o', simfleet, './e2e/ui/simfleet'], { cwd: root, stdio: 'inherit' });
    // Two Redis shards when redis-server is installed (make deps installs
    // it), so the cluster page has shards with host counts; else embedded.
    this.shards = [];
    if (hasCommand('redis-server')) {
      for (let i = 0; i < 2; i++) {
        const port = await freePort();
        const r = startProcess('redis-' + port, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir]);
        this.procs.push(r);
        this.shards.push(`127.0.0.1:${port}`);
        await waitFor(`redis-server on ${port}`, () => {
          if (r.exitCode_ !== undefined) throw new Error('redis-server exited: ' + r.output);
          return /Ready to accept connections/.test(r.output);
        }, { timeout: 20000 });
      }
    }
    const storage = this.shards.length ? this.shards.map((a) => 'redis://' + a).join(',') : 'embedded';
    const [http, grpc, quic] = [await freePort(), await freePort(), await freePort()];
    this.base = `http://127.0.0.1:${http}`;
    this.grpc = `127.0.0.1:${grpc}`;
    this.monitor = startProcess('monitor', join(root, 'bin', 'monitor'), ['standalone',
      '-data', join(this.dir, 'data'), '-http', `127.0.0.1:${http}`, '-grpc', this.grpc, '-quic', `127.0.0.1:${quic}`,
      '-storage', storage, '-admin-password', ADMIN_PASSWORD, '-viewer-password', VIEWER_PASSWORD, '-interval', '1s', '-log-level', 'warn',
      // bin/loadgen and simfleet send no agent tokens.
      '-agent-auth=false']);
    this.procs.push(this.monitor);
    await waitFor('bin/monitor standalone to answer /healthz', async () => {
      if (this.monitor.exitCode_ !== undefined) throw new Error('monitor exited: ' + this.monitor.output);
      const r = await fetch(this.base + '/healthz');
      return r.ok;
    }, { timeout: 60000 });
    const m = /host:\s+(\S+)/.exec(this.monitor.output);
    this.localHost = m ? m[1] : null;
    this.loadgen = startProcess('loadgen', join(root, 'bin', 'loadgen'), ['-broker', this.grpc, '-hosts', String(LOADGEN_HOSTS),
      '-interval', '1s', '-duration', '0', '-metrics', '60', '-prefix', 'lg', '-log-level', 'warn']);
    this.procs.push(this.loadgen);
    this.sim = startProcess('simfleet', simfleet, ['-broker', this.grpc, '-hosts', String(SIM_HOSTS), '-prefix', 'sim', '-interval', '1s', '-backfill', '15m']);
    this.procs.push(this.sim);
    await waitFor('simfleet to be ready', () => {
      if (this.sim.exitCode_ !== undefined) throw new Error('simfleet exited: ' + this.sim.output);
      return this.sim.lines.includes('ready');
    }, { timeout: 60000 });
    this.browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    });
    return this;
  }

  /** hostIds are the ids the fleet must show. */
  hostIds() {
    const ids = [];
    for (let i = 1; i <= LOADGEN_HOSTS; i++) ids.push('lg-' + String(i).padStart(5, '0'));
    for (let i = 1; i <= SIM_HOSTS; i++) ids.push('sim-' + i);
    if (this.localHost) ids.push(this.localHost);
    return ids;
  }

  /** pinCPU pins a simfleet host's cpu.usage_percent ("auto" unpins) and waits for the acknowledgement. */
  async pinCPU(host, value) {
    const want = `ok cpu ${host} ${value}`;
    const before = this.sim.lines.filter((l) => l === want).length;
    this.sim.stdin.write(`cpu ${host} ${value}\n`);
    await waitFor(`simfleet to pin ${host}`, () => this.sim.lines.filter((l) => l === want).length > before, { timeout: 10000 });
  }

  /** login returns an API token pair for user/password (for API-level checks). */
  async login(username, password) {
    const r = await fetch(this.base + '/api/v1/auth/login', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username, password }) });
    if (!r.ok) throw new Error(`login ${username}: ${r.status} ${await r.text()}`);
    return r.json();
  }

  async stop() {
    if (this.browser) await this.browser.close().catch(() => {});
    for (const p of (this.procs || []).reverse()) {
      if (p.exitCode_ === undefined) {
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 15000);
        await p.exited;
        clearTimeout(t);
      }
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** logs returns the tail of every process's output (for failures). */
  logs() {
    return (this.procs || []).map((p) => `--- ${p.label} (exit ${p.exitCode_ ?? 'running'})\n${p.output.slice(-4000)}`).join('\n');
  }
}

/** artifacts is e2e/ui/artifacts (git-ignored), created when missing. */
export function artifacts() {
  const d = join(here, 'artifacts');
  mkdirSync(d, { recursive: true });
  return d;
}

/** screenshotDir is where page screenshots go: $SCREENSHOTS (make e2e SCREENSHOTS=docs/img) or e2e/ui/artifacts. */
export function screenshotDir() {
  if (!process.env.SCREENSHOTS) return artifacts();
  const d = resolve(root, process.env.SCREENSHOTS);
  mkdirSync(d, { recursive: true });
  return d;
}
