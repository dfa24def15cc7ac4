// The queues an orchestrator serves (docs/WORKFLOWS.md): one thread that owns a queue_driver per
// [queues.<name>] of the config. This node's runs ask it to put them in line (enter) and to free
// their slot (release) once what they say is on disk; it looks at each queue while this node has
// runs in line or changes to write, every few seconds otherwise (and then checks the record
// against this node's store), and at once when another orchestrator says a queue changed
// (P.queues.changed, published by whoever wrote it). It answers P.queues.list (one orchestrator of
// the queue group does) with the records as they are read then.
#pragma once

#include "actors/queue_driver.hpp"
#include "broker/connection.hpp"
#include "broker/key_value.hpp"
#include "runtime/config.hpp"

#include <functional>
#include <memory>

namespace keel::actors {

class queue_keeper {
public:
  struct hooks {
    std::function<std::optional<local_run>(const std::string& run)> look_up;  // this node's, now
    std::function<void(const std::string& run, std::int64_t since_ms)> start;  // admitted (that place): may start
  };
  static result<std::unique_ptr<queue_keeper>> start(const config::node_config& config,
                                                     std::shared_ptr<broker::connection> nats,
                                                     broker::jetstream& js, hooks h);
  ~queue_keeper();  // stops
  void stop();

  // From any thread; carried out on the keeper's. An unknown queue is logged and ignored.
  void enter(const std::string& queue, const std::string& run, const std::string& key, std::int64_t since_ms);
  void release(const std::string& queue, const std::string& run, std::int64_t since_ms);

private:
  struct impl;
  explicit queue_keeper(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

} // namespace keel::actors
