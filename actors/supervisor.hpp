// The supervisor: the orchestrator's actor. It takes invokes (checking idempotency keys across
// the cluster), makes and loads run actors, forwards resumes, cancels, retries and waits to them
// (loading a run from disk when it is not in memory), recovers unfinished runs at start, takes
// up runs taken over from another node, reloads runs stopped by a failed write once the store
// writes again, wakes runs whose time came (workflows: a sleep's end, an expiry, a time limit) and
// hands them the events sent to them.
#pragma once

#include "actors/orchestrator_shared.hpp"
#include "actors/wake_schedule.hpp"

#include <caf/all.hpp>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace keel::actors {

// An invoke (or a fork) waiting for its idempotency key's claim across the cluster.
struct waiting_invoke {
  wire::invoke_request invoke;
  std::function<result<store::run_record>(const std::string&)> make_record;
  std::string reply;
};

struct orchestrator_state {
  std::unordered_map<std::string, std::string> idempotency;  // agent/key -> run, while in memory
  std::unordered_map<std::string, std::string> key_of_run;
  // Keys being claimed in the cluster's bucket now (agent/key -> the invokes waiting for that
  // claim's answer, the one that asked first at the front).
  std::unordered_map<std::string, std::vector<waiting_invoke>> claiming;
  std::int64_t stalled_warned_ms = 0;
  wake_schedule wakes;           // workflows: when each run of this node next falls due
  std::int64_t tick_at_ms = 0;   // when the schedule's next look is due (wall clock; 0: none asked)
  static inline const char* name = "keel.orchestrator";
};

using orchestrator_type = caf::stateful_actor<orchestrator_state>;

caf::behavior orchestrator_actor(orchestrator_type* self, std::shared_ptr<orchestrator_shared> shared);

} // namespace keel::actors
