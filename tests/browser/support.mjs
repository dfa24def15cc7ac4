// What the browser tests share: a free loopback port, and polling with a deadline.
import { createServer } from 'node:net';

export const WAIT = 20_000;

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
