// A tool worker in a process of its own, for tests that kill it: `lookup` answers after
// LOOKUP_DELAY_MS (forever when "hang"), and writes each call it starts to CALLS_FILE.
import { appendFileSync } from "node:fs";
import { Keel, ToolWorker } from "../dist/index.js";

const keel = await Keel.connect({ home: process.env.KEEL_HOME, credentialsFile: process.env.KEEL_WORKER_CREDENTIALS });
const worker = new ToolWorker(keel, { queue: "lookups", slots: 2, nodeId: process.env.WORKER_ID })
  .tool({
    name: "lookup",
    description: "Looks something up, slowly.",
    inputSchema: { type: "object", properties: { q: { type: "string" } }, required: ["q"] },
    approval: "never",
    timeoutMs: Number(process.env.LOOKUP_TIMEOUT_MS || 60000),
    handler: async ({ q }, call) => {
      appendFileSync(process.env.CALLS_FILE, `${process.env.WORKER_ID} ${call.taskId}\n`);
      if (process.env.LOOKUP_DELAY_MS === "hang") await new Promise(() => {});
      await new Promise((r) => setTimeout(r, Number(process.env.LOOKUP_DELAY_MS || 0)));
      return { answer: `${q}: found by ${process.env.WORKER_ID}` };
    },
  })
  .stopOnSignals();
await worker.start();
console.log("ready");
