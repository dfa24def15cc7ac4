#include "actors/tool_calls.hpp"
#include "actors/workflow_tools.hpp"


#include <algorithm>

namespace keel::actors {

using wire::value;

namespace {
constexpr std::size_t form_bytes_max = 16 << 10;  // what a tool worker adds to an approval form
constexpr std::size_t definitions_bytes_max = 256 << 10;  // declared tools' definitions in one model task
}

wire::value sub_agent_definition(const std::string& id, const config::agent_config* child) {
  std::string description = "Hand a task to agent " + id + " and get its final answer. It runs as a run of its own " +
                            "(its steps, tools and approvals), then this call returns what it answered.";
  if (child && !child->description.empty()) description += " What it does: " + child->description.substr(0, 2000);
  return value{{"name", sub_agent_prefix + id}, {"description", description},
               {"input_schema", {{"type", "object"},
                                 {"properties", {{"task", {{"type", "string"}, {"description", "What the agent should do, with everything it needs to know"}}}}},
                                 {"required", {"task"}}}}};
}

std::string sub_agent_of(const config::agent_config& agent, const std::string& name) {
  const std::string prefix = sub_agent_prefix;
  if (name.compare(0, prefix.size(), prefix) != 0) return {};
  auto id = name.substr(prefix.size());
  return std::find(agent.sub_agents.begin(), agent.sub_agents.end(), id) != agent.sub_agents.end() ? id : std::string();
}

wire::value model_tool_list(const config::agent_config& agent, const tools::declared_tools* declared,
                            const std::function<const config::agent_config*(const std::string&)>& find_agent) {
  value list = value::array();
  std::size_t bytes = 0;
  for (const auto& id : agent.sub_agents) list.push_back(sub_agent_definition(id, find_agent ? find_agent(id) : nullptr));
  for (const auto& name : agent.workflow_tools) list.push_back(workflow_tool_definition(name, agent));
  for (const auto& listed : agent.tools) {
    if (!tools::is_declared(listed)) {
      list.push_back(listed);
      continue;
    }
    if (!declared) continue;
    auto it = declared->find(listed);
    if (it == declared->end()) continue;
    // Definitions travel in every model task: past the bound, the rest are not offered (the model
    // cannot call them; a call by name is refused as for any tool it was not told of).
    auto definition = it->second->definition();
    bytes += wire::pack(definition).size();
    if (bytes > definitions_bytes_max) break;
    list.push_back(std::move(definition));
  }
  return list;
}

std::shared_ptr<const tools::declared_tool> declared_tool_of(const tools::declared_tools* declared,
                                                             const std::string& queue, const std::string& name) {
  if (!declared) return nullptr;
  auto it = declared->find(queue + "." + name);
  return it == declared->end() ? nullptr : it->second;
}

resolved_call resolve_call(const config::agent_config& agent, const tools::declared_tools* declared,
                           const std::string& name, const wire::value& arguments) {
  resolved_call out;
  auto listed = std::find_if(agent.tools.begin(), agent.tools.end(),
                             [&](const std::string& t) { return tools::model_name(t) == name; });
  // Command tools and MCP servers' tools (<server>__<tool>) run on the agent's own workers, which
  // check their arguments and ask their questions as for the built-in tools.
  bool command = std::any_of(agent.commands.begin(), agent.commands.end(),
                             [&](const config::command_tool& c) { return c.name == name; });
  bool mcp = std::any_of(agent.mcp.begin(), agent.mcp.end(), [&](const config::mcp_server& m) {
    return name.size() > m.name.size() + 2 && name.compare(0, m.name.size() + 2, m.name + "__") == 0;
  });
  if (command || mcp) {
    out.what = resolved_call::kind::built_in;
    return out;
  }
  if (!sub_agent_of(agent, name).empty()) {
    const bool has_task = arguments.is_object() && arguments.contains("task") && arguments["task"].is_string() &&
                          !arguments["task"].get<std::string>().empty();
    if (!has_task) out.problem = "tool '" + name + "' needs a task: {\"task\": \"what the agent should do\"}";
    else out.what = resolved_call::kind::sub_agent;
    return out;
  }
  if (listed == agent.tools.end()) {
    out.problem = "tool '" + name + "' is not available to this agent";
    return out;
  }
  if (!tools::is_declared(*listed)) {
    out.what = resolved_call::kind::built_in;
    return out;
  }
  auto queue = listed->substr(0, listed->find('.'));
  out.tool = declared_tool_of(declared, queue, name);
  if (!out.tool) {
    out.problem = "tool '" + name + "' is not declared: no tool worker of queue '" + queue + "' has declared it";
    return out;
  }
  if (auto problem = out.tool->input.problem(arguments, "arguments"); !problem.empty()) {
    out.problem = "the arguments do not match what tool '" + name + "' declared: " + problem;
    out.tool = nullptr;
    return out;
  }
  out.what = resolved_call::kind::declared;
  return out;
}

tool_answer check_answer(const tools::declared_tool* tool, const wire::value& payload) {
  tool_answer a;
  auto garbage = [&](const std::string& why) {
    a = tool_answer{};
    a.is_error = true;
    a.result = value{{"error", "the tool worker's answer is not a tool result: " + why}};
    return a;
  };
  if (!payload.is_object()) return garbage("it is not a map");
  if (payload.contains("status")) {
    if (!payload["status"].is_string()) return garbage("status is not a string");
    a.status = payload["status"].get<std::string>();
  }
  if (a.status != "done" && a.status != "needs_approval" && a.status != "refused")
    return garbage("status \"" + a.status + "\" is none of done, needs_approval, refused");
  if (payload.contains("is_error") && !payload["is_error"].is_null()) {
    if (!payload["is_error"].is_boolean()) return garbage("is_error is not a boolean");
    a.is_error = payload["is_error"].get<bool>();
  }
  if (a.status == "needs_approval") {
    a.form = payload.contains("form") ? payload["form"] : value();
    if (!a.form.is_null() && !a.form.is_object()) return garbage("form is not a map");
    if (wire::pack(a.form).size() > form_bytes_max)
      return garbage("its form is larger than " + std::to_string(form_bytes_max >> 10) + " KiB");
    return a;
  }
  a.result = payload.contains("result") ? payload["result"] : value();
  if (a.status == "refused") {
    a.is_error = true;
    if (a.result.is_null()) {
      auto message = payload.find("message");
      a.result = value{{"error", message != payload.end() && message->is_string() ? message->get<std::string>()
                                                                                   : std::string("refused by the tool worker")}};
    }
  }
  // Every answer is bounded, that of a tool no longer declared too.
  auto size_max = tool ? tool->result_bytes_max : tools::result_bytes_default;
  auto size = wire::pack(a.result).size();
  if (static_cast<std::int64_t>(size) > size_max) {
    a.is_error = true;
    a.result = value{{"error", "the result of tool '" + (tool ? tool->name : std::string("?")) + "' is " + std::to_string(size) +
                                 " bytes, more than its result_bytes_max (" + std::to_string(size_max) + ")"}};
    return a;
  }
  if (!tool) return a;
  if (tool->output && !a.is_error && a.status == "done") {
    if (auto problem = tool->output->problem(a.result, "result"); !problem.empty()) {
      a.is_error = true;
      a.result = value{{"error", "the result of tool '" + tool->name + "' does not match its output_schema: " + problem}};
    }
  }
  return a;
}

} // namespace keel::actors
