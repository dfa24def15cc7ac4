// A keel cluster for end-to-end tests: a real nats-server and a keel-node started from the built
// binary with a config written for the test, and the keel command line to talk to it.
#pragma once

#include "broker/connection.hpp"
#include "tests/support/failure_report.hpp"
#include "tests/support/test_support.hpp"

#include <nlohmann/json.hpp>

namespace keel::testing {

// `text` with every `from` replaced by `to`.
std::string replace_all(std::string text, const std::string& from, const std::string& to);

struct cluster_options {
  // The worker role in a process of its own (node "w1"), so that it can be killed or paused alone.
  bool separate_worker = false;
  std::vector<std::string> node_sets;    // keel-node --set lines for the node (n1)
  std::vector<std::string> worker_sets;  // and for the separate worker
  bool gateway = false;                  // n1 serves the HTTP API too, on a free port (gateway_url())
  std::string data_dir = {};             // the nodes' data directory (default: the test's "data")
};

class cluster {
public:
  // `agents` is TOML for [agents.*] tables; "{dir}" in it becomes the test's directory.
  // `files` (name, content) are written into the test's directory before the node starts.
  explicit cluster(const std::string& agents,
                   const std::vector<std::pair<std::string, std::string>>& files = {},
                   cluster_options options = {});
  ~cluster();

  void start_node();
  void kill_node();  // SIGKILL, as a crash would
  void stop_node();  // SIGTERM, and wait
  void start_worker();
  void kill_worker();
  void signal_worker(int signal);  // SIGSTOP, SIGCONT...
  result<int> wait_worker(std::int64_t timeout_ms);  // its exit status
  std::string worker_log() const { return read_file(dir_.file("worker.err")); }
  std::string gateway_url() const { return "http://127.0.0.1:" + std::to_string(gateway_port_); }
  const std::string& gateway_token() const { return token_; }

  command_output keel(std::vector<std::string> args, std::int64_t timeout_ms = 30'000);
  std::string invoke(const std::string& agent, const std::string& input);
  nlohmann::json show(const std::string& run_id);
  std::string status(const std::string& run_id);
  std::vector<nlohmann::json> events(const std::string& run_id);
  // The step key of the suspend event the run waits on, once it waits.
  std::string await_suspend(const std::string& run_id, std::int64_t timeout_ms = 20'000);
  void await_status(const std::string& run_id, const std::string& status, std::int64_t timeout_ms = 20'000);
  bool has_event(const std::string& run_id, const std::string& type);

  const temp_dir& dir() const { return dir_; }
  pid_t node_pid() const { return node_.pid(); }
  nats_server& nats() { return nats_; }
  // A NATS connection of the test's own, as any client would have (fails the test if none).
  std::shared_ptr<broker::connection> connect_client();
  std::string node_log() const { return read_file(dir_.file("node.err")); }

private:
  temp_dir dir_;
  // A failing test prints the nodes' logs as they are at the failure.
  on_failure report_{[this] { return logs(); }};
  std::string logs() const;
  nats_server nats_;
  std::string config_path_;
  std::string worker_config_path_;
  cluster_options options_;
  child_process node_;
  child_process worker_;
  int gateway_port_ = 0;
  std::string token_;  // the gateway token the cluster made (empty when the test gave one)
  int starts_ = 0;
};

} // namespace keel::testing
