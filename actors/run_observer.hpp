// What a run's transitions tell an operator's tools: metrics (runs started and ended, step
// latency, tokens, cost, approval waits) and the orchestrator's spans of a run's trace (the run's
// own invoke_agent span, its approvals and waits). Held by the run's actor (one per run, no
// locks); what it works out from a transition's events is recorded only once the transition is
// written, so a transition that is not written leaves no trace.
#pragma once

#include "runtime/run_state.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace keel::actors {

// The W3C traceparent a run's tasks carry: the run's trace and its invoke_agent span.
std::string traceparent_of(const store::run_record& record, const store::run_state& state);

class run_observer {
public:
  // `record`: the run as loaded (its updated_ms is when it was last written: when a run that
  // waited on disk began to wait).
  explicit run_observer(const store::run_record& record)
    : asked_ms_(record.updated_ms), waited_ms_(record.updated_ms) {}

  // The record and state after the transition whose events these are; the returned function
  // records what they tell, and is called once the transition is written.
  std::function<void()> take(const store::run_record& record, const store::run_state& state,
                             const std::vector<wire::event>& events);

private:
  // When the approval asked and the wait began, as seen here; a run loaded from disk for its answer
  // has them as when it was last written (the ask, unless an event was kept for it since).
  std::int64_t asked_ms_ = 0;
  std::int64_t waited_ms_ = 0;
  std::string open_step_kind_;  // "model" or "tool": started here, not yet ended
  std::int64_t open_step_ms_ = 0;
};

} // namespace keel::actors
