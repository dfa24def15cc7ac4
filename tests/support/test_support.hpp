// Test support shared by every test binary: temporary directories, a real nats-server on a free
// loopback port (killed by its pid), and REQUIRE_EVENTUALLY instead of sleeps.
#pragma once

#include "runtime/child_process.hpp"
#include "runtime/clock.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace keel::testing {

// The keel-node and keel the tests start: the ones this build made, unless the environment names
// others in KEEL_TEST_NODE_BINARY and KEEL_TEST_BINARY (scripts/sanitize.sh thread runs end-to-end
// tests of the plain build against a keel-node built with ThreadSanitizer).
const char* node_binary();
const char* cli_binary();
#define KEEL_NODE_BINARY ::keel::testing::node_binary()
#define KEEL_BINARY ::keel::testing::cli_binary()

// A fresh directory under /tmp, removed with everything in it when the test ends.
class temp_dir {
public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

// nats-server (Debian's /usr/sbin/nats-server) on 127.0.0.1 and a free port, JetStream on.
class nats_server {
public:
  nats_server();  // starts and waits until it accepts connections
  ~nats_server();
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  // Its HTTP monitoring (connz, varz...) on loopback.
  std::string monitor_url() const { return "http://127.0.0.1:" + std::to_string(monitor_port_); }
  pid_t pid() const { return process_.pid(); }
  void kill();     // SIGKILL, as a crash would
  void restart();  // again on the same port and store

private:
  void start();
  bool launch(std::int64_t wait_ms);
  temp_dir store_;
  int port_ = 0;
  int monitor_port_ = 0;
  child_process process_;
};

// Three nats-servers in one cluster (routes on loopback), JetStream on each: what a replicated
// stream needs. Any one may be killed and started again on its ports.
class nats_cluster {
public:
  // `extra_config`: more of each server's configuration (an authorization block, say).
  explicit nats_cluster(std::size_t size = 3, const std::string& extra_config = {});
  ~nats_cluster();
  std::size_t size() const { return ports_.size(); }
  std::string url(std::size_t i) const { return "nats://127.0.0.1:" + std::to_string(ports_[i]); }
  std::vector<std::string> urls() const;
  void kill(std::size_t i);     // SIGKILL
  void restart(std::size_t i);  // the same ports and store
  void signal(std::size_t i, int signal) { processes_[i].signal(signal); }  // SIGSTOP, SIGCONT...
  bool running(std::size_t i) { return processes_[i].running(); }
  // Where each server's store and logs are (s<i>-<n>.log: its n-th start).
  std::string dir() const { return dir_.path(); }

private:
  bool launch(std::size_t i, std::int64_t wait_ms);
  temp_dir dir_;
  std::size_t launches_ = 0;
  std::vector<int> ports_, cluster_ports_;
  std::vector<child_process> processes_;
};

std::string read_file(const std::string& path);
// A TCP listener on 127.0.0.1 and a free port, for checks of what may connect to it.
struct loopback_listener {
  loopback_listener();
  ~loopback_listener();
  loopback_listener(const loopback_listener&) = delete;
  loopback_listener& operator=(const loopback_listener&) = delete;
  int fd = -1;
  int port = 0;
};

// Gives `path` and everything beneath it to the account commands run as (keel-sandbox), as if
// the agent had made it: files a test makes as root stand for files of the agent's own.
void give_to_sandbox(const std::string& path);
// The lines of `text` that are not empty (what a command appended to a file, one per line).
std::vector<std::string> lines_of(const std::string& text);

struct command_output {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs a command to its end (SIGKILL after `timeout_ms`), with `env` entries ("K=V") added.
// Safe on any thread (it asserts nothing); a command that cannot start exits -1.
command_output run_command(const std::vector<std::string>& argv, std::int64_t timeout_ms = 30'000,
                           const std::vector<std::string>& env = {});
// Starts a command in the background with its output going to files in `dir`.
child_process start_command(const std::vector<std::string>& argv, const temp_dir& dir,
                            const std::string& name, const std::vector<std::string>& env = {});
void write_file(const std::string& path, const std::string& content);

} // namespace keel::testing

// Polls `predicate` until it holds or `timeout_ms` passes; fails naming what was awaited.
#define REQUIRE_EVENTUALLY(timeout_ms, predicate)                                         \
  do {                                                                                     \
    auto keel_deadline = ::keel::steady_ms() + (timeout_ms);                               \
    bool keel_held = false;                                                                \
    while (!(keel_held = static_cast<bool>(predicate)) && ::keel::steady_ms() < keel_deadline) \
      std::this_thread::sleep_for(std::chrono::milliseconds(5));                           \
    INFO("awaited for " << (timeout_ms) << " ms: " #predicate);                            \
    REQUIRE(keel_held);                                                                    \
  } while (false)
