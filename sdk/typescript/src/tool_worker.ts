// A tool worker (docs/PROTOCOL.md, "Tool workers"): declares tools for a queue and serves their
// calls from keel's work queue with the protocol's promises. A task is fetched only into a free
// slot, said "in progress" until its result is on the owner's disk, checked with its run before
// it runs when it was delivered again or waited, run once per delivery to this worker (a repeat
// gets the first result), and its result offered until the owner has it; SIGTERM drains.
import { hostname } from "node:os";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type Consumer, type JsMsg } from "@nats-io/jetstream";
import type { Subscription } from "@nats-io/transport-node";
import type { Keel } from "./keel.js";
import { expectReply, KeelError, pack, PROTOCOL_VERSION, unpack, validName, type Message } from "./wire.js";

export interface ToolCall {
  runId: string;
  step: number;
  attempt: number;
  callId: string;
  // `<run>/<step>`: the same for every attempt and delivery of this call (a tool can tell a repeat).
  taskId: string;
  agent: string;
  sessionId: string;
  approved: boolean;
  deliveries: number;
  deadlineMs: number;     // the run stops waiting then (wall clock, ms)
  signal: AbortSignal;    // aborted at the deadline, and when the worker stops past its drain bound
}

export interface ToolSpec<A = any, R = unknown> {
  name: string;
  description?: string;
  inputSchema: Record<string, unknown>;
  outputSchema?: Record<string, unknown>;
  approval?: "always" | "never";
  form?: { title?: string; show?: string[] };
  timeoutMs?: number;
  resultBytesMax?: number;
  handler: (args: A, call: ToolCall) => R | Promise<R>;
}

// Thrown by a handler: the model gets an error result with this message, and the run goes on.
export class ToolError extends Error {
  constructor(message: string, readonly details?: unknown) {
    super(message);
    this.name = "ToolError";
  }
}

// Returned by a handler for a call that needs a person after all (when `call.approved` is false):
// the run waits with this form; the call comes again with `approved: true` if they approve.
export class NeedsApproval {
  constructor(readonly form: Record<string, unknown>) {}
}

export interface ToolWorkerOptions {
  queue: string;
  slots?: number;              // calls at once (default 4)
  livenessMs?: number;         // the cluster's worker.liveness_ms (default 4000)
  checkAfterMs?: number;       // the cluster's worker.check_after_ms (default 1000)
  deliveriesMax?: number;      // the cluster's worker.task_deliveries_max (default 5)
  resultDeliveryMs?: number;   // the cluster's worker.result_delivery_ms (default 600,000)
  heartbeatMs?: number;        // default 1000
  drainTimeoutMs?: number;     // SIGTERM: how long held calls may take to finish (default 30 s)
  nodeId?: string;             // shown by `keel nodes` (default tool-<queue>-<host>-<pid>)
  log?: (level: "info" | "warn" | "error", line: string) => void;
}

interface Held {
  msg: JsMsg;
  abort: AbortController;
  timers: NodeJS.Timeout[];
}

const recentMax = 1000;
const handlerGraceMs = 30_000;
const recentBytesMax = 64 << 10;  // a result kept for a repeat (larger ones: the call runs again)

// An epoch from a message: a safe integer above 0, else 0 (none; one beyond 2^53 cannot be kept
// exactly here, and is not believed).
function epochOf(v: unknown): number {
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : 0;
}

export class ToolWorker {
  private readonly tools = new Map<string, ToolSpec>();
  private readonly o: Required<Omit<ToolWorkerOptions, "log" | "nodeId">> & { nodeId: string };
  private readonly log: NonNullable<ToolWorkerOptions["log"]>;
  private readonly held = new Map<string, Held>();
  private readonly recent = new Map<string, Message>();  // task id → the payload answered
  // The owners' epochs seen, per domain (the node id in a run id): an answer of an older owner
  // than one seen is not acted on (docs/PROTOCOL.md, "Epochs").
  private readonly epochs = new Map<string, number>();
  private readonly startedMs = Date.now();
  private consumer?: Consumer;
  private running = false;
  private stopping = false;
  private slotFreed?: () => void;
  private loopDone?: Promise<void>;
  private heartbeatTimer?: NodeJS.Timeout;
  private ping?: Subscription;

  constructor(private readonly keel: Keel, o: ToolWorkerOptions) {
    if (!validName(o.queue)) throw new KeelError("invalid_argument", `queue '${o.queue}': 1 to 64 of A-Z a-z 0-9 _ -`);
    this.o = {
      queue: o.queue,
      slots: o.slots ?? 4,
      livenessMs: o.livenessMs ?? 4000,
      checkAfterMs: o.checkAfterMs ?? 1000,
      deliveriesMax: o.deliveriesMax ?? 5,
      resultDeliveryMs: o.resultDeliveryMs ?? 600_000,
      heartbeatMs: o.heartbeatMs ?? 1000,
      drainTimeoutMs: o.drainTimeoutMs ?? 30_000,
      nodeId: o.nodeId ?? `tool-${o.queue}-${hostname().replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 20)}-${process.pid}`,
    };
    this.log = o.log ?? ((level, line) => console.error(`[${level}] ${this.o.nodeId}: ${line}`));
  }

  get nodeId(): string {
    return this.o.nodeId;
  }

  tool<A = any, R = unknown>(spec: ToolSpec<A, R>): this {
    if (!validName(spec.name)) throw new KeelError("invalid_argument", `tool '${spec.name}': 1 to 64 of A-Z a-z 0-9 _ -`);
    if (this.running) throw new KeelError("conflict", "declare every tool before start()");
    this.tools.set(spec.name, spec as ToolSpec);
    return this;
  }

  // Declares the tools (asking again until an orchestrator answers, up to `waitMs`), binds to the
  // queue's consumer (made if it is not there), and starts taking calls.
  async start(waitMs = 60_000): Promise<void> {
    const until = Date.now() + waitMs;
    await this.retrying(until, "declaring the tools", () => this.declare());
    this.consumer = await this.retrying(until, "binding to the work queue", () => this.bind());
    this.running = true;
    this.ping = this.keel.nats.subscribe(`${this.keel.base}.nodes.ping`, {
      callback: (_e, m) => {
        m.respond(pack(this.heartbeat("up")));
      },
    });
    this.heartbeatTimer = setInterval(() => this.keel.nats.publish(`${this.keel.base}.nodes.heartbeat`, pack(this.heartbeat("up"))),
                                      this.o.heartbeatMs);
    this.keel.nats.publish(`${this.keel.base}.nodes.heartbeat`, pack(this.heartbeat("up")));
    this.loopDone = this.fetchLoop();
    this.log("info", `serving ${[...this.tools.keys()].join(", ")} on queue ${this.o.queue} with ${this.o.slots} slots`);
  }

  // Takes nothing new, finishes (and answers) what it holds, then stops: what is still held
  // after drainTimeoutMs is aborted and left to another worker (after liveness).
  async drain(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.slotFreed?.();
    this.keel.nats.publish(`${this.keel.base}.nodes.heartbeat`, pack(this.heartbeat("stopping")));
    const until = Date.now() + this.o.drainTimeoutMs;
    // A fetch in flight ends within its expiry; what it brings is held and finished like the rest.
    await this.loopDone;
    while (this.held.size > 0 && Date.now() < until) await sleep(50);
    for (const h of this.held.values()) h.abort.abort(new Error("the worker stopped"));
    clearInterval(this.heartbeatTimer);
    this.ping?.unsubscribe();
    this.log("info", this.held.size ? `stopped with ${this.held.size} calls unfinished` : "stopped; every call it held was answered");
  }

  // SIGTERM and SIGINT drain, close the connection and exit.
  stopOnSignals(): this {
    const stop = async () => {
      await this.drain();
      await this.keel.close();
      process.exit(0);
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
    return this;
  }

  private heartbeat(state: string): Message {
    return {
      v: PROTOCOL_VERSION, type: "heartbeat", node_id: this.o.nodeId, roles: ["worker"], agents: [],
      queues: [this.o.queue], state, started_ms: this.startedMs, time_ms: Date.now(), pid: process.pid,
      host: hostname(), version: "keel-sdk-typescript 0.1.0", interval_ms: this.o.heartbeatMs, runs_in_memory: 0,
      slots: this.o.slots, slots_busy: this.held.size,
    };
  }

  private async declare(): Promise<void> {
    const tools = [...this.tools.values()].map((t) => ({
      name: t.name, description: t.description ?? "", input_schema: t.inputSchema, output_schema: t.outputSchema,
      approval: t.approval, form: t.form, timeout_ms: t.timeoutMs, result_bytes_max: t.resultBytesMax,
    }));
    const reply = await this.keel.request(`${this.keel.base}.tools.declare.${this.keel.who}`,
                                          { type: "declare_tools", queue: this.o.queue, tools }, "tools_declared");
    this.log("info", `declared ${(reply.tools as string[]).join(", ")} for queue ${this.o.queue}`);
  }

  private async bind(): Promise<Consumer> {
    const stream = `KEEL_TASKS_${this.keel.prefix}_${this.keel.namespace}`;
    const durable = `workers_${this.o.queue}`;
    const jsm = await jetstreamManager(this.keel.nats);
    try {
      const info = await jsm.consumers.info(stream, durable);
      const ackWaitMs = Math.floor(Number(info.config.ack_wait ?? 0) / 1_000_000);
      if (ackWaitMs > 0 && ackWaitMs !== this.o.livenessMs) {
        this.log("warn", `the consumer ${durable} hands a silent task on after ${ackWaitMs} ms (livenessMs is ${this.o.livenessMs}): using its`);
        this.o.livenessMs = ackWaitMs;
      }
    } catch {
      await jsm.consumers.add(stream, {
        durable_name: durable, filter_subject: `${this.keel.base}.tasks.${this.o.queue}.>`, ack_policy: AckPolicy.Explicit,
        ack_wait: this.o.livenessMs * 1_000_000, max_deliver: -1, max_ack_pending: 100_000, deliver_policy: DeliverPolicy.All,
      });
    }
    return jetstream(this.keel.nats).consumers.get(stream, durable);
  }

  // Asked again (unavailable: nobody up yet) with growing pauses until `until`.
  private async retrying<T>(until: number, what: string, f: () => Promise<T>): Promise<T> {
    for (let pause = 100; ; pause = Math.min(pause * 2, 2000)) {
      try {
        return await f();
      } catch (e) {
        const code = (e as KeelError).code;
        if ((code && code !== "unavailable" && code !== "timeout") || Date.now() + pause > until) throw e;
        this.log("warn", `${what}: ${(e as Error).message}; trying again`);
        await sleep(pause);
      }
    }
  }

  private async fetchLoop(): Promise<void> {
    let pause = 100;
    while (!this.stopping) {
      const free = this.o.slots - this.held.size;
      if (free <= 0) {
        await new Promise<void>((resolve) => (this.slotFreed = resolve));
        continue;
      }
      try {
        const batch = await this.consumer!.fetch({ max_messages: free, expires: 2000 });
        for await (const m of batch) this.take(m);  // fetched as it stops too: held, so finished
        pause = 100;
      } catch (e) {
        if (this.stopping) break;
        this.log("warn", `fetching tasks: ${(e as Error).message}; trying again in ${pause} ms`);
        await sleep(pause);
        pause = Math.min(pause * 2, 5000);
      }
    }
  }

  private take(m: JsMsg): void {
    const key = `${m.info.streamSequence}`;
    const h: Held = { msg: m, abort: new AbortController(), timers: [] };
    this.held.set(key, h);
    h.timers.push(setInterval(() => m.working(), Math.max(50, this.o.livenessMs / 4)));
    this.serve(m, h)
      .catch((e) => this.log("error", `a task: ${(e as Error).stack ?? e}`))
      .finally(() => {
        for (const t of h.timers) clearInterval(t);
        this.held.delete(key);
        this.slotFreed?.();
      });
  }

  private async serve(m: JsMsg, h: Held): Promise<void> {
    let task: Message;
    try {
      task = unpack(m.data);
    } catch (e) {
      this.log("error", `a message on queue ${this.o.queue} is not a task (${(e as Error).message}); dropped`);
      m.ack();
      return;
    }
    const payload = (task.payload ?? {}) as Message;
    const runId = String(task.run_id ?? "");
    const step = Number(task.step ?? 0);
    const attempt = Number(task.attempt ?? 1);
    const taskId = `${runId}/${step}/${attempt}`;
    const replyTo = String(task.reply_to ?? "");
    if (!runId || !replyTo) {
      this.log("error", `a task on queue ${this.o.queue} has no run or reply subject; dropped`);
      m.ack();
      return;
    }
    const named = epochOf(task.epoch);
    const newest = this.sawEpoch(runId, named);
    const answer = (p: { ok: boolean; payload?: unknown; error?: { code: string; message: string } }) =>
      this.answer(m, h, replyTo, { v: PROTOCOL_VERSION, type: "task_result", run_id: runId, step, attempt,
                                   worker: this.o.nodeId, ...(newest > 0 ? { epoch: newest } : {}), ...p });
    const deliveries = m.info.deliveryCount;
    if (deliveries > this.o.deliveriesMax) {
      // Asked once first: no longer wanted, it is dropped; while the run cannot say (another
      // worker's result for it may be being written), it is handed back rather than failed.
      const wanted = await this.wanted(runId, step, attempt);
      if (wanted === false) {
        this.log("info", `task ${taskId}: no longer wanted by its run; dropped unrun`);
        m.ack();
        return;
      }
      if (wanted === undefined) {
        this.log("warn", `task ${taskId}: handed out ${deliveries} times and its run cannot say whether it wants it; handed back`);
        m.nak(2000);
        return;
      }
      return answer({ ok: false, error: { code: "exhausted", message: `handed out ${deliveries} times: its workers died during it` } });
    }
    // Past its deadline by this machine's clock, delivered again, or after a wait: the run says
    // whether it still wants the call (its clock decides, not this one). While it cannot say, the
    // task is kept (handing it back would count as a delivery) and the run asked again.
    const deadlineMs = Number(payload.deadline_ms ?? 0);
    const waitedMs = Date.now() - Math.floor(Number(m.info.timestampNanos) / 1_000_000);
    const olderOwner = named > 0 && named < newest;
    if (deliveries > 1 || olderOwner || waitedMs > this.o.checkAfterMs || (deadlineMs > 0 && Date.now() > deadlineMs)) {
      const askUntil = Date.now() + this.o.resultDeliveryMs;
      for (let pause = 250; ; pause = Math.min(pause * 2, 2000)) {
        const wanted = await this.wanted(runId, step, attempt);
        if (wanted === undefined && Date.now() + pause > askUntil) {
          this.log("warn", `task ${taskId}: its run could not say for ${this.o.resultDeliveryMs / 1000} s whether it wants it; handed back`);
          m.nak(1000);
          return;
        }
        if (wanted === false) {
          this.log("info", `task ${taskId}: no longer wanted by its run; dropped unrun`);
          m.ack();
          return;
        }
        if (wanted === true) break;
        if (h.abort.signal.aborted) return;  // the worker stopped: left to another after liveness
        await sleep(pause);
      }
    }
    const earlier = this.recent.get(taskId);
    if (earlier) return answer({ ok: true, payload: earlier });
    if (task.kind !== "tool")
      return answer({ ok: false, error: { code: "invalid_argument", message: `queue ${this.o.queue} serves tools, not ${String(task.kind)} tasks` } });
    const spec = this.tools.get(String(payload.tool ?? ""));
    if (!spec)
      return answer({ ok: false, error: { code: "unavailable", message: `this worker of queue ${this.o.queue} has no tool '${String(payload.tool)}'` } });
    let gaveUp!: () => void;
    const givenUp = new Promise<"given up">((resolve) => (gaveUp = () => resolve("given up")));
    if (deadlineMs > 0) {
      h.timers.push(setTimeout(() => h.abort.abort(new Error("the run stopped waiting for this call")), Math.max(0, deadlineMs - Date.now())));
      // A handler that ignores the abort holds its slot no longer than a grace after the deadline.
      h.timers.push(setTimeout(gaveUp, Math.max(0, deadlineMs - Date.now()) + handlerGraceMs));
    }
    const call: ToolCall = {
      runId, step, attempt, callId: String(payload.call_id ?? ""), taskId: `${runId}/${step}`, agent: String(task.agent ?? ""),
      sessionId: String(payload.session_id ?? ""), approved: payload.approved === true, deliveries, deadlineMs, signal: h.abort.signal,
    };
    let result: Message;
    try {
      const out = await Promise.race([Promise.resolve().then(() => spec.handler(payload.arguments ?? {}, call)), givenUp]);
      if (out === "given up") {
        this.log("warn", `task ${taskId}: the handler ran ${handlerGraceMs / 1000} s past the run's deadline; its slot is freed`);
        m.ack();  // the run gave the call up already
        return;
      }
      result = out instanceof NeedsApproval ? { status: "needs_approval", form: out.form }
                                             : { status: "done", result: out === undefined ? null : out, is_error: false };
    } catch (e) {
      const message = e instanceof ToolError ? e.message : `tool ${spec.name} failed: ${(e as Error).message ?? e}`;
      if (!(e instanceof ToolError)) this.log("warn", `task ${taskId}: ${(e as Error).stack ?? e}`);
      result = { status: "done", result: { error: message, details: e instanceof ToolError ? e.details : undefined }, is_error: true };
    }
    try {
      if (pack(result).length <= recentBytesMax) {
        this.recent.set(taskId, result);
        if (this.recent.size > recentMax) this.recent.delete(this.recent.keys().next().value as string);
      }
    } catch {
      // not encodable: answer() says so; nothing is kept
    }
    return answer({ ok: true, payload: result });
  }

  // Whether the run still wants this attempt: true, false, or undefined when it cannot say.
  private async wanted(runId: string, step: number, attempt: number): Promise<boolean | undefined> {
    try {
      const known = this.epochs.get(runId.slice(17)) ?? 0;
      const r = await this.keel.request(`${this.keel.base}.runs.${runId}.task_wanted`,
                                        { type: "task_wanted", step, attempt, ...(known > 0 ? { epoch: known } : {}) },
                                        "task_wanted", 5000);
      const epoch = epochOf(r.epoch);
      if (epoch > 0 && epoch < this.sawEpoch(runId, epoch)) return undefined;  // an owner older than one seen
      return r.wanted === true;
    } catch (e) {
      return (e as KeelError).code === "not_found" ? false : undefined;
    }
  }

  // Records an owner's epoch for the run's domain; returns the highest seen. The map keeps the
  // most recently used domains last (the first is forgotten past 4,096).
  private sawEpoch(runId: string, epoch: number): number {
    const domain = runId.slice(17);
    const known = this.epochs.get(domain) ?? 0;
    if (known === 0 && epoch === 0) return 0;
    this.epochs.delete(domain);
    if (this.epochs.size >= 4096) this.epochs.delete(this.epochs.keys().next().value as string);
    this.epochs.set(domain, Math.max(known, epoch));
    return Math.max(known, epoch);
  }

  // Offers the result until the owner has it on disk (a repeat is harmless: the first is kept),
  // then acknowledges the task. Never gives it back: another worker would make the call again.
  private async answer(m: JsMsg, h: Held, replyTo: string, result: Message): Promise<void> {
    // A result that cannot be encoded, or is larger than the broker carries, is an error result
    // that says so: the model sees it; the call is not run again.
    const maxPayload = this.keel.nats.info?.max_payload ?? 1 << 20;
    let bytes: Uint8Array;
    try {
      bytes = pack(result);
      if (bytes.length > maxPayload - 4096) throw new Error(`the result is ${bytes.length} bytes, more than the broker carries (${maxPayload})`);
    } catch (e) {
      bytes = pack({ ...result, ok: true,
                     payload: { status: "done", is_error: true, result: { error: `the tool's result could not be sent: ${(e as Error).message}` } } });
    }
    const started = Date.now();
    let said = started;
    for (let pause = 50; ; pause = Math.min(pause * 2, 2000)) {
      try {
        const reply = await this.keel.nats.request(replyTo, bytes, { timeout: 5000 });
        expectReply(reply.data, "result_recorded");
        m.ack();
        return;
      } catch (e) {
        const code = (e as KeelError).code;
        if (code && code !== "unavailable" && code !== "timeout" && code !== "unknown") {
          this.log("error", `run ${String(result.run_id)}: its owner refused a result (${(e as Error).message}); the task is dropped`);
          m.ack();
          return;
        }
      }
      if (h.abort.signal.aborted && this.stopping) return;  // stopped past the drain bound: left to another worker
      if (Date.now() - said > 30_000) {
        said = Date.now();
        this.log("warn", `run ${String(result.run_id)}: its owner has not taken the result for ${Math.round((said - started) / 1000)} s; still trying`);
      }
      await sleep(pause);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
