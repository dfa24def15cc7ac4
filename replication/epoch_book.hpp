// What a worker knows of the owners' epochs: per domain (the node id in a run id), the highest
// epoch any task, answer or result of it carried. An owner's epoch grows with each takeover of
// its domain, so a message of a lower epoch than one seen comes from an owner that was taken over
// (paused, cut off) and must not be trusted, whatever its clock says. Any thread; bounded (the
// domains least recently used are forgotten first, past `capacity`).
//
// An epoch is what messages say, and a message can lie (a broker client that names a huge one):
// an owner that keeps answering in an older epoch than the one recorded, `heal_after` times in a
// row, is taken as the current one (an owner named a newer epoch checks it on its lease and
// answers only if that lease is still its own: docs/PROTOCOL.md, "Epochs").
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
  explicit epoch_book(std::size_t capacity = 4096, int heal_after = 5)
    : capacity_(capacity == 0 ? 1 : capacity), heal_after_(heal_after) {}

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
      known_.emplace(order_.front(), entry{epoch, order_.begin(), 0});
      return epoch;
    }
    order_.splice(order_.begin(), order_, it->second.place);
    if (epoch != 0 && epoch >= it->second.epoch) {
      it->second.epoch = epoch;
      it->second.refusals = 0;
    }
    return it->second.epoch;
  }
  std::uint64_t highest(std::string_view domain) const {
    std::lock_guard lock{mutex_};
    auto it = known_.find(std::string(domain));
    if (it == known_.end()) return 0;
    order_.splice(order_.begin(), order_, it->second.place);
    return it->second.epoch;
  }
  // An answer of `epoch` was not acted on, older than the one recorded. True when that is the
  // `heal_after`th in a row: the record is lowered to it (and the answer may be acted on).
  bool refused(std::string_view domain, std::uint64_t epoch) {
    std::lock_guard lock{mutex_};
    auto it = known_.find(std::string(domain));
    if (it == known_.end() || epoch == 0 || epoch >= it->second.epoch) return false;
    if (++it->second.refusals < heal_after_) return false;
    it->second.epoch = epoch;
    it->second.refusals = 0;
    return true;
  }
  // Whether a message of `epoch` comes from an owner older than one seen (0: it names none, and
  // is judged as before epochs: not stale).
  bool stale(std::string_view domain, std::uint64_t epoch) const { return epoch != 0 && epoch < highest(domain); }
  std::size_t size() const {
    std::lock_guard lock{mutex_};
    return known_.size();
  }

private:
  struct entry {
    std::uint64_t epoch;
    std::list<std::string>::iterator place;
    int refusals;  // answers of older epochs in a row
  };
  std::size_t capacity_;
  int heal_after_;
  mutable std::mutex mutex_;
  mutable std::list<std::string> order_;  // most recently used first
  std::unordered_map<std::string, entry> known_;
};

} // namespace keel::replication
