// The client against a real keel: invoke, follow, approve and reject, wait, list, cancel, retry
// errors, idempotency.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Keel, KeelError } from "../dist/index.js";
import { agentConfig, startKeel } from "./support.mjs";

let keel, k;

before(async () => {
  const turns = {
    turns: [
      { text: "Writing it.", tool_calls: [{ name: "write", arguments: { path: "note.txt", content: "hello\n" } }] },
      { text: "Result: {{last_tool_result}}" },
    ],
  };
  const slow = { turns: [{ delay_ms: 1500, text: "done" }] };
  keel = await startKeel(agentConfig("writer", ["write"]) + "[run_queues.solo]\nconcurrency = 1\n" +
                           agentConfig("lined", [], 'run_queue = "solo"'),
                         { "writer.script.json": JSON.stringify(turns), "lined.script.json": JSON.stringify(slow) });
  k = await Keel.connect({ home: keel.home });
});

after(async () => {
  await k?.close();
  await keel?.stop();
});

test("client: a run is followed whole and in order, approved from the form, and waited for", async () => {
  const { runId, created } = await k.invoke("writer", "Write a note.");
  assert.equal(created, true);
  const seen = [];
  for await (const e of k.events(runId)) {
    seen.push(e);
    if (e.event_type === "suspend") {
      assert.equal(e.data.form.context.path.endsWith("note.txt"), true);
      const r = await k.approve(runId, e.data.step_key, { by: "sdk test" });
      assert.equal(r.duplicate, false);
      assert.equal((await k.approve(runId, e.data.step_key)).duplicate, true);  // the same answer again
    }
  }
  assert.deepEqual(seen.map((e) => e.seq), seen.map((_, i) => i + 1));
  assert.equal(seen.at(-1).event_type, "run_completed");
  assert.match(seen.at(-1).data.output, /Wrote 6 bytes/);
  const resumed = seen.find((e) => e.event_type === "resumed");
  assert.equal(resumed.data.by, k.who);  // the broker user that sent it, whatever the body says
  // Late: the history alone, the same events.
  const again = [];
  for await (const e of k.events(runId)) again.push(e.seq);
  assert.deepEqual(again, seen.map((e) => e.seq));
  assert.equal((await k.wait(runId)).status, "completed");
  assert.equal((await k.get(runId)).status, "completed");
  const listed = await k.list({ agent: "writer" });
  assert.ok(listed.some((r) => r.run_id === runId));
});

test("client: a rejection reaches the model with its feedback; a contradicting answer is a conflict", async () => {
  const { runId } = await k.invoke("writer", "Write a note.");
  const waiting = await k.wait(runId);
  assert.equal(waiting.status, "suspended");
  const key = waiting.waiting.step_key;
  await k.reject(runId, key, "not in this folder");
  await assert.rejects(k.approve(runId, key), (e) => e instanceof KeelError && e.code === "conflict");
  const done = await k.wait(runId);
  assert.equal(done.status, "completed");
  assert.match(done.output, /not in this folder/);
});

test("client: an idempotency key makes one run; bad requests get clear errors", async () => {
  const a = await k.invoke("writer", "once", { idempotencyKey: "sdk-key-1" });
  const b = await k.invoke("writer", "once", { idempotencyKey: "sdk-key-1" });
  assert.equal(b.runId, a.runId);
  assert.equal(b.created, false);
  await assert.rejects(k.invoke("nobody", "x"), (e) => e instanceof KeelError && e.code === "not_found");
  await assert.rejects(k.invoke("writer", "x", { sessionId: "../up" }), (e) => e.code === "invalid_argument");
  await assert.rejects(k.retry(a.runId), (e) => e.code === "conflict");
  const cancelled = await k.cancel(a.runId, "enough");
  assert.equal(cancelled.status, "cancelled");
  await assert.rejects(k.cancel(a.runId), (e) => e.code === "conflict");
});

test("client: a run in its run queue's line is waited for through the line; the queues are listed", async () => {
  const first = await k.invoke("lined", "one", { concurrencyKey: "repo-1" });
  const second = await k.invoke("lined", "two");
  const [solo] = await k.queues();
  assert.equal(solo.name, "solo");
  assert.equal(solo.concurrency, 1);
  assert.ok(solo.running + solo.waiting >= 1);
  const done = await k.wait(second.runId, 60_000);  // in line first, then it goes and ends
  assert.equal(done.status, "completed");
  assert.equal((await k.get(first.runId)).status, "completed");
  await assert.rejects(k.invoke("writer", "x", { concurrencyKey: "k" }), (e) => e.code === "invalid_argument");
});
