// A node's metrics and traces (docs/OPERATIONS.md): the gauges read at each scrape (runs by
// status and approvals from the store, slots and queued tasks from the worker and the broker),
// the /metrics listener of a node without a gateway, and the process's span exporter.
#pragma once

#include "runtime/config.hpp"
#include "runtime/metrics.hpp"
#include "runtime/result.hpp"

#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>

namespace keel::store { class run_store; }
namespace keel::broker { class connection; }

namespace keel::actors {

// What a scrape reads of the node that changes while it runs: its id, and its orchestrator role's
// store and runs in memory (none while the role restarts as a new member, which changes the id
// and the store). Each is set under a lock that a scrape holds while reading them, so a store is
// never read once it is closed.
class node_view {
public:
  explicit node_view(std::string id) : id_(std::move(id)) {}
  void set_id(std::string id);
  void set_orchestrator(const store::run_store* store, std::function<std::int64_t()> runs_in_memory);
  void collect(const metrics::gauge_setter& set, const std::string& roles) const;

private:
  mutable std::shared_mutex mutex_;
  std::string id_;
  const store::run_store* store_ = nullptr;
  std::function<std::int64_t()> runs_in_memory_;
};

struct telemetry_sources {
  std::shared_ptr<node_view> view;                        // every node
  std::function<std::pair<std::int64_t, std::int64_t>()> slots;  // workers: slots, busy
  std::shared_ptr<broker::connection> nats;               // workers: the queues' backlog
};

class node_telemetry {
public:
  // Starts the exporter (when an endpoint is configured) and, with metrics.listen, the listener.
  static result<std::unique_ptr<node_telemetry>> start(const config::node_config& config, const std::string& node_id,
                                                       telemetry_sources sources);  // node_id: the spans' instance
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
