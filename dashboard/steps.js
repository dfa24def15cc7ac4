// Two runs side by side: each run's events as the steps a person compares (a model step with the
// tool calls it asked for, their results and the approvals they needed; then how the run ended),
// and the first step where the two part. No DOM here: node's test runner checks it as it is
// (tests/browser/compare_steps.test.mjs).

// What is not part of what a run did: times (keys in milliseconds, as a command's duration_ms),
// sequence numbers and the replayed flag.
const IGNORED = /_ms$|^(replayed|seq)$/;

// A value with its keys sorted and the ignored ones left out, as text: equal text, same value.
export function canonical(value) {
  const strip = (v) => {
    if (Array.isArray(v)) return v.map(strip);
    if (!v || typeof v !== 'object') return v;
    const out = {};
    for (const key of Object.keys(v).sort()) if (!IGNORED.test(key)) out[key] = strip(v[key]);
    return out;
  };
  return JSON.stringify(strip(value ?? null));
}

// A tool's result as recorded: whole when it was kept whole, else the start the event holds.
function resultOf(d) {
  const r = d.result;
  if (r === undefined || r === null || (typeof r === 'object' && r.truncated)) return d.text_preview ?? '';
  return r;
}

function outcome(status, d) {
  if (status === 'completed') return { status, text: d.output ?? '' };
  if (status === 'failed') return { status, text: d.error ?? '' };
  return { status, text: d.reason ?? '' };
}

// The steps of one run, in the order of its events. A tool call or an approval before any model
// step (there should be none) goes in a step 0 of its own, so that nothing is dropped.
export function stepsOf(events) {
  const steps = [];
  const byStepKey = new Map();
  let current = null;
  let end = null;
  const holder = () => {
    if (!current) {
      current = { step: 0, text: '', tool_calls: [], tools: [], approvals: [], replayed: false };
      steps.push(current);
    }
    return current;
  };
  for (const e of events) {
    const d = e.data || {};
    switch (e.event_type) {
      case 'llm_step_completed':
        current = {
          step: d.step ?? steps.length + 1, text: d.text || '', replayed: d.replayed === true,
          tool_calls: (d.tool_calls || []).map((c) => ({ name: c.name, arguments: c.arguments ?? {} })),
          tools: [], approvals: [],
        };
        steps.push(current);
        break;
      case 'tool_call_completed':
        holder().tools.push({ tool: d.tool, is_error: d.is_error === true, result: resultOf(d), replayed: d.replayed === true });
        break;
      case 'suspend': {
        const approval = { step_key: d.step_key, tool: d.tool || d.form?.tool || '', answer: 'not answered', feedback: '', replayed: d.replayed === true };
        holder().approvals.push(approval);
        byStepKey.set(d.step_key, approval);
        break;
      }
      case 'resumed': {
        const approval = byStepKey.get(d.step_key);
        if (approval) Object.assign(approval, { answer: d.approved ? 'approved' : 'rejected', feedback: d.feedback || '' });
        break;
      }
      case 'run_completed':
        end = outcome('completed', d);
        break;
      case 'run_failed':
        end = outcome('failed', d);
        break;
      case 'run_cancelled':
        end = outcome('cancelled', d);
        break;
      default:
        break;
    }
  }
  return { steps, end };
}

// The parts of a step that are compared, each with its text for the comparison: the model's text,
// the tool calls it asked for and their results. Approvals are shown, not compared: a fork may
// take an answer from the record without asking again, and another answer shows in the result
// of the call it guarded (a rejection is an error result with the person's feedback).
function partsOf(step) {
  if (!step) return [];
  return [
    { part: 'text', key: canonical(step.text) },
    { part: 'tool_calls', key: canonical(step.tool_calls) },
    ...step.tools.map((t, i) => ({ part: `tool:${i}`, key: canonical({ tool: t.tool, is_error: t.is_error, result: t.result }) })),
  ];
}

// Which parts of two steps differ ('step' alone when one side has no such step).
export function differingParts(a, b) {
  if (!a && !b) return new Set();
  if (!a || !b) return new Set(['step']);
  const pa = partsOf(a), pb = partsOf(b);
  const out = new Set();
  const keys = new Map(pb.map((p) => [p.part, p.key]));
  for (const p of pa) if (keys.get(p.part) !== p.key) out.add(p.part);
  for (const p of pb) if (!pa.some((q) => q.part === p.part)) out.add(p.part);
  return out;
}

// In words, what first differs in the parting step.
function why(a, b, parts) {
  if (!a || !b) return `only ${a ? 'the first' : 'the second'} run has this step`;
  if (parts.has('text')) return "the model's text differs";
  if (parts.has('tool_calls')) return 'the model asked for other tool calls';
  const first = [...parts].find((p) => p.startsWith('tool:'));
  if (!first) return 'the steps differ';
  const index = Number(first.slice(5));
  const tool = a.tools[index] || b.tools[index];
  const name = tool.tool || 'a tool call';
  if (!a.tools[index] || !b.tools[index]) return `only the ${a.tools[index] ? 'first' : 'second'} run has the result of ${name} (so far)`;
  return `the result of ${name} differs`;
}

// Where two runs part: `shared` steps are the same from the first; `parting` is the index of the
// first that differs (steps.length of the longer run when only the ends differ), null when the
// runs are the same throughout; `ends_differ` when they ended differently.
export function compareRuns(left, right) {
  const n = Math.max(left.steps.length, right.steps.length);
  const endKey = (end) => canonical(end);
  const endsDiffer = endKey(left.end) !== endKey(right.end);
  for (let i = 0; i < n; i++) {
    const a = left.steps[i], b = right.steps[i];
    const parts = differingParts(a, b);
    if (parts.size) return { shared: i, parting: i, parts, why: why(a, b, parts), ends_differ: endsDiffer, rows: n };
  }
  if (endsDiffer) {
    const ended = (end) => (end ? `ended ${end.status}` : 'not ended');
    const reason = left.end && right.end && left.end.status === right.end.status ? `both ${ended(left.end)}, with other text` : `one ${ended(left.end)}, the other ${ended(right.end)}`;
    return { shared: n, parting: n, parts: new Set(['end']), why: reason, ends_differ: true, rows: n };
  }
  return { shared: n, parting: null, parts: new Set(), why: '', ends_differ: false, rows: n };
}
