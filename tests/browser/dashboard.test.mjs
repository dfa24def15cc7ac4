// The dashboard in a real browser: Debian's chromium driven by playwright-core, against a real
// keel-node (every role) and nats-server started here on free loopback ports. Each page is saved
// as a screenshot in $KEEL_SHOTS_DIR.
//   node --test tests/browser/dashboard.test.mjs   (CTest runs it with the paths set)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WAIT, freePort, until, startKeel, openBrowser, stopKeel } from './support.mjs';

const SHOTS = process.env.KEEL_SHOTS_DIR || join(tmpdir(), 'keel-shots');
const TOKEN = 'browser-test-token';


let dir, nats, node, base, browser, context;
const errors = [];
const expectedFailures = new Set();

// The agent: a write, a command to refuse, a slow model call (time to reload the page), a
// command to approve, then the answer.
const script = {
  turns: [
    { text: 'I will write the notes.', tool_calls: [{ name: 'write', arguments: { path: 'notes.txt', content: 'line one\nline <b>two</b>\n' } }] },
    { text: 'Listing the files.', tool_calls: [{ name: 'exec', arguments: { command: 'ls -la /' } }] },
    { text: 'Reading them back.', delay_ms: 2500, tool_calls: [{ name: 'exec', arguments: { command: 'cat notes.txt' } }] },
    { text: 'Done: {{last_tool_result}}' },
  ],
};

async function api(path, body) {
  const headers = { Authorization: `Bearer ${TOKEN}` };
  const r = await fetch(`${base}/api/v1${path}`, body === undefined ? { headers } : { method: 'POST', headers: { ...headers, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const data = await r.json();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${JSON.stringify(data)}`);
  return data;
}

async function newPage() {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) errors.push(`console: ${m.text()}`); });
  // Every answer the page got is a success, but those a test asks for on purpose.
  page.on('response', (r) => { if (r.status() >= 400 && !expectedFailures.has(new URL(r.url()).pathname)) errors.push(`HTTP ${r.status()} for ${r.url()}`); });
  return page;
}

// Saves the page, after checking that nothing on it reads as a missing value.
const shot = async (page, name) => {
  const text = await page.locator('main').textContent();
  assert.doesNotMatch(text, /\b(null|undefined|NaN)\b|\[object Object\]/, `${name}: a missing value is shown`);
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keel-browser-'));
  mkdirSync(SHOTS, { recursive: true });
  const natsPort = await freePort();
  const httpPort = await freePort();
  writeFileSync(join(dir, 'coder.json'), JSON.stringify(script));
  writeFileSync(join(dir, 'lead.json'), JSON.stringify({ turns: [
    { text: 'Asking the helper.', tool_calls: [{ name: 'agent__helper', arguments: { task: 'Write report.txt' } }] },
    { text: 'Lead done: {{last_tool_result}}' }] }));
  writeFileSync(join(dir, 'helper.json'), JSON.stringify({ turns: [
    { text: 'Writing.', tool_calls: [{ name: 'write', arguments: { path: 'report.txt', content: 'fine\n' } }] },
    { text: 'Report written' }] }));
  writeFileSync(join(dir, 'fanner.json'), JSON.stringify({ turns: [
    { text: 'Fanning out.', tool_calls: [{ name: 'run_agents', arguments: { runs: [{ agent: 'helper', task: 'one' }, { agent: 'helper', task: 'two' }] } }] },
    { text: 'Joined: {{last_tool_result}}' }] }));
  writeFileSync(join(dir, 'waiter.json'), JSON.stringify({ turns: [
    { text: 'Waiting for the go.', tool_calls: [{ name: 'wait_for_event', arguments: { name: 'ready', timeout_seconds: 600 } }] },
    { text: 'Got: {{last_tool_result}}' }] }));
  const config = `
[node]
name = "n1"
roles = ["orchestrator", "worker", "gateway"]
data_dir = "${dir}/data"
[nats]
servers = ["nats://127.0.0.1:${natsPort}"]
[gateway]
listen = "127.0.0.1:${httpPort}"
token = "${TOKEN}"
[prices."scripted/scripted-coder"]
input = 1000
output = 1000
[agents.coder]
model = "scripted-coder"
script = "${dir}/coder.json"
tools = ["exec", "read", "write", "edit", "glob", "grep"]
[agents.coder.sandbox]
workspace = "${dir}/ws"
[agents.lead]
script = "${dir}/lead.json"
tools = []
sub_agents = ["helper"]
[agents.lead.sandbox]
workspace = "${dir}/ws"
[agents.helper]
script = "${dir}/helper.json"
tools = ["write"]
[agents.helper.sandbox]
workspace = "${dir}/ws"
[agents.waiter]
script = "${dir}/waiter.json"
tools = []
workflow_tools = ["wait_for_event"]
[agents.waiter.sandbox]
workspace = "${dir}/ws"
[agents.fanner]
script = "${dir}/fanner.json"
tools = []
sub_agents = ["helper"]
workflow_tools = ["run_agents"]
[agents.fanner.sandbox]
workspace = "${dir}/ws"
[run_queues.solo]
concurrency = 1
[agents.queued]
script = "${dir}/waiter.json"
tools = []
workflow_tools = ["wait_for_event"]
run_queue = "solo"
[agents.queued.sandbox]
workspace = "${dir}/ws"
[schedules.new-year]
agent = "waiter"
cron = "0 0 1 1 *"
timezone = "Europe/Berlin"
`;
  ({ nats, node, base } = await startKeel({ dir, config, natsPort, httpPort, token: TOKEN, errors }));
  // Pages of this context have the token already (one test below gives it through the prompt).
  ({ browser, context } = await openBrowser(TOKEN));
});

after(() => stopKeel({ browser, node, nats, dir }));

let run;  // the run the tests follow, one step after another

test('a gateway with a token: the page asks for it once, then shows the data', async () => {
  const fresh = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await fresh.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${base}/runs`);
  const dialog = page.locator('dialog.token-dialog');
  await dialog.waitFor({ timeout: WAIT });
  assert.equal(await page.locator('tbody tr').count(), 0);  // nothing without the token
  await dialog.locator('input[name=token]').fill('wrong');
  await dialog.locator('button[type=submit]').click();
  await page.locator('dialog.token-dialog').waitFor();  // asked again
  await page.locator('dialog.token-dialog input[name=token]').fill(TOKEN);
  await page.locator('dialog.token-dialog button[type=submit]').click();
  await until('the list', async () => /run|No runs match/.test(await page.locator('.list-info').textContent()));
  assert.equal(await page.evaluate(() => localStorage.getItem('keel-token')), TOKEN);
  assert.deepEqual(pageErrors, []);
  await fresh.close();
});

test('the runs page lists runs live, with what each waits for and the approvals badge', async () => {
  const page = await newPage();
  await page.goto(`${base}/runs`);
  await page.waitForSelector('.list-info');
  // A run started while the page is open appears without a reload.
  run = (await api('/runs', { agent: 'coder', input: 'Write notes.txt, then read it back. <img src=x onerror="window.__pwned=1">' })).run_id;
  const row = page.locator(`tr[data-run="${run}"]`);
  await row.waitFor({ timeout: WAIT });
  await until('the run to wait for its write', async () => (await row.textContent()).includes('approve write'));
  assert.match(await row.locator('.status').textContent(), /suspended/);
  // The input is shown as text: its markup is not markup here.
  assert.match(await row.textContent(), /<img src=x onerror="window.__pwned=1">/);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  await until('the badge', async () => (await page.locator('#approval-badge').textContent()) === '1');
  assert.equal(await page.locator('#approval-badge').isVisible(), true);
  // The inbox lists the step, with a link to answer it.
  await page.click('a[data-nav=approvals]');
  const waiting = page.locator(`tr[data-run="${run}"]`);
  await waiting.waitFor({ timeout: WAIT });
  assert.match(await waiting.textContent(), /write/);
  assert.match(await waiting.locator('a.button').getAttribute('href'), new RegExp(`/runs/${run}/steps/approve-\\d+$`));
  await shot(page, 'approvals');
  await page.goBack();
  await page.waitForSelector('form.filters');
  // Filters: text that matches, then text that does not.
  await page.fill('input[name=q]', 'notes.txt');
  await page.click('form.filters button[type=submit]');
  await until('the filtered list', async () => (await page.locator('tbody tr').count()) === 1);
  assert.match(page.url(), /q=notes.txt/);
  await page.fill('input[name=q]', 'no-such-text');
  await page.click('form.filters button[type=submit]');
  await until('an empty list', async () => (await page.locator('.list-info').textContent()) === 'No runs match.');
  await page.goto(`${base}/runs`);
  await page.locator(`tr[data-run="${run}"]`).waitFor();
  await shot(page, 'runs');
  await page.close();
});

test('the run page shows the timeline live, and a write is approved from the approval page', async () => {
  const page = await newPage();
  await page.goto(`${base}/runs/${run}`);
  await page.waitForSelector('.entry.kind-approval');
  assert.match(await page.locator('.run-header').textContent(), /suspended/);
  assert.match(await page.locator('.entry.kind-model').first().textContent(), /Model call #1/);
  assert.match(await page.locator('.entry.kind-tool').first().textContent(), /write/);
  assert.match(await page.locator('.entry.kind-start').first().textContent(), /by operator/);  // who started it: the token's name
  await shot(page, 'run-waiting');
  const { waiting } = await api(`/runs/${run}`);
  // The approval page, opened on its own (a link a person is sent).
  const approval = await newPage();
  await approval.goto(`${base}/runs/${run}/steps/${waiting.step_key}`);
  await approval.waitForSelector('.form');
  assert.match(await approval.locator('.form').textContent(), /Write approval required/i);
  assert.match(await approval.locator('.form').textContent(), /line <b>two<\/b>/);  // content as text
  await shot(approval, 'approval-write');
  await approval.click('button[data-action=approve]');
  await until('the answer to be recorded', async () => /Approved/.test(await approval.locator('.answer-status').textContent()));
  // The run page, open all along, goes on by itself: the write approved, the command waiting.
  await until('the timeline to show the approval', async () => /approved/.test(await page.locator('.entry.kind-approval').first().textContent()));
  await until('the command to wait', async () => (await page.locator('.entry.kind-approval').count()) === 2);
  // An answered approval page shows its answer.
  await approval.reload();
  await approval.waitForSelector('.answered');
  assert.match(await approval.locator('.answered').textContent(), /Approved/);
  assert.match(await approval.locator('.answered').textContent(), /By operator /);  // who answered: the token's name
  await approval.close();
  await page.close();
});

test('a command is rejected with feedback from the timeline, and the feedback shows in it', async () => {
  const page = await newPage();
  await page.goto(`${base}/runs/${run}`);
  const entry = page.locator('.entry.kind-approval').nth(1);
  await entry.waitFor();
  assert.match(await entry.textContent(), /Command approval required/i);
  assert.match(await entry.textContent(), /ls -la \//);
  await shot(page, 'run-command-waiting');
  await entry.locator('textarea.feedback').fill('Do not list the root; read notes.txt instead.');
  await entry.locator('button[data-action=reject]').click();
  await until('the rejection in the timeline', async () => {
    const text = await page.locator('.entry.kind-approval').nth(1).textContent();
    return /rejected/.test(text) && /Do not list the root; read notes\.txt instead\./.test(text);
  });
  const events = await api(`/runs/${run}/events?limit=1000`);
  const resumed = events.events.filter((e) => e.event_type === 'resumed');
  assert.equal(resumed.length, 2);
  assert.equal(resumed[1].data.approved, false);
  assert.equal(resumed[1].data.feedback, 'Do not list the root; read notes.txt instead.');
  await page.close();
});

test('a reload mid-run resumes the stream with no gap and no repeat, through to the end', async () => {
  const page = await newPage();
  await page.goto(`${base}/runs/${run}`);
  await page.waitForSelector('.entry.kind-model');
  // The model is thinking (its call takes 2.5 s): reload now.
  await page.reload();
  await page.waitForSelector('.entry.kind-model');
  await until('the third command to wait', async () => (await page.locator('.entry.kind-approval').count()) === 3);
  const { waiting } = await api(`/runs/${run}`);
  await api(`/runs/${run}/steps/${waiting.step_key}/approve`, {});
  await until('the end of the run', async () => /Run completed/.test(await page.locator('.entry.kind-end').textContent()));
  assert.match(await page.locator('.stream-state').textContent(), /ended/);
  // The header says what the stream said: completed, nothing waiting; each tool call one entry.
  await until('the header to say completed', async () => /completed/.test(await page.locator('.run-header .status').textContent()));
  assert.equal(await page.locator('.waiting-banner').count(), 0);
  assert.equal(await page.locator('.entry.kind-tool').count(), 3);
  assert.deepEqual(await page.locator('.entry.kind-tool .pill').first().textContent().then((t) => /done/.test(t)), true);
  const last = (await api(`/runs/${run}`)).last_event_seq;
  // Every stored event once, in order: the timeline's entries and the raw list agree with the run.
  const seqs = await page.locator('.entry').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  assert.equal(new Set(seqs).size, seqs.length);
  // What each model call was sent that was new: the second one, the approved write's result.
  const second = page.locator('.entry.kind-model').nth(1);
  await second.locator('summary').first().click();
  assert.match(await second.textContent(), /New since the call before: 1 message/);
  await shot(page, 'run-completed');
  await page.click('button[data-view=events]');
  const listed = await page.locator('.events-raw summary').evaluateAll((els) => els.map((e) => Number(e.textContent.match(/#(\d+)/)[1])));
  assert.deepEqual(listed, Array.from({ length: last }, (_, i) => i + 1));
  await page.click('button[data-view=graph]');
  await page.waitForSelector('svg.graph .node-end');
  assert.equal(await page.locator('svg.graph .node-model').count(), 4);
  assert.equal(await page.locator('svg.graph .node-approval').count(), 3);
  await shot(page, 'run-graph');
  // The output, as the run ended: the file's content read back.
  assert.match(await page.locator('button[data-view=timeline]').textContent(), /Timeline/);
  await page.close();
});

test('sub-agents: the inbox, the child run with the chain above it, and the parent with its child runs', async () => {
  const lead = (await api('/runs', { agent: 'lead', input: 'Get the report written.' })).run_id;
  let child;
  await until('the child run', async () => { child = (await api(`/runs/${lead}`)).children?.[0]?.run_id; return !!child; });
  const page = await newPage();
  await page.goto(`${base}/approvals`);
  await page.waitForSelector(`tr[data-run="${child}"]`);
  assert.match(await page.locator(`tr[data-run="${child}"]`).textContent(), /helper \(for lead, depth 1\)/);
  await page.goto(`${base}/runs/${child}`);
  await page.waitForSelector('[data-tree=parent]');
  assert.match(await page.locator('[data-tree=parent]').textContent(), new RegExp(`Sub-agent run for ${lead} \\(agent lead\\)`));
  await shot(page, 'sub-agent-child');
  const waiting = (await api(`/runs/${child}`)).waiting;
  await api(`/runs/${child}/steps/${waiting.step_key}/approve`, {});
  await until('the lead to finish', async () => (await api(`/runs/${lead}`)).status === 'completed');
  await page.goto(`${base}/runs/${lead}`);
  await page.waitForSelector('[data-tree=children]');
  assert.match(await page.locator('[data-tree=children]').textContent(), new RegExp(`${child} agent helper`));
  assert.match(await page.locator('.run-header').textContent(), /Tokens with sub-agents/);
  await until('the call to link its child run', async () => (await page.locator(`.entry.kind-tool a[href="/runs/${child}"]`).count()) === 1);
  await shot(page, 'sub-agent-parent');
  await page.close();
});

test('workflows: a run waiting for an event says so, and the event is sent from its page', async () => {
  const waiter = (await api('/runs', { agent: 'waiter', input: 'Wait for the go.' })).run_id;
  await until('the run to wait', async () => (await api(`/runs/${waiter}`)).status === 'waiting');
  const page = await newPage();
  await page.goto(`${base}/runs/${waiter}`);
  await page.waitForSelector('.run-header .waiting-banner');
  assert.match(await page.locator('.run-header .waiting-banner').textContent(), /Waiting for event ready until/);
  assert.match(await page.locator('.run-header .status').textContent(), /waiting/);
  await shot(page, 'workflow-waiting');
  await page.locator('.run-header input[aria-label="Event payload"]').fill('{"go": "yes, ship it"}');
  await page.locator('.run-header button', { hasText: 'Send event' }).click();
  await until('the run to finish', async () => (await api(`/runs/${waiter}`)).status === 'completed');
  assert.match((await api(`/runs/${waiter}`)).output, /ship it/);
  await until('the header to say completed', async () => /completed/.test(await page.locator('.run-header .status').textContent()));
  await page.goto(`${base}/runs?status=waiting`);
  await page.waitForSelector('.list-info');
  // The schedules page: the schedule with its next tick, paused and resumed from there.
  await page.goto(`${base}/schedules`);
  await page.waitForSelector('tr[data-schedule="new-year"]');
  assert.match(await page.locator('tr[data-schedule="new-year"]').textContent(), /0 0 1 1 \*.*Europe\/Berlin.*active/);
  await page.locator('tr[data-schedule="new-year"] button', { hasText: 'Pause' }).click();
  await until('the schedule to be paused', async () => (await api('/schedules')).schedules[0].paused === true);
  await until('the page to show it', async () => /paused by/.test(await page.locator('tr[data-schedule="new-year"]').textContent()));
  await shot(page, 'schedules');
  await page.locator('tr[data-schedule="new-year"] button', { hasText: 'Resume' }).click();
  await until('the schedule to be active', async () => (await api('/schedules')).schedules[0].paused === false);
  // One made through the API is listed as such, and removed from here.
  await api('/schedules', { name: 'from-api', agent: 'waiter', cron: '*/5 * * * *' });
  await page.waitForSelector('tr[data-schedule="from-api"]');
  assert.match(await page.locator('tr[data-schedule="from-api"]').textContent(), /api/);
  assert.equal(await page.locator('tr[data-schedule="new-year"] button', { hasText: 'Remove' }).count(), 0);
  page.once('dialog', (d) => d.accept());
  await page.locator('tr[data-schedule="from-api"] button', { hasText: 'Remove' }).click();
  await until('the schedule to be gone', async () => !(await api('/schedules')).schedules.some((x) => x.name === 'from-api'));
  await page.close();
});

test('workflows: the queues page shows what goes and what waits in line, and a run in line says so', async () => {
  const first = (await api('/runs', { agent: 'queued', input: 'First.', concurrency_key: 'k1' })).run_id;
  await until('the first run to wait for its event', async () => (await api(`/runs/${first}`)).status === 'waiting');
  const second = (await api('/runs', { agent: 'queued', input: 'Second.' })).run_id;
  await until('the second run to be in line', async () => (await api(`/runs/${second}`)).status === 'queued');
  const page = await newPage();
  await page.goto(`${base}/queues`);
  await page.waitForSelector('section[data-queue=solo]');
  await until('the page to show the line', async () => /1 of 1 going.*1 in line/.test(await page.locator('section[data-queue=solo]').textContent()));
  const card = await page.locator('section[data-queue=solo]').textContent();
  assert.match(card, new RegExp(first));
  assert.match(card, new RegExp(second));
  assert.match(card, /k1/);
  await shot(page, 'queues');
  await page.locator(`section[data-queue=solo] a[href="/runs/${second}"]`).click();
  await page.waitForSelector('.run-header .waiting-banner');
  assert.match(await page.locator('.run-header .waiting-banner').textContent(), /In line in run queue solo/);
  assert.match(await page.locator('.run-header .status').textContent(), /queued/);
  // The first goes on and ends: the second is admitted, and its page says it waits for its event.
  await api(`/runs/${first}/signals`, { name: 'ready', payload: 'go' });
  await until('the second run to start', async () => (await api(`/runs/${second}`)).status === 'waiting');
  await until('the header to say waiting', async () => /Waiting for event/.test(await page.locator('.run-header').textContent()));
  await page.goto(`${base}/runs?status=queued`);
  await page.waitForSelector('.list-info');
  await api(`/runs/${second}/cancel`, { reason: 'done with it' });
  await page.close();
});

test('workflows: a run waiting for its fan-out says so and lists its child runs', async () => {
  const fanner = (await api('/runs', { agent: 'fanner', input: 'Fan out.' })).run_id;
  await until('the run to wait for its children', async () => (await api(`/runs/${fanner}`)).children?.length === 2);
  const page = await newPage();
  await page.goto(`${base}/runs/${fanner}`);
  await page.waitForSelector('.run-header .waiting-banner');
  await until('the banner to say what it waits for', async () =>
    /Waiting for its fan-out \(all of 2 child runs; 0 ended\)/.test(await page.locator('.run-header .waiting-banner').textContent()));
  await page.waitForSelector('[data-tree=children]');
  await shot(page, 'fan-out');
  await api(`/runs/${fanner}/cancel`, { reason: 'enough' });
  for (const child of (await api(`/runs/${fanner}`)).children)
    await until('each child to be cancelled', async () => (await api(`/runs/${child.run_id}`)).status === 'cancelled');
  await page.close();
});

test('the agents and nodes pages show what the heartbeats and the orchestrators say', async () => {
  const page = await newPage();
  await page.goto(`${base}/agents`);
  await page.waitForSelector('tr[data-agent=coder]');
  const agent = await page.locator('tr[data-agent=coder]').textContent();
  assert.match(agent, /scripted/);
  assert.match(agent, /exec, read, write, edit, glob, grep/);
  assert.match(agent, /approval-always/);
  // What its runs of the last day cost, by the price table (the runs of the tests before this one).
  assert.match(agent, /\$\d+\.\d+ · \d+ runs? · \d+ tokens/);
  await shot(page, 'agents');
  await page.click('a[data-nav=nodes]');  // in-page navigation
  await page.waitForSelector('tr[data-node=n1]');
  assert.match(await page.locator('tr[data-node=n1]').textContent(), /orchestrator, worker, gateway/);
  assert.match(page.url(), /\/nodes$/);
  await shot(page, 'nodes');
  await page.goBack();
  await page.waitForSelector('tr[data-agent=coder]');
  await page.close();
});

test('nothing went wrong in any page', () => {
  assert.deepEqual(errors, []);
});
