// Web pages against a local keel in a real browser: Debian's chromium, driven by playwright-core,
// against a keel-node given no token (the loopback default: it makes one, as `keel dev` shows it,
// in the dashboard's address) and a nats-server started here. A page
// of another origin tries every way a page can send without a preflight (text/plain fetches,
// form posts, multipart), and a DNS-rebinding page (a name of its own that resolves to this
// machine) tries to read; nothing of it reaches a run. The gateway's own page still works.
//   node --test tests/browser/cross_origin.test.mjs   (CTest runs it with the paths set)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WAIT, freePort, until, startNats, startNode, gatewayReady, launchChromium, stopKeel } from './support.mjs';


let dir, nats, node, base, gatewayPort, evil, evilBase, browser, run, step, dashboardUrl, token;

// A client of the API as a script would be (JSON, no Origin): how the test looks at what happened.
async function api(path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  const r = await fetch(`${base}/api/v1${path}`, body === undefined ? { headers } : { method: 'POST', headers: { ...headers, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, data: await r.json() };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keel-cross-origin-'));
  const natsPort = await freePort();
  gatewayPort = await freePort();
  writeFileSync(join(dir, 'coder.json'), JSON.stringify({ turns: [
    { text: 'Running.', tool_calls: [{ name: 'exec', arguments: { command: 'echo ran > ran.txt' } }] },
    { text: 'Done.' }] }));
  const config = `
[node]
name = "n1"
roles = ["orchestrator", "worker", "gateway"]
data_dir = "${dir}/data"
[nats]
servers = ["nats://127.0.0.1:${natsPort}"]
[gateway]
listen = "127.0.0.1:${gatewayPort}"
[agents.coder]
script = "${dir}/coder.json"
[agents.coder.sandbox]
workspace = "${dir}/ws"
`;
  // Started in steps (not startKeel): the token is the node's own, known once it has written it.
  nats = await startNats(dir, natsPort);
  ({ node } = startNode(dir, config));
  base = `http://127.0.0.1:${gatewayPort}`;
  // The node made the installation's token and wrote the dashboard's address with it.
  const urlFile = join(dir, 'data', 'dashboard-url');
  await until('the dashboard address', () => existsSync(urlFile) && readFileSync(urlFile, 'utf8').includes('#token='));
  dashboardUrl = readFileSync(urlFile, 'utf8').trim();
  token = dashboardUrl.split('#token=')[1];
  // The address is written when the token is made, before the gateway listens: wait for it.
  await gatewayReady(base, token);
  assert.equal((await fetch(`${base}/api/v1/runs`)).status, 401);  // no token, nothing
  // A run waiting for its command's approval: what a hostile page would like to approve.
  const started = await api('/runs', { agent: 'coder', input: 'go' });
  assert.equal(started.status, 201, JSON.stringify(started.data));
  run = started.data.run_id;
  step = await until('the run to wait', async () => (await api(`/runs/${run}`)).data.waiting?.step_key);
  // The hostile site, on another port (another origin).
  const evilPort = await freePort();
  evil = createHttpServer((req, res) => {
    res.setHeader('Content-Type', 'text/html');
    res.end(`<!doctype html><title>hostile</title><body>
<form id="approve" method="POST" action="${base}/api/v1/runs/${run}/steps/${step}/approve" target="sink">
  <input name="approved" value="true"></form>
<form id="multipart" method="POST" enctype="multipart/form-data" action="${base}/api/v1/runs" target="sink2">
  <input name="agent" value="coder"></form>
<iframe name="sink"></iframe><iframe name="sink2"></iframe>
<script>
  const tries = [];
  const send = (url, init) => fetch(url, init).then((r) => tries.push(url + ' ' + r.status), (e) => tries.push(url + ' failed'));
  window.attack = async () => {
    await send('${base}/api/v1/runs', { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify({ agent: 'coder', input: 'from a page' }) });
    await send('${base}/api/v1/runs/${run}/steps/${step}/approve', { method: 'POST', mode: 'no-cors', body: '{}' });
    await send('${base}/api/v1/runs/${run}/cancel', { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'reason=x' });
    await send('${base}/api/v1/runs', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ agent: 'coder', input: 'preflighted' }) });
    await send('${base}/api/v1/approvals', {});
    document.getElementById('approve').submit();
    document.getElementById('multipart').submit();
    await new Promise((r) => setTimeout(r, 1500));
    return tries;
  };
</script>`);
  });
  await new Promise((r) => evil.listen(evilPort, '127.0.0.1', r));
  evilBase = `http://127.0.0.1:${evilPort}`;
  // evil.test resolves to this machine: the rebinding a hostile DNS server would do.
  browser = await launchChromium(['--host-resolver-rules=MAP evil.test 127.0.0.1']);
});

after(async () => {
  evil?.close();
  await stopKeel({ browser, node, nats, dir });
});

test('a page of another origin starts, approves and cancels nothing, however it sends', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${evilBase}/`);
  const tries = await page.evaluate(() => window.attack());
  assert.ok(tries.length >= 4, JSON.stringify(tries));
  // The run still waits on the same step, and it is the only run.
  const shown = await api(`/runs/${run}`);
  assert.equal(shown.data.status, 'suspended');
  assert.equal(shown.data.waiting.step_key, step);
  const listed = await api('/runs');
  assert.equal(listed.data.runs.length, 1, JSON.stringify(listed.data.runs.map((r) => r.input)));
  await context.close();
});

test('a DNS-rebinding page reads nothing: not the dashboard, not the runs, not the approvals', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const answer = await page.goto(`http://evil.test:${gatewayPort}/`);
  assert.equal(answer.status(), 403);
  const reads = await page.evaluate(async () => Promise.all(['/api/v1/runs', '/api/v1/approvals', '/app.js'].map(
    (path) => fetch(path).then((r) => r.status, () => 0))));
  assert.deepEqual(reads, [403, 403, 403]);
  await context.close();
});

test('the gateway\'s own page, opened once at the address with the token, approves the run under its name', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(dashboardUrl);
  await until('the token taken from the address', async () => !page.url().includes('#token='));
  assert.equal(await page.evaluate(() => localStorage.getItem('keel-token')), token);
  await page.goto(`${base}/runs/${run}/steps/${step}`);
  await page.locator('button[data-action=approve]').click({ timeout: WAIT });
  await until('the run to complete', async () => (await api(`/runs/${run}`)).data.status === 'completed');
  assert.deepEqual(errors, []);
  const events = (await api(`/runs/${run}/events`)).data.events;
  const resumed = events.find((e) => e.event_type === 'resumed');
  assert.ok(resumed, JSON.stringify(events.map((e) => e.event_type)));
  assert.ok(resumed.data.by && resumed.data.by.length > 0, JSON.stringify(resumed.data));
  await context.close();
});
