// Invokes the support agent, follows its events, approves the close when the run asks, and
// exits 0 only when the run completed having looked the ticket up and closed it.
import { Keel } from "../../sdk/typescript/dist/index.js";

const keel = await Keel.connect();
const { runId } = await keel.invoke("support", "Close ticket T-42; it was fixed in 1.4.2.");
console.log(`run ${runId}`);
let output = "";
for await (const e of keel.events(runId)) {
  console.log(`  ${e.seq} ${e.event_type}`);
  if (e.event_type === "suspend") {
    const form = e.data.form;
    console.log(`  ${form.title} ${JSON.stringify(form.shown)}`);
    await keel.approve(runId, e.data.step_key, { by: "examples/typescript-tool" });
  }
  if (e.event_type === "run_completed") output = e.data.output;
  if (e.event_type === "run_failed") {
    console.error(`the run failed: ${e.data.error}`);
    process.exit(1);
  }
}
await keel.close();
console.log(output);
if (!output.includes("fixed in 1.4.2") || !output.includes("T-42")) {
  console.error("the run did not close the ticket");
  process.exit(1);
}
