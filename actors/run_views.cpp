#include "actors/run_views.hpp"

#include "runtime/run_state.hpp"

namespace keel::actors {

using wire::value;

// The run as clients see it (keel show, keel runs).
value summary(const store::run_record& r) {
  value out{{"run_id", r.run_id},         {"agent", r.agent},
            {"status", store::to_string(r.status)}, {"session_id", r.session_id},
            {"created_ms", r.created_ms}, {"updated_ms", r.updated_ms},
            {"last_event_seq", r.last_event_seq}};
  auto state = store::run_state_from_value(r.state);
  if (!state) {
    // Damaged on disk: the header is shown, with what is wrong (or what a failed load recorded).
    out["error"] = r.state.is_object() && r.state.contains("error") && r.state["error"].is_string()
                     ? r.state["error"].get<std::string>()
                     : state.error().message;
    return out;
  }
  const auto& s = *state;
  out["steps"] = s.steps;
  out["usage"] = value{{"input_tokens", s.usage.input_tokens}, {"output_tokens", s.usage.output_tokens},
                       {"cache_read_tokens", s.usage.cache_read_tokens}, {"cache_write_tokens", s.usage.cache_write_tokens}};
  // Cost by the configured prices: the run's own steps, and with its child runs'.
  out["cost_usd"] = s.cost_usd;
  out["total_cost_usd"] = s.cost_usd + s.children_cost_usd;
  out["input"] = s.input;
  if (!s.provider.empty()) out["provider"] = s.provider;  // this run's own, when it overrides the agent's
  if (!s.model.empty()) out["model"] = s.model;
  if (s.fork.is_object()) {  // a fork (docs/FORKS.md): the run it came from, and how far it was replayed
    auto field = [&](const char* key) { return s.fork.contains(key) ? s.fork[key] : value(); };
    out["fork"] = value{{"run_id", field("run_id")}, {"at_step", field("at_step")}, {"replayed_calls", field("replayed_calls")}};
    if (s.system_prompt) out["fork"]["system_prompt_changed"] = true;
  }
  if (s.output) out["output"] = *s.output;
  if (s.stop_reason) out["stop_reason"] = *s.stop_reason;
  if (s.error) out["error"] = *s.error;
  if (s.suspended) {
    out["waiting"] = value{{"step_key", s.suspended->step_key}, {"form", s.suspended->form}};
    if (s.suspended->expires_ms > 0) out["waiting"]["expires_ms"] = s.suspended->expires_ms;
    if (!s.suspended->escalated_to.empty()) out["waiting"]["escalated_to"] = s.suspended->escalated_to;
  }
  // Workflows: what a waiting run waits for, the events kept for it, its time limit.
  if (s.waiting) {
    out["waiting_for"] = value{{"kind", s.waiting->kind}, {"until_ms", s.waiting->until_ms}, {"since_ms", s.waiting->since_ms}};
    if (s.waiting->kind == "event") out["waiting_for"]["event"] = s.waiting->event;
    if (s.waiting->kind == "join" && s.join) {
      std::int64_t ended = 0;
      for (const auto& c : s.join->children) ended += c.outcome.is_null() ? 0 : 1;
      out["waiting_for"]["wait"] = s.join->wait;
      out["waiting_for"]["runs"] = static_cast<std::int64_t>(s.join->children.size());
      out["waiting_for"]["ended"] = ended;
    }
  }
  if (!s.signals.empty()) {
    value kept = value::array();
    for (const auto& g : s.signals) kept.push_back(value{{"name", g.name}, {"id", g.id}, {"by", g.by}, {"at_ms", g.at_ms}});
    out["events_kept"] = kept;
  }
  if (s.deadline_ms > 0) out["deadline_ms"] = s.deadline_ms;
  if (s.queue && !s.queue->name.empty()) {
    out["queue"] = value{{"name", s.queue->name}, {"since_ms", s.queue->since_ms}};
    if (!s.queue->key.empty()) out["queue"]["key"] = s.queue->key;
    if (s.queue->admitted_ms) out["queue"]["admitted_ms"] = s.queue->admitted_ms;
  }
  // Sub-agents: the run that started this one (and the chain above it), the runs it started, and
  // its tokens with theirs.
  if (s.parent.is_object()) {
    out["parent"] = value{{"run_id", s.parent.value("run_id", std::string{})}, {"agent", s.parent.value("agent", std::string{})},
                          {"call_id", s.parent.value("call_id", std::string{})}};
    out["chain"] = s.parent.contains("chain") ? s.parent["chain"] : value::array();
  }
  if (s.children.is_array() && !s.children.empty()) out["children"] = s.children;
  out["total_usage"] = value{{"input_tokens", s.usage.input_tokens + s.children_usage.input_tokens},
                             {"output_tokens", s.usage.output_tokens + s.children_usage.output_tokens},
                             {"cache_read_tokens", s.usage.cache_read_tokens + s.children_usage.cache_read_tokens},
                             {"cache_write_tokens", s.usage.cache_write_tokens + s.children_usage.cache_write_tokens}};
  // A step failing for a passing reason: what it waits on, and when it is tried next.
  if (s.pending && s.pending->retry)
    out["retrying"] = value{{"reason", s.pending->retry->reason}, {"next_try_ms", s.pending->retry->next_try_ms},
                            {"waiting", s.pending->retry->waiting}};
  return out;
}

// An agent as clients see it (keel agents, the dashboard): what it runs on and what it may do.
// No secret: the key file's path is not shown, nor the system prompt past its start.
value describe_agent(const config::agent_config& a) {
  auto prompt = a.system_prompt.size() > 2000 ? a.system_prompt.substr(0, 2000) + "…" : a.system_prompt;
  value out{{"id", a.id}, {"queue", a.queue}, {"run_queue", a.run_queue}, {"provider", a.provider}, {"model", a.model},
            {"tools", a.tools}, {"max_steps", a.max_steps}, {"max_tokens", a.max_tokens},
            {"stream", a.stream}, {"system_prompt", prompt}};
  if (!a.workflow_tools.empty()) out["workflow_tools"] = a.workflow_tools;
  if (a.run_timeout_ms > 0) out["run_timeout_ms"] = a.run_timeout_ms;
  if (a.approval_timeout_ms > 0)
    out["approval_timeout"] = value{{"after_ms", a.approval_timeout_ms}, {"answer", a.approval_timeout_answer}};
  if (a.approval_escalate_after_ms > 0)
    out["approval_escalation"] = value{{"after_ms", a.approval_escalate_after_ms}, {"to", a.approval_escalate_to}};
  if (!a.base_url.empty()) out["base_url"] = a.base_url;
  // Tools of its own (docs/TOOLS.md): command tools (the argv shown), MCP servers (the program or
  // the URL, no token), sub-agents.
  value commands = value::array();
  for (const auto& c : a.commands)
    commands.push_back(value{{"name", c.name}, {"argv", c.argv}, {"approval", c.approval}, {"description", c.description}});
  value mcp = value::array();
  for (const auto& s : a.mcp)
    mcp.push_back(value{{"name", s.name}, {"transport", s.url.empty() ? "stdio" : "http"},
                        {"command", s.command}, {"url", s.url.substr(0, s.url.find_first_of("?#"))}, {"approval", s.approval},
                        {"tools", s.tools}});
  if (!a.commands.empty()) out["commands"] = commands;
  if (!a.mcp.empty()) out["mcp"] = mcp;
  if (!a.sub_agents.empty()) out["sub_agents"] = a.sub_agents;
  if (!a.description.empty()) out["description"] = a.description;
  out["sandbox"] = value{{"env", a.sandbox_env}, {"network", a.network}, {"workspace", a.workspace},
                         {"workspace_scope", a.workspace_scope}, {"exec_security", a.exec_security},
                         {"allowlist", a.allowlist}, {"file_approval", a.file_approval},
                         {"path_restriction", a.path_restriction}, {"exec_timeout_ms", a.exec_timeout_ms},
                         {"cpu_seconds_max", a.cpu_seconds_max}, {"memory_bytes_max", a.memory_bytes_max},
                         {"processes_max", a.processes_max}};
  return out;
}

std::string run_reply(const store::run_record& r) {
  return wire::pack(value{{"v", wire::protocol_version}, {"type", "run"}, {"run", summary(r)}});
}

} // namespace keel::actors
