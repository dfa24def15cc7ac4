// The compare page's reading of two runs (dashboard/steps.js): each run's events as steps, and
// the first step where two runs part, with times, sequence numbers and the replayed flag left out.
//   node --test tests/browser/compare_steps.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stepsOf, compareRuns, canonical } from '../../dashboard/steps.js';

// A run's events from a short description: [text, [[tool, result, is_error?], ...]] per model
// step, then how it ended. Each event gets a seq and a time of its own run.
function runOf(steps, end, { replayedUpTo = 0, clock = 1000 } = {}) {
  const events = [];
  const add = (event_type, data) => events.push({ seq: events.length + 1, time_ms: clock + events.length * 7, event_type, data });
  add('run_started', { agent: 'coder', input: 'go' });
  steps.forEach(([text, tools, approval], i) => {
    const step = i + 1;
    const replayed = step <= replayedUpTo ? { replayed: true } : {};
    add('llm_step_started', { step, task_step: step * 10, ...replayed });
    add('llm_step_completed', { step, text, tool_calls: tools.map(([tool]) => ({ id: `c${clock}-${step}`, name: tool, arguments: { command: tool } })), ...replayed });
    tools.forEach(([tool, result, isError], j) => {
      const call_id = `call-${clock}-${step}-${j}`;
      add('tool_call_started', { call_id, tool, arguments: { command: tool }, ...replayed });
      if (approval) {
        add('suspend', { step_key: `approve-${clock + step}`, call_id, tool, ...replayed });
        add('resumed', { step_key: `approve-${clock + step}`, approved: approval.approved, feedback: approval.feedback, by: `someone ${clock}`, ...replayed });
      }
      add('tool_call_completed', { call_id, tool, is_error: Boolean(isError), result, text_preview: String(result), ...replayed });
    });
  });
  if (end) add(`run_${end[0]}`, end[0] === 'completed' ? { output: end[1], steps: steps.length } : end[0] === 'failed' ? { error: end[1] } : { reason: end[1] });
  return events;
}

test('a run is read as its model steps, with their tool results and approvals, and its end', () => {
  const { steps, end } = stepsOf(runOf([['Writing.', [['write', 'wrote 3 bytes']], { approved: true }], ['Done.', []]], ['completed', 'ok']));
  assert.equal(steps.length, 2);
  assert.deepEqual(steps.map((s) => s.step), [1, 2]);
  assert.equal(steps[0].text, 'Writing.');
  assert.deepEqual(steps[0].tool_calls, [{ name: 'write', arguments: { command: 'write' } }]);
  assert.deepEqual(steps[0].tools.map((t) => [t.tool, t.is_error, t.result]), [['write', false, 'wrote 3 bytes']]);
  assert.deepEqual(steps[0].approvals.map((a) => [a.tool, a.answer]), [['write', 'approved']]);
  assert.deepEqual(end, { status: 'completed', text: 'ok' });
});

test('a result kept only by its start is compared by that start', () => {
  const events = [
    { seq: 1, event_type: 'llm_step_completed', data: { step: 1, text: 'Reading.', tool_calls: [{ name: 'read', arguments: {} }] } },
    { seq: 2, event_type: 'tool_call_completed', data: { tool: 'read', is_error: false, result: { truncated: true, bytes: 90000 }, text_preview: 'the start' } },
  ];
  assert.equal(stepsOf(events).steps[0].tools[0].result, 'the start');
});

test('two runs that did the same are the same, whatever their times, ids and replayed flags', () => {
  const steps = [['Listing.', [['ls', { stdout: 'a\n', exit_code: 0, duration_ms: 3 }]]], ['Done.', []]];
  const left = stepsOf(runOf(steps, ['completed', 'Done.'], { clock: 1000 }));
  const right = stepsOf(runOf([['Listing.', [['ls', { stdout: 'a\n', exit_code: 0, duration_ms: 41 }]]], ['Done.', []]], ['completed', 'Done.'], { clock: 9000, replayedUpTo: 1 }));
  const c = compareRuns(left, right);
  assert.equal(c.parting, null);
  assert.equal(c.shared, 2);
  assert.equal(canonical({ b: 1, a: { seq: 3, x_ms: 4, y: [{ replayed: true, z: 1 }] } }), '{"a":{"y":[{"z":1}]},"b":1}');
});

test('two runs part at the first step whose tool result differs', () => {
  const left = stepsOf(runOf([['One.', [['echo', 'one']]], ['Time.', [['date', '100']]], ['Done.', []]], ['completed', 'Done at 100']));
  const right = stepsOf(runOf([['One.', [['echo', 'one']]], ['Time.', [['date', '200']]], ['Done.', []]], ['completed', 'Done at 200'], { replayedUpTo: 1 }));
  const c = compareRuns(left, right);
  assert.equal(c.shared, 1);
  assert.equal(c.parting, 1);
  assert.deepEqual([...c.parts], ['tool:0']);
  assert.match(c.why, /result of date differs/);
  assert.equal(c.ends_differ, true);
});

test("two runs part at the model's text, at other tool calls, at another answer's result, or at a missing step", () => {
  const base = [['One.', [['echo', 'one']]], ['Two.', []]];
  const a = stepsOf(runOf(base, ['completed', 'Two.']));
  let c = compareRuns(a, stepsOf(runOf([['One.', [['echo', 'one']]], ['Other.', []]], ['completed', 'Two.'])));
  assert.equal(c.parting, 1);
  assert.match(c.why, /model's text/);
  c = compareRuns(a, stepsOf(runOf([['One.', [['cat', 'one']]], ['Two.', []]], ['completed', 'Two.'])));
  assert.equal(c.parting, 0);
  assert.match(c.why, /other tool calls/);
  // Another answer shows in the result of the call it guarded; the answer itself is not compared
  // (a fork may take it from the record without asking again).
  c = compareRuns(stepsOf(runOf([['W.', [['write', 'ok']], { approved: true }]], null)),
                  stepsOf(runOf([['W.', [['write', 'rejected: no', true]], { approved: false, feedback: 'no' }]], null)));
  assert.equal(c.parting, 0);
  assert.match(c.why, /result of write differs/);
  c = compareRuns(stepsOf(runOf([['W.', [['write', 'ok']], { approved: true }]], null)), stepsOf(runOf([['W.', [['write', 'ok']]]], null)));
  assert.equal(c.parting, null);
  c = compareRuns(a, stepsOf(runOf([['One.', [['echo', 'one']]]], null)));
  assert.equal(c.parting, 1);
  assert.match(c.why, /only the first run has this step/);
  // A run still waiting for its call's result parts there, and says so.
  const waiting = runOf([['One.', [['echo', 'one']]]], null);
  c = compareRuns(a, stepsOf(waiting.filter((e) => e.event_type !== 'tool_call_completed')));
  assert.equal(c.parting, 0);
  assert.match(c.why, /only the first run has the result of echo/);
});

test('two runs with the same steps that ended differently part at their end', () => {
  const steps = [['One.', []]];
  const c = compareRuns(stepsOf(runOf(steps, ['completed', 'One.'])), stepsOf(runOf(steps, ['cancelled', 'enough'])));
  assert.equal(c.shared, 1);
  assert.equal(c.parting, 1);
  assert.equal(c.rows, 1);
  assert.match(c.why, /one ended completed, the other ended cancelled/);
});
