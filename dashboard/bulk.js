// The runs page's bulk actions: one action on every run of the list's status and agent filter.
// First a preview (the gateway lists the runs it would touch, and does nothing), then, only on a
// click that names the action and the count, the action on exactly the runs listed
// (docs/HTTP.md: POST /runs/bulk).
import { api } from './api.js';
import { h, append, clear, message, statusBadge, time } from './dom.js';

const ACTIONS = {
  cancel: { done: 'cancelled', applies: 'runs still going', button: 'danger' },
  retry: { done: 'retried', applies: 'failed runs', button: 'primary' },
  approve: { done: 'approved', applies: 'runs waiting for an approval', button: 'primary' },
  reject: { done: 'rejected', applies: 'runs waiting for an approval', button: 'danger' },
};

const runLink = (id) => h('a', { class: 'mono', href: `/runs/${encodeURIComponent(id)}`, text: id });
const runs = (n) => `${n} run${n === 1 ? '' : 's'}`;

// The filter the list shows now: the one in the address (the one applied, not one being typed).
function currentFilter() {
  const params = new URLSearchParams(location.search);
  const filter = {};
  if (params.get('status')) filter.status = params.get('status');
  if (params.get('agent')) filter.agent = params.get('agent');
  return filter;
}

function describe(filter) {
  return `${filter.status ? `status ${filter.status}` : 'any status'}, ${filter.agent ? `agent ${filter.agent}` : 'any agent'}`;
}

// The runs a preview lists; the step each waits on, for an approval's answer.
function previewTable(list) {
  const steps = list.some((r) => r.step_key);
  return h('table', { class: 'runs bulk-runs' },
    h('thead', {}, h('tr', {}, ['Status', 'Run', 'Agent', 'Started', steps ? 'Waiting step' : null].map((c) => c && h('th', { text: c })))),
    h('tbody', {}, list.map((r) => h('tr', { 'data-run': r.run_id },
      h('td', {}, statusBadge(r.status)), h('td', {}, runLink(r.run_id)), h('td', { text: r.agent }),
      h('td', { text: time(r.created_ms) }), steps ? h('td', { class: 'mono', text: r.step_key || '' }) : null))));
}

function resultsView(action, r) {
  const results = r.results || [];
  return h('div', { class: 'bulk-results' },
    h('p', { class: r.failed ? 'warn' : 'ok', 'data-done': r.done ?? 0, 'data-failed': r.failed ?? 0,
      text: `${runs(r.done ?? 0)} ${ACTIONS[action].done}${r.failed ? `, ${r.failed} not` : ''}.` }),
    h('ul', {}, results.map((x) => h('li', { 'data-run': x.run_id, 'data-ok': String(Boolean(x.ok)) }, runLink(x.run_id),
      x.ok ? h('span', { class: 'ok', text: ` ${ACTIONS[action].done}` }) : h('span', { class: 'error', text: ` not ${ACTIONS[action].done}: ${x.error || 'no reason given'}` })))));
}

export function bulkPanel() {
  const action = h('select', { name: 'bulk_action', 'aria-label': 'bulk action' },
    h('option', { value: '', text: 'choose an action' }), Object.keys(ACTIONS).map((a) => h('option', { value: a, text: a })));
  const feedback = h('input', { name: 'bulk_feedback', placeholder: 'feedback for the agents (optional)', size: 30, hidden: true, 'aria-label': 'feedback' });
  const preview = h('button', { type: 'button', 'data-action': 'bulk-preview', text: 'Preview' });
  const out = h('div', { class: 'bulk-out' });
  // Each change or new preview makes an answer to an older one moot.
  let round = 0;
  const reset = () => {
    round++;
    clear(out);
  };
  action.addEventListener('change', () => {
    feedback.hidden = action.value !== 'reject';
    reset();
  });
  feedback.addEventListener('input', reset);

  // Once sent, what was done is shown whatever changed on the page meanwhile.
  const confirmed = async (body, ids, button) => {
    button.disabled = true;
    const state = h('p', { class: 'muted', text: 'Sending…' });
    out.append(state);
    try {
      const r = await api('/runs/bulk', { method: 'POST', body: { ...body, run_ids: ids } });
      round++;
      button.parentElement?.remove();  // the confirm and discard buttons: this list is done
      const view = resultsView(body.action, r);
      if (state.isConnected) state.replaceWith(view);
      else clear(out).append(view);
    } catch (e) {
      state.textContent = e.message;
      state.className = 'error';
      button.disabled = false;
    }
  };

  const showPreview = (body, r) => {
    const list = r.runs || [];
    // An answer names the step each run was previewed at: a run that moved on since is left alone.
    const ids = list.map((x) => (x.step_key ? { run_id: x.run_id, step_key: x.step_key } : x.run_id));
    const n = r.count ?? list.length;
    const what = ACTIONS[body.action];
    if (!ids.length) {
      clear(out).append(message(`No run to ${body.action} (${describe(body.filter)}): this action is for ${what.applies}.`));
      return;
    }
    const confirm = h('button', { type: 'button', class: what.button, 'data-action': 'bulk-confirm', text: `Confirm: ${body.action} ${runs(ids.length)}` });
    confirm.addEventListener('click', () => confirmed(body, ids, confirm));
    append(clear(out), [
      h('p', { class: 'bulk-count', 'data-count': ids.length,
        text: `${runs(n)} (${describe(body.filter)}) would be ${what.done}${body.feedback ? `, with the feedback “${body.feedback}”` : ''}. Nothing is done until you confirm.` }),
      n > ids.length ? h('p', { class: 'warn', text: `Only the ${runs(ids.length)} listed here are sent.` }) : null,
      previewTable(list),
      h('div', { class: 'buttons' }, confirm, h('button', { type: 'button', text: 'Discard', onclick: reset }))]);
  };

  preview.addEventListener('click', async () => {
    if (!action.value) {
      clear(out).append(message('Choose an action first.', 'error'));
      return;
    }
    const mine = ++round;
    const body = { action: action.value, filter: currentFilter() };
    if (action.value === 'reject' && feedback.value.trim()) body.feedback = feedback.value.trim();
    clear(out).append(message('Finding the runs…'));
    try {
      const r = await api('/runs/bulk', { method: 'POST', body });
      if (mine === round) showPreview(body, r);
    } catch (e) {
      if (mine === round) clear(out).append(message(e.message, 'error'));
    }
  });

  return h('details', { class: 'bulk' },
    h('summary', { text: 'Act on many runs' }),
    h('p', { class: 'muted', text: "One action for every run of the status and agent filter above (the list's other filters do not apply). You see the runs first; nothing is done until you confirm." }),
    h('div', { class: 'filters' }, action, feedback, preview), out);
}
