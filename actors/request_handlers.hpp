// The orchestrator's NATS subscriptions: invokes (a queue group over the orchestrators, and one
// per node), requests about runs (resume, cancel, retry, wait, get, history, messages,
// task_wanted), task results, and listings. Each request is checked, then answered here (reads)
// or handed to the supervisor (what changes a run).
#pragma once

#include "actors/orchestrator_shared.hpp"

#include <caf/actor.hpp>

#include <memory>
#include <vector>

namespace keel::actors {

result<void> serve_requests(const std::shared_ptr<orchestrator_shared>& shared, const caf::actor& actor,
                            std::vector<std::unique_ptr<broker::subscription>>& subscriptions);

} // namespace keel::actors
