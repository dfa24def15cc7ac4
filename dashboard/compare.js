// The compare page (/runs/{a}/compare/{b}): two runs' steps side by side, the steps they share
// folded into one line, and the step where they part marked. A fork links here with its original
// on the left. The steps and where they part come from steps.js.
import { api, allEvents } from './api.js';
import { stepsOf, compareRuns, differingParts } from './steps.js';
import { h, append, clear, message, pre, shown, statusBadge } from './dom.js';

const NAME = /^[A-Za-z0-9_-]{1,200}$/;
const TEXT_MAX = 8000;  // characters of a text or a result shown in a column
const runPath = (id) => `/runs/${encodeURIComponent(id)}`;

function go(path) {
  history.pushState(null, '', path);
  window.dispatchEvent(new PopStateEvent('popstate'));
}

function clip(text) {
  const s = String(text ?? '');
  return s.length > TEXT_MAX ? `${s.slice(0, TEXT_MAX)}\n[... ${s.length - TEXT_MAX} more characters]` : s;
}

// A tool's result as a person reads it: a command's output and exit code, other results as JSON.
function resultText(r) {
  if (typeof r === 'string') return r;
  if (r && typeof r === 'object' && (r.stdout !== undefined || r.stderr !== undefined)) {
    const parts = [String(r.stdout ?? '').replace(/\n$/, '')];
    if (r.stderr) parts.push(`[stderr]\n${r.stderr}`);
    if (r.exit_code !== undefined) parts.push(`[exit ${r.exit_code}]`);
    return parts.join('\n');
  }
  return JSON.stringify(r, null, 2);
}

function callLine(c) {
  const a = c.arguments || {};
  const detail = a.command ?? a.path ?? a.pattern ?? '';
  return `${c.name}${detail ? ` ${shown(detail, 200)}` : ` ${shown(JSON.stringify(a), 200)}`}`;
}

const replayed = (on) => (on ? h('span', { class: 'pill replayed', text: 'replayed' }) : null);

// One run's step in its column; the parts that differ from the other run's are marked.
function stepCell(step, parts) {
  if (!step) return h('div', { class: 'compare-cell empty' }, message('No such step in this run.', 'muted'));
  const mark = (part) => `compare-part${parts.has(part) ? ' differs' : ''}`;
  return h('div', { class: 'compare-cell' },
    h('div', { class: 'compare-step-head' }, h('strong', { text: step.step ? `Model step ${step.step}` : 'Before the first model step' }), ' ', replayed(step.replayed)),
    step.step ? h('div', { class: mark('text'), 'data-part': 'text' }, step.text ? pre(clip(step.text), 'answer') : message('(no text)', 'muted')) : null,
    step.tool_calls.length || parts.has('tool_calls')
      ? h('div', { class: mark('tool_calls'), 'data-part': 'tool_calls' }, h('span', { class: 'label', text: 'Tool calls' }),
          pre(step.tool_calls.length ? step.tool_calls.map(callLine).join('\n') : '(none)'))
      : null,
    step.tools.map((t, i) => h('div', { class: mark(`tool:${i}`), 'data-part': `tool:${i}` },
      h('span', { class: 'label', text: `${t.tool} ${t.is_error ? 'error' : 'result'}` }), ' ', replayed(t.replayed),
      pre(clip(resultText(t.result)), t.is_error ? 'output err' : 'output'))),
    step.approvals.map((a, i) => h('div', { class: 'compare-part', 'data-part': `approval:${i}` },
      h('span', { class: 'label', text: 'Approval' }), ` ${a.tool}: ${a.answer}`, a.feedback ? ` — “${a.feedback}”` : '', ' ', replayed(a.replayed))));
}

function endCell(end, differs) {
  if (!end) return h('div', { class: 'compare-cell empty' }, message('Not ended.', 'muted'));
  return h('div', { class: `compare-cell compare-part${differs ? ' differs' : ''}`, 'data-part': 'end' },
    h('div', { class: 'compare-step-head' }, h('strong', { text: `Run ${end.status}` })),
    end.text !== '' ? pre(clip(typeof end.text === 'string' ? end.text : JSON.stringify(end.text, null, 2)), end.status === 'completed' ? 'answer' : '') : null);
}

function row(index, left, right, cls, parts) {
  return h('div', { class: `compare-row ${cls}`, 'data-step': (left.steps[index] || right.steps[index])?.step ?? index },
    stepCell(left.steps[index], parts), stepCell(right.steps[index], parts));
}

function runHead(id, run, cut) {
  return h('div', { class: 'compare-head', 'data-run': id },
    h('div', { class: 'title-row' }, statusBadge(run.status), h('a', { class: 'mono', href: runPath(id), text: id })),
    h('p', { class: 'muted', text: `agent ${run.agent} · ${`${run.provider || ''} ${run.model || ''}`.trim() || 'the agent\'s model'} · ${run.steps ?? 0} step${run.steps === 1 ? '' : 's'}` }),
    run.fork?.run_id ? h('p', { class: 'muted' }, 'Forked from ', h('a', { class: 'mono', href: runPath(run.fork.run_id), text: run.fork.run_id }),
      run.fork.at_step !== undefined ? ` at step ${run.fork.at_step}` : '') : null,
    cut ? h('p', { class: 'warn', text: 'A long run: only its first events are compared.' }) : null);
}

// "Steps 1–N the same", folded; open, the shared steps side by side.
function sharedView(left, right, shared) {
  if (!shared) return null;
  const first = left.steps[0]?.step ?? 1;
  const last = left.steps[shared - 1]?.step ?? shared;
  const label = first === last ? `Step ${last} the same` : `Steps ${first}–${last} the same`;
  const rows = Array.from({ length: shared }, (_, i) => row(i, left, right, 'same', new Set()));
  return h('details', { class: 'compare-same' }, h('summary', { text: `${label} in both runs` }), h('div', {}, rows));
}

function comparison(left, right) {
  const c = compareRuns(left, right);
  const out = [];
  if (c.parting === null) {
    out.push(h('p', { class: 'compare-verdict ok', text: 'The two runs took the same steps and ended the same way.' }));
    out.push(sharedView(left, right, c.shared));
    out.push(h('div', { class: 'compare-row compare-end' }, endCell(left.end, false), endCell(right.end, false)));
    return out;
  }
  const at = c.parting < c.rows ? (left.steps[c.parting] || right.steps[c.parting]).step : null;
  out.push(h('p', { class: 'compare-verdict warn', text: at !== null ? `They part at model step ${at}: ${c.why}.` : `They take the same steps but end differently: ${c.why}.` }));
  out.push(sharedView(left, right, c.shared));
  for (let i = c.parting; i < c.rows; i++) {
    const parts = i === c.parting ? c.parts : differingParts(left.steps[i], right.steps[i]);
    out.push(row(i, left, right, i === c.parting ? 'parting' : 'after', parts));
  }
  out.push(h('div', { class: `compare-row compare-end${c.parting === c.rows ? ' parting' : ''}` },
    endCell(left.end, c.ends_differ), endCell(right.end, c.ends_differ)));
  return out;
}

async function load(id) {
  try {
    const [run, { events, cut }] = await Promise.all([api(`/runs/${encodeURIComponent(id)}`), allEvents(id)]);
    return { run, events, cut };
  } catch (e) {
    throw new Error(`Run ${id}: ${e.message}`);
  }
}

export async function render(main, { left, right }) {
  const a = h('input', { name: 'left', class: 'mono', placeholder: 'run id', value: left || '', size: 30, 'aria-label': 'first run' });
  const b = h('input', { name: 'right', class: 'mono', placeholder: 'run id', value: right || '', size: 30, 'aria-label': 'second run' });
  const problem = h('p', { class: 'error', role: 'status' });
  const form = h('form', { class: 'filters compare-form', onsubmit: (e) => {
    e.preventDefault();
    const l = a.value.trim(), r = b.value.trim();
    if (!NAME.test(l) || !NAME.test(r)) {
      problem.textContent = 'Give two run ids (letters, digits, - and _).';
      return;
    }
    go(`${runPath(l)}/compare/${encodeURIComponent(r)}`);
  } }, a, h('span', { text: 'with' }), b, h('button', { type: 'submit', text: 'Compare' }));
  const body = h('div', { class: 'compare-body' });
  clear(main).append(h('h1', { text: 'Compare two runs' }), form, problem, body);
  if (!right) {
    body.append(message('Give the id of the run to compare it with.'));
    return () => {};
  }
  body.append(message('Reading both runs…'));
  let got;
  try {
    got = await Promise.all([load(left), load(right)]);
  } catch (e) {
    clear(body).append(message(e.message, 'error'));
    return () => {};
  }
  const [l, r] = got;
  const ls = stepsOf(l.events), rs = stepsOf(r.events);
  const going = [l, r].filter((x) => !['completed', 'failed', 'cancelled'].includes(x.run.status));
  append(clear(body), [
    h('div', { class: 'two-columns compare-heads' }, runHead(left, l.run, l.cut), runHead(right, r.run, r.cut)),
    going.length ? message(`${going.length === 2 ? 'Neither run has' : 'One run has not'} ended: reload the page for the steps taken since.`, 'notice') : null,
    comparison(ls, rs)]);
  return () => {};
}
