// What a command's process takes on between fork and exec, built beforehand in the parent so
// that the child does nothing but system calls: a seccomp filter (no mount, ptrace, keyctl, bpf,
// new namespaces, kernel modules, terminal injection, ...), and in local mode a Landlock domain
// (writes only beneath the workspace and the call's temporary directory; no signals to
// processes outside the call; no TCP without network) and no capabilities.
#pragma once

#include "runtime/result.hpp"
#include "sandbox/identity.hpp"
#include "sandbox/unique_fd.hpp"

#include <cstdint>
#include <string>
#include <vector>

struct sock_filter;

namespace keel::sandbox {

// The kernel's Landlock ABI version; 0 when Landlock is missing or disabled.
int landlock_abi();

// The seccomp program as BPF bytes, built once per network setting; an error when libseccomp
// cannot build it. Without network, only AF_UNIX sockets can be made; with it, also TCP and UDP
// over IPv4 and IPv6 and routing netlink (what name resolution asks); no other family or
// protocol (raw, packet, MPTCP, SCTP, vsock, ...) either way.
result<const std::string*> seccomp_program(bool network = false);

// A fresh memory file (close-on-exec) holding `bytes`, at offset 0.
result<unique_fd> memory_file(const char* name, const std::string& bytes);

// Fresh memory files holding both programs (the main one, then the socket filter), at offset 0,
// for bubblewrap's --add-seccomp-fd.
result<std::vector<unique_fd>> seccomp_program_fds(bool network);

class local_confinement {
public:
  // `writable` directories (open descriptors) get every write right; `network` keeps TCP.
  // `writable_in_child`: a directory the child mounts something over (its private TMPDIR),
  // opened and allowed in the child, where it names the mount the child sees.
  static result<local_confinement> make(const std::vector<int>& writable, bool network,
                                        std::string writable_in_child = {});

  // In the child, after fork: no capabilities (bounding set emptied while it still may), the
  // uid and gid of `run_as`, no new privileges, the Landlock domain, the seccomp filter.
  // Async-signal-safe. Returns 0, or the errno of the step that failed with `failed_step` naming it.
  int apply_in_child(const identity& run_as, const char** failed_step) const noexcept;

  // "landlock ABI n" or why Landlock is not used.
  const std::string& landlock_status() const { return landlock_status_; }

private:
  unique_fd ruleset_;
  const std::string* seccomp_ = nullptr;
  const std::string* socket_seccomp_ = nullptr;
  std::string landlock_status_;
  std::string writable_in_child_;
  std::uint64_t write_rights_ = 0;
};

} // namespace keel::sandbox
