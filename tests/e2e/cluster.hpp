// A keel cluster for end-to-end tests: a real nats-server and a keel-node started from the built
// binary with a config written for the test, and the keel command line to talk to it.
#pragma once

#include "broker/connection.hpp"
#include "tests/support/test_support.hpp"

#include <nlohmann/json.hpp>

namespace keel::testing {

class cluster {
public:
  // `agents` is TOML for [agents.*] tables; "{dir}" in it becomes the test's directory.
  // `files` (name, content) are written into the test's directory before the node starts.
  explicit cluster(const std::string& agents,
                   const std::vector<std::pair<std::string, std::string>>& files = {});
  ~cluster();

  void start_node();
  void kill_node();  // SIGKILL, as a crash would
  void stop_node();  // SIGTERM, and wait

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
  nats_server& nats() { return nats_; }
  // A NATS connection of the test's own, as any client would have (fails the test if none).
  std::shared_ptr<broker::connection> connect_client();
  std::string node_log() const { return read_file(dir_.file("node.err")); }

private:
  temp_dir dir_;
  nats_server nats_;
  std::string config_path_;
  child_process node_;
  int starts_ = 0;
};

} // namespace keel::testing
