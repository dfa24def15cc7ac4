// A node's metrics and traces (docs/OPERATIONS.md): the gauges read at each scrape (runs by
// status and approvals from the store, slots and queued tasks from the worker and the broker),
// the /metrics listener of a node without a gateway, and the process's span exporter.
#pragma once

#include "runtime/config.hpp"
#include "runtime/result.hpp"

#include <functional>
#include <memory>
#include <string>

namespace keel::store { class run_store; }
namespace keel::broker { class connection; }

namespace keel::actors {

struct telemetry_sources {
  const store::run_store* store = nullptr;                // orchestrators
  std::function<std::int64_t()> runs_in_memory;           // orchestrators
  std::function<std::pair<std::int64_t, std::int64_t>()> slots;  // workers: slots, busy
  std::shared_ptr<broker::connection> nats;               // workers: the queues' backlog
};

class node_telemetry {
public:
  // Starts the exporter (when an endpoint is configured) and, with metrics.listen, the listener.
  static result<std::unique_ptr<node_telemetry>> start(const config::node_config& config, const std::string& node_id,
                                                       telemetry_sources sources);
  ~node_telemetry();
  void stop();    // the listener and collectors go (they read the store and the roles)
  void finish();  // then, once the roles are stopped: what spans wait are sent, for up to a second
  std::uint16_t metrics_port() const;  // 0: no listener

  struct impl;

private:
  explicit node_telemetry(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

} // namespace keel::actors
