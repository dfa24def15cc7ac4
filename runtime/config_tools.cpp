#include "runtime/config_tools.hpp"

#include "runtime/command_template.hpp"
#include "runtime/ids.hpp"
#include "runtime/json_schema.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

namespace keel::config::detail {

namespace {

constexpr std::size_t description_chars_max = 4096;
constexpr std::int64_t day_ms = 24LL * 3600 * 1000;

// A model calls a tool by a name of 1 to 64 characters from [A-Za-z0-9_-] (what providers accept).
bool is_model_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 &&
         name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == std::string::npos;
}

nlohmann::json to_json(const toml::node& n) {
  if (auto t = n.as_table()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [k, v] : *t) out[std::string(k.str())] = to_json(v);
    return out;
  }
  if (auto a = n.as_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : *a) out.push_back(to_json(v));
    return out;
  }
  if (auto s = n.value<std::string>(); n.is_string()) return *s;
  if (n.is_integer()) return *n.value<std::int64_t>();
  if (n.is_floating_point()) return *n.value<double>();
  if (n.is_boolean()) return *n.value<bool>();
  return n.is_date_time() || n.is_date() || n.is_time() ? nlohmann::json("(a TOML date)") : nlohmann::json();
}


} // namespace

std::optional<table_problem> read_commands(const toml::table& commands, const std::string& key, agent_config& agent) {
  for (const auto& [raw, node] : commands) {
    std::string name(raw.str());
    std::string where = key + "." + name;
    if (!is_model_name(name)) return table_problem{&node, where, "a command tool's name is 1 to 64 characters from [A-Za-z0-9_-]"};
    const auto* table = node.as_table();
    if (!table) return table_problem{&node, where, "expected a table (argv, arguments, description, approval)"};
    reader r{*table, where, {}};
    r.only({"argv", "arguments", "description", "approval", "timeout_ms", "cwd"});
    command_tool tool;
    tool.name = name;
    tool.description = r.str("description", "", description_chars_max);
    tool.argv = r.strings("argv", 1024);
    tool.approval = r.approval("approval", r.get("approval"), r.str("approval", "always"));
    tool.timeout_ms = r.integer("timeout_ms", 0, 10, day_ms);
    tool.cwd = r.str("cwd", "", 1024);
    if (r.problem) return r.problem;
    if (!r.get("argv")) return table_problem{table, where + ".argv", "expected the program and its arguments, e.g. [\"git\", \"log\", \"-n\", \"{count}\"]"};
    if (!tool.cwd.empty() && (tool.cwd[0] == '/' || tool.cwd.find("..") != std::string::npos))
      return table_problem{r.get("cwd"), where + ".cwd", "expected a directory inside the workspace, relative to it"};
    auto names = template_placeholders(tool.argv);
    if (!names) return table_problem{r.get("argv"), where + ".argv", names.error().message};
    nlohmann::json schema = {{"type", "object"}, {"properties", nlohmann::json::object()}, {"additionalProperties", false}};
    if (const auto* s = r.get("arguments")) {
      if (s->is_string()) {
        schema = nlohmann::json::parse(*s->value<std::string>(), nullptr, false);
        if (schema.is_discarded()) return table_problem{s, where + ".arguments", "expected a JSON Schema (as a table, or JSON text)"};
      } else if (s->is_table()) {
        schema = to_json(*s);
      } else {
        return table_problem{s, where + ".arguments", "expected a JSON Schema (as a table, or JSON text)"};
      }
    }
    if (!schema.is_object() || schema.value("type", nlohmann::json()) != "object")
      return table_problem{r.get("arguments"), where + ".arguments", "the arguments' schema must have type \"object\""};
    auto compiled = schema::json_schema::compile(schema);
    if (!compiled) return table_problem{r.get("arguments"), where + ".arguments", compiled.error().message};
    for (const auto& placeholder : *names) {
      if (!schema.contains("properties") || !schema["properties"].is_object() || !schema["properties"].contains(placeholder))
        return table_problem{r.get("argv"), where + ".argv",
                             "placeholder {" + placeholder + "} is not a property of the arguments' schema"};
    }
    tool.arguments_schema = schema.dump();
    std::erase_if(agent.commands, [&](const command_tool& c) { return c.name == tool.name; });  // a later file wins
    agent.commands.push_back(std::move(tool));
  }
  return std::nullopt;
}

std::optional<table_problem> read_mcp_servers(const toml::table& servers, const std::string& key, agent_config& agent,
                                              const path_resolver& relative) {
  for (const auto& [raw, node] : servers) {
    std::string name(raw.str());
    std::string where = key + "." + name;
    // Its tools reach the model as <name>__<tool>: the name is short and has no "__".
    if (!is_model_name(name) || name.size() > 24 || name.find("__") != std::string::npos)
      return table_problem{&node, where, "an MCP server's name is 1 to 24 characters from [A-Za-z0-9_-], without \"__\""};
    const auto* table = node.as_table();
    if (!table) return table_problem{&node, where, "expected a table (command or url, approval, tools)"};
    reader r{*table, where, {}};
    r.only({"command", "env", "url", "token_file", "approval", "tool_approval", "tools", "timeout_ms",
            "startup_timeout_ms", "idle_ms", "result_chars_max"});
    mcp_server s;
    s.name = name;
    s.command = r.strings("command", 256);
    s.env = r.string_map("env");
    s.url = r.str("url", "");
    s.token_file = r.str("token_file", "");
    s.approval = r.approval("approval", r.get("approval"), r.str("approval", "always"));
    s.tool_approval = r.string_map("tool_approval");
    for (const auto& [tool, policy] : s.tool_approval) r.approval("tool_approval", r.get("tool_approval"), policy);
    s.tools = r.strings("tools", 1024);
    s.timeout_ms = r.integer("timeout_ms", 60'000, 100, day_ms);
    s.startup_timeout_ms = r.integer("startup_timeout_ms", 30'000, 100, 600'000);
    s.idle_ms = r.integer("idle_ms", 600'000, 1'000, day_ms);
    s.result_chars_max = r.integer("result_chars_max", 100'000, 100, 100'000'000);
    if (r.problem) return r.problem;
    if (s.command.empty() == s.url.empty())
      return table_problem{table, where, "expected either command (a stdio server started in the sandbox) or url (streamable HTTP)"};
    if (!s.url.empty() && s.url.rfind("http://", 0) != 0 && s.url.rfind("https://", 0) != 0)
      return table_problem{r.get("url"), where + ".url", "expected an http:// or https:// URL"};
    if (!s.command.empty() && s.command[0].empty())
      return table_problem{r.get("command"), where + ".command", "the program is empty"};
    if (!s.url.empty() && !s.env.empty())
      return table_problem{r.get("env"), where + ".env", "env is for a stdio server (command), not a URL"};
    if (!s.token_file.empty() && s.url.empty())
      return table_problem{r.get("token_file"), where + ".token_file", "token_file is for a server reached by url"};
    for (const auto& [variable, v] : s.env)
      if (variable.empty() || variable.find('=') != std::string::npos || variable.find('\0') != std::string::npos)
        return table_problem{r.get("env"), where + ".env", "\"" + variable + "\" is not a variable name"};
    s.token_file = relative(s.token_file);
    std::erase_if(agent.mcp, [&](const mcp_server& m) { return m.name == s.name; });
    agent.mcp.push_back(std::move(s));
  }
  return std::nullopt;
}

std::string check_tool_names(const node_config& config, const agent_config& agent) {
  std::set<std::string> names;
  for (const auto& tool : agent.tools) {
    auto name = tool.substr(tool.find('.') == std::string::npos ? 0 : tool.find('.') + 1);
    if (!names.insert(name).second) return "two tools would both be called \"" + name + "\" by the model";
  }
  for (const auto& w : agent.workflow_tools) {
    if (!names.insert(w).second) return "workflow tool \"" + w + "\" is listed twice, or has the name of a tool the agent lists";
    if (w == "run_agents" && agent.sub_agents.empty()) return "workflow tool \"run_agents\" hands tasks to sub_agents; this agent lists none";
  }
  for (const auto& c : agent.commands)
    if (!names.insert(c.name).second)
      return "command tool \"" + c.name + "\" has the name of a tool the agent lists";
  for (const auto& c : agent.commands)
    if (c.name.find("__") != std::string::npos)
      return "command tool \"" + c.name + "\": \"__\" is kept for MCP tools (<server>__<tool>)";
  for (const auto& m : agent.mcp)
    if (m.name == "agent") return "MCP server \"agent\": the name is kept for sub-agents (agent__<id>)";
  for (const auto& id : agent.sub_agents) {
    if (!config.find_agent(id)) return "sub-agent \"" + id + "\" is not an agent of this config";
    if (id.size() > 57) return "sub-agent \"" + id + "\": the model calls it agent__" + id + ", over 64 characters";
    if (std::count(agent.sub_agents.begin(), agent.sub_agents.end(), id) > 1) return "sub-agent \"" + id + "\" is listed twice";
  }
  return {};
}

} // namespace keel::config::detail
