#include "actors/retention.hpp"

#include <optional>
#include <set>

namespace keel::actors {

namespace {
using store::run_status;

// Ended runs the store holds, counted from its status index.
result<std::int64_t> ended_count(const store::run_store& store) {
  std::int64_t n = 0;
  for (auto s : {run_status::completed, run_status::failed, run_status::cancelled}) {
    auto count = store.count_by_status(s);
    if (!count) return count.error();
    n += static_cast<std::int64_t>(*count);
  }
  return n;
}

// A child run (a sub-agent's or a fan-out's) stays while its parent is in the store and may still
// need it: a failed parent can be retried, and its retry finds the child by its idempotency key
// instead of starting it again; a parent still going waits for its outcome.
bool parent_needs(const store::run_store& store, const store::run_record& r) {
  if (!r.state.is_object() || !r.state.contains("parent") || !r.state["parent"].is_object()) return false;
  auto parent = r.state["parent"].value("run_id", std::string());
  if (parent.empty()) return false;
  auto p = store.get(parent, false);
  if (!p) return true;  // cannot tell: kept
  return *p && (*p)->status != run_status::completed && (*p)->status != run_status::cancelled;
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
  // Where the next pass starts: past the last entry read when the scan stopped at its bound
  // (nothing before it could go now), else from the oldest again.
  std::optional<store::run_store::time_entry> resume_after;
  // A run is read only as far as the scan goes: at most this many of the oldest entries a time.
  const std::size_t scan_max = policy.batch_max * 8;
  if (policy.max_age_ms > 0) {
    retention_plan plan;
    plan.ended_before_ms = now_ms - policy.max_age_ms;
    // A run created after the cutoff cannot have ended before it: the scan stops there.
    auto oldest = store.list_oldest(at.after_ms, at.after_run, scan_max);
    if (!oldest) return oldest.error();
    std::size_t read = 0;
    for (const auto& entry : *oldest) {
      if (entry.created_ms >= plan.ended_before_ms || plan.runs.size() >= policy.batch_max) break;
      ++read;
      if (in_memory(entry.run_id)) continue;
      auto record = store.get(entry.run_id, false);
      if (!record || !*record) continue;
      if (!store::is_terminal((*record)->status) || (*record)->updated_ms >= plan.ended_before_ms) continue;
      if (parent_needs(store, **record)) continue;
      plan.runs.push_back(entry.run_id);
      taken.insert(entry.run_id);
    }
    if (read > 0 && (read == scan_max || plan.runs.size() >= policy.batch_max)) resume_after = (*oldest)[read - 1];
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
      std::size_t read = 0;
      for (const auto& entry : *oldest) {
        if (static_cast<std::int64_t>(plan.runs.size()) >= excess || plan.runs.size() >= policy.batch_max) break;
        ++read;
        if (taken.count(entry.run_id) || in_memory(entry.run_id)) continue;
        auto record = store.get(entry.run_id, false);
        if (!record || !*record || !store::is_terminal((*record)->status) || parent_needs(store, **record)) continue;
        plan.runs.push_back(entry.run_id);
      }
      if (read > 0 && (read == scan_max || static_cast<std::int64_t>(plan.runs.size()) >= excess ||
                       plan.runs.size() >= policy.batch_max)) {
        if (!resume_after || (*oldest)[read - 1].created_ms > resume_after->created_ms) resume_after = (*oldest)[read - 1];
      }
      if (!plan.runs.empty()) plans.push_back(std::move(plan));
    }
  }
  at = resume_after ? retention_cursor{resume_after->created_ms, resume_after->run_id, at.passes}
                    : retention_cursor{-1, {}, at.passes};
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
  if (shared.takeovers_running.load() > 0) return 0;  // its runs are being written: next time
  // Runs in memory wait for the next pass; so do runs of a domain this node does not certainly
  // hold now (a lease in doubt, or runs another node took over).
  auto skip = [&](const std::string& run) {
    if (shared.runs.find(run)) return true;
    return shared.replicated() && !shared.owner.answers_for(run_id{run}.owner());
  };
  auto plans = plan_retention(shared.store, policy, now_ms, skip, &cursor);
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
