// The run page: header, actions (fork, rerun, replay check), timeline of every step (live while
// the run goes), graph, raw events.
import { api, followRun } from './api.js';
import { answerControls } from './approval.js';
import { forkLine, runActions } from './fork.js';
import { formView, diffView } from './forms.js';
import { graphView } from './graph.js';
import { Trace } from './trace.js';
import { h, append, clear, time, duration, count, pre, details, statusBadge, message, pretty, shown, visible } from './dom.js';

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

function dollars(v) {
  return `$${Number(v).toFixed(v < 0.01 ? 6 : 4)}`;
}

function usageLine(u) {
  if (!u) return '';
  const parts = [`${count(u.input_tokens)} in`, `${count(u.output_tokens)} out`];
  if (u.cache_read_tokens || u.cache_write_tokens) parts.push(`${count(u.cache_read_tokens)} cached, ${count(u.cache_write_tokens)} cache-written`);
  return parts.join(' · ');
}

function rawEvents(item) {
  return details(h('span', { class: 'muted', text: `raw JSON (${item.events.length} event${item.events.length === 1 ? '' : 's'})` }),
    pre(item.events.map((e) => JSON.stringify(e, null, 2)).join('\n'), 'raw'));
}

// Sub-agents: the runs above this one (root first) and the child runs it started, as links.
function runTree(s) {
  const link = (id) => h('a', { class: 'mono', href: `/runs/${encodeURIComponent(id)}`, text: id });
  const above = (s.chain || []).flatMap((id, i) => (i ? [' → ', link(id)] : [link(id)]));
  const parent = s.parent ? h('p', { class: 'muted', 'data-tree': 'parent' }, 'Sub-agent run for ', ...above, ` (agent ${s.parent.agent})`) : null;
  const children = s.children?.length
    ? h('div', { class: 'children', 'data-tree': 'children' }, h('span', { class: 'label', text: 'Sub-agent runs' }),
        h('ul', {}, s.children.map((c) => h('li', {}, link(c.run_id), ` agent ${c.agent}, call ${c.call_id}`))))
    : null;
  return parent || children ? h('div', { class: 'tree' }, parent, children) : null;
}

function field(label, value) {
  return h('div', { class: 'kv' }, h('span', { class: 'label', text: label }), h('span', { class: 'value', text: visible(value) }));
}

function toolCallLine(c) {
  const a = c.arguments || {};
  const detail = a.command ?? a.path ?? a.pattern ?? '';
  return `${c.name}${detail ? ` ${shown(detail, 200)}` : ''}`;
}

// One timeline entry; `live` holds the text streamed for a model step still running.
function itemView(item, trace, runId) {
  const when = h('span', { class: 'when', text: time(item.time_ms) });
  switch (item.kind) {
    case 'start':
      return details(h('span', {}, when, h('strong', { text: 'Run started' }), h('span', { class: 'muted', text: `${item.by ? ` by ${item.by}` : ''} agent ${item.agent}` })),
        h('div', {}, field('Input', ''), pre(pretty(item.input)), item.session_id ? field('Session', item.session_id) : null, rawEvents(item)));
    case 'model': {
      const streamed = trace.deltaText.get(item.task_step);
      const text = item.state === 'done' ? item.text : streamed;
      const head = h('span', {}, when, h('strong', { text: `Model call #${item.step}` }), ' ',
        h('span', { class: `pill state-${item.state}`, text: item.state === 'done' ? duration(item.latency_ms) : 'running' }),
        item.usage ? h('span', { class: 'muted', text: ` ${usageLine(item.usage)}` }) : null,
        item.attempts > 1 ? h('span', { class: 'pill warn', text: `${item.attempts} attempts` }) : null,
        item.tool_calls?.length ? h('span', { class: 'muted', text: ` → ${item.tool_calls.map((c) => c.name).join(', ')}` }) : null);
      return details(head, h('div', {},
        item.messages_sent !== undefined ? field('Sent', `${item.messages_sent} message(s) with the system prompt: the task, then every answer and tool result before this call`) : null,
        item.added?.length ? details(h('span', {}, `New since the call before: ${item.added.length} message(s)`),
          h('div', {}, item.added.map((m) => h('div', { class: 'message' }, h('span', { class: 'label', text: m.role }), pre(m.text))))) : null,
        field('Answer', ''), text ? pre(text, 'answer') : message(item.state === 'done' ? '(no text)' : 'waiting for the model…', 'muted'),
        item.tool_calls?.length ? h('div', {}, field('Tool calls', ''), pre(item.tool_calls.map(toolCallLine).join('\n'))) : null,
        item.tool_calls?.length ? details(h('span', { class: 'muted', text: 'arguments' }), pre(JSON.stringify(item.tool_calls, null, 2))) : null,
        item.usage ? field('Tokens', usageLine(item.usage)) : null,
        item.cost_usd !== undefined ? field('Cost', dollars(item.cost_usd)) : null,
        item.stop_reason ? field('Stop reason', item.stop_reason) : null,
        item.latency_ms !== undefined ? field('Latency', duration(item.latency_ms)) : null,
        field('Attempts', String(item.attempts)),
        item.worker ? field('Worker', item.worker) : null,
        item.retries.length ? retriesView(item.retries) : null,
        rawEvents(item)), item.state !== 'done');
    }
    case 'tool': {
      const r = item.result;
      const output = r && typeof r === 'object' && !r.truncated ? r : null;
      const head = h('span', {}, when, h('strong', { text: `Tool ${item.tool}` }), ' ',
        h('span', { class: `pill state-${item.state}`, text: item.state === 'running' ? 'running' : item.state === 'waiting' ? 'waiting for approval' : `${item.state} · ${duration(item.duration_ms)}` }),
        output && output.exit_code !== undefined ? h('span', { class: `pill ${output.exit_code === 0 ? 'ok' : 'warn'}`, text: `exit ${output.exit_code}` }) : null,
        h('span', { class: 'muted mono', text: ` ${toolCallLine({ name: '', arguments: item.arguments }).trim()}` }),
        item.child_run_id ? h('span', {}, ' → run ', h('a', { class: 'mono', href: `/runs/${encodeURIComponent(item.child_run_id)}`, text: item.child_run_id })) : null);
      const cut = [];
      if (r && r.truncated) cut.push(`the result (${r.bytes} bytes) is shown by its start only`);
      if (output?.stdout_cut) cut.push(`stdout: ${output.stdout_cut} characters cut`);
      if (output?.stderr_cut) cut.push(`stderr: ${output.stderr_cut} characters cut`);
      if (output?.timed_out) cut.push('the command timed out');
      if (output?.killed_by) cut.push(`killed by ${output.killed_by}`);
      return details(head, h('div', {},
        field('Arguments', ''), pre(JSON.stringify(item.arguments ?? {}, null, 2)),
        output && output.stdout !== undefined ? h('div', {}, field('stdout', ''), pre(output.stdout, 'output')) : null,
        output && output.stderr ? h('div', {}, field('stderr', ''), pre(output.stderr, 'output err')) : null,
        output && output.diff ? h('div', {}, field('Change', ''), diffView(output.diff)) : null,
        output && output.exit_code !== undefined ? field('Exit code', String(output.exit_code)) : null,
        output && output.stdout === undefined && !output.diff ? h('div', {}, field('Result', ''), pre(JSON.stringify(output, null, 2))) : null,
        !output && item.text_preview ? h('div', {}, field('Result (start)', ''), pre(item.text_preview)) : null,
        item.duration_ms !== undefined ? field('Duration', `${duration(item.duration_ms)}${output?.duration_ms !== undefined ? ` (the command ran ${duration(output.duration_ms)})` : ''}`) : null,
        cut.length ? field('Cut', cut.join('; ')) : null,
        item.attempts > 1 ? field('Attempts', String(item.attempts)) : null,
        item.retries.length ? retriesView(item.retries) : null,
        rawEvents(item)), item.state === 'running');
    }
    case 'approval': {
      const answered = item.state !== 'waiting';
      const head = h('span', {}, when, h('strong', { text: `Approval ${item.step_key}` }), ' ',
        h('span', { class: `pill state-${item.state}`, text: item.state }),
        answered ? h('span', { class: 'muted', text: ` by ${item.by || 'someone'} after ${duration(item.waited_ms)}` }) : null,
        item.feedback ? h('span', { class: 'muted', text: ` — “${item.feedback}”` }) : null);
      return details(head, h('div', {},
        formView(item.form),
        answered
          ? h('div', { class: 'answer' },
              field('Answer', item.approved ? `approved${item.always ? ` (always, ${item.always}${item.always_scope ? `, for the ${item.always_scope}` : ''})` : ''}` : 'rejected'),
              field('By', item.by || '-'), field('When', time(item.answered_ms)), field('Waited', duration(item.waited_ms)),
              item.feedback ? field('Feedback', item.feedback) : null)
          : h('div', {}, answerControls(runId, item.step_key, item.form), h('a', { href: `/runs/${runId}/steps/${item.step_key}`, text: 'Open this approval on its own page' })),
        rawEvents(item)), !answered);
    }
    case 'retry':
    case 'run_retried':
      return details(h('span', {}, when, h('strong', { text: item.kind === 'retry' ? 'Retry' : 'Run retried' }),
        h('span', { class: 'muted', text: `${item.by ? ` by ${item.by}` : ''} ${item.reason || ''}` })), rawEvents(item));
    case 'end':
      return details(h('span', {}, when, h('strong', { text: `Run ${item.status}` }), item.by ? h('span', { class: 'muted', text: ` by ${item.by}` }) : null,
        item.stop_reason ? h('span', { class: 'muted', text: ` (${item.stop_reason})` }) : null),
        h('div', {}, item.output !== undefined ? h('div', {}, field('Output', ''), pre(item.output, 'answer')) : null,
          item.error ? h('div', {}, field('Error', ''), pre(item.error, 'err')) : null,
          item.reason ? field('Reason', item.reason) : null, item.usage ? field('Tokens', usageLine(item.usage)) : null, rawEvents(item)), true);
    default:
      return details(h('span', {}, when, h('strong', { text: item.event_type })), rawEvents(item));
  }
}

// A step a fork took from the recorded run (the model and the tools were not called for it).
const isReplayed = (events) => events.some((e) => e.data?.replayed === true);
const replayedPill = () => h('span', { class: 'pill replayed', text: 'replayed', title: 'taken from the recorded run: the model and the tools were not called' });

function retriesView(retries) {
  return h('div', {}, field('Retries', ''), pre(retries.map((r) => `${time(r.time_ms)}  attempt ${r.attempt}: ${r.reason}${r.next_try_in_ms ? ` (next try in ${duration(r.next_try_in_ms)})` : ''}`).join('\n')));
}

export async function render(main, { runId }) {
  const trace = new Trace();
  let summary = null;
  let agent = null;
  let view = new URLSearchParams(location.search).get('view') || 'timeline';
  const header = h('section', { class: 'run-header' });
  const tabs = h('nav', { class: 'tabs' });
  const body = h('section', { class: 'run-body' });
  const streamState = h('span', { class: 'stream-state' });
  const actions = h('div');
  clear(main).append(header, actions, tabs, body);

  try {
    summary = await api(`/runs/${encodeURIComponent(runId)}`);
  } catch (e) {
    main.append(message(`${e.message}`, 'error'));
    return () => {};
  }
  actions.append(runActions(runId, trace));
  api('/agents').then((a) => {
    agent = (a.agents || []).find((x) => x.id === summary.agent) || null;
    drawHeader();
  }).catch(() => {});

  // A run waiting for a time or an event (docs/WORKFLOWS.md); an event can be sent from here.
  // The payload box outlives the header's redraws (it is redrawn every second): what a person
  // types stays, and keeps the focus.
  let payload = null;
  const waitBanner = (run, w) => {
    if (w.kind === 'join') return h('p', { class: 'waiting-banner', text: w.runs
      ? `Waiting for its fan-out (${w.wait === 'first' ? 'the first of' : 'all of'} ${w.runs} child runs; ${w.ended} ended)`
      : 'Waiting for its fan-out of child runs' });
    if (w.kind !== 'event') return h('p', { class: 'waiting-banner', text: `Sleeping until ${time(w.until_ms)}` });
    payload ||= h('input', { class: 'mono', placeholder: 'payload (JSON)', 'aria-label': 'Event payload' });
    if (document.activeElement === payload) queueMicrotask(() => payload.focus());
    return h('p', { class: 'waiting-banner' }, `Waiting for event `, h('code', { text: w.event }), ` until ${time(w.until_ms)} `,
      payload, h('button', { class: 'small', text: 'Send event', onclick: async () => {
        let body = payload.value.trim();
        try { body = body ? JSON.parse(body) : null; } catch { /* not JSON: sent as text */ }
        try { await api(`/runs/${encodeURIComponent(run)}/signals`, { method: 'POST', body: { name: w.event, payload: body } }); }
        catch (e) { alert(e.message); }
      } }));
  };

  const drawHeader = () => {
    const s = summary;
    // The stream is newer than the summary: it says the status and what the run waits for.
    const status = trace.events.length ? trace.run.status : s.status;
    const waiting = trace.events.length ? trace.run.waiting : s.waiting;
    const waitingFor = trace.events.length ? trace.run.waiting_for : s.waiting_for;
    const ended = TERMINAL.has(status) ? s.updated_ms : Date.now();
    append(clear(header), [
      h('div', { class: 'title-row' }, statusBadge(status), h('h1', { class: 'mono', text: s.run_id }), streamState),
      h('div', { class: 'facts' },
        field('Agent', s.agent), field('Model', `${s.provider || agent?.provider || ''} ${s.model || agent?.model || ''}`.trim() || '-'),
        field('Tokens', usageLine(s.usage)), s.total_cost_usd ? field('Cost', dollars(s.total_cost_usd)) : null,
        field('Steps', String(s.steps ?? 0)), field('Started', time(s.created_ms)),
        field('Duration', duration(ended - s.created_ms)), s.session_id ? field('Session', s.session_id) : null,
        s.retrying ? field('Retrying', `${s.retrying.reason} (next try ${time(s.retrying.next_try_ms)})`) : null,
        s.children?.length ? field('Tokens with sub-agents', usageLine(s.total_usage)) : null),
      runTree(s),
      forkLine(s),
      waiting ? h('p', { class: 'waiting-banner' }, 'Waiting for a person: ', h('a', { href: `/runs/${s.run_id}/steps/${waiting.step_key}`, text: `answer ${waiting.step_key}` }),
        waiting.expires_ms ? ` (answered for them at ${time(waiting.expires_ms)})` : '', waiting.escalated_to ? ` · escalated to ${waiting.escalated_to}` : '') : null,
      waitingFor ? waitBanner(s.run_id, waitingFor) : null,
      status === 'queued' && (trace.run.queue || s.queue) ? (() => {
        const q = trace.run.queue || s.queue;
        return h('p', { class: 'waiting-banner' }, `In line in run queue `, h('a', { href: '/queues', text: q.name }),
          q.key ? ` (key ${q.key})` : '', ` since ${time(q.since_ms)}: it starts when the queue has room`);
      })() : null,
      s.deadline_ms && !TERMINAL.has(status) ? h('p', { class: 'muted', text: `Time limit: fails at ${time(s.deadline_ms)}` }) : null,
      !TERMINAL.has(status) ? h('button', { class: 'danger small', onclick: async () => {
        if (!confirm('Cancel this run?')) return;
        try { summary = await api(`/runs/${encodeURIComponent(runId)}/cancel`, { method: 'POST', body: { reason: 'cancelled from the dashboard' } }); drawHeader(); } catch (e) { alert(e.message); }
      }, text: 'Cancel run' }) : null]);
  };

  const drawTabs = () => {
    clear(tabs).append(...['timeline', 'graph', 'events'].map((v) => h('button', {
      class: `tab${v === view ? ' active' : ''}`, 'data-view': v, text: v[0].toUpperCase() + v.slice(1),
      onclick: () => { view = v; history.replaceState(null, '', `?view=${v}`); drawTabs(); drawBody(true); } })));
  };

  // The timeline is kept and only entries that changed are drawn again (their open state kept).
  const timeline = h('ol', { class: 'timeline' });
  const drawn = new Map();  // item -> { el, version }
  const versionOf = (it) => `${it.events.length}|${it.state}|${(trace.deltaText.get(it.task_step) || '').length}`;
  const drawTimeline = () => {
    trace.items.forEach((it, index) => {
      const v = versionOf(it);
      const had = drawn.get(it);
      if (had && had.version === v) return;
      const replayed = isReplayed(it.events);
      const li = h('li', { class: `entry kind-${it.kind}${replayed ? ' replayed' : ''}`, 'data-seq': it.seq, 'data-kind': it.kind }, itemView(it, trace, runId));
      if (replayed) li.querySelector('summary')?.append(' ', replayedPill());
      if (had) {
        const open = had.el.querySelector('details')?.open;
        if (open !== undefined) li.querySelector('details').open = open || li.querySelector('details').open;
        had.el.replaceWith(li);
      } else timeline.insertBefore(li, timeline.children[index] || null);
      drawn.set(it, { el: li, version: v });
    });
  };
  const drawBody = (full) => {
    if (view === 'timeline') {
      if (full) clear(body).append(timeline);
      drawTimeline();
    } else if (view === 'graph') {
      clear(body).append(h('div', { class: 'graph-wrap' }, graphView(trace, (it) => {
        view = 'timeline';
        drawTabs();
        drawBody(true);
        const el = drawn.get(it)?.el;
        if (el) { el.querySelector('details').open = true; el.scrollIntoView({ block: 'center' }); el.classList.add('flash'); }
      })));
    } else {
      clear(body).append(h('div', { class: 'events-raw' }, trace.events.map((e) =>
        details(h('span', { class: 'mono' }, `#${e.seq} `, h('strong', { text: e.event_type }), ` ${time(e.time_ms)}`, isReplayed([e]) ? replayedPill() : null),
          pre(JSON.stringify(e, null, 2), 'raw')))));
    }
  };

  drawHeader();
  drawTabs();
  drawBody(true);

  let pending = false;
  let lastSummaryAt = 0;
  const schedule = (refresh, force = false) => {
    if (refresh && (force || Date.now() - lastSummaryAt > 700)) {
      lastSummaryAt = Date.now();
      api(`/runs/${encodeURIComponent(runId)}`).then((s) => { summary = s; drawHeader(); }).catch(() => {});
    }
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      drawHeader();
      drawBody(view !== 'timeline');
    });
  };
  const follower = followRun(runId, 0, {
    onEvent: (e) => { trace.add(e); schedule(['suspend', 'resumed', 'run_completed', 'run_failed', 'run_cancelled', 'llm_step_completed'].includes(e.event_type)); },
    onDelta: (d) => { trace.delta(d); schedule(false); },
    onEnd: () => { schedule(true, true); streamState.textContent = 'ended'; streamState.className = 'stream-state ended'; },
    onState: (state, detail) => {
      if (streamState.className.includes('ended')) return;
      streamState.textContent = state === 'live' ? '● live' : detail ? `${state}: ${detail}` : state;
      streamState.className = `stream-state ${state}`;
    },
  });
  const clock = setInterval(() => { if (!TERMINAL.has(trace.run.status)) drawHeader(); }, 1000);
  return () => { follower.close(); clearInterval(clock); };
}
