#include "actors/retention.hpp"

#include <set>

namespace keel::actors {

namespace {
using store::run_status;

// Ended runs the store holds, counted from its status index.
result<std::int64_t> ended_count(const store::run_store& store) {
  std::int64_t n = 0;
  for (auto s : {run_status::completed, run_status::failed, run_status::cancelled}) {
    auto ids = store.list_by_status(s);
    if (!ids) return ids.error();
    n += static_cast<std::int64_t>(ids->size());
  }
  return n;
}
} // namespace

result<std::vector<retention_plan>> plan_retention(const store::run_store& store, const retention_policy& policy,
                                                   std::int64_t now_ms,
                                                   const std::function<bool(const std::string&)>& in_memory,
                                                   retention_cursor* cursor) {
  std::vector<retention_plan> plans;
  std::set<std::string> taken;
  retention_cursor none;
  auto& at = cursor ? *cursor : none;
  if (at.passes++ % 16 == 0) at = retention_cursor{-1, {}, at.passes};
  const store::run_store::time_entry* last = nullptr;  // the newest entry a plan took
  // A run is read only as far as the scan goes: at most this many of the oldest entries a time.
  const std::size_t scan_max = policy.batch_max * 8;
  if (policy.max_age_ms > 0) {
    retention_plan plan;
    plan.ended_before_ms = now_ms - policy.max_age_ms;
    // A run created after the cutoff cannot have ended before it: the scan stops there.
    auto oldest = store.list_oldest(at.after_ms, at.after_run, scan_max);
    if (!oldest) return oldest.error();
    for (const auto& entry : *oldest) {
      if (entry.created_ms >= plan.ended_before_ms || plan.runs.size() >= policy.batch_max) break;
      if (in_memory(entry.run_id)) continue;
      auto record = store.get(entry.run_id, false);
      if (!record || !*record) continue;
      if (!store::is_terminal((*record)->status) || (*record)->updated_ms >= plan.ended_before_ms) continue;
      plan.runs.push_back(entry.run_id);
      taken.insert(entry.run_id);
      last = &entry;
    }
    if (last) at = retention_cursor{last->created_ms, last->run_id, at.passes};
    if (!plan.runs.empty()) plans.push_back(std::move(plan));
  }
  if (policy.max_runs > 0) {
    auto ended = ended_count(store);
    if (!ended) return ended.error();
    auto excess = *ended - policy.max_runs - static_cast<std::int64_t>(taken.size());
    if (excess > 0) {
      retention_plan plan;
      plan.ended_before_ms = now_ms + 1;
      auto oldest = store.list_oldest(at.after_ms, at.after_run, scan_max);
      if (!oldest) return oldest.error();
      const store::run_store::time_entry* taken_last = nullptr;
      for (const auto& entry : *oldest) {
        if (static_cast<std::int64_t>(plan.runs.size()) >= excess || plan.runs.size() >= policy.batch_max) break;
        if (taken.count(entry.run_id) || in_memory(entry.run_id)) continue;
        auto record = store.get(entry.run_id, false);
        if (!record || !*record || !store::is_terminal((*record)->status)) continue;
        plan.runs.push_back(entry.run_id);
        taken_last = &entry;
      }
      if (taken_last) at = retention_cursor{taken_last->created_ms, taken_last->run_id, at.passes};
      if (!plan.runs.empty()) plans.push_back(std::move(plan));
    }
  }
  if (plans.empty()) at = retention_cursor{-1, {}, at.passes};  // nothing past the cursor: from the oldest next time
  return plans;
}

} // namespace keel::actors

#include "actors/actors_log.hpp"
#include "actors/orchestrator_shared.hpp"
#include "runtime/ids.hpp"
#include "runtime/metrics.hpp"

namespace keel::actors {

std::size_t apply_retention(orchestrator_shared& shared, std::int64_t now_ms, retention_cursor& cursor) {
  retention_policy policy{shared.config.retention_max_age_ms, shared.config.retention_max_runs, 1000};
  if (policy.max_age_ms <= 0 && policy.max_runs <= 0) return 0;
  auto plans = plan_retention(shared.store, policy, now_ms, [&](const std::string& run) { return static_cast<bool>(shared.runs.find(run)); }, &cursor);
  if (!plans) {
    logger()->warn("retention: the store could not be read: {}", plans.error().message);
    return 0;
  }
  std::size_t removed_count = 0;
  for (const auto& plan : *plans) {
    auto removed = shared.store.remove_ended(plan.runs, plan.ended_before_ms);
    if (!removed) {
      logger()->warn("retention: ended runs could not be removed: {}", removed.error().message);
      break;
    }
    removed_count += removed->size();
    metrics::count("keel_runs_removed_total", {}, static_cast<double>(removed->size()));
    if (shared.replicated() && shared.log_pool && !removed->empty())
      shared.log_pool->submit([&shared, runs = *removed] {
        for (const auto& run : runs) {
          // Only while this node holds the run's domain: the log of a node that lost it is its
          // new owner's to keep.
          if (!shared.owner.answers_for(run_id{run}.owner())) continue;
          auto& log = *shared.lane_of(run).log_view;
          auto subject = shared.log_subject(run);
          auto last = log.last_sequence(subject);
          if (last && *last > 0) {
            if (auto r = log.purge_before(subject, *last + 1); !r)
              logger()->debug("run {}: its log was not removed: {}", run, r.error().message);
          }
          shared.log_writer.forget_if_settled(run);
        }
      });
  }
  if (removed_count > 0) logger()->info("retention: removed {} ended runs", removed_count);
  return removed_count;
}

} // namespace keel::actors
