// Tool workers against a real keel: declared tools serve a run end to end with approvals; what
// a declaration gets wrong is refused; a worker killed mid-call, one that answers garbage and
// one that never answers each give the run a clear outcome, and the node goes on.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { Keel, KeelError, NeedsApproval, ToolError, ToolWorker } from "../dist/index.js";
import { agentConfig, eventually, startKeel } from "./support.mjs";

let keel, k;
const quiet = () => {};

const script = (turns) => JSON.stringify({ turns });
before(async () => {
  const files = {
    "desk.script.json": script([
      { text: "Looking.", tool_calls: [{ name: "lookup_ticket", arguments: { id: "T-7" } }] },
      { text: "Closing: {{last_tool_result}}", tool_calls: [{ name: "close_ticket", arguments: { id: "T-7" } }] },
      { text: "Refunding.", tool_calls: [{ name: "refund", arguments: { amount: 500 } }] },
      { text: "Done: {{tool_results}}" },
    ]),
    "bad.script.json": script([
      { text: "Asking.", tool_calls: [{ name: "lookup_ticket", arguments: { id: "nope" } }] },
      { text: "Asking again.", tool_calls: [{ name: "lookup_ticket", arguments: { id: "T-404" } }] },
      { text: "Shape.", tool_calls: [{ name: "misshaped", arguments: {} }] },
      { text: "Done: {{tool_results}}" },
    ]),
    "slow.script.json": script([
      { text: "Looking.", tool_calls: [{ name: "lookup", arguments: { q: "x" } }] },
      { text: "Done: {{last_tool_result}}" },
    ]),
  };
  const config = agentConfig("desk", ["tickets.lookup_ticket", "tickets.close_ticket", "tickets.refund"]) +
                 agentConfig("bad", ["tickets.lookup_ticket", "tickets.misshaped"]) + agentConfig("slow", ["lookups.lookup"]);
  keel = await startKeel(config, files);
  k = await Keel.connect({ home: keel.home });
});

after(async () => {
  await k?.close();
  await keel?.stop();
});

async function ticketWorker() {
  const wk = await Keel.connect({ home: keel.home, credentialsFile: keel.workerCredentials });
  const w = new ToolWorker(wk, { queue: "tickets", log: quiet })
    .tool({
      name: "lookup_ticket",
      description: "Find a ticket.",
      inputSchema: { type: "object", properties: { id: { type: "string", pattern: "^T-[0-9]+$" } }, required: ["id"] },
      outputSchema: { type: "object", properties: { title: { type: "string" } }, required: ["title"] },
      approval: "never",
      handler: ({ id }) => {
        if (id === "T-404") throw new ToolError("no ticket T-404");
        return { title: `ticket ${id}` };
      },
    })
    .tool({
      name: "close_ticket",
      description: "Close a ticket.",
      inputSchema: { type: "object", properties: { id: { type: "string" } }, required: ["id"] },
      form: { title: "Close it?", show: ["id"] },
      handler: ({ id }, call) => ({ closed: id, approved: call.approved }),
    })
    .tool({
      name: "refund",
      description: "Refund an amount; large ones need a person.",
      inputSchema: { type: "object", properties: { amount: { type: "integer" } }, required: ["amount"] },
      approval: "never",
      handler: ({ amount }, call) => (amount > 100 && !call.approved ? new NeedsApproval({ amount }) : { refunded: amount }),
    })
    .tool({
      name: "misshaped",
      description: "Answers what it did not declare.",
      inputSchema: { type: "object" },
      outputSchema: { type: "object", required: ["ok"] },
      approval: "never",
      handler: () => ({ nothing: true }),
    });
  await w.start();
  return { w, wk };
}

test("tool worker: declared tools serve a run, with the tool's approvals and one the tool asks for", async () => {
  const { w, wk } = await ticketWorker();
  try {
    const declared = await k.tools();
    const tickets = declared.find((q) => q.queue === "tickets");
    assert.deepEqual(tickets.tools.map((t) => t.name).sort(), ["close_ticket", "lookup_ticket", "misshaped", "refund"]);
    assert.equal(tickets.by, "worker");
    // The same over HTTP (GET /api/v1/tools), with the dashboard's token, and refused without it.
    const dashboard = readFileSync(keel.log, "utf8").match(/Dashboard:\s+(http:\/\/[^/\s]+)\/#token=(\S+)/);
    assert.ok(dashboard, "keel dev names its dashboard");
    const overHttp = await fetch(`${dashboard[1]}/api/v1/tools`, { headers: { Authorization: `Bearer ${dashboard[2]}` } });
    assert.equal(overHttp.status, 200);
    const listed = (await overHttp.json()).queues.find((q) => q.queue === "tickets");
    assert.deepEqual(listed.tools.map((t) => t.name).sort(), ["close_ticket", "lookup_ticket", "misshaped", "refund"]);
    assert.equal((await fetch(`${dashboard[1]}/api/v1/tools`)).status, 401);
    const { runId } = await k.invoke("desk", "Close T-7 and refund.");
    const forms = [];
    for await (const e of k.events(runId)) {
      if (e.event_type === "suspend") {
        forms.push(e.data.form);
        await k.approve(runId, e.data.step_key);
      }
      if (e.event_type === "run_failed") assert.fail(e.data.error);
    }
    assert.equal(forms.length, 2);
    assert.equal(forms[0].title, "Close it?");
    assert.deepEqual(forms[0].shown, { id: "T-7" });
    assert.deepEqual(forms[1].details, { amount: 500 });  // the form the tool itself asked with
    const run = await k.get(runId);
    assert.equal(run.status, "completed");
    const results = (await k.history(runId)).filter((e) => e.event_type === "tool_call_completed").map((e) => e.data);
    assert.deepEqual(results.map((r) => [r.tool, r.is_error]), [["lookup_ticket", false], ["close_ticket", false], ["refund", false]]);
    assert.deepEqual(results[0].result, { title: "ticket T-7" });
    assert.deepEqual(results[1].result, { closed: "T-7", approved: true });
    assert.deepEqual(results[2].result, { refunded: 500 });
  } finally {
    await w.drain();
    await wk.close();
  }
});

test("tool worker: bad arguments, a tool's own error and a result against its schema reach the model as errors", async () => {
  const { w, wk } = await ticketWorker();
  try {
    const { runId } = await k.invoke("bad", "Try.");
    const done = await k.wait(runId, 60_000);
    assert.equal(done.status, "completed");
    const history = await k.history(runId);
    const results = history.filter((e) => e.event_type === "tool_call_completed").map((e) => e.data);
    assert.deepEqual(results.map((r) => r.is_error), [true, true, true]);
    assert.match(results[0].result.error, /arguments.id: does not match the pattern/);
    assert.match(results[1].result.error, /no ticket T-404/);
    assert.match(results[2].result.error, /does not match its output_schema: result: lacks the required field 'ok'/);
    // The bad arguments never reached the worker: two tasks went, for the two calls that could.
    assert.equal(history.filter((e) => e.event_type === "tool_call_started").length, 2);
  } finally {
    await w.drain();
    await wk.close();
  }
});

test("tool worker: a declaration keel cannot check is refused whole, naming the tool and why", async () => {
  const wk = await Keel.connect({ home: keel.home, credentialsFile: keel.workerCredentials });
  try {
    const w = new ToolWorker(wk, { queue: "broken", log: quiet }).tool({
      name: "x", inputSchema: { type: "object", properties: { a: { $ref: "https://example.com/a.json" } } }, handler: () => 1,
    });
    await assert.rejects(w.start(5000), (e) => e instanceof KeelError && e.code === "invalid_argument" &&
                                                /tool x: input_schema: .*is not inside this schema/.test(e.message));
    const raw = await wk.request(`${wk.base}.tools.declare.${wk.who}`, { type: "declare_tools", queue: "q q", tools: [] }, "tools_declared")
      .catch((e) => e);
    assert.equal(raw.code, "invalid_argument");
    // An agent's queue is keel's: no tool worker may declare there.
    const onAgentQueue = await wk.request(`${wk.base}.tools.declare.${wk.who}`,
      { type: "declare_tools", queue: "desk", tools: [{ name: "x", input_schema: { type: "object" } }] }, "tools_declared").catch((e) => e);
    assert.equal(onAgentQueue.code, "invalid_argument");
    assert.match(onAgentQueue.message, /is an agent's queue/);
    // A person may not declare tools: the broker refuses it.
    await assert.rejects(k.request(`${k.base}.tools.declare.${k.who}`, { type: "declare_tools", queue: "q", tools: [] }, "tools_declared", 2000));
  } finally {
    await wk.close();
  }
});

function startWorker(id, env) {
  const child = spawn(process.execPath, [fileURLToPath(new URL("hang_worker.mjs", import.meta.url))], {
    env: { ...process.env, KEEL_HOME: keel.home, KEEL_WORKER_CREDENTIALS: keel.workerCredentials, WORKER_ID: id, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  return { child, ready: eventually(`worker ${id} ready`, () => out.includes("ready")), output: () => out };
}

test("tool worker: one killed during a call is replaced: another runs the call and the run completes", async () => {
  const calls = join(keel.home, "calls-kill.txt");
  writeFileSync(calls, "");
  const first = startWorker("first", { LOOKUP_DELAY_MS: "hang", CALLS_FILE: calls });
  let second;
  try {
    await first.ready;
    const { runId } = await k.invoke("slow", "Look it up.");
    await eventually("the first worker has the call", () => readFileSync(calls, "utf8").includes("first"));
    first.child.kill("SIGKILL");
    second = startWorker("second", { LOOKUP_DELAY_MS: "0", CALLS_FILE: calls });
    await second.ready;
    const done = await k.wait(runId, 60_000);
    assert.equal(done.status, "completed");
    assert.match(done.output, /found by second/);
    const lines = readFileSync(calls, "utf8").trim().split("\n");
    assert.equal(lines.length, 2);  // once on each: the first died during it
    assert.equal(new Set(lines.map((l) => l.split(" ")[1])).size, 1);  // the same call id both times
  } finally {
    first.child.kill("SIGKILL");
    if (second) {
      second.child.kill("SIGTERM");
      if (second.child.exitCode === null) await new Promise((r) => second.child.once("exit", r));
    }
  }
});

test("tool worker: one that never answers: the run gives up at the tool's timeout, says so, and goes on", async () => {
  const calls = join(keel.home, "calls-hang.txt");
  writeFileSync(calls, "");
  const hung = startWorker("hung", { LOOKUP_DELAY_MS: "hang", CALLS_FILE: calls, LOOKUP_TIMEOUT_MS: "2000" });
  try {
    await hung.ready;
    const { runId } = await k.invoke("slow", "Look it up.");
    const done = await k.wait(runId, 60_000);
    assert.equal(done.status, "completed");
    assert.match(done.output, /gave no result within 2 s/);
    const types = (await k.history(runId)).map((e) => e.event_type);
    assert.ok(types.includes("task_timed_out"));
    // The node goes on: another run is served by a worker that answers.
  } finally {
    hung.child.kill("SIGKILL");
  }
});

test("tool worker: SIGTERM during a call drains: the call finishes and is answered, then the worker exits", async () => {
  const calls = join(keel.home, "calls-drain.txt");
  writeFileSync(calls, "");
  const w = startWorker("drainer", { LOOKUP_DELAY_MS: "1500", CALLS_FILE: calls, LOOKUP_TIMEOUT_MS: "60000" });
  try {
    await w.ready;
    const { runId } = await k.invoke("slow", "Look it up.");
    await eventually("the call started", () => readFileSync(calls, "utf8").includes("drainer"));
    w.child.kill("SIGTERM");
    const code = await new Promise((r) => (w.child.exitCode !== null ? r(w.child.exitCode) : w.child.once("exit", r)));
    assert.equal(code, 0);
    assert.match(w.output(), /stopped; every call it held was answered/);
    const done = await k.wait(runId, 30_000);
    assert.equal(done.status, "completed");
    assert.match(done.output, /found by drainer/);
    assert.equal(readFileSync(calls, "utf8").trim().split("\n").length, 1);  // once: nothing handed on
  } finally {
    w.child.kill("SIGKILL");
  }
});
