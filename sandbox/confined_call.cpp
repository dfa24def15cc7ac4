#include "sandbox/confined_call.hpp"

#include "runtime/secrets.hpp"
#include "sandbox/file_io.hpp"
#include "sandbox/text.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

namespace keel::sandbox {

namespace {

// The environment a program sees: a fixed base, what the agent's config passes from the node,
// the call's own variables, and keel's.
std::vector<std::pair<std::string, std::string>> program_environment(
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

call_temporary::~call_temporary() {
  if (!path.empty()) remove_tree(path);
}

result<void> prepare_confined(confined_call& call, const workspace& ws, const policy& p, const location& cwd,
                              const std::map<std::string, std::string>& env, const std::string& task_id) {
  auto cwd_fd = ws.open_directory(cwd);
  if (!cwd_fd) return cwd_fd.error();
  call.cwd_fd = std::move(*cwd_fd);
  exec_request& request = call.request;
  request.cwd_fd = call.cwd_fd.get();
  request.cwd_path = cwd.real;
  request.limits = p.env.limits;
  request.output_chars_max = p.output_chars_max;
  auto run_as = command_identity(p.env.run_as);
  if (!run_as) return run_as.error();
  if (auto reachable = check_reachable(ws.root(), *run_as); !reachable) return reachable.error();
  request.run_as = *run_as;
  const std::string user = run_as->distinct ? run_as->name : "keel";
  if (p.env.kind == environment_kind::bwrap) {
    if (auto available = bwrap_available(*run_as); !available) return available.error();
    auto programs = seccomp_program_fds(p.env.network);
    if (!programs) return programs.error();
    call.fds = std::move(*programs);
    std::vector<int> numbers;
    for (const auto& fd : call.fds) numbers.push_back(fd.get());
    auto command_env = program_environment(p, ws, "/tmp", env, task_id, user);
    // bubblewrap reads its arguments (the program's environment among them) from a memory file,
    // so that its command line, which every user of the machine can read, holds none of them.
    auto prefix = bwrap_prefix(p.env, ws.root(), cwd.real, command_env, numbers);
    prefix.erase(prefix.begin());  // "bwrap" itself
    prefix.pop_back();             // "--": the program follows on the real command line
    std::string packed;
    for (const auto& arg : prefix) packed.append(arg).push_back('\0');
    auto args_fd = memory_file("keel-bwrap-args", packed);
    if (!args_fd) return args_fd.error();
    numbers.push_back(args_fd->get());
    call.fds.push_back(std::move(*args_fd));
    request.wrapper = {"bwrap", "--args", std::to_string(numbers.back()), "--"};
    request.inherited_fds = numbers;
    request.env = {{"PATH", "/usr/bin:/bin"}};
    return success();
  }
  if (auto made = make_call_temporary(call.temporary, *run_as); !made) return made.error();
  // As root, the program gets namespaces of its own (below), and a tmpfs over its TMPDIR.
  const bool privileged = ::geteuid() == 0;
  auto made = local_confinement::make({ws.root_fd(), call.temporary.fd.get()}, p.env.network,
                                      privileged ? call.temporary.path : std::string{});
  if (!made) return made.error();
  call.confinement = std::move(*made);
  request.confinement = &*call.confinement;
  request.env = program_environment(p, ws, call.temporary.path, env, task_id, user);
  // As root, the program is born in namespaces of its own: its processes (pid 1 is its first,
  // and all of them die with it), System V IPC, mounts (its own /proc, a tmpfs of bounded size
  // as TMPDIR), host name, and without network a network of its own with nothing in it.
  if (privileged) {
    request.namespaces = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNS | CLONE_NEWUTS;
    if (!p.env.network) request.namespaces |= CLONE_NEWNET;
    request.private_tmp = call.temporary.path;
  }
  return success();
}

} // namespace keel::sandbox
