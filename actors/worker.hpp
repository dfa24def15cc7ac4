// The worker role: takes tasks from the queues of the agents it serves (NATS queue groups),
// runs model calls and tool calls with bounded concurrency, and sends each result to the
// orchestrator that asked. Holds providers and sandboxes, and no durable state.
#pragma once

#include "runtime/config.hpp"
#include "runtime/result.hpp"

#include <memory>

namespace caf { class actor_system; }
namespace keel::broker { class connection; }

namespace keel::actors {

class worker {
public:
  // Fails (naming the agent and key) when an agent's provider cannot be set up.
  static result<std::unique_ptr<worker>> start(caf::actor_system& system,
                                               const config::node_config& config,
                                               const std::string& node_id,
                                               std::shared_ptr<broker::connection> nats);
  ~worker();
  void stop();  // takes no more tasks; tasks running finish on their own threads

  struct impl;

private:
  explicit worker(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

} // namespace keel::actors
