#include "sandbox/policy.hpp"

namespace keel::sandbox {

policy policy_from_config(const config::agent_config& agent) {
  policy p;
  p.env.kind = agent.sandbox_env == "bwrap" ? environment_kind::bwrap : environment_kind::local;
  p.env.network = agent.network;
  p.env.limits = {agent.cpu_seconds_max, agent.memory_bytes_max, agent.processes_max,
                  agent.file_bytes_max, agent.written_bytes_max};
  p.env.env_pass = agent.env_pass;
  p.env.run_as = agent.run_as.empty() ? sandbox_account : agent.run_as;
  p.tool_timeout_ms = agent.tool_timeout_ms;
  p.walk_entries_max = static_cast<std::size_t>(agent.walk_entries_max);
  p.exec = agent.exec_security == "allow-always" ? exec_security::allow_always
           : agent.exec_security == "allowlist"  ? exec_security::allowlist
                                                 : exec_security::approval_always;
  p.allowlist = agent.allowlist;
  p.file_approval = agent.file_approval;
  p.outside = agent.path_restriction == "deny" ? outside_access::deny : outside_access::approve;
  p.exec_timeout_ms = agent.exec_timeout_ms;
  p.output_chars_max = static_cast<std::size_t>(agent.output_chars_max);
  p.commands = agent.commands;
  return p;
}

} // namespace keel::sandbox
