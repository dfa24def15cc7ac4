// The run page's actions on what a run recorded: fork it at a step with changes (another model,
// provider or system prompt, other answers to its approvals), run it again from a step, and check
// that its record replays to the same decisions. And the line a fork's page shows about where it
// came from. (docs/HTTP.md: /runs/{id}/fork, /rerun, /replay.)
import { api } from './api.js';
import { h, clear, message, pre } from './dom.js';

const runPath = (id) => `/runs/${encodeURIComponent(id)}`;

// Changes the page in place, as a link inside the dashboard does (app.js).
function go(path) {
  history.pushState(null, '', path);
  window.dispatchEvent(new PopStateEvent('popstate'));
}

// "Forked from <run> at step N", with a link to compare the two runs (the original on the left).
export function forkLine(s) {
  if (!s.fork || !s.fork.run_id) return null;
  const at = s.fork.at_step !== undefined && s.fork.at_step !== null ? ` at step ${s.fork.at_step}` : '';
  return h('p', { class: 'fork-line', 'data-fork': s.fork.run_id },
    'Forked from ', h('a', { class: 'mono', href: runPath(s.fork.run_id), text: s.fork.run_id }), `${at} · `,
    h('a', { href: `${runPath(s.fork.run_id)}/compare/${encodeURIComponent(s.run_id)}`, 'data-action': 'compare-original', text: 'Compare with original' }));
}

// The number of the run's last model step that ended (0 before the first).
function lastModelStep(trace) {
  return trace.items.reduce((last, it) => (it.kind === 'model' && it.state === 'done' && it.step > last ? it.step : last), 0);
}

// The approvals the run asked for, each with the model step whose tool call asked it.
function approvalsOf(trace) {
  const out = [];
  let step = 0;
  for (const it of trace.items) {
    if (it.kind === 'model') step = it.step;
    else if (it.kind === 'approval' && it.step_key) out.push({ step_key: it.step_key, tool: it.tool || it.form?.tool || '', state: it.state, step });
  }
  return out;
}

function stepInput(name, label, value) {
  return h('input', { type: 'number', name, min: 0, step: 1, value, required: true, class: 'step-input', 'aria-label': label });
}

// A whole number of at least 0, or null.
function stepValue(input) {
  const text = input.value.trim();
  return /^\d{1,9}$/.test(text) ? Number(text) : null;
}

function status() {
  return h('p', { class: 'action-status', role: 'status' });
}

function failed(el, e) {
  el.textContent = e.message;
  el.className = 'action-status error';
}

// One row per approval the run asked: keep what the person answered, or answer otherwise.
function answerRow(a) {
  const choice = h('select', { name: `answer-${a.step_key}`, 'aria-label': `answer to ${a.step_key}` },
    h('option', { value: 'keep', text: 'keep the answer' }), h('option', { value: 'approve', text: 'approve' }), h('option', { value: 'reject', text: 'reject' }));
  const feedback = h('input', { name: `feedback-${a.step_key}`, placeholder: 'feedback (optional)', size: 28, 'aria-label': `feedback for ${a.step_key}` });
  const note = h('span', { class: 'muted note' });
  const row = h('div', { class: 'fork-approval', 'data-step-key': a.step_key },
    h('span', { class: 'mono', text: a.step_key }), ` ${a.tool} (model step ${a.step}, ${a.state === 'waiting' ? 'not answered' : a.state}) `,
    choice, feedback, note);
  return {
    row,
    // Past the fork's step the approval is asked again, live: no answer to give here.
    at(n) {
      const after = a.step > n;
      choice.disabled = after;
      feedback.disabled = after;
      note.textContent = after ? ` after step ${n}: the fork asks again` : '';
    },
    answer() {
      if (choice.disabled || choice.value === 'keep') return null;
      const out = { approved: choice.value === 'approve' };
      if (feedback.value.trim()) out.feedback = feedback.value.trim();
      return out;
    },
    key: a.step_key,
  };
}

function forkForm(runId, trace) {
  const at = stepInput('at_step', 'at step', Math.max(0, lastModelStep(trace) - 1));
  const provider = h('input', { name: 'provider', placeholder: 'same as the run', 'aria-label': 'provider' });
  const model = h('input', { name: 'model', placeholder: 'same as the run', 'aria-label': 'model' });
  const system = h('textarea', { name: 'system_prompt', rows: 3, placeholder: "the agent's own, unless given here", 'aria-label': 'system prompt' });
  const rows = approvalsOf(trace).map(answerRow);
  const shown = () => { const n = stepValue(at); rows.forEach((r) => r.at(n === null ? Infinity : n)); };
  at.addEventListener('input', shown);
  shown();
  const state = status();
  const submit = h('button', { class: 'primary', type: 'submit', text: 'Fork' });
  const send = async (e) => {
    e.preventDefault();
    const n = stepValue(at);
    if (n === null) {
      failed(state, new Error('The step must be a whole number, 0 or more.'));
      return;
    }
    const body = { at_step: n };
    if (provider.value.trim()) body.provider = provider.value.trim();
    if (model.value.trim()) body.model = model.value.trim();
    if (system.value.trim()) body.system_prompt = system.value;
    const answers = {};
    for (const r of rows) {
      const answer = r.answer();
      if (answer) answers[r.key] = answer;
    }
    if (Object.keys(answers).length) body.answers = answers;
    submit.disabled = true;
    state.textContent = 'Forking…';
    state.className = 'action-status';
    try {
      const made = await api(`/runs/${encodeURIComponent(runId)}/fork`, { method: 'POST', body });
      go(runPath(made.run_id));
    } catch (err) {
      failed(state, err);
      submit.disabled = false;
    }
  };
  return h('form', { class: 'action-form fork-form', onsubmit: send },
    h('p', { class: 'muted', text: 'A new run of the same agent: its model steps up to the step given are taken from this run (the model and the tools are not called for them), then it goes on live with the changes below.' }),
    h('label', {}, 'At step ', at),
    h('label', {}, 'Provider ', provider),
    h('label', {}, 'Model ', model),
    h('label', { class: 'wide' }, 'System prompt ', system),
    rows.length ? h('fieldset', { class: 'fork-approvals' }, h('legend', { text: 'Approvals this run asked' }), rows.map((r) => r.row)) : null,
    h('div', { class: 'buttons' }, submit), state);
}

function rerunForm(runId, trace) {
  const from = stepInput('from_step', 'from step', Math.max(0, lastModelStep(trace) - 1));
  const state = status();
  const submit = h('button', { class: 'primary', type: 'submit', text: 'Rerun' });
  const send = async (e) => {
    e.preventDefault();
    const n = stepValue(from);
    if (n === null) {
      failed(state, new Error('The step must be a whole number, 0 or more.'));
      return;
    }
    submit.disabled = true;
    state.textContent = 'Starting…';
    state.className = 'action-status';
    try {
      const made = await api(`/runs/${encodeURIComponent(runId)}/rerun`, { method: 'POST', body: { from_step: n } });
      go(runPath(made.run_id));
    } catch (err) {
      failed(state, err);
      submit.disabled = false;
    }
  };
  return h('form', { class: 'action-form rerun-form', onsubmit: send },
    h('p', { class: 'muted', text: 'A new run of the same agent, the same as this one up to the step given (taken from this run), live after it.' }),
    h('label', {}, 'From step ', from), h('div', { class: 'buttons' }, submit), state);
}

function plural(n, one) {
  return `${n} ${one}${n === 1 ? '' : 's'}`;
}

// What the replay check answered: the same decisions, or the first that differs; and why it
// stopped early, if it did.
export function replayResult(r) {
  const counts = [plural(r.model_steps ?? 0, 'model step'), plural(r.tool_calls ?? 0, 'tool call'), plural(r.approvals ?? 0, 'approval')].join(', ');
  const verdict = r.same
    ? (r.stopped ? 'The same decisions, as far as the check went.' : 'The same decisions: replayed with no model and no tools, this record leads to the same steps.')
    : 'Not the same decisions.';
  const d = r.difference;
  return h('div', { class: `replay-result ${r.same ? 'same' : 'differs'}`, 'data-same': String(Boolean(r.same)) },
    h('p', { class: `replay-verdict ${r.same ? 'ok' : 'warn'}`, text: verdict }),
    h('p', { class: 'muted', text: `Checked ${plural(r.decisions ?? 0, 'decision')} (${counts}).` }),
    d ? h('div', { class: 'replay-difference' },
      h('p', { text: `The first difference, at decision ${d.index}:` }),
      h('div', { class: 'two-columns' },
        h('div', {}, h('span', { class: 'label', text: 'Recorded' }), pre(d.recorded ?? '')),
        h('div', {}, h('span', { class: 'label', text: 'Replayed' }), pre(d.replayed ?? '')))) : null,
    r.stopped ? h('p', { class: 'warn replay-stopped', text: `The check stopped early: ${r.stopped}` }) : null);
}

function replayPanel(runId) {
  const out = h('div', { class: 'action-form replay-panel' }, message('Checking: the record is replayed with no model and no tools…'));
  api(`/runs/${encodeURIComponent(runId)}/replay`, { method: 'POST', body: {} })
    .then((r) => clear(out).append(replayResult(r)))
    .catch((e) => clear(out).append(message(e.message, 'error')));
  return out;
}

// The buttons, and the panel of the one open (a second click closes it).
export function runActions(runId, trace) {
  const panel = h('div', { class: 'action-panel' });
  let open = null;
  const buttons = [];
  const button = (name, text, build) => {
    const b = h('button', { type: 'button', class: 'small', 'data-action': name, text, onclick: () => {
      open = open === name && name !== 'replay' ? null : name;
      buttons.forEach((x) => x.classList.toggle('active', x.dataset.action === open));
      clear(panel);
      if (open) panel.append(build());
    } });
    buttons.push(b);
    return b;
  };
  return h('section', { class: 'run-actions' },
    h('div', { class: 'buttons' },
      button('fork', 'Fork…', () => forkForm(runId, trace)),
      button('rerun', 'Rerun from step…', () => rerunForm(runId, trace)),
      button('replay', 'Replay check', () => replayPanel(runId)),
      h('a', { class: 'button small', href: `${runPath(runId)}/compare`, 'data-action': 'compare', text: 'Compare with another run' })),
    panel);
}
