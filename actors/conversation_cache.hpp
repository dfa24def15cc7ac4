// What a worker keeps of the conversations it served, so that the next step of a run brings only
// its new messages. Bounded in bytes; the runs least recently used go first. Thread-safe.
#pragma once

#include "llm/conversation.hpp"

#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace keel::actors {

using shared_messages = std::shared_ptr<const std::vector<llm::message>>;

class conversation_cache {
public:
  explicit conversation_cache(std::size_t bytes_max) : bytes_max_(bytes_max) {}
  // The run's messages held (a prefix of its conversation), or null.
  shared_messages get(const std::string& run_id);
  void put(const std::string& run_id, shared_messages messages);
  // Forgets a run that will not need a model soon (it waits for a person, or it ended).
  void erase(const std::string& run_id);
  std::size_t bytes() const;

  static std::size_t size_of(const llm::message& m);

private:
  struct entry {
    shared_messages messages;
    std::size_t bytes = 0;
    std::list<std::string>::iterator age;
  };
  mutable std::mutex mutex_;
  std::size_t bytes_max_;
  std::size_t bytes_ = 0;
  std::list<std::string> ages_;  // most recent first
  std::unordered_map<std::string, entry> entries_;
};

} // namespace keel::actors
