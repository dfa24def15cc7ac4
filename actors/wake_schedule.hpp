// When each run of this node next falls due by the clock (a sleep's end, a wait's or approval's
// expiry, an escalation, a run's time limit): one entry per run, earliest first. Plain data, held
// by the supervisor actor alone; run actors report their runs' next wake, and runs on disk are
// looked up at start and after a takeover. A wake is a hint: the run checks its own state when
// woken, so a wake too early, late, or repeated does nothing wrong.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace keel::actors {

class wake_schedule {
public:
  // `at_ms` 0: the run wants no wake.
  void set(const std::string& run, std::int64_t at_ms) {
    if (auto it = at_.find(run); it != at_.end()) {
      if (it->second == at_ms) return;
      order_.erase({it->second, run});
      at_.erase(it);
    }
    if (at_ms <= 0) return;
    at_.emplace(run, at_ms);
    order_.emplace(at_ms, run);
  }

  // Up to `max` runs due at `now_ms`, earliest first. Each stays in the schedule `retry_ms` later,
  // until its run reports again (its next wake, or none): a wake that could not be delivered is
  // tried again.
  std::vector<std::string> take_due(std::int64_t now_ms, std::size_t max, std::int64_t retry_ms) {
    std::vector<std::string> out;
    while (!order_.empty() && out.size() < max && order_.begin()->first <= now_ms) {
      out.push_back(order_.begin()->second);
      order_.erase(order_.begin());
    }
    for (const auto& run : out) {
      at_[run] = now_ms + retry_ms;
      order_.emplace(now_ms + retry_ms, run);
    }
    return out;
  }

  std::int64_t next_ms() const { return order_.empty() ? 0 : order_.begin()->first; }
  std::int64_t at(const std::string& run) const {
    auto it = at_.find(run);
    return it == at_.end() ? 0 : it->second;
  }
  std::size_t size() const { return at_.size(); }

private:
  std::unordered_map<std::string, std::int64_t> at_;
  std::set<std::pair<std::int64_t, std::string>> order_;
};

} // namespace keel::actors
