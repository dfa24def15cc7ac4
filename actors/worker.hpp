// The worker role: takes tasks from the JetStream work queues of the agents it serves, only as
// many as it has free slots; runs model calls and tool calls; says "in progress" while each runs;
// hands each result to the run's owner and acknowledges the task once the owner has it on disk.
// Holds providers, sandboxes and caches, and no durable state.
#pragma once

#include "runtime/config.hpp"
#include "runtime/result.hpp"

#include <memory>
#include <vector>

namespace caf { class actor_system; }
namespace keel::broker { class connection; }

namespace keel::actors {

class worker {
public:
  // Fails (naming the agent and key) when an agent's provider cannot be set up.
  static result<std::unique_ptr<worker>> start(caf::actor_system& system,
                                               const config::node_config& config,
                                               const std::string& node_id,
                                               // The node's lanes (config lanes_for()); the
                                               // first also takes tasks from the work queue.
                                               const std::vector<std::shared_ptr<broker::connection>>& lanes);
  ~worker();
  void stop();  // takes no more tasks; tasks running finish on their own threads
  std::size_t slots_count() const;
  std::size_t slots_busy() const;

  struct impl;

private:
  explicit worker(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

} // namespace keel::actors
