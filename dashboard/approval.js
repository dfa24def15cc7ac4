// The approval page (/runs/{id}/steps/{step}): the form as the terminal shows it, then Approve,
// Reject with feedback, Always. A step answered already shows its answer.
import { api, followRun } from './api.js';
import { formView } from './forms.js';
import { h, clear, time, duration, message, statusBadge, shown } from './dom.js';

// Buttons that answer a waiting step; `onAnswered` hears the answer once it is recorded.
export function answerControls(runId, stepKey, form, onAnswered) {
  const context = (form && form.context) || {};
  const isExec = form && form.tool === 'exec' && form.kind !== 'tool';  // keel's exec, not a tool worker's
  const feedback = h('textarea', { class: 'feedback', rows: 2, placeholder: 'Feedback for the agent (sent with a rejection)', 'aria-label': 'feedback' });
  const status = h('p', { class: 'answer-status', role: 'status' });
  const buttons = [];
  const send = async (approve, body) => {
    buttons.forEach((b) => { b.disabled = true; });
    status.textContent = 'Sending…';
    try {
      const r = await api(`/runs/${encodeURIComponent(runId)}/steps/${encodeURIComponent(stepKey)}/${approve ? 'approve' : 'reject'}`, { method: 'POST', body });
      status.textContent = r.duplicate ? 'This answer had been given already.' : approve ? 'Approved. The run goes on.' : 'Rejected. The agent is told why.';
      status.className = `answer-status ${approve ? 'ok' : 'warn'}`;
      onAnswered?.(approve);
    } catch (e) {
      status.textContent = e.message;
      status.className = 'answer-status error';
      buttons.forEach((b) => { b.disabled = false; });
    }
  };
  const approve = h('button', { class: 'primary', 'data-action': 'approve', text: 'Approve', onclick: () => send(true, {}) });
  const reject = h('button', { class: 'danger', 'data-action': 'reject', text: 'Reject', onclick: () => send(false, feedback.value.trim() ? { feedback: feedback.value.trim() } : {}) });
  buttons.push(approve, reject);
  const always = [];
  if (isExec) {
    const exact = h('button', { 'data-action': 'always', text: 'Always (this exact command, this run)', onclick: () => send(true, { always: 'exact' }) });
    always.push(exact);
    buttons.push(exact);
    if (context.prefix) {
      const prefix = h('button', { 'data-action': 'always-prefix', text: `Always (commands starting "${shown(context.prefix)}", this run)`, onclick: () => send(true, { always: 'prefix' }) });
      always.push(prefix);
      buttons.push(prefix);
    }
  }
  return h('div', { class: 'answer-controls' }, feedback, h('div', { class: 'buttons' }, approve, reject, always), status);
}

export async function render(main, { runId, step }) {
  clear(main);
  let run;
  try {
    run = await api(`/runs/${encodeURIComponent(runId)}`);
  } catch (e) {
    main.append(message(e.message, 'error'));
    return () => {};
  }
  const heading = h('div', { class: 'title-row' }, statusBadge(run.status), h('h1', { text: `Approval ${step}` }));
  const about = h('p', { class: 'muted' }, 'Run ', h('a', { class: 'mono', href: `/runs/${runId}`, text: runId }), ` of agent ${run.agent}, started ${time(run.created_ms)}`);
  main.append(heading, about);
  if (run.waiting && run.waiting.step_key === step) {
    const since = h('p', { class: 'muted' });
    main.append(formView(run.waiting.form), since);
    let follower = null;
    const controls = answerControls(runId, step, run.waiting.form, () => {
      // Show the run go on from here.
      const after = h('p', { class: 'muted' }, 'Follow it on ', h('a', { href: `/runs/${runId}`, text: 'the run page' }), '.');
      main.append(after);
    });
    main.append(controls);
    // Someone else may answer meanwhile: the stream says so.
    follower = followRun(runId, Math.max(0, (run.last_event_seq || 1) - 1), {
      onEvent: (e) => {
        if (e.event_type === 'suspend' && e.data?.step_key === step) since.textContent = `Waiting since ${time(e.time_ms)}.`;
        if (e.event_type === 'resumed' && e.data?.step_key === step) {
          controls.querySelectorAll('button').forEach((b) => { b.disabled = true; });
          const status = controls.querySelector('.answer-status');
          if (!status.textContent || status.textContent === 'Sending…')
            status.textContent = `${e.data.approved ? 'Approved' : 'Rejected'} by ${e.data.by || 'someone'} at ${time(e.time_ms)}.`;
        }
      },
    });
    return () => follower?.close();
  }
  // Not waiting: find what happened to this step in the run's events.
  let suspend = null, resumed = null, after = 0;
  try {
    while (true) {
      const page = await api(`/runs/${encodeURIComponent(runId)}/events?after=${after}&limit=1000`);
      for (const e of page.events) {
        if (e.event_type === 'suspend' && e.data?.step_key === step) suspend = e;
        if (e.event_type === 'resumed' && e.data?.step_key === step) resumed = e;
        after = e.seq;
      }
      if (!page.more || !page.events.length) break;
    }
  } catch (e) {
    main.append(message(e.message, 'error'));
    return () => {};
  }
  if (!suspend) {
    main.append(message(`Run ${runId} has no step ${step} that asked for approval.`, 'error'));
    return () => {};
  }
  main.append(formView(suspend.data.form));
  if (resumed) {
    const d = resumed.data;
    main.append(h('div', { class: `answered ${d.approved ? 'ok' : 'warn'}` },
      h('h3', { text: d.approved ? 'Approved' : 'Rejected' }),
      h('p', { text: `By ${d.by || 'someone'} at ${time(resumed.time_ms)}, after waiting ${duration(resumed.time_ms - suspend.time_ms)}.` }),
      d.always ? h('p', { text: `Remembered: ${d.always}${d.always_scope ? ` for the ${d.always_scope}` : ''}.` }) : null,
      d.feedback ? h('p', {}, 'Feedback: ', h('q', { text: d.feedback })) : null));
  } else {
    main.append(message(`This step was not answered: the run is ${run.status}.`, 'notice'));
  }
  return () => {};
}
