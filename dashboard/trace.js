// A run's events folded into the steps a person reads: model calls, tool calls, approvals,
// retries and the run's own start and end. Fed one event at a time (history, then live).

export class Trace {
  constructor() {
    this.items = [];        // in order of their first event
    this.events = [];       // every event, by arrival (seq order)
    this.byCall = new Map();     // call_id -> tool item
    this.byStepKey = new Map();  // step_key -> approval item
    this.byTaskStep = new Map(); // task step -> model or tool item
    this.current = null;    // the item in flight
    this.run = { status: 'pending' };
    this.deltaText = new Map();  // model task step -> text streamed so far
    this.unsent = [];       // what the conversation gained since the last model call
  }

  add(e) {
    this.events.push(e);
    const d = e.data || {};
    const t = e.time_ms;
    const item = (fields) => {
      const it = { seq: e.seq, time_ms: t, events: [e], ...fields };
      this.items.push(it);
      return it;
    };
    switch (e.event_type) {
      case 'run_started':
        this.run = { ...this.run, status: 'running', agent: d.agent, input: d.input, started_ms: t };
        this.unsent.push({ role: 'user', text: typeof d.input === 'string' ? d.input : JSON.stringify(d.input, null, 2) });
        item({ kind: 'start', input: d.input, agent: d.agent, session_id: d.session_id, by: d.by });
        break;
      case 'llm_step_started': {
        const it = item({ kind: 'model', step: d.step, task_step: d.task_step, attempts: 1, retries: [], state: 'running', added: this.unsent });
        this.unsent = [];
        this.byTaskStep.set(d.task_step, it);
        this.current = it;
        this.run.status = 'running';
        break;
      }
      case 'llm_step_completed': {
        const it = this.current && this.current.kind === 'model' ? this.current : item({ kind: 'model', step: d.step, attempts: 1, retries: [] });
        if (it.events[it.events.length - 1] !== e) it.events.push(e);
        Object.assign(it, {
          state: 'done', text: d.text || '', tool_calls: d.tool_calls || [], usage: d.usage || {}, cost_usd: d.cost_usd,
          run_usage: d.run_usage, latency_ms: t - it.time_ms, stop_reason: d.stop_reason,
          attempt: d.attempt, worker: d.worker, messages_sent: d.messages_sent, ended_ms: t,
        });
        this.deltaText.delete(it.task_step);
        this.current = null;
        break;
      }
      case 'tool_call_started': {
        // The same call again once approved: the entry it has already goes on.
        const earlier = this.byCall.get(d.call_id);
        if (earlier && earlier.state === 'waiting') {
          earlier.events.push(e);
          Object.assign(earlier, { state: 'running', approved: d.approved, task_step: d.task_step, run_ms: t });
          this.byTaskStep.set(d.task_step, earlier);
          this.current = earlier;
          this.run.status = 'running';
          break;
        }
        const it = item({ kind: 'tool', call_id: d.call_id, tool: d.tool, arguments: d.arguments, approved: d.approved,
                          task_step: d.task_step, attempts: 1, retries: [], state: 'running' });
        this.byCall.set(d.call_id, it);
        this.byTaskStep.set(d.task_step, it);
        this.current = it;
        this.run.status = 'running';
        break;
      }
      case 'sub_agent_started': {
        // A sub-agent's call: its child run, linked from the call's entry.
        const it = [...this.byCall.values()].find((x) => x.call_id === d.call_id);
        if (it) Object.assign(it, { child_run_id: d.run_id, child_agent: d.agent });
        if (it && it.events[it.events.length - 1] !== e) it.events.push(e);
        break;
      }
      case 'task_retried': {
        const it = this.byTaskStep.get(d.task_step) || this.current;
        if (it) {
          it.events.push(e);
          it.attempts = d.attempt || it.attempts + 1;
          it.retries.push({ time_ms: t, reason: d.reason, next_try_in_ms: d.next_try_in_ms, attempt: d.attempt });
        } else item({ kind: 'retry', reason: d.reason, attempt: d.attempt });
        break;
      }
      case 'suspend': {
        const tool = this.byCall.get(d.call_id);
        if (tool) {
          tool.events.push(e);
          tool.state = 'waiting';
        }
        const it = item({ kind: 'approval', step_key: d.step_key, call_id: d.call_id, tool: d.tool, form: d.form || {}, state: 'waiting' });
        this.byStepKey.set(d.step_key, it);
        this.current = it;
        this.run.status = 'suspended';
        this.run.waiting = { step_key: d.step_key, form: d.form };
        break;
      }
      case 'resumed': {
        const it = this.byStepKey.get(d.step_key) || item({ kind: 'approval', step_key: d.step_key, form: {} });
        if (it.events[it.events.length - 1] !== e) it.events.push(e);
        Object.assign(it, {
          state: d.approved ? 'approved' : 'rejected', approved: d.approved, feedback: d.feedback, by: d.by,
          always: d.always, always_scope: d.always_scope, answered_ms: t, waited_ms: t - it.time_ms,
        });
        const tool = this.byCall.get(it.call_id);
        if (tool && !d.approved) tool.state = 'rejected';
        this.current = null;
        this.run.status = 'running';
        delete this.run.waiting;
        break;
      }
      case 'tool_call_completed': {
        const it = this.byCall.get(d.call_id) || item({ kind: 'tool', call_id: d.call_id, tool: d.tool, attempts: 1, retries: [] });
        if (it.events[it.events.length - 1] !== e) it.events.push(e);
        Object.assign(it, {
          state: d.is_error ? (it.state === 'rejected' ? 'rejected' : 'error') : 'done',
          is_error: d.is_error, result: d.result, text_preview: d.text_preview, duration_ms: t - (it.run_ms || it.time_ms), ended_ms: t,
        });
        this.unsent.push({ role: `tool ${d.tool}${d.is_error ? ' (error)' : ''}`, text: d.text_preview ?? '' });
        if (this.current === it) this.current = null;
        break;
      }
      case 'run_retried':
        item({ kind: 'run_retried', task_step: d.task_step, by: d.by });
        this.run.status = 'running';
        break;
      case 'run_completed':
        item({ kind: 'end', status: 'completed', output: d.output, stop_reason: d.stop_reason, usage: d.usage, steps: d.steps });
        this.run.status = 'completed';
        this.current = null;
        break;
      case 'run_failed':
        item({ kind: 'end', status: 'failed', error: d.error, usage: d.usage, steps: d.steps });
        this.run.status = 'failed';
        this.current = null;
        break;
      // Workflows (docs/WORKFLOWS.md): a wait for a time or an event, and the limits' expiries.
      case 'wait_started':
        item({ kind: 'other', event_type: e.event_type, data: d });
        this.run.status = 'waiting';
        this.run.waiting_for = { kind: d.kind, event: d.event, until_ms: d.until_ms };
        break;
      case 'fan_out_started':
        item({ kind: 'other', event_type: e.event_type, data: d });
        this.run.status = 'waiting';
        this.run.waiting_for = { kind: 'join', wait: d.wait, runs: (d.runs || []).length, ended: 0 };
        break;
      case 'fan_out_child_ended':
        item({ kind: 'other', event_type: e.event_type, data: d });
        if (this.run.waiting_for?.kind === 'join') this.run.waiting_for = { ...this.run.waiting_for, ended: this.run.waiting_for.ended + 1 };
        break;
      case 'wait_ended':
        item({ kind: 'other', event_type: e.event_type, data: d });
        this.run.status = 'running';
        delete this.run.waiting_for;
        break;
      // Run queues: in line, then admitted.
      case 'run_queued':
        item({ kind: 'other', event_type: e.event_type, data: d });
        this.run.status = 'queued';
        this.run.queue = { name: d.queue, key: d.key, since_ms: e.time_ms };
        break;
      case 'run_admitted':
        item({ kind: 'other', event_type: e.event_type, data: d });
        this.run.status = 'running';
        delete this.run.queue;
        break;
      case 'run_cancelled':
        item({ kind: 'end', status: 'cancelled', reason: d.reason, by: d.by });
        this.run.status = 'cancelled';
        this.current = null;
        break;
      default:
        item({ kind: 'other', event_type: e.event_type, data: d });
    }
  }

  // Streamed text of a model task step (dropped when the stream broke off and the step is asked again).
  delta(d) {
    if (d.restart) this.deltaText.set(d.step, '');
    else this.deltaText.set(d.step, (this.deltaText.get(d.step) || '') + (d.text || ''));
  }
}
