// What a worker knows of the owners' epochs: per domain (the node id in a run id), the highest
// epoch any task, answer or result of it carried. An owner's epoch grows with each takeover of
// its domain, so a message of a lower epoch than one seen comes from an owner that was taken over
// (paused, cut off) and must not be trusted, whatever its clock says. Any thread; bounded (the
// domains least recently used are forgotten first, past `capacity`).
// Only orchestrators may publish tasks and answer questions (broker/authorization.cpp): an epoch
// recorded here was named by one (docs/PROTOCOL.md, "Epochs").
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace keel::replication {

class epoch_book {
public:
  explicit epoch_book(std::size_t capacity = 4096) : capacity_(capacity == 0 ? 1 : capacity) {}

  // Records `epoch` for `domain` (0 says nothing) and returns the highest known now.
  std::uint64_t saw(std::string_view domain, std::uint64_t epoch) {
    std::lock_guard lock{mutex_};
    auto it = known_.find(std::string(domain));
    if (it == known_.end()) {
      if (epoch == 0) return 0;
      if (known_.size() >= capacity_) {
        known_.erase(order_.back());
        order_.pop_back();
      }
      order_.emplace_front(domain);
      known_.emplace(order_.front(), entry{epoch, order_.begin()});
      return epoch;
    }
    order_.splice(order_.begin(), order_, it->second.place);
    if (epoch > it->second.epoch) it->second.epoch = epoch;
    return it->second.epoch;
  }
  std::uint64_t highest(std::string_view domain) const {
    std::lock_guard lock{mutex_};
    auto it = known_.find(std::string(domain));
    if (it == known_.end()) return 0;
    order_.splice(order_.begin(), order_, it->second.place);
    return it->second.epoch;
  }
  std::size_t size() const {
    std::lock_guard lock{mutex_};
    return known_.size();
  }

private:
  struct entry {
    std::uint64_t epoch;
    std::list<std::string>::iterator place;
  };
  std::size_t capacity_;
  mutable std::mutex mutex_;
  mutable std::list<std::string> order_;  // most recently used first
  std::unordered_map<std::string, entry> known_;
};

} // namespace keel::replication
