// The one way keel starts a process. The child gets exactly what the options name: its argv and
// environment, stdin/stdout/stderr, the descriptors listed in `kept_fds`, and nothing else of
// keel's (every other descriptor is closed at exec, whoever opened it and however). Optionally it
// is born in new namespaces, leads its own session, dies with keel, and runs a preparation step
// (limits, identity, confinement) between fork and exec.
#pragma once

#include "runtime/result.hpp"

#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace keel {

// A step the child runs after its descriptors are in place and before exec. It must be
// async-signal-safe (the child is a fork of a threaded process: no allocation, no locks).
// Returns 0, or an errno with `failed_step` naming what failed.
using spawn_preparation = int (*)(const void* context, const char** failed_step) noexcept;

struct spawn_options {
  std::vector<std::string> argv;  // argv[0] is looked up on this process's PATH when it has no '/'
  // The whole environment of the child; nullopt: this process's own (keel's servers only).
  std::optional<std::vector<std::pair<std::string, std::string>>> env;
  int stdin_fd = -1;   // -1: /dev/null
  int stdout_fd = -1;  // -1: this process's own
  int stderr_fd = -1;  // -1: this process's own
  std::vector<int> kept_fds;  // open in the child at the same numbers; every other one closed
  int cwd_fd = -1;             // the child changes into it by descriptor
  // The same directory by name: in a new mount namespace a descriptor from the caller's names a
  // mount the child does not have, so the child changes into this path there and checks that it
  // is the very directory of `cwd_fd` (same device and inode), else it fails.
  std::string cwd_path;
  bool new_session = false;    // setsid: no terminal, its own process group
  bool own_process_group = true;
  bool die_with_parent = true;  // SIGKILL when the thread that started it ends
  // CLONE_NEW* flags: the child is born in these namespaces (needs privilege for most). With
  // CLONE_NEWPID it is pid 1 of its namespace, and everything in it dies when it ends.
  unsigned long namespaces = 0;
  // Where the child is born with CLONE_NEWNS and CLONE_NEWPID, a fresh /proc of its namespace is
  // mounted over the host's (what it lists is its own processes only).
  bool fresh_proc = false;
  // Mounted in the child's own mount namespace: a tmpfs of `tmpfs_options` at `tmpfs_path`.
  std::string tmpfs_path;
  std::string tmpfs_options;
  std::vector<std::string> cgroup_procs_files;  // joined (by writing "0") before exec
  spawn_preparation prepare = nullptr;
  const void* prepare_context = nullptr;
};

// Starts the child and returns its pid once exec succeeded; a failure before exec (a program
// not found, a preparation step) is an error naming the step, and leaves no process.
result<pid_t> spawn(const spawn_options& options);

// Makes every descriptor of this process from 3 up close-on-exec (what it inherited, what a
// library opened without the flag). A process calls it at start, and `spawn` before each child;
// neither is what keeps a child from a descriptor (the child closes them all), both are depth.
void mark_inherited_descriptors_cloexec();

} // namespace keel
