// One keel node: its store (orchestrator), its actor system, its NATS connection and the actors
// its roles need. Started by keel-node; stopped by a signal within the configured bound.
#pragma once

#include "runtime/config.hpp"
#include "runtime/result.hpp"

#include <memory>
#include <string>

namespace keel::actors {

class node {
public:
  static result<std::unique_ptr<node>> start(const config::node_config& config);
  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  const std::string& id() const;
  // Says "stopping" to the cluster, drains NATS, stops the actors, flushes and closes the store.
  void stop();

  struct impl;

private:
  explicit node(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

// The node id: the configured name, else one kept in the store (orchestrators keep their id
// across restarts, since their run ids name them), else host name and process id.
std::string derive_node_id(const config::node_config& config, const std::string& stored);

} // namespace keel::actors
