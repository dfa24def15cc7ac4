// Runs one shell command in its own session and process group, with a timeout that kills the
// whole group, bounded output, per-call cgroups for processes, memory and bytes written, and no
// way for a background child to hold the call open.
#pragma once

#include "runtime/result.hpp"
#include "sandbox/confinement.hpp"
#include "sandbox/environment.hpp"
#include "sandbox/identity.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace keel::sandbox {

struct exec_request {
  std::string command;            // run by /bin/sh -c...
  std::vector<std::string> argv;  // ...or, when given, this program and its arguments, no shell
  int cwd_fd = -1;  // the checked directory: the child changes into it by descriptor
  std::string cwd_path;  // its real path, entered by name in a mount namespace (and checked)
  // The whole environment of the program started (the shell, or bubblewrap).
  std::vector<std::pair<std::string, std::string>> env;
  std::int64_t timeout_ms = 300'000;
  std::size_t output_chars_max = 100'000;
  // Prepended to the shell (e.g. a bubblewrap command line); empty: run on the host.
  std::vector<std::string> wrapper;
  std::vector<int> inherited_fds;  // kept open across exec (bubblewrap reads them)
  const local_confinement* confinement = nullptr;  // applied in the child, local mode
  identity run_as;                 // the uid and gid the command (or bubblewrap) starts with
  unsigned long namespaces = 0;    // CLONE_NEW* the command is born in (local mode, as root)
  std::string private_tmp;         // local mode in a mount namespace: a tmpfs mounted here
  resource_limits limits;
};

struct exec_result {
  int exit_code = 0;  // 137 after a timeout or a limit
  bool timed_out = false;
  std::string killed_by;  // "", "timeout", "written_bytes_max", "memory_bytes_max"
  std::string stdout_text;  // ANSI stripped, valid UTF-8, head and tail kept
  std::string stderr_text;
  std::size_t stdout_cut = 0;  // bytes left out
  std::size_t stderr_cut = 0;
  std::int64_t duration_ms = 0;
  std::int64_t written_bytes = 0;  // every process of the call, counted when it is reaped
  std::string processes_limited_by;  // "cgroup" or "rlimit" (not enforced for root)
};

result<exec_result> run_command(const exec_request& request);

// A program that keeps running and talks over pipes (an MCP server): confined, limited and
// placed exactly as run_command places a command, with no timeout of its own. Destroying it
// kills its process group and cgroup and reaps it.
class running_program {
public:
  static result<std::unique_ptr<running_program>> start(const exec_request& request);
  ~running_program();
  running_program(const running_program&) = delete;
  running_program& operator=(const running_program&) = delete;

  int input() const { return in_; }    // its stdin (write end, non-blocking)
  int output() const { return out_; }  // its stdout (read end, non-blocking)
  int errors() const { return err_; }  // its stderr (read end, non-blocking)
  pid_t pid() const { return pid_; }
  // Whether it has ended (reaped here); `status` says how when it has.
  bool ended(std::string* status = nullptr);

private:
  running_program(call_cgroup cgroup) : cgroup_(std::move(cgroup)) {}
  call_cgroup cgroup_;
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1, err_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

} // namespace keel::sandbox
