// Which ended runs an orchestrator removes now (docs/OPERATIONS.md, retention): those that ended
// more than retention.max_age_ms ago, and the oldest beyond retention.max_runs ended runs. Read
// from the store's indexes, at most `batch_max` runs at a time; runs in memory are left for the
// next time. The supervisor removes them (run_store::remove_ended checks again that each has
// ended) and has the run log forget them.
#pragma once

#include "runtime/result.hpp"
#include "runtime/run_store.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace keel::actors {

struct retention_policy {
  std::int64_t max_age_ms = 0;  // 0: none
  std::int64_t max_runs = 0;    // 0: none
  std::size_t batch_max = 1000;
};

struct retention_plan {
  std::vector<std::string> runs;
  std::int64_t ended_before_ms = 0;  // only runs last written before this go
};

// Where the last pass stopped in the time index: the next starts there, past what it removed (a
// scan from the oldest would step over every removed key until the store compacts them away).
// Every 16th pass, and after a pass that found nothing, starts again at the oldest (runs older
// than the cursor that have ended since).
struct retention_cursor {
  std::int64_t after_ms = -1;
  std::string after_run;
  std::uint64_t passes = 0;
};

// Up to two plans (by age, then by count), each for remove_ended().
result<std::vector<retention_plan>> plan_retention(const store::run_store& store, const retention_policy& policy,
                                                   std::int64_t now_ms,
                                                   const std::function<bool(const std::string&)>& in_memory,
                                                   retention_cursor* cursor = nullptr);

} // namespace keel::actors

namespace keel::actors {

struct orchestrator_shared;

// One pass of retention on this orchestrator (the supervisor calls it, between the runs it loads,
// so no run is loaded while it goes): plans, removes, and has the run log forget what went.
// Returns how many runs were removed.
std::size_t apply_retention(orchestrator_shared& shared, std::int64_t now_ms, retention_cursor& cursor);

} // namespace keel::actors
