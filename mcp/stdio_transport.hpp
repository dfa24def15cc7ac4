// MCP over stdio: a server started in the agent's sandbox (confined and limited as exec's
// commands are, in the workspace it serves), one JSON-RPC message per line each way. What the
// server writes to stderr is kept (its last 8 KiB) for the error that explains a failure.
#pragma once

#include "mcp/client.hpp"
#include "runtime/config.hpp"
#include "sandbox/policy.hpp"
#include "sandbox/workspace.hpp"

namespace keel::mcp {

result<std::unique_ptr<transport>> start_stdio(const config::mcp_server& server, const sandbox::workspace& ws,
                                               const sandbox::policy& p);

} // namespace keel::mcp
