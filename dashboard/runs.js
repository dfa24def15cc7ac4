// The runs page: every run of every orchestrator, newest first, with filters that stay in the
// address (a reload or a shared link keeps them), live while the page is open; an action on many
// runs at once (bulk.js).
import { api } from './api.js';
import { bulkPanel } from './bulk.js';
import { h, clear, time, duration, count, excerpt, statusBadge, message } from './dom.js';

const STATUSES = ['', 'pending', 'queued', 'running', 'suspended', 'waiting', 'completed', 'failed', 'cancelled'];
const REFRESH_MS = 2000;

function toMs(local) {
  if (!local) return null;
  const ms = new Date(local).getTime();
  return Number.isNaN(ms) ? null : ms;
}

function toLocal(ms) {
  if (!ms) return '';
  const d = new Date(Number(ms));
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function waitingFor(r) {
  if (r.waiting) {
    const f = r.waiting.form || {};
    const c = f.context || {};
    return h('a', { class: 'waiting', href: `/runs/${r.run_id}/steps/${r.waiting.step_key}` }, `approve ${f.tool || ''} `, h('span', { class: 'mono', text: excerpt(c.command ?? c.path ?? '', 40) }));
  }
  if (r.retrying) return h('span', { class: 'warn', text: r.retrying.waiting || r.retrying.reason });
  if (r.status === 'queued' && r.queue) return h('a', { class: 'muted', href: '/queues', text: `in line in ${r.queue.name}${r.queue.key ? ` (${r.queue.key})` : ''}` });
  if (r.status === 'running' || r.status === 'pending') return h('span', { class: 'muted', text: 'working' });
  return '';
}

export async function render(main) {
  const params = new URLSearchParams(location.search);
  const form = h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); apply(); } });
  const status = h('select', { name: 'status', 'aria-label': 'status' }, STATUSES.map((s) => h('option', { value: s, text: s || 'any status', selected: params.get('status') === s })));
  const agent = h('input', { name: 'agent', placeholder: 'agent', value: params.get('agent') || '', size: 10 });
  const session = h('input', { name: 'session_id', placeholder: 'session', value: params.get('session_id') || '', size: 10 });
  const text = h('input', { name: 'q', type: 'search', placeholder: 'text in input or output', value: params.get('q') || '', size: 24 });
  const since = h('input', { name: 'since', type: 'datetime-local', 'aria-label': 'since', value: toLocal(params.get('since_ms')) });
  const until = h('input', { name: 'until', type: 'datetime-local', 'aria-label': 'until', value: toLocal(params.get('until_ms')) });
  form.append(status, agent, session, text, h('label', {}, 'from ', since), h('label', {}, 'to ', until),
    h('button', { type: 'submit', text: 'Filter' }), h('button', { type: 'button', text: 'Clear', onclick: () => { history.pushState(null, '', '/runs'); window.dispatchEvent(new PopStateEvent('popstate')); } }));
  const info = h('p', { class: 'muted list-info' });
  const table = h('table', { class: 'runs' }, h('thead', {}, h('tr', {}, ['Status', 'Run', 'Agent', 'Started', 'Duration', 'Steps', 'Tokens', 'Waiting for', 'Input'].map((c) => h('th', { text: c })))));
  const tbody = h('tbody');
  table.append(tbody);
  const more = h('button', { class: 'more', text: 'Load more', hidden: true });
  clear(main).append(h('h1', { text: 'Runs' }), form, bulkPanel(), info, table, more);

  const query = () => {
    const q = new URLSearchParams();
    if (status.value) q.set('status', status.value);
    if (agent.value.trim()) q.set('agent', agent.value.trim());
    if (session.value.trim()) q.set('session_id', session.value.trim());
    if (text.value.trim()) q.set('q', text.value.trim());
    const s = toMs(since.value), u = toMs(until.value);
    if (s !== null) q.set('since_ms', String(s));
    if (u !== null) q.set('until_ms', String(u));
    return q;
  };
  const apply = () => {
    const q = query().toString();
    history.pushState(null, '', q ? `/runs?${q}` : '/runs');
    load();
  };

  let cursor = null;
  let extra = [];  // rows loaded with "Load more" (not refreshed)
  let stopped = false;
  let timer = null;
  const row = (r) => h('tr', { 'data-run': r.run_id, class: `row-${r.status}` },
    h('td', {}, statusBadge(r.status)),
    h('td', {}, h('a', { class: 'mono', href: `/runs/${r.run_id}`, text: r.run_id })),
    h('td', { text: r.agent }),
    h('td', { text: time(r.created_ms) }),
    h('td', { text: duration((['completed', 'failed', 'cancelled'].includes(r.status) ? r.updated_ms : Date.now()) - r.created_ms) }),
    h('td', { class: 'num', text: String(r.steps ?? 0) }),
    h('td', { class: 'num', text: r.usage ? count((r.usage.input_tokens || 0) + (r.usage.output_tokens || 0)) : '-' }),
    h('td', {}, waitingFor(r)),
    h('td', { class: 'input', title: excerpt(r.input, 2000), text: excerpt(r.input) }));

  const load = async () => {
    clearTimeout(timer);
    if (stopped) return;
    const q = query();
    q.set('limit', '50');
    try {
      const page = await api(`/runs?${q}`);
      if (stopped) return;
      clear(tbody).append(...page.runs.map(row), ...extra.map(row));
      if (!extra.length) cursor = page.next_cursor || null;
      more.hidden = !cursor;
      const n = page.runs.length + extra.length;
      info.textContent = n ? `${n} run${n === 1 ? '' : 's'} shown · from ${page.orchestrators.length} orchestrator${page.orchestrators.length === 1 ? '' : 's'} · live` : 'No runs match.';
      info.className = 'muted list-info';
    } catch (e) {
      info.textContent = e.message;
      info.className = 'error list-info';
    }
    timer = setTimeout(load, REFRESH_MS);
  };
  more.addEventListener('click', async () => {
    if (!cursor) return;
    const q = query();
    q.set('limit', '50');
    q.set('cursor', cursor);
    try {
      const page = await api(`/runs?${q}`);
      extra = extra.concat(page.runs);
      tbody.append(...page.runs.map(row));
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
    } catch (e) {
      info.textContent = e.message;
    }
  });
  load();
  return () => { stopped = true; clearTimeout(timer); };
}

// The inbox: every step waiting for a person, oldest first.
export async function renderApprovals(main) {
  const list = h('table', { class: 'runs approvals' }, h('thead', {}, h('tr', {}, ['Waiting since', 'Run', 'Agent', 'Tool', 'What', ''].map((c) => h('th', { text: c })))));
  const tbody = h('tbody');
  list.append(tbody);
  const info = h('p', { class: 'muted' });
  clear(main).append(h('h1', { text: 'Waiting for approval' }), info, list);
  let stopped = false, timer = null;
  const load = async () => {
    try {
      const { approvals } = await api('/approvals');
      if (stopped) return;
      info.textContent = approvals.length ? `${approvals.length} step${approvals.length === 1 ? '' : 's'} waiting` : 'Nothing waits for a person.';
      clear(tbody).append(...approvals.map((a) => {
        const c = (a.form && a.form.context) || {};
        return h('tr', { 'data-run': a.run_id },
          h('td', { text: `${time(a.waiting_since_ms)} (${duration(Date.now() - a.waiting_since_ms)})` }),
          h('td', {}, h('a', { class: 'mono', href: `/runs/${a.run_id}`, text: a.run_id })),
          // A sub-agent's run: the agent that asked for it, and how deep it is.
          h('td', { text: a.parent ? `${a.agent} (for ${a.parent.agent}, depth ${(a.chain || []).length})` : a.agent }),
          h('td', { text: a.form?.tool || '' }),
          h('td', { class: 'mono', text: excerpt(c.command ?? c.path ?? '', 80) }),
          h('td', {}, h('a', { class: 'button', href: `/runs/${a.run_id}/steps/${a.step_key}`, text: 'Answer' })));
      }));
    } catch (e) {
      info.textContent = e.message;
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  };
  load();
  return () => { stopped = true; clearTimeout(timer); };
}
