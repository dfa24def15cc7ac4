// Where a command runs. `local`: on the host, in the workspace, with no capabilities, a seccomp
// filter, and Landlock confining its writes to the workspace and its own temporary directory.
// `bwrap`: under bubblewrap in a user namespace as an unprivileged uid, with a read-only system,
// the workspace bound read-write, its own /tmp, no network unless configured, a clean
// environment, and the same seccomp filter. Both run each call in its own cgroups, which bound
// the processes and the memory of the whole call, and count the bytes it writes.
#pragma once

#include "runtime/result.hpp"
#include "sandbox/identity.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace keel::sandbox {

enum class environment_kind { local, bwrap };

struct resource_limits {
  std::int64_t cpu_seconds_max = 300;         // RLIMIT_CPU, per process
  std::int64_t memory_bytes_max = 8LL << 30;  // the call's memory cgroup; RLIMIT_AS per process too
  std::int64_t processes_max = 512;           // the call's pids cgroup, else RLIMIT_NPROC
  std::int64_t file_bytes_max = 1LL << 30;    // RLIMIT_FSIZE: largest file a command may write
  std::int64_t written_bytes_max = 4LL << 30; // bytes the whole call writes to storage
};

struct environment {
  environment_kind kind = environment_kind::local;
  bool network = false;  // bwrap: share the host's network; local: TCP allowed (Landlock)
  resource_limits limits;
  std::vector<std::string> env_pass;  // names passed from the node's environment to commands
  std::string run_as = sandbox_account;  // an account, or "worker" (see identity.hpp)
};

inline constexpr int sandbox_uid = 1000;  // the uid and gid of a command inside bubblewrap
inline constexpr int sandbox_gid = 1000;

// The bubblewrap command line that runs a command with `workspace` bound read-write, `cwd` as its
// directory, `command_env` as its whole environment and the seccomp program read from
// `seccomp_fds`; the shell and command follow it.
std::vector<std::string> bwrap_prefix(const environment& env, const std::string& workspace,
                                      const std::string& cwd,
                                      const std::vector<std::pair<std::string, std::string>>& command_env,
                                      const std::vector<int>& seccomp_fds);

// Whether bubblewrap can run here as `run_as` (found, and able to make its namespaces).
result<void> bwrap_available(const identity& run_as);

// Where a local call's temporary directory is made: $TMPDIR of the worker, else /tmp.
std::string call_temporary_base();

// Kills what the calls of workers that died left running (their call cgroups, named after the
// worker's pid, when no process of that pid lives) and removes those cgroups and the calls'
// temporary directories (keel-call-<pid>-*, made by local calls). Returns how many
// processes it killed. A worker calls it at start: a command of a dead worker is run again
// elsewhere, and its leftovers must not go on beside it.
std::size_t sweep_orphaned_calls();

// One call's cgroups (pids and memory): made before the command starts, joined by the child
// before exec, removed after. Inactive where no writable hierarchy exists.
class call_cgroup {
public:
  static call_cgroup make(const resource_limits& limits);
  call_cgroup() = default;
  call_cgroup(call_cgroup&& other) noexcept;
  call_cgroup& operator=(call_cgroup&&) = delete;
  ~call_cgroup();

  bool active() const { return !directories_.empty(); }
  bool memory_bounded() const { return memory_bounded_; }
  // For the child, between fork and exec: the files it writes "0" into.
  const std::vector<std::string>& procs_files() const { return procs_files_; }
  // Kills everything still in it (a fork bomb's survivors, a daemon that left the group).
  void kill_all() const;
  // Bytes written to storage by the call's processes so far: the largest sum seen over its live
  // processes and `reaper` (the call's init, outside the cgroup), each counting every process it
  // reaped. In a pid namespace every process ends up reaped by the shell or the init, so one
  // that lived between two polls is counted at the next.
  std::int64_t poll_written_bytes(pid_t reaper = 0);
  // Whether the memory limit was reached (a process was killed or an allocation refused).
  bool memory_limit_hit() const;

private:
  std::vector<std::string> directories_;
  std::vector<std::string> procs_files_;
  std::string memory_dir_;
  bool memory_bounded_ = false;
  bool v2_ = false;
  std::int64_t peak_written_ = 0;
};

} // namespace keel::sandbox
