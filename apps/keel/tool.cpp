// `keel tool NAME`: one tool call through the same code and policy a worker uses, so a person
// can try a sandbox configuration before an agent does. Prints the result, or the approval form
// the call would wait on, as JSON. Exit codes: 0 done, 1 done with an error result, 3 waits for
// approval, 4 refused, 2 bad usage.
#include "apps/keel/commands.hpp"

#include "runtime/config.hpp"
#include "mcp/session_pool.hpp"
#include "sandbox/tools.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>

namespace keel::cli {

namespace {

struct tool_options {
  std::string name;
  std::vector<std::string> arguments;  // key=value, or one JSON map
  std::string workspace;  // empty: the agent's (with --agent), else this directory
  std::string config_path;
  std::string agent;
  std::string env;
  std::string exec_security;
  std::vector<std::string> allow;
  std::string file_approval;
  std::string path_restriction;
  bool network = false;
  bool approve = false;
  std::int64_t timeout_ms = 0;
};

// key=value takes the type the tool's schema gives the key: text for strings, JSON otherwise.
result<wire::value> parse_arguments(const std::string& tool, const std::vector<std::string>& items) {
  const bool built_in = std::find(sandbox::tool_names().begin(), sandbox::tool_names().end(), tool) != sandbox::tool_names().end();
  const auto properties = built_in ? sandbox::tool_definition(tool)["input_schema"]["properties"] : wire::value::object();
  wire::value args = wire::value::object();
  for (const auto& item : items) {
    if (!item.empty() && item[0] == '{') {
      auto parsed = wire::value::parse(item, nullptr, false);
      if (parsed.is_discarded() || !parsed.is_object())
        return make_error(errc::invalid_argument, "not a JSON map: " + item);
      args.update(parsed);
      continue;
    }
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      return make_error(errc::invalid_argument, "arguments are key=value or a JSON map, got '" + item + "'");
    std::string key = item.substr(0, eq), text = item.substr(eq + 1);
    bool is_text = properties.contains(key) && properties[key].value("type", "") == "string";  // else JSON, or text
    auto parsed = is_text ? wire::value() : wire::value::parse(text, nullptr, false);
    args[key] = (is_text || parsed.is_discarded()) ? wire::value(text) : parsed;
  }
  return args;
}

result<sandbox::policy> make_policy(const tool_options& o, std::string& workspace, config::agent_config& agent) {
  if (!o.agent.empty()) {
    if (o.config_path.empty()) return make_error(errc::invalid_argument, "--agent needs --config");
    auto c = config::load_file(o.config_path);
    if (!c) return c.error();
    const auto* found = c->find_agent(o.agent);
    if (!found) return make_error(errc::not_found, "no agent '" + o.agent + "' in " + o.config_path);
    agent = *found;
    if (workspace.empty()) workspace = agent.workspace;
  } else {
    // The defaults of an agent, as the config schema gives them.
    auto c = config::load_string("[agents.tool]\n", "defaults");
    if (!c) return c.error();
    agent = c->agents.front();
  }
  auto set = [](std::string& field, const std::string& flag) {
    if (!flag.empty()) field = flag;
  };
  set(agent.sandbox_env, o.env);
  set(agent.exec_security, o.exec_security);
  set(agent.path_restriction, o.path_restriction);
  if (!o.allow.empty()) agent.allowlist = o.allow;
  if (!o.file_approval.empty()) agent.file_approval = o.file_approval == "yes";
  if (o.network) agent.network = true;
  if (o.timeout_ms > 0) agent.exec_timeout_ms = o.timeout_ms;
  return sandbox::policy_from_config(agent);
}

int run_tool_command(const tool_options& o) {
  auto args = parse_arguments(o.name, o.arguments);
  if (!args) {
    std::cerr << "keel tool: " << args.error().message << "\n";
    return 2;
  }
  std::string workspace = o.workspace;
  config::agent_config agent;
  auto policy = make_policy(o, workspace, agent);
  if (!policy) {
    std::cerr << "keel tool: " << policy.error().message << "\n";
    return 2;
  }
  if (workspace.empty()) workspace = ".";
  auto ws = sandbox::workspace::open(workspace);
  if (!ws) {
    std::cerr << "keel tool: " << ws.error().message << "\n";
    return 2;
  }
  sandbox::tool_request request;
  request.tool = o.name;
  request.arguments = *args;
  request.task_id = "keel-tool";
  // An MCP server's tool (<server>__<tool>) goes to that server, started as a worker starts it.
  std::string mcp_tool;
  const auto* server = mcp::session_pool::server_of(agent, o.name, mcp_tool);
  std::optional<mcp::session_pool> servers;
  if (server) servers.emplace(1);
  auto call = [&] {
    return server ? servers->call(agent, *server, ws->root(), request, mcp_tool) : sandbox::run_tool(*ws, *policy, request);
  };
  auto outcome = call();
  if (o.approve && outcome.kind == sandbox::outcome_kind::needs_approval) {
    // As a person's approval does: the call runs again, held to the form that was shown.
    request.approved = true;
    request.approved_form = outcome.form["context"];
    outcome = call();
  }
  wire::value out{{"tool", o.name}, {"workspace", ws->root()}};
  switch (outcome.kind) {
    case sandbox::outcome_kind::done:
      out["status"] = "done";
      out["is_error"] = outcome.is_error;
      out["result"] = outcome.result;
      break;
    case sandbox::outcome_kind::needs_approval:
      out["status"] = "needs_approval";
      out["form"] = outcome.form;
      break;
    case sandbox::outcome_kind::refused:
      out["status"] = "refused";
      out["message"] = outcome.message;
      break;
  }
  std::cout << out.dump(2) << "\n";
  if (outcome.kind == sandbox::outcome_kind::needs_approval) return 3;
  if (outcome.kind == sandbox::outcome_kind::refused) return 4;
  return outcome.is_error ? 1 : 0;
}

} // namespace

void add_tool_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<tool_options>();
  auto* cmd = app.add_subcommand("tool", "Run one tool call through the sandbox, as a worker would");
  cmd->add_option("name", o->name,
                  "exec, read, write, edit, glob, grep; with --agent, also its command tools and <server>__<tool> of its MCP servers")
    ->required();
  cmd->add_option("arguments", o->arguments, "key=value ... or a JSON map");
  cmd->add_option("-w,--workspace", o->workspace, "The workspace (default: the agent's with --agent, else this directory)");
  cmd->add_option("-c,--config", o->config_path, "Node config with the agent (for --agent)");
  cmd->add_option("--agent", o->agent, "Use this agent's sandbox settings");
  cmd->add_option("--env", o->env, "local or bwrap")->check(CLI::IsMember({"local", "bwrap"}));
  cmd->add_option("--exec-security", o->exec_security, "approval-always, allowlist or allow-always")
    ->check(CLI::IsMember({"approval-always", "allowlist", "allow-always"}));
  cmd->add_option("--allow", o->allow, "An allowlist pattern (repeatable)");
  cmd->add_option("--file-approval", o->file_approval, "yes or no")->check(CLI::IsMember({"yes", "no"}));
  cmd->add_option("--path-restriction", o->path_restriction, "approve or deny")
    ->check(CLI::IsMember({"approve", "deny"}));
  cmd->add_flag("--network", o->network, "bwrap: allow the network");
  cmd->add_option("--timeout-ms", o->timeout_ms, "exec: time limit");
  cmd->add_flag("--approve", o->approve, "Approve the form it asks with, as a person would, and run it");
  cmd->callback([o, &exit_code] { exit_code = run_tool_command(*o); });
}

} // namespace keel::cli
