// exec: what decides whether a command runs without asking (the policy, remembered approvals,
// the allowlist, the variables it sets), the environment it gets (nothing of the node's own
// but what the agent's config passes), and where it runs (local, confined by Landlock and
// seccomp, or under bubblewrap).
#include "sandbox/confined_call.hpp"
#include "sandbox/exec.hpp"
#include "sandbox/text.hpp"
#include "sandbox/tool_support.hpp"

#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <sys/stat.h>

namespace keel::sandbox::detail {

using wire::value;

namespace {

constexpr std::size_t command_chars_max = 100'000;

// Why a command needs a person, or "" when it may run.
std::string approval_reason(const policy& p, const tool_request& r, const std::string& command,
                            const std::map<std::string, std::string>& env) {
  if (p.exec == exec_security::allow_always || r.approved) return {};
  std::string unsafe;
  for (const auto& [name, v] : env)
    if (!env_name_is_safe(name)) unsafe += (unsafe.empty() ? "" : ", ") + name;
  if (!unsafe.empty()) return "it sets environment variables that need approval: " + unsafe;
  for (const auto& rule : r.allow_rules)
    if (rule_allows(rule, command)) return {};
  if (p.exec == exec_security::allowlist) {
    for (const auto& pattern : p.allowlist)
      if (pattern_allows(pattern, command)) return {};
    return is_simple_command(command) ? "not on the allowlist"
                                      : "it uses shell syntax, which no allowlist pattern matches";
  }
  return "every command asks first";
}

value approval_form_context(const std::string& command, const location& cwd, const workspace& ws,
                            const std::map<std::string, std::string>& env) {
  value env_shown = value::object();
  for (const auto& [name, v] : env) env_shown[name] = v;
  value options = value::array({"exact"});
  value context{{"command", command}, {"cwd", cwd.real}, {"cwd_display", ws.display(cwd)}, {"env", env_shown}};
  if (is_simple_command(command)) {
    options.push_back("prefix");
    std::string words;
    for (const auto& w : command_words(command)) words += (words.empty() ? "" : " ") + w;
    context["prefix"] = words;
  }
  context["always_options"] = options;
  return context;
}

} // namespace

tool_outcome exec_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto command = a.str("command", true);
  auto cwd_given = a.str("cwd", false);
  auto timeout_ms = a.integer("timeout_ms", p.exec_timeout_ms, 1, p.exec_timeout_ms);
  auto env = a.env("env");
  if (a.problem) return failed(*a.problem);
  if (command.empty()) return failed("exec: the command is empty");
  if (command.find('\0') != std::string::npos) return failed("exec: the command contains a NUL byte");
  if (command.size() > command_chars_max)
    return failed("exec: the command has " + std::to_string(command.size()) + " characters, over the limit of " +
                  std::to_string(command_chars_max));
  if (auto checked = check_call_env(env); !checked) return failed("exec: " + checked.error().message);

  auto cwd = ws.locate(cwd_given, outside_mode(p));
  if (!cwd) return failed("exec: " + cwd.error().message);
  if (auto outside = check_outside(ws, p, r, *cwd, cwd_given, approval_form_context(command, *cwd, ws, env)))
    return *outside;
  if (!cwd->inside && p.env.kind == environment_kind::bwrap)
    return refused("exec: under bwrap a command runs inside its workspace; " + escape_controls(cwd_given) +
                   " is outside it");
  if (!cwd->exists || !cwd->is_directory) return failed("exec: no such directory: " + escape_controls(cwd_given));
  if (auto reason = approval_reason(p, r, command, env); !reason.empty())
    return ask("exec", reason, approval_form_context(command, *cwd, ws, env));
  // Approved: as the form showed it (the same command, directory and variables).
  if (auto changed = check_approved(r, "cwd", cwd->real)) return *changed;
  if (auto changed = check_approved(r, "command", command)) return *changed;

  confined_call call;
  if (auto prepared = prepare_confined(call, ws, p, *cwd, env, r.task_id); !prepared)
    return failed("exec: " + prepared.error().message);
  call.request.command = command;
  call.request.timeout_ms = timeout_ms;
  auto ran = run_command(call.request);
  if (!ran) return failed("exec: " + ran.error().message);
  return program_outcome(*ran);
}

tool_outcome program_outcome(const exec_result& ran) {
  value out{{"exit_code", ran.exit_code}, {"stdout", ran.stdout_text}, {"stderr", ran.stderr_text},
            {"timed_out", ran.timed_out}, {"duration_ms", ran.duration_ms}, {"written_bytes", ran.written_bytes}};
  if (ran.stdout_cut) out["stdout_cut"] = ran.stdout_cut;
  if (ran.stderr_cut) out["stderr_cut"] = ran.stderr_cut;
  if (!ran.killed_by.empty()) out["killed_by"] = ran.killed_by;
  tool_outcome o = done(std::move(out));
  o.is_error = ran.exit_code != 0;
  return o;
}

} // namespace keel::sandbox::detail
