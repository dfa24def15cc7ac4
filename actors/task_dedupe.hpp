// The results a worker handed over lately, by task id: a copy of a task that comes again (the
// broker handed it out twice, an acknowledgement was lost) gets the first result, not a second
// run. Bounded in entries and bytes; the oldest go first. Thread-safe.
#pragma once

#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace keel::actors {

class task_dedupe {
public:
  explicit task_dedupe(std::size_t entries_max = 4096, std::size_t bytes_max = 64 << 20)
    : entries_max_(entries_max), bytes_max_(bytes_max) {}

  std::optional<std::string> find(const std::string& task_id) const {
    std::lock_guard lock{mutex_};
    auto it = results_.find(task_id);
    if (it == results_.end()) return std::nullopt;
    return it->second;
  }
  void put(const std::string& task_id, const std::string& result) {
    std::lock_guard lock{mutex_};
    if (results_.count(task_id)) return;
    results_[task_id] = result;
    order_.push_back(task_id);
    bytes_ += result.size();
    while (!order_.empty() && (order_.size() > entries_max_ || bytes_ > bytes_max_)) {
      auto it = results_.find(order_.front());
      bytes_ -= it->second.size();
      results_.erase(it);
      order_.pop_front();
    }
  }

private:
  mutable std::mutex mutex_;
  std::size_t entries_max_;
  std::size_t bytes_max_;
  std::size_t bytes_ = 0;
  std::deque<std::string> order_;
  std::unordered_map<std::string, std::string> results_;
};

} // namespace keel::actors
