// Forks, reruns, the replay check, the compare page and bulk actions in a real browser: Debian's
// chromium driven by playwright-core, against a real keel-node (every role) and nats-server
// started here on free loopback ports. Each page is saved as a screenshot in $KEEL_SHOTS_DIR.
//   node --test tests/browser/forks.test.mjs   (with KEEL_NODE_BINARY, NATS_SERVER, CHROMIUM set)
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

// The agent to fork: a write (a person approves it), a command whose output differs each time
// it runs (so that a fork that runs it live parts from its original there), a read, the answer.
const forker = {
  turns: [
    { text: 'Writing the plan.', tool_calls: [{ name: 'write', arguments: { path: 'plan.txt', content: 'step one\n' } }] },
    { text: 'Taking the time.', tool_calls: [{ name: 'exec', arguments: { command: 'date +%s%N' } }] },
    { text: 'Reading the plan.', tool_calls: [{ name: 'exec', arguments: { command: 'cat plan.txt' } }] },
    { text: 'Done.' },
  ],
};

// An agent whose model step holds until the file "release" exists: its runs stay running for as
// long as the test needs, however slow the machine (the file frees the workers at the end).
const sleeper = { turns: [{ text: 'Thinking it over.', wait_for_file: 'release' }, { text: 'Done.' }] };

async function api(path, body) {
  const headers = { Authorization: `Bearer ${TOKEN}` };
  const r = await fetch(`${base}/api/v1${path}`, body === undefined ? { headers } : { method: 'POST', headers: { ...headers, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const data = await r.json();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${JSON.stringify(data)}`);
  return data;
}

async function allEvents(run) {
  const events = [];
  for (let after = 0; ;) {
    const page = await api(`/runs/${run}/events?after=${after}&limit=1000`);
    events.push(...page.events);
    if (!page.more || !page.events.length) return events;
    after = page.events[page.events.length - 1].seq;
  }
}

async function newPage() {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) errors.push(`console: ${m.text()}`); });
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`HTTP ${r.status()} for ${r.url()}`); });
  return page;
}

// Saves the page, after checking that nothing on it reads as a missing value.
const shot = async (page, name) => {
  const text = await page.locator('main').textContent();
  assert.doesNotMatch(text, /\b(null|undefined|NaN)\b|\[object Object\]/, `${name}: a missing value is shown`);
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
};

// The id of the run whose page is open, once it is another than `not`.
const runOnPage = (page, not) => until('the new run\'s page', () => {
  const m = new URL(page.url()).pathname.match(/^\/runs\/([A-Za-z0-9_-]+)$/);
  return m && m[1] !== not ? m[1] : null;
});

const completed = (run) => until(`run ${run} to complete`, async () => {
  const r = await api(`/runs/${run}`);
  assert.ok(!r.waiting, `run ${run} waits for an approval (${r.waiting?.step_key})`);
  assert.ok(!['failed', 'cancelled'].includes(r.status), `run ${run} ended ${r.status}: ${r.error || ''}`);
  return r.status === 'completed';
});

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keel-forks-'));
  mkdirSync(SHOTS, { recursive: true });
  const natsPort = await freePort();
  const httpPort = await freePort();
  writeFileSync(join(dir, 'forker.json'), JSON.stringify(forker));
  writeFileSync(join(dir, 'sleeper.json'), JSON.stringify(sleeper));
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
[agents.forker]
model = "scripted-coder"
script = "${dir}/forker.json"
tools = ["exec", "read", "write"]
[agents.forker.sandbox]
workspace = "${dir}/ws"
exec_security = "allow-always"
[agents.sleeper]
script = "${dir}/sleeper.json"
tools = []
[agents.sleeper.sandbox]
workspace = "${dir}/ws-sleeper"
`;
  ({ nats, node, base } = await startKeel({ dir, config, natsPort, httpPort, token: TOKEN, errors }));
  ({ browser, context } = await openBrowser(TOKEN));
});

after(async () => {
  if (dir) writeFileSync(join(dir, 'release'), '');  // held model steps end (their runs are cancelled)
  await stopKeel({ browser, node, nats, dir });
});

let original, fork, page;  // the run, its fork, and the page the tests go on in

test('a completed run is forked from its page at step 1 with another model; the fork says so and marks the replayed steps', async () => {
  original = (await api('/runs', { agent: 'forker', input: 'Write the plan, take the time, read the plan back.' })).run_id;
  const approval = await until('the write to wait for approval', async () => (await api(`/runs/${original}`)).waiting?.step_key);
  await api(`/runs/${original}/steps/${approval}/approve`, {});
  await completed(original);
  const steps = (await allEvents(original)).filter((e) => e.event_type === 'llm_step_completed');
  assert.equal(steps.length, 4);

  page = await newPage();
  await page.goto(`${base}/runs/${original}`);
  await page.waitForSelector('.entry.kind-end');
  await page.click('.run-actions button[data-action=fork]');
  const form = page.locator('form.fork-form');
  await form.waitFor();
  assert.equal(await form.locator('input[name=at_step]').inputValue(), '3');  // the last model step but one
  // The approval the run asked is offered, to keep or to answer otherwise.
  const row = form.locator(`.fork-approval[data-step-key="${approval}"]`);
  assert.equal(await row.count(), 1);
  assert.match(await row.textContent(), /write \(model step 1, approved\)/);
  assert.equal(await row.locator('select').inputValue(), 'keep');
  await form.locator('input[name=at_step]').fill('1');
  await form.locator('input[name=model]').fill('scripted-other');
  await shot(page, 'fork-form');
  await form.locator('button[type=submit]').click();

  fork = await runOnPage(page, original);
  await page.waitForSelector('.fork-line');
  assert.match(await page.locator('.fork-line').textContent(), new RegExp(`Forked from ${original} at step 1`));
  assert.equal(await page.locator(`.fork-line a[href="/runs/${original}"]`).count(), 1);
  const summary = await api(`/runs/${fork}`);
  assert.equal(summary.fork?.run_id, original);
  assert.equal(summary.fork?.at_step, 1);
  await completed(fork);
  await until('the header to say completed', async () => /completed/.test(await page.locator('.run-header .status').textContent()));
  assert.match(await page.locator('.run-header').textContent(), /scripted-other/);
  // Model step 1 (and its write) came from the record; the three after it were asked live.
  const events = await allEvents(fork);
  assert.ok(events.some((e) => e.event_type === 'llm_step_completed' && e.data.step === 1 && e.data.replayed === true));
  assert.ok(events.some((e) => e.event_type === 'llm_step_completed' && e.data.step === 2 && !e.data.replayed));
  await until('four model steps on the page', async () => (await page.locator('.entry.kind-model').count()) === 4);
  const replayedModel = page.locator('.entry.kind-model.replayed');
  assert.equal(await replayedModel.count(), 1);
  assert.match(await replayedModel.textContent(), /Model call #1/);
  assert.equal(await replayedModel.locator('summary .pill.replayed').textContent(), 'replayed');
  assert.equal(await page.locator('.entry.kind-tool.replayed').count(), 1);  // the write
  assert.match(await page.locator('.entry.kind-tool.replayed').textContent(), /write/);
  assert.equal(await page.locator('.entry.kind-model:not(.replayed)').count(), 3);
  await shot(page, 'fork');
});

test('compare: the steps the two runs share fold into one line, and the step where they part is marked', async () => {
  await page.click('a[data-action=compare-original]');
  await page.waitForSelector('.compare-verdict');
  assert.equal(new URL(page.url()).pathname, `/runs/${original}/compare/${fork}`);
  assert.equal(await page.locator(`.compare-head[data-run="${original}"]`).count(), 1);
  assert.equal(await page.locator(`.compare-head[data-run="${fork}"]`).count(), 1);
  // The fork ran the command that prints the time live: that is where they part.
  assert.match(await page.locator('.compare-verdict').textContent(), /They part at model step 2: the result of exec differs/);
  const same = page.locator('details.compare-same');
  assert.equal(await same.count(), 1);
  assert.equal(await same.evaluate((d) => d.open), false);
  assert.match(await same.locator('summary').textContent(), /^Step 1 the same/);
  const parting = page.locator('.compare-row.parting');
  assert.equal(await parting.count(), 1);
  assert.equal(await parting.getAttribute('data-step'), '2');
  assert.equal(await parting.locator('.compare-part.differs[data-part="tool:0"]').count(), 2);  // both columns
  assert.equal(await parting.locator('.compare-part.differs[data-part="text"]').count(), 0);  // the model said the same
  assert.equal(await page.locator('.compare-row.after').count(), 2);  // steps 3 and 4, side by side
  // The folded steps open to show what they share; the fork's are marked as replayed.
  await same.locator('summary').click();
  assert.match(await same.textContent(), /Writing the plan\./);
  assert.ok(await same.locator('.pill.replayed').count() >= 1);
  await shot(page, 'compare');
  // Other runs from the page's own inputs: the same two the other way round.
  await page.fill('input[name=left]', fork);
  await page.fill('input[name=right]', original);
  await page.click('form.compare-form button[type=submit]');
  await until('the swapped comparison', async () => new URL(page.url()).pathname === `/runs/${fork}/compare/${original}` &&
    (await page.locator(`.compare-heads .compare-head`).first().getAttribute('data-run')) === fork);
  await page.waitForSelector('.compare-row.parting');
});

test('a replay check of the original says the same decisions come out, and a rerun from a step starts from there', async () => {
  await page.goto(`${base}/runs/${original}`);
  await page.waitForSelector('.entry.kind-end');
  await page.click('.run-actions button[data-action=replay]');
  await page.waitForSelector('.replay-result');
  assert.equal(await page.locator('.replay-result').getAttribute('data-same'), 'true');
  assert.match(await page.locator('.replay-verdict').textContent(), /The same decisions/);
  assert.equal(await page.locator('.replay-stopped').count(), 0);
  await shot(page, 'replay-check');
  await page.click('.run-actions button[data-action=rerun]');
  const form = page.locator('form.rerun-form');
  await form.waitFor();
  await form.locator('input[name=from_step]').fill('2');
  await form.locator('button[type=submit]').click();
  const rerun = await runOnPage(page, original);
  assert.notEqual(rerun, fork);
  await page.waitForSelector('.fork-line');
  assert.match(await page.locator('.fork-line').textContent(), new RegExp(`Forked from ${original} at step 2`));
  await completed(rerun);
  await until('two replayed model steps on the page', async () => (await page.locator('.entry.kind-model.replayed').count()) === 2);
});

test('bulk: a cancel of the running runs is previewed, nothing is done until it is confirmed, then both runs end cancelled', async () => {
  const sleepers = [];
  for (const input of ['First long think.', 'Second long think.']) sleepers.push((await api('/runs', { agent: 'sleeper', input })).run_id);
  for (const run of sleepers) await until(`run ${run} to be running`, async () => (await api(`/runs/${run}`)).status === 'running');
  await page.goto(`${base}/runs?status=running&agent=sleeper`);
  await page.waitForSelector('.list-info');
  await page.click('details.bulk summary');
  await page.selectOption('select[name=bulk_action]', 'cancel');
  await page.click('button[data-action=bulk-preview]');
  await page.waitForSelector('.bulk-count');
  assert.equal(await page.locator('.bulk-count').getAttribute('data-count'), '2');
  assert.match(await page.locator('.bulk-count').textContent(), /2 runs \(status running, agent sleeper\) would be cancelled/);
  for (const run of sleepers) assert.equal(await page.locator(`.bulk-runs tr[data-run="${run}"]`).count(), 1);
  // A preview does nothing.
  for (const run of sleepers) assert.equal((await api(`/runs/${run}`)).status, 'running');
  await shot(page, 'bulk-preview');
  const confirm = page.locator('button[data-action=bulk-confirm]');
  assert.equal(await confirm.textContent(), 'Confirm: cancel 2 runs');
  await confirm.click();
  await page.waitForSelector('.bulk-results');
  assert.equal(await page.locator('.bulk-results [data-done]').getAttribute('data-done'), '2');
  assert.equal(await page.locator('.bulk-results [data-failed]').getAttribute('data-failed'), '0');
  assert.equal(await page.locator('.bulk-results li[data-ok=true]').count(), 2);
  assert.equal(await page.locator('button[data-action=bulk-confirm]').count(), 0);  // not twice
  for (const run of sleepers) await until(`run ${run} to be cancelled`, async () => (await api(`/runs/${run}`)).status === 'cancelled');
  // The forked runs were not touched.
  assert.equal((await api(`/runs/${original}`)).status, 'completed');
  await shot(page, 'bulk-done');
  await page.close();
});

test('nothing went wrong in any page', () => {
  assert.deepEqual(errors, []);
});
