// The run queues page (docs/WORKFLOWS.md): each queue's limits, the runs going and the runs in
// line, by concurrency key, from one orchestrator's reading of the queues' shared records.
import { api } from './api.js';
import { h, clear, duration, message, time } from './dom.js';

const runLink = (e) => h('a', { class: 'mono', href: `/runs/${encodeURIComponent(e.run_id)}`, text: e.run_id });

function queueCard(q, now) {
  const going = (q.running_runs || []).map((e) => h('li', {}, runLink(e), e.key ? ` (${e.key})` : '',
    ` · going for ${duration(now - (e.admitted_ms || now))}`));
  const line = (q.waiting_runs || []).map((e) => h('li', {}, runLink(e), e.key ? ` (${e.key})` : '',
    ` · in line for ${duration(now - e.since_ms)}`));
  const keys = (q.keys || []).map((k) => h('tr', {}, h('td', { class: 'mono', text: k.key }),
    h('td', { class: 'num', text: String(k.running) }), h('td', { class: 'num', text: String(k.waiting) })));
  return h('section', { class: 'queue', 'data-queue': q.name },
    h('h2', { class: 'mono', text: q.name }),
    h('p', {}, `${q.running} of ${q.concurrency} going`, q.key_concurrency ? ` (at most ${q.key_concurrency} per key)` : '',
      ` · ${q.waiting} in line`, q.oldest_waiting_ms ? ` · oldest since ${time(q.oldest_waiting_ms)}` : '',
      ` · ${q.admitted_total} admitted in all`),
    q.problem ? h('p', { class: 'warn', text: q.problem }) : null,
    going.length ? h('div', {}, h('h3', { text: 'Going' }), h('ul', {}, going)) : null,
    line.length ? h('div', {}, h('h3', { text: 'In line' }), h('ol', {}, line),
      q.waiting > line.length ? h('p', { class: 'muted', text: `and ${q.waiting - line.length} more` }) : null) : null,
    keys.length ? h('table', { class: 'runs' }, h('thead', {}, h('tr', {}, ['Key', 'Going', 'In line'].map((c) => h('th', { text: c })))),
      h('tbody', {}, keys)) : null);
}

export function renderQueues(main) {
  const body = h('div');
  clear(main).append(h('h1', { text: 'Run queues' }), body);
  let stopped = false, timer = null;
  const load = async () => {
    try {
      const { queues } = await api('/queues');
      const now = Date.now();
      clear(body).append(...(queues.length ? queues.map((q) => queueCard(q, now)) : [message('No run queue.')]));
    } catch (e) {
      clear(body).append(message(e.status === 503 ? 'No orchestrator has a run queue ([run_queues.<name>] in its config).' : e.message,
        e.status === 503 ? undefined : 'error'));
    }
    if (!stopped) timer = setTimeout(load, 2000);
  };
  load();
  return () => { stopped = true; clearTimeout(timer); };
}
