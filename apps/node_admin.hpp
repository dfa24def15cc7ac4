// A node's administration over the broker (docs/OPERATIONS.md): `keel admin backup` asks the
// node for a checkpoint of its store, made while it serves, under <data_dir>/backups/<name>. Only
// who may publish on the node's admin subject (orchestrator credentials; anyone on a broker
// without authorization) can ask; the name is checked, so nothing is written elsewhere.
#pragma once

#include "runtime/result.hpp"

#include <memory>
#include <mutex>
#include <string>

namespace keel::broker { class connection; class subscription; struct subjects; }
namespace keel::store { class run_store; }

namespace keel::actors {

// Subject: <prefix>.<ns>.admin.<node>.backup; body {"name": "..."}; answer {path, bytes, node}
// or an error.
// `busy` is held while a backup is made: a stopping node takes it before it closes the store.
result<std::unique_ptr<broker::subscription>> serve_admin(std::shared_ptr<broker::connection> nats,
                                                          const broker::subjects& subjects, const std::string& node_id,
                                                          store::run_store& store, const std::string& data_dir,
                                                          std::shared_ptr<std::mutex> busy);

} // namespace keel::actors
