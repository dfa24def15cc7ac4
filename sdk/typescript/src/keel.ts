// A connection to keel over NATS, and the client side of the protocol (docs/PROTOCOL.md): invoke
// runs, follow their events whole and in order, answer approvals, wait, list, cancel, retry.
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { readContext, readCredentials } from "./context.js";
import { expectReply, KeelError, pack, PROTOCOL_VERSION, unpack, validName, type Message } from "./wire.js";

export interface ConnectOptions {
  // NATS servers; default: the context file of `keel dev` or scripts/cluster.sh.
  servers?: string | string[];
  // A broker credentials file (TOML user, password, role); default: the context file's.
  credentialsFile?: string;
  user?: string;
  password?: string;
  prefix?: string;
  namespace?: string;
  // Shown by nats-server's monitoring.
  name?: string;
  // Requests without an answer in this long fail with a `timeout` KeelError (default 10 s).
  requestTimeoutMs?: number;
  // Where the context file is ($KEEL_HOME, default ~/.keel).
  home?: string;
}

export interface InvokeOptions {
  idempotencyKey?: string;
  sessionId?: string;
  provider?: string;
  model?: string;
  // The run's key in its agent's run queue (docs/WORKFLOWS.md).
  concurrencyKey?: string;
}

export interface ResumeOptions {
  feedback?: string;
  always?: "exact" | "prefix";
  alwaysScope?: "run" | "session";
  by?: string;
}

export interface RunEvent {
  run_id: string;
  seq: number;
  event_type: string;
  time_ms: number;
  data: Record<string, unknown>;
}

export type RunSummary = Record<string, unknown> & { run_id: string; status: string };

const terminal = new Set(["run_completed", "run_failed", "run_cancelled"]);

export class Keel {
  private constructor(
    readonly nats: NatsConnection,
    readonly who: string,
    readonly base: string,
    readonly prefix: string,
    readonly namespace: string,
    readonly requestTimeoutMs: number,
  ) {}

  static async connect(o: ConnectOptions = {}): Promise<Keel> {
    let servers = o.servers;
    let credentialsFile = o.credentialsFile;
    let prefix = o.prefix;
    let namespace = o.namespace;
    if (servers === undefined) {
      const c = readContext(o.home);
      servers = c.natsUrl;
      credentialsFile ??= c.credentialsFile;
      prefix ??= c.prefix;
      namespace ??= c.namespace;
    }
    let user = o.user;
    let password = o.password;
    if (user === undefined && credentialsFile) {
      const c = readCredentials(credentialsFile);
      user = c.user;
      password = c.password;
    }
    const who = user ?? "sdk";
    if (!validName(who)) throw new KeelError("invalid_argument", `user '${who}' is not a name keel takes`);
    const nats = await connect({
      servers,
      user,
      pass: password,
      name: o.name ?? `keel-sdk ${who}`,
      // A user's replies come to inboxes under its name: the only ones its permissions let it read.
      inboxPrefix: user ? `_INBOX.${user}` : undefined,
      maxReconnectAttempts: -1,
    });
    prefix ??= "keel";
    namespace ??= "default";
    return new Keel(nats, who, `${prefix}.${namespace}`, prefix, namespace, o.requestTimeoutMs ?? 10_000);
  }

  async close(): Promise<void> {
    await this.nats.drain();
  }

  // A request and its reply of `type`; an error reply is thrown as a KeelError.
  async request(subject: string, body: Message, type: string, timeoutMs = this.requestTimeoutMs): Promise<Message> {
    let reply;
    try {
      reply = await this.nats.request(subject, pack({ v: PROTOCOL_VERSION, ...body }), { timeout: timeoutMs });
    } catch (e) {
      const text = String((e as Error).message ?? e);
      if (/no responders/i.test(text)) throw new KeelError("unavailable", `nobody answers on ${subject}`);
      if (/timeout/i.test(text)) throw new KeelError("timeout", `no answer on ${subject} within ${timeoutMs} ms`);
      throw new KeelError("unavailable", text);
    }
    return expectReply(reply.data, type);
  }

  async invoke(agent: string, input: unknown, o: InvokeOptions = {}): Promise<{ runId: string; created: boolean }> {
    const reply = await this.request(`${this.base}.invoke.${this.who}`, {
      type: "invoke",
      agent,
      input,
      idempotency_key: o.idempotencyKey,
      session_id: o.sessionId,
      provider: o.provider,
      model: o.model,
      concurrency_key: o.concurrencyKey,
    }, "invoke_reply");
    return { runId: String(reply.run_id), created: reply.created !== false };
  }

  async get(runId: string): Promise<RunSummary> {
    return (await this.request(`${this.base}.runs.${runId}.get`, { type: "get_run" }, "run")).run as RunSummary;
  }

  // Once the run is not running (suspended, waiting, completed, failed or cancelled). A run in line
  // in its run queue is waited for until it has gone and stopped.
  async wait(runId: string, timeoutMs = 600_000): Promise<RunSummary> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = Math.max(1, deadline - Date.now());
      const run = (await this.request(`${this.base}.runs.${runId}.wait`, { type: "wait" }, "run", left)).run as RunSummary;
      if (run.status !== "queued" || Date.now() >= deadline) return run;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  // The run queues: their limits, the runs going and the runs in line.
  async queues(): Promise<Record<string, unknown>[]> {
    return (await this.request(`${this.base}.queues.list`, { type: "list_queues" }, "queue_list")).queues as Record<string, unknown>[];
  }

  async history(runId: string, fromSeq = 1): Promise<RunEvent[]> {
    const out: RunEvent[] = [];
    for (let from = fromSeq; ; ) {
      const h = await this.request(`${this.base}.runs.${runId}.history`, { type: "get_history", from_seq: from, limit: 1000 }, "history");
      const events = (h.events ?? []) as RunEvent[];
      out.push(...events);
      if (!h.more || events.length === 0) return out;
      from = events[events.length - 1].seq + 1;
    }
  }

  // Every event of the run from `fromSeq`, once each and in order: the history first, then live
  // ones (a gap in what arrives live is filled from the history). Ends after the run's end
  // (completed, failed or cancelled) unless `follow` is "forever", or when `signal` aborts.
  async *events(runId: string, o: { fromSeq?: number; signal?: AbortSignal; follow?: "until_end" | "forever" } = {}): AsyncGenerator<RunEvent> {
    const live = this.nats.subscribe(`${this.base}.runs.${runId}.events`);
    const stop = () => live.unsubscribe();
    o.signal?.addEventListener("abort", stop, { once: true });
    try {
      let next = o.fromSeq ?? 1;
      const emit = function* (events: RunEvent[]) {
        for (const e of events)
          if (e.seq === next) {
            next += 1;
            yield e;
          }
      };
      let ended = false;
      for (const e of emit(await this.history(runId, next))) {
        yield e;
        if (terminal.has(e.event_type)) ended = true;
      }
      if (ended && o.follow !== "forever") return;
      for await (const m of live) {
        const e = unpack(m.data) as unknown as RunEvent;
        if (e.seq < next) continue;
        const batch = e.seq === next ? [e] : await this.history(runId, next);
        for (const got of emit(batch)) {
          yield got;
          if (terminal.has(got.event_type) && o.follow !== "forever") return;
        }
      }
    } finally {
      o.signal?.removeEventListener("abort", stop);
      live.unsubscribe();
    }
  }

  async resume(runId: string, stepKey: string, approved: boolean, o: ResumeOptions = {}): Promise<{ duplicate: boolean }> {
    const reply = await this.request(`${this.base}.runs.${runId}.resume.${this.who}`, {
      type: "resume",
      step_key: stepKey,
      data: { approved, feedback: o.feedback, always: o.always, always_scope: o.alwaysScope, by: o.by },
    }, "resume_reply");
    return { duplicate: reply.duplicate === true };
  }

  approve(runId: string, stepKey: string, o: ResumeOptions = {}) {
    return this.resume(runId, stepKey, true, o);
  }

  reject(runId: string, stepKey: string, feedback = "", o: ResumeOptions = {}) {
    return this.resume(runId, stepKey, false, { ...o, feedback });
  }

  async cancel(runId: string, reason?: string): Promise<RunSummary> {
    return (await this.request(`${this.base}.runs.${runId}.cancel.${this.who}`, { type: "cancel", reason }, "run")).run as RunSummary;
  }

  // An outside event for a run (docs/WORKFLOWS.md): taken by its wait_for_event of that name, or
  // kept until it waits. Give `id` to make a retry safe (a repeat is answered `duplicate`).
  async signal(runId: string, name: string, payload?: unknown, id?: string):
    Promise<{ run_id: string; id: string; delivered: boolean; duplicate: boolean }> {
    const reply = await this.request(`${this.base}.runs.${runId}.signal.${this.who}`, { type: "signal", name, payload, id }, "signal_reply");
    return reply as never;
  }

  async retry(runId: string): Promise<RunSummary> {
    return (await this.request(`${this.base}.runs.${runId}.retry.${this.who}`, { type: "retry" }, "run")).run as RunSummary;
  }

  // Runs, newest first, merged from every orchestrator's answer (each answers within `waitMs`).
  async list(filter: { status?: string; agent?: string; sessionId?: string; limit?: number } = {}, waitMs = 1000): Promise<RunSummary[]> {
    const limit = filter.limit ?? 50;
    const body = pack({ v: PROTOCOL_VERSION, type: "list_runs", status: filter.status, agent: filter.agent,
                        session_id: filter.sessionId, limit });
    const runs: RunSummary[] = [];
    const replies = await this.nats.requestMany(`${this.base}.runs.list`, body, { strategy: "timer", maxWait: waitMs } as never);
    for await (const m of replies) {
      const r = expectReply(m.data, "run_list");
      runs.push(...((r.runs ?? []) as RunSummary[]));
    }
    runs.sort((a, b) => Number(b.created_ms) - Number(a.created_ms) || String(b.run_id).localeCompare(String(a.run_id)));
    return runs.slice(0, limit);
  }

  // The tools that tool workers declared, by queue.
  async tools(): Promise<Array<{ queue: string; by: string; time_ms: number; tools: Array<Record<string, unknown>> }>> {
    return (await this.request(`${this.base}.tools.list`, { type: "list_tools" }, "tool_list")).queues as never;
  }
}
