// keel's SDK for Node.js: a client (invoke, follow, approve, wait, list) and tool workers.
export { Keel, type ConnectOptions, type InvokeOptions, type ResumeOptions, type RunEvent, type RunSummary } from "./keel.js";
export { ToolWorker, ToolError, NeedsApproval, type ToolCall, type ToolSpec, type ToolWorkerOptions } from "./tool_worker.js";
export { KeelError, pack, unpack } from "./wire.js";
export { readContext, readCredentials, keelHome, type Context, type Credentials } from "./context.js";
