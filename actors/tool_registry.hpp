// The tools that tool workers declared (docs/PROTOCOL.md, tool workers), as every orchestrator
// holds them: kept in a key-value bucket (one key per queue, replicated like the task stream), so
// that a declaration outlives its worker and every orchestrator reads the same. One thread owns
// the registry: it takes declare requests (queue group: one orchestrator writes each), hears
// that another wrote one, reads the bucket again every 30 s, and publishes each new whole set
// as an immutable snapshot that run machines read without a lock held past the copy.
#pragma once

#include "broker/connection.hpp"
#include "broker/key_value.hpp"
#include "runtime/config.hpp"
#include "runtime/tool_declaration.hpp"
#include "runtime/wire.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

namespace keel::actors {

class tool_registry {
public:
  // Opens the bucket (creating it), reads every queue's tools, and starts taking requests.
  static result<std::unique_ptr<tool_registry>> start(std::shared_ptr<broker::connection> nats, broker::jetstream& js,
                                                      const config::node_config& config);
  ~tool_registry();
  tool_registry(const tool_registry&) = delete;
  tool_registry& operator=(const tool_registry&) = delete;

  std::shared_ptr<const tools::declared_tools> snapshot() const;
  void stop();

private:
  tool_registry(std::shared_ptr<broker::connection> nats, std::unique_ptr<broker::key_value> bucket,
                const config::node_config& config);
  void loop();
  void post(std::function<void()> job);
  void declare(const broker::message& m);   // on the registry's thread
  void read_queue(const std::string& queue);
  void read_all();
  void list(const broker::message& m) const;
  void publish_snapshot();

  std::shared_ptr<broker::connection> nats_;
  std::unique_ptr<broker::key_value> bucket_;
  broker::subjects subjects_;
  std::int64_t result_bytes_cap_;
  wire::limits limits_;
  // Owned by the registry's thread: every queue's tools as read last.
  std::map<std::string, tools::queue_tools> queues_;
  std::set<std::string> agent_queues_;  // this node's agents' queues: no tool worker may declare there

  mutable std::mutex snapshot_mutex_;
  std::shared_ptr<const tools::declared_tools> snapshot_;

  std::mutex jobs_mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::unique_ptr<broker::subscription>> subscriptions_;
  std::thread thread_;
};

} // namespace keel::actors
