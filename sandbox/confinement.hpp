// What a command's process takes on between fork and exec, built beforehand in the parent so
// that the child does nothing but system calls: a seccomp filter (no mount, ptrace, keyctl, bpf,
// new namespaces, kernel modules, terminal injection, ...), and in local mode a Landlock domain
// (writes only beneath the workspace and the call's temporary directory; no signals to
// processes outside the call; no TCP without network) and no capabilities.
#pragma once

#include "runtime/result.hpp"
#include "sandbox/unique_fd.hpp"

#include <cstdint>
#include <string>
#include <vector>

struct sock_filter;

namespace keel::sandbox {

// The kernel's Landlock ABI version; 0 when Landlock is missing or disabled.
int landlock_abi();

// The seccomp program as BPF bytes, built once; an error when libseccomp cannot build it.
result<const std::string*> seccomp_program();

// A fresh memory file holding the program, at offset 0 (bubblewrap's --seccomp reads one).
result<unique_fd> seccomp_program_fd();

class local_confinement {
public:
  // `writable` directories (open descriptors) get every write right; `network` keeps TCP.
  static result<local_confinement> make(const std::vector<int>& writable, bool network);

  // In the child, after fork: no new privileges, the Landlock domain, no capabilities, the
  // seccomp filter. Async-signal-safe. Returns 0, or the errno of the step that failed with
  // `failed_step` naming it.
  int apply_in_child(const char** failed_step) const noexcept;

  // "landlock ABI n" or why Landlock is not used.
  const std::string& landlock_status() const { return landlock_status_; }

private:
  unique_fd ruleset_;
  const std::string* seccomp_ = nullptr;
  std::string landlock_status_;
};

} // namespace keel::sandbox
