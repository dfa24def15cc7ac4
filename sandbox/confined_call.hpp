// Everything a program started for an agent runs inside, set up once for exec, command tools and
// MCP stdio servers alike: the account it runs as, its environment (a fixed base, what the
// agent's config passes, keel's), and where it runs (local: Landlock, seccomp and namespaces;
// bwrap: bubblewrap with its arguments in a memory file). The result owns what the request
// points at (descriptors, the private temporary directory) for as long as the program runs.
#pragma once

#include "sandbox/exec.hpp"
#include "sandbox/policy.hpp"
#include "sandbox/unique_fd.hpp"
#include "sandbox/workspace.hpp"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace keel::sandbox {

struct call_temporary {
  std::string path;
  unique_fd fd;
  call_temporary() = default;
  call_temporary(call_temporary&&) = default;
  call_temporary& operator=(call_temporary&&) = default;
  ~call_temporary();
};

struct confined_call {
  exec_request request;
  call_temporary temporary;
  std::vector<unique_fd> fds;
  std::optional<local_confinement> confinement;
  unique_fd cwd_fd;
  confined_call() = default;
  confined_call(const confined_call&) = delete;
  confined_call& operator=(const confined_call&) = delete;
};

// Fills `call.request` (all but the command or argv, the timeout and the output bound) to run in
// the directory `cwd` of `ws` as the policy says. `env`: the call's own variables.
result<void> prepare_confined(confined_call& call, const workspace& ws, const policy& p, const location& cwd,
                              const std::map<std::string, std::string>& env, const std::string& task_id);

} // namespace keel::sandbox
