// The supervisor: the orchestrator's actor. It takes invokes (checking idempotency keys across
// the cluster), makes and loads run actors, forwards resumes, cancels, retries and waits to them
// (loading a run from disk when it is not in memory), recovers unfinished runs at start, takes
// up runs taken over from another node, and reloads runs stopped by a failed write once the store
// writes again.
#pragma once

#include "actors/orchestrator_shared.hpp"

#include <caf/all.hpp>

#include <memory>
#include <string>
#include <unordered_map>

namespace keel::actors {

struct orchestrator_state {
  std::unordered_map<std::string, std::string> idempotency;  // agent/key -> run, while in memory
  std::unordered_map<std::string, std::string> key_of_run;
  std::int64_t stalled_warned_ms = 0;
  static inline const char* name = "keel.orchestrator";
};

using orchestrator_type = caf::stateful_actor<orchestrator_state>;

caf::behavior orchestrator_actor(orchestrator_type* self, std::shared_ptr<orchestrator_shared> shared);

} // namespace keel::actors
