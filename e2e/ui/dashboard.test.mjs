// Browser tests of the dashboard against a running standalone instance with
// simulated agents (harness.mjs). The tests run in order on one browser
// page and one stack: log in, fleet, host charts, Top-K, alerts, cluster,
// widths, logout, viewer. Every wait is on a condition, with a deadline.
// Four logins in all (one refused): the server allows five at once per
// address, then one per 12 s.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { Stack, waitFor, screenshotDir, artifacts, ADMIN_PASSWORD, VIEWER_PASSWORD, SIM_HOSTS } from './harness.mjs';

const shots = screenshotDir();
let stack;
let context;
let page;
const pageErrors = [];

async function shot(name, opts = {}) {
  await page.screenshot({ path: join(shots, name + '.png'), fullPage: true, ...opts });
}

async function login(user, password) {
  await page.locator('#username').fill(user);
  await page.locator('#password').fill(password);
  await page.locator('#login-submit').click();
  await page.locator('#who').filter({ hasText: `${user} (` }).waitFor({ timeout: 20000 });
}

// sparklinesFilled waits until the simulated hosts' sparklines show
// history (simfleet backfills 15 minutes) and every other host's has a few
// live points.
async function sparklinesFilled() {
  await waitFor('sparklines with points', () => page.evaluate(() => {
    const rows = [...document.querySelectorAll('#hosts tbody tr')];
    return rows.length > 0 && rows.every((tr) => [...tr.querySelectorAll('canvas.spark')]
      .every((c) => Number(c.dataset.points || 0) >= (tr.dataset.host.startsWith('sim-') ? 20 : 3)));
  }));
}

async function topkOrder(id) {
  return page.locator(`#topk-${id} li`).evaluateAll((lis) => lis.map((li) => li.dataset.host));
}

describe('dashboard', { timeout: 240000 }, () => {
  before(async () => {
    stack = await new Stack().start();
    context = await stack.browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
    page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push('console: ' + m.text()); });
    // Failed requests other than the expected ones: the wrong password
    // (401 from login) and the browser's favicon probe.
    page.on('response', (r) => {
      const u = new URL(r.url());
      if (r.status() >= 400 && u.pathname !== '/favicon.ico' && !(u.pathname === '/api/v1/auth/login' && r.status() === 401)) {
        pageErrors.push(`${r.request().method()} ${u.pathname}${u.search} → ${r.status()}`);
      }
    });
    page.setDefaultTimeout(20000);
  });

  after(async () => {
    if (stack) {
      await stack.stop();
      // The processes' output, for a failed run.
      writeFileSync(join(artifacts(), 'stack.log'), stack.logs());
    }
  });

  it('logs in (a wrong password is refused in words)', async () => {
    await page.goto(stack.base + '/');
    await page.locator('#login').waitFor();
    await page.locator('#username').fill('admin');
    await page.locator('#password').fill('not-the-password');
    await page.locator('#login-submit').click();
    await page.locator('#login-error').filter({ hasText: /wrong username or password/i }).waitFor();
    await page.locator('#password').fill('');
    await shot('login');
    await login('admin', ADMIN_PASSWORD);
    await page.locator('#conn[data-state="live"]').waitFor();
    // WebTransport when the browser reaches the QUIC port, else the WebSocket;
    // the header names the one in use.
    const transport = await page.locator('#conn').getAttribute('data-transport');
    assert.ok(['websocket', 'webtransport'].includes(transport), `transport ${transport}`);
    assert.match(await page.locator('#conn').innerText(), transport === 'websocket' ? /Live · WebSocket/ : /Live · WebTransport/);
  });

  it('the fleet shows every host, with live sparklines and freshness', async () => {
    const ids = stack.hostIds();
    await waitFor('every host in the fleet table', async () => {
      const shown = await page.locator('#hosts tbody tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.host));
      return ids.every((id) => shown.includes(id));
    });
    // Live values arrive: sim-1's CPU cell shows a number.
    await page.locator('#hosts tr[data-host="sim-1"] .spark-val').first().filter({ hasText: /%/ }).waitFor();
    await page.locator('#hosts tr[data-host="sim-1"] .status-online').waitFor();
    // Search by label, then by id.
    await page.locator('#host-search').fill('role=db');
    await waitFor('the label search to narrow the table', async () => {
      const shown = await page.locator('#hosts tbody tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.host));
      return shown.length > 0 && shown.every((id) => id === 'sim-2' || id === 'sim-4');
    });
    await page.locator('#host-search').fill('lg-0000');
    await waitFor('the id search', async () => (await page.locator('#hosts tbody tr').count()) === 6);
    await page.locator('#host-search').fill('');
    await waitFor('all hosts again', async () => (await page.locator('#hosts tbody tr').count()) === ids.length);
    // Top-K panels filled for the four kinds.
    for (const id of ['cpu', 'mem', 'disk', 'net']) await page.locator(`#topk-${id} li`).first().waitFor();
    // No horizontal scrolling at laptop width.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the fleet page scrolls sideways by ${overflow}px at 1440px`);
    await sparklinesFilled();
    await shot('fleet');
  });

  it("a host's charts receive live points", async () => {
    await page.locator('#hosts tr[data-host="sim-1"] a.host-link').click();
    await page.locator('#host-title').filter({ hasText: 'sim-1' }).waitFor();
    const count = async () => Number(await page.locator('#live-points').getAttribute('data-count'));
    await waitFor('live points on the host charts', async () => (await count()) > 0);
    const first = await count();
    await waitFor('more live points', async () => (await count()) > first);
    // Every chart of the simulated host has data (no "No data" overlay).
    for (const id of ['cpu', 'cores', 'load', 'mem', 'fs', 'diskio', 'net']) {
      await page.locator(`[data-chart="${id}"] .chart-state`).waitFor({ state: 'hidden' });
    }
    await page.locator('#processes tbody tr').first().waitFor();
    await page.locator('#facts dd').filter({ hasText: 'sim-1.example.internal' }).waitFor();
    await shot('host');
    // Longer ranges read through step (rollups beyond raw).
    await page.locator('button[data-range="1h"]').click();
    await page.locator('#resolution').filter({ hasText: /steps/ }).waitFor();
    await page.locator('button[data-range="7d"]').click();
    await page.locator('#resolution').filter({ hasText: /1h rollups|raw samples|1m rollups/ }).waitFor();
    await page.locator('button[data-range="5m"]').click();
    await page.locator('[data-chart="cpu"] .chart-state').waitFor({ state: 'hidden' });
  });

  it("Top-K reorders when a simulated host's CPU jumps", async () => {
    await page.locator('.nav a[data-nav="fleet"]').click();
    await page.locator('#topk-cpu li').first().waitFor();
    await stack.pinCPU('sim-3', '0.5');
    await waitFor('sim-3 to leave the top of the CPU ranking', async () => (await topkOrder('cpu'))[0] !== 'sim-3' && !(await topkOrder('cpu')).slice(0, 3).includes('sim-3'));
    const before = await topkOrder('cpu');
    await stack.pinCPU('sim-3', '100');
    // Ties rank by host id; only the standalone's own host could also show 100 %.
    const after = await waitFor('sim-3 to lead the CPU ranking', async () => {
      const order = await topkOrder('cpu');
      const rank = order.indexOf('sim-3');
      return (rank === 0 || (rank === 1 && order[0] === stack.localHost)) ? order : null;
    });
    assert.notDeepEqual(after, before);
    await page.locator('#topk-cpu li[data-host="sim-3"] .topk-value').filter({ hasText: '100.0' }).waitFor();
    await stack.pinCPU('sim-3', 'auto');
  });

  it('an alert fires and shows (admin creates, edits and deletes rules)', async () => {
    await stack.pinCPU('sim-4', '97');
    await page.locator('.nav a[data-nav="alerts"]').click();
    await page.locator('#rule-form').waitFor();
    await page.locator('#rule-id').fill('e2e-hot-cpu');
    await page.locator('#rule-metric').fill('cpu.usage_percent');
    await page.locator('#rule-op').selectOption('>');
    await page.locator('#rule-threshold').fill('95');
    await page.locator('#rule-for').fill('0');
    await page.locator('#rule-hosts').fill('sim-4');
    await page.locator('#rule-save').click();
    await page.locator('#rules tr[data-rule="e2e-hot-cpu"]').waitFor();
    await page.locator('#alert-states tr[data-rule="e2e-hot-cpu"][data-host="sim-4"][data-state="firing"]').waitFor({ timeout: 30000 });
    await page.locator('#alert-badge:not([hidden])').waitFor();
    // Edit: the threshold changes in place.
    await page.locator('#rules tr[data-rule="e2e-hot-cpu"] button[data-action="edit"]').click();
    await page.locator('#rule-threshold').fill('96');
    await page.locator('#rule-save').click();
    await page.locator('#rules tr[data-rule="e2e-hot-cpu"] td').filter({ hasText: '> 96' }).waitFor();
    // A second rule, then delete it.
    await page.locator('#rule-id').fill('e2e-doomed');
    await page.locator('#rule-metric').fill('mem.used_percent');
    await page.locator('#rule-threshold').fill('99.9');
    await page.locator('#rule-save').click();
    await page.locator('#rules tr[data-rule="e2e-doomed"]').waitFor();
    page.once('dialog', (d) => d.accept());
    await page.locator('#rules tr[data-rule="e2e-doomed"] button[data-action="delete"]').click();
    await page.locator('#rules tr[data-rule="e2e-doomed"]').waitFor({ state: 'detached' });
    await shot('alerts');
    // The fleet's firing-alerts panel shows it too.
    await page.locator('.nav a[data-nav="fleet"]').click();
    await page.locator('#firing-alerts li[data-rule="e2e-hot-cpu"][data-host="sim-4"]').waitFor();
    await sparklinesFilled();
    await shot('fleet');
  });

  it('the cluster page shows brokers, leader, term and ring', async () => {
    await page.locator('.nav a[data-nav="cluster"]').click();
    await page.locator('#leader .card-value').filter({ hasText: 'standalone' }).waitFor();
    await page.locator('#brokers tr[data-broker="standalone"]').filter({ hasText: 'open' }).waitFor();
    assert.ok(Number(await page.locator('#term .card-value').innerText()) >= 1);
    await page.locator('#ring-version').waitFor();
    if (stack.shards.length) {
      // Every registered host (simfleet's and the standalone's own; loadgen's
      // never register) is counted on one of the two shards.
      const registered = SIM_HOSTS + (stack.localHost ? 1 : 0);
      await waitFor('the shards to count every registered host', async () => {
        const counts = await page.locator('#shards tbody tr td.num').allInnerTexts();
        return counts.length === 2 && counts.reduce((a, c) => a + Number(c), 0) === registered;
      });
      await page.locator('#migration').filter({ hasText: 'done' }).waitFor();
    } else {
      await page.locator('#no-shards').waitFor();
    }
    await shot('cluster');
  });

  it('lays out at large-monitor and laptop widths', async () => {
    await page.locator('.nav a[data-nav="fleet"]').click();
    for (const [width, height] of [[1920, 1080], [1280, 800]]) {
      await page.setViewportSize({ width, height });
      await page.locator('#topk-cpu li').first().waitFor();
      await waitFor(`no sideways scrolling at ${width}px`, () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
      if (width === 1920) {
        await sparklinesFilled();
        await page.screenshot({ path: join(shots, 'fleet-wide.png') });
      }
    }
    await page.setViewportSize({ width: 1440, height: 900 });
  });

  it('logs out', async () => {
    await page.locator('#logout').click();
    await page.locator('#login').waitFor();
    await page.locator('#login-error').filter({ hasText: 'You are logged out.' }).waitFor();
    // The session is gone: a protected page shows the login form again.
    await page.evaluate(() => { location.hash = '#/alerts'; });
    await page.locator('#login').waitFor();
    assert.equal(await page.locator('#who').count(), 0);
  });

  it('a viewer cannot edit rules', async () => {
    await login('viewer', VIEWER_PASSWORD);
    // The login returned to the page asked for: the alerts page.
    await page.locator('#rules tr[data-rule="e2e-hot-cpu"]').waitFor();
    await page.locator('#read-only').waitFor();
    assert.equal(await page.locator('#rule-form').count(), 0, 'the viewer sees the rule form');
    assert.equal(await page.locator('#rules button').count(), 0, 'the viewer sees rule buttons');
    // The API refuses the viewer's writes too.
    const viewer = await stack.login('viewer', VIEWER_PASSWORD);
    const r = await fetch(stack.base + '/api/v1/alerts/rules/e2e-hot-cpu', {
      method: 'DELETE', headers: { Authorization: 'Bearer ' + viewer.access_token },
    });
    assert.equal(r.status, 403);
    await page.locator('#logout').click();
    await page.locator('#login').waitFor();
    assert.deepEqual(pageErrors, [], 'the pages raised errors or failed requests');
  });
});
