// What the browser tests share: a free loopback port, polling with a deadline, and a keel to
// test against (nats-server, keel-node, Debian's chromium), started and stopped the same way.
import { spawn } from 'node:child_process';
import { writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const WAIT = 20_000;

const NODE_BINARY = process.env.KEEL_NODE_BINARY || 'build/apps/keel-node';
const NATS_BINARY = process.env.NATS_SERVER || '/usr/sbin/nats-server';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const freePort = () => new Promise((resolve, reject) => {
  const s = createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

// Polls `check` until it gives something truthy, for at most `ms`; says what was awaited if not.
export const until = async (what, check, ms = WAIT) => {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { last = await check(); if (last) return last; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
};

// nats-server with JetStream on `port`, its store under `dir`, once it takes connections.
export async function startNats(dir, port) {
  const nats = spawn(NATS_BINARY, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', join(dir, 'js')], { stdio: 'ignore' });
  try {
    await until('nats-server', () => fetch(`http://127.0.0.1:${port}`).then(() => true, (e) => e.cause?.code !== 'ECONNREFUSED'));
  } catch (e) { nats.kill('SIGTERM'); throw e; }
  return nats;
}

// keel-node with `config` as dir/node.toml (owner-only: keel-node refuses a token others may
// read). Its stderr is kept; a non-zero exit goes into `errors` with the end of it.
export function startNode(dir, config, errors = []) {
  writeFileSync(join(dir, 'node.toml'), config, { mode: 0o600 });
  const node = spawn(NODE_BINARY, ['--config', join(dir, 'node.toml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  node.stderr.on('data', (d) => { log += d; });
  node.on('exit', (code) => { if (code) errors.push(`keel-node exited ${code}: ${log.slice(-2000)}`); });
  return { node, log: () => log };
}

// Until the gateway at `base` says it is ready to the holder of `token`.
export const gatewayReady = (base, token) =>
  until('the gateway to be ready', async () => (await fetch(`${base}/readyz`, { headers: { Authorization: `Bearer ${token}` } })).ok);

// nats-server on `natsPort`, then keel-node with `config` (whose gateway listens on `httpPort`
// with `token`), until the gateway is ready. Stops what it started if they never get there.
export async function startKeel({ dir, config, natsPort, httpPort, token, errors }) {
  const nats = await startNats(dir, natsPort);
  const { node, log } = startNode(dir, config, errors);
  const base = `http://127.0.0.1:${httpPort}`;
  try {
    await gatewayReady(base, token);
  } catch (e) { node.kill('SIGTERM'); nats.kill('SIGTERM'); throw e; }
  return { nats, node, base, log };
}

// Debian's chromium (no browser download), with `args` of the test's own.
export const launchChromium = (args = []) =>
  chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage', ...args] });

// Chromium, and a context whose pages have `token` already (the dashboard asks for none).
export async function openBrowser(token) {
  const browser = await launchChromium();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    await context.addInitScript((t) => sessionStorage.setItem('keel-token', t), token);
    return { browser, context };
  } catch (e) { await browser.close(); throw e; }
}

// Closes the browser, stops keel-node and nats-server, and removes `dir`; any of them may be
// missing (a `before` that failed half-way).
export async function stopKeel({ browser, node, nats, dir }) {
  await browser?.close();
  node?.kill('SIGTERM');
  nats?.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  if (dir) rmSync(dir, { recursive: true, force: true });
}
