// A tool worker for queue "tickets": two tools over an in-memory ticket store. Started by
// run.sh; drains on SIGTERM.
import { Keel, ToolWorker, ToolError } from "../../sdk/typescript/dist/index.js";

const tickets = new Map([["T-42", { title: "Login fails with SSO", state: "open" }]]);

const keel = await Keel.connect({ credentialsFile: process.env.KEEL_WORKER_CREDENTIALS });
const worker = new ToolWorker(keel, { queue: "tickets", slots: 4 })
  .tool({
    name: "lookup_ticket",
    description: "Find a ticket by its id; returns its title and state.",
    inputSchema: { type: "object", properties: { id: { type: "string", pattern: "^T-[0-9]+$" } }, required: ["id"],
                   additionalProperties: false },
    outputSchema: { type: "object", properties: { title: { type: "string" }, state: { enum: ["open", "closed"] } },
                    required: ["title", "state"] },
    approval: "never",
    handler: ({ id }) => {
      const t = tickets.get(id);
      if (!t) throw new ToolError(`no ticket ${id}`);
      return t;
    },
  })
  .tool({
    name: "close_ticket",
    description: "Close a ticket with a resolution. A person approves each close.",
    inputSchema: { type: "object", properties: { id: { type: "string" }, resolution: { type: "string", minLength: 3 } },
                   required: ["id", "resolution"] },
    approval: "always",
    form: { title: "Close this ticket?", show: ["id", "resolution"] },
    handler: ({ id, resolution }, call) => {
      const t = tickets.get(id);
      if (!t) throw new ToolError(`no ticket ${id}`);
      t.state = "closed";
      console.log(`closed ${id} (${resolution}) for call ${call.taskId}`);
      return { closed: id, resolution };
    },
  })
  .stopOnSignals();
await worker.start();
console.log("tool worker ready");
