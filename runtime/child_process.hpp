// Starting and stopping child processes (nats-server, keel-node) by pid, each in its own process
// group so that stopping it also stops anything it started.
#pragma once

#include "runtime/result.hpp"

#include <string>
#include <sys/types.h>
#include <vector>

namespace keel {

struct child_options {
  std::vector<std::string> argv;  // argv[0] is looked up on PATH when it has no '/'
  std::string stdout_path;        // empty: inherit
  std::string stderr_path;        // empty: inherit
  bool own_process_group = true;
  bool die_with_parent = true;    // SIGKILL the child when this process dies
};

class child_process {
public:
  static result<child_process> start(const child_options& options);

  child_process() = default;
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) noexcept;
  ~child_process();  // kills (SIGKILL) and reaps a child still running

  pid_t pid() const { return pid_; }
  bool running();
  // Sends `signal` (to the whole group when the child has its own).
  void signal(int signal);
  // Waits up to `timeout_ms` for the child to exit; returns its exit status (128+n for a signal).
  result<int> wait(std::int64_t timeout_ms);
  // SIGTERM, then SIGKILL after `grace_ms`; returns the exit status.
  int stop(std::int64_t grace_ms);

private:
  pid_t pid_ = -1;
  bool own_group_ = false;
  int status_ = -1;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
result<int> free_loopback_port();
// Whether something accepts TCP connections on 127.0.0.1:`port`.
bool port_accepts(int port);

} // namespace keel
