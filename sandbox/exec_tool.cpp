// exec: what decides whether a command runs without asking (the policy, remembered approvals,
// the allowlist, the variables it sets), the environment it gets (nothing of the node's own
// but what the agent's config passes), and where it runs (local, confined by Landlock and
// seccomp, or under bubblewrap).
#include "sandbox/exec.hpp"
#include "runtime/secrets.hpp"
#include "sandbox/file_io.hpp"
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

// The environment a command sees: a fixed base, what the agent's config passes from the node,
// the call's own variables, and keel's.
std::vector<std::pair<std::string, std::string>> command_environment(
  const policy& p, const workspace& ws, const std::string& tmp, const std::map<std::string, std::string>& call_env,
  const std::string& task_id, const std::string& user) {
  std::map<std::string, std::string> env = {
    {"PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"},
    {"HOME", ws.root()}, {"TMPDIR", tmp}, {"LANG", "C.UTF-8"}, {"TERM", "dumb"},
    {"USER", user}, {"LOGNAME", user}, {"SHELL", "/bin/sh"}};
  for (const auto& name : p.env.env_pass)
    if (const char* v = std::getenv(name.c_str())) env[name] = v;
  for (const auto& [k, v] : call_env) env[k] = v;
  env["KEEL_TASK_ID"] = task_id;
  env["KEEL_WORKSPACE"] = ws.root();
  return {env.begin(), env.end()};
}

// A private temporary directory for one local call (its TMPDIR, writable under Landlock).
struct call_temporary {
  std::string path;
  unique_fd fd;
  ~call_temporary() {
    if (!path.empty()) remove_tree(path);
  }
};

result<void> make_call_temporary(call_temporary& t, const identity& run_as) {
  // Named after this process: what a worker that died leaves is swept when the next one starts.
  std::string dir = call_temporary_base() + "/keel-call-" + std::to_string(::getpid()) + "-" + random_hex(8);
  if (::mkdir(dir.c_str(), 0700) != 0)
    return make_error(errc::io, "cannot make the call's temporary directory: " + std::string(std::strerror(errno)));
  t.path = dir;
  t.fd = unique_fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!t.fd.valid()) return make_error(errc::io, "cannot open the call's temporary directory");
  return hand_over(t.fd.get(), run_as);
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

  auto cwd_fd = ws.open_directory(*cwd);
  if (!cwd_fd) return failed("exec: " + cwd_fd.error().message);
  exec_request request;
  request.command = command;
  request.cwd_fd = cwd_fd->get();
  request.cwd_path = cwd->real;
  request.limits = p.env.limits;
  request.timeout_ms = timeout_ms;
  request.output_chars_max = p.output_chars_max;
  call_temporary temporary;
  std::vector<unique_fd> seccomp_fds;
  std::optional<local_confinement> confinement;
  auto run_as = command_identity(p.env.run_as);
  if (!run_as) return failed("exec: " + run_as.error().message);
  if (auto reachable = check_reachable(ws.root(), *run_as); !reachable) return failed("exec: " + reachable.error().message);
  request.run_as = *run_as;
  if (p.env.kind == environment_kind::bwrap) {
    if (auto available = bwrap_available(*run_as); !available) return failed("exec: " + available.error().message);
    auto programs = seccomp_program_fds(p.env.network);
    if (!programs) return failed("exec: " + programs.error().message);
    seccomp_fds = std::move(*programs);
    std::vector<int> numbers;
    for (const auto& fd : seccomp_fds) numbers.push_back(fd.get());
    auto command_env = command_environment(p, ws, "/tmp", env, r.task_id, run_as->distinct ? run_as->name : "keel");
    // bubblewrap reads its arguments (the command's environment among them) from a memory file,
    // so that its command line, which every user of the machine can read, holds none of them.
    auto prefix = bwrap_prefix(p.env, ws.root(), cwd->real, command_env, numbers);
    prefix.erase(prefix.begin());  // "bwrap" itself
    prefix.pop_back();             // "--": the command follows on the real command line
    std::string packed;
    for (const auto& arg : prefix) packed.append(arg).push_back('\0');
    auto args_fd = memory_file("keel-bwrap-args", packed);
    if (!args_fd) return failed("exec: " + args_fd.error().message);
    numbers.push_back(args_fd->get());
    seccomp_fds.push_back(std::move(*args_fd));
    request.wrapper = {"bwrap", "--args", std::to_string(numbers.back()), "--"};
    request.inherited_fds = numbers;
    request.env = {{"PATH", "/usr/bin:/bin"}};
  } else {
    if (auto made = make_call_temporary(temporary, *run_as); !made) return failed("exec: " + made.error().message);
    // As root, the command gets namespaces of its own (below), and a tmpfs over its TMPDIR.
    const bool privileged = ::geteuid() == 0;
    auto made = local_confinement::make({ws.root_fd(), temporary.fd.get()}, p.env.network,
                                        privileged ? temporary.path : std::string{});
    if (!made) return failed("exec: " + made.error().message);
    confinement = std::move(*made);
    request.confinement = &*confinement;
    request.env = command_environment(p, ws, temporary.path, env, r.task_id, run_as->distinct ? run_as->name : "keel");
    // As root, the command is born in namespaces of its own: its processes (pid 1 is its shell,
    // and all of them die with it), System V IPC, mounts (its own /proc, a tmpfs of bounded size
    // as TMPDIR), host name, and without network a network of its own with nothing in it.
    if (privileged) {
      request.namespaces = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNS | CLONE_NEWUTS;
      if (!p.env.network) request.namespaces |= CLONE_NEWNET;
      request.private_tmp = temporary.path;
    }
  }
  auto ran = run_command(request);
  if (!ran) return failed("exec: " + ran.error().message);
  value out{{"exit_code", ran->exit_code}, {"stdout", ran->stdout_text},
            {"stderr", ran->stderr_text}, {"timed_out", ran->timed_out},
            {"duration_ms", ran->duration_ms}, {"written_bytes", ran->written_bytes}};
  if (ran->stdout_cut) out["stdout_cut"] = ran->stdout_cut;
  if (ran->stderr_cut) out["stderr_cut"] = ran->stderr_cut;
  if (!ran->killed_by.empty()) out["killed_by"] = ran->killed_by;
  tool_outcome o = done(std::move(out));
  o.is_error = ran->exit_code != 0;
  return o;
}

} // namespace keel::sandbox::detail
