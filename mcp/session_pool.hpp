// The MCP servers a worker talks to for its agents: one session per server (and, for a stdio
// server, per workspace: it runs inside it), started when a run first needs it, reused by every
// call after, stopped after `idle_ms` unused or when it fails (the next call starts another).
// It turns the servers' tools into tools the model is told of (<server>__<tool>), and a call of
// one into the outcome a sandbox tool gives: done (the content as text, bounded), an error the
// model reads, or a form for a person (approval "always", the default) that the approved call
// must match. One mutex guards the table; each session has its own, held for one call.
#pragma once

#include "runtime/config.hpp"
#include "runtime/wire.hpp"
#include "sandbox/tools.hpp"

#include <memory>
#include <string>
#include <vector>

namespace keel::mcp {

class session_pool {
public:
  explicit session_pool(std::size_t sessions_max = 64);
  ~session_pool();
  session_pool(const session_pool&) = delete;
  session_pool& operator=(const session_pool&) = delete;

  // The tools of the agent's MCP servers as the model is told of them; a server that cannot be
  // started or listed is left out, with why in `problems`.
  std::vector<wire::value> model_tools(const config::agent_config& agent, const std::string& workspace_root,
                                       std::vector<std::string>& problems);

  // The server of a tool name <server>__<tool> among the agent's, with the tool's own name.
  static const config::mcp_server* server_of(const config::agent_config& agent, const std::string& name, std::string& tool);

  sandbox::tool_outcome call(const config::agent_config& agent, const config::mcp_server& server,
                             const std::string& workspace_root, const sandbox::tool_request& request,
                             const std::string& tool);

  std::size_t running() const;
  void stop_all();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace keel::mcp
