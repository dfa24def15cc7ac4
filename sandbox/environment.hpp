// Where a command runs. `local`: on the host, in the workspace, confined by path restriction
// (for the file tools) and by limits. `bwrap`: under bubblewrap, with a read-only system, the
// workspace bound read-write, no network unless configured, its own pid namespace, dying with
// its parent. Both apply limits on CPU time, memory, processes and file size.
#pragma once

#include "runtime/result.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace keel::sandbox {

enum class environment_kind { local, bwrap };

struct resource_limits {
  std::int64_t cpu_seconds_max = 300;       // RLIMIT_CPU
  std::int64_t memory_bytes_max = 8LL << 30;  // RLIMIT_AS (address space)
  std::int64_t processes_max = 512;         // a pids cgroup when one is writable, else RLIMIT_NPROC
  std::int64_t file_bytes_max = 1LL << 30;  // RLIMIT_FSIZE: largest file a command may write
};

struct environment {
  environment_kind kind = environment_kind::local;
  bool network = false;  // bwrap: share the host's network
  resource_limits limits;
};

// The bubblewrap command line that runs a command with `workspace` bound read-write and `cwd`
// as its directory; the shell and command follow it.
std::vector<std::string> bwrap_prefix(const environment& env, const std::string& workspace,
                                      const std::string& cwd);

// Whether bubblewrap can run here (found, and able to make its namespaces).
result<void> bwrap_available();

// A pids cgroup for one command: made before the command starts, joined by the child before
// exec, removed after. Empty when no writable pids hierarchy exists.
class pids_cgroup {
public:
  static pids_cgroup make(std::int64_t processes_max);
  pids_cgroup() = default;
  pids_cgroup(pids_cgroup&& other) noexcept;
  pids_cgroup& operator=(pids_cgroup&&) = delete;
  ~pids_cgroup();
  bool active() const { return !procs_file_.empty(); }
  // For the child, between fork and exec: nothing but open, write and close.
  const std::string& procs_file() const { return procs_file_; }
  // Kills everything still in it (a fork bomb's survivors).
  void kill_all() const;

private:
  std::string directory_;
  std::string procs_file_;
};

} // namespace keel::sandbox
