// The schedules an orchestrator drives (docs/WORKFLOWS.md): one thread that owns a
// schedule_driver per [schedules.<name>] of the config, looks at each when its next tick falls due
// (and every few seconds), starts ticks' runs through P.schedules.invoke, and keeps the shared
// records in the key-value bucket KEEL_SCHEDULES_<prefix>_<namespace>. It answers
// P.schedules.list and P.schedules.<name>.pause|resume.<who> (one orchestrator of the queue group
// does) on that same thread.
#pragma once

#include "broker/connection.hpp"
#include "broker/key_value.hpp"
#include "runtime/config.hpp"

#include <memory>

namespace keel::actors {

class schedule_keeper {
public:
  static result<std::unique_ptr<schedule_keeper>> start(const config::node_config& config,
                                                        std::shared_ptr<broker::connection> nats,
                                                        broker::jetstream& js);
  ~schedule_keeper();  // stops
  void stop();

private:
  struct impl;
  explicit schedule_keeper(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

} // namespace keel::actors
