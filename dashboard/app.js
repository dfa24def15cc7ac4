// The dashboard: a page per address, drawn here from the API. Links within it change the page
// without a reload; the browser's back and forward work; every address can be opened directly.
import { api, setToken } from './api.js';
import { h, clear } from './dom.js';
import { render as renderRuns, renderApprovals } from './runs.js';
import { render as renderRun } from './run.js';
import { render as renderApproval } from './approval.js';
import { render as renderCompare } from './compare.js';
import { renderAgents, renderNodes, renderSchedules } from './cluster.js';
import { renderQueues } from './queues.js';

const NAME = '[A-Za-z0-9_-]+';
const routes = [
  [new RegExp(`^/runs/(${NAME})/steps/(${NAME})$`), (m) => renderApproval(main(), { runId: m[1], step: m[2] }), 'runs'],
  // Under /runs/: the gateway serves the page for any address there made of names.
  [new RegExp(`^/runs/(${NAME})/compare(?:/(${NAME}))?$`), (m) => renderCompare(main(), { left: m[1], right: m[2] }), 'runs'],
  [new RegExp(`^/runs/(${NAME})$`), (m) => renderRun(main(), { runId: m[1] }), 'runs'],
  [/^\/(runs)?$/, () => renderRuns(main()), 'runs'],
  [/^\/approvals$/, () => renderApprovals(main()), 'approvals'],
  [/^\/agents$/, () => renderAgents(main()), 'agents'],
  [/^\/nodes$/, () => renderNodes(main()), 'nodes'],
  [/^\/schedules$/, () => renderSchedules(main()), 'schedules'],
  [/^\/queues$/, () => renderQueues(main()), 'queues'],
];

const main = () => document.getElementById('main');
let cleanup = null;

async function route() {
  if (cleanup) {
    try { cleanup(); } catch {}
    cleanup = null;
  }
  const path = location.pathname.replace(/\/+$/, '') || '/';
  for (const [pattern, draw, nav] of routes) {
    const m = path.match(pattern);
    if (!m) continue;
    document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === nav));
    const done = await draw(m);
    cleanup = typeof done === 'function' ? done : null;
    return;
  }
  clear(main()).append(h('h1', { text: 'Not found' }), h('p', {}, 'No page here. ', h('a', { href: '/runs', text: 'See the runs.' })));
}

// Links inside the dashboard change the page in place.
document.addEventListener('click', (e) => {
  const a = e.target.closest('a[href]');
  if (!a || a.target || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/')) return;
  e.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) history.pushState(null, '', url.pathname + url.search);
  route();
});
window.addEventListener('popstate', route);

// The badge: how many steps wait for a person, across the cluster.
async function badge() {
  const el = document.getElementById('approval-badge');
  try {
    const { approvals } = await api('/approvals');
    el.textContent = String(approvals.length);
    el.hidden = approvals.length === 0;
    document.getElementById('connection').textContent = '';
  } catch (e) {
    document.getElementById('connection').textContent = e.status === 401 ? 'token needed' : 'gateway unreachable';
  }
  setTimeout(badge, 3000);
}

// A token the gateway does not know (or none): ask for it once, keep it for this origin.
let asking = false;
window.addEventListener('keel-token-needed', () => {
  if (asking) return;
  asking = true;
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', 'aria-label': 'token' });
  const dialog = h('dialog', { class: 'token-dialog' },
    h('form', { method: 'dialog', onsubmit: (e) => {
      e.preventDefault();
      setToken(input.value.trim());
      dialog.close();
      dialog.remove();
      asking = false;
      route();
    } },
      h('h2', { text: 'This gateway needs a token' }),
      h('p', { text: 'Give your token (the address `keel dev` printed carries it, after #token=; `keel token add NAME` makes one). This browser keeps it for this dashboard.' }), input,
      h('div', { class: 'buttons' }, h('button', { class: 'primary', type: 'submit', text: 'Use token' }))));
  document.body.append(dialog);
  dialog.showModal();
});

route();
badge();
