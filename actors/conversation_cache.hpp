// What a worker keeps of the conversations it served, so that the next step of a run brings only
// its new messages. Bounded in bytes; the runs least recently used go first. Thread-safe.
// A step takes its run's messages out (moved, not copied), adds the new ones, lends them to the
// model call and puts them back: a step costs what it adds, not the conversation's length.
#pragma once

#include "llm/conversation.hpp"

#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace keel::actors {

class conversation_cache {
public:
  struct held {
    std::vector<llm::message> messages;  // a prefix of the run's conversation
    std::size_t bytes = 0;               // what size_of counts for them
  };

  explicit conversation_cache(std::size_t bytes_max) : bytes_max_(bytes_max) {}
  // The run's messages, taken out of the cache (a second step of the run at once finds none and
  // asks the owner), or none.
  std::optional<held> take(const std::string& run_id);
  // Keeps `messages` for the run, in place of what it had. The first `counted` of them are those
  // of a take() whose count was `counted_bytes`: only the others are measured again.
  void put(const std::string& run_id, std::vector<llm::message> messages, std::size_t counted = 0,
           std::size_t counted_bytes = 0);
  // Forgets a run that will not need a model soon (it waits for a person, or it ended).
  void erase(const std::string& run_id);
  std::size_t bytes() const;

  static std::size_t size_of(const llm::message& m);

private:
  struct entry {
    std::vector<llm::message> messages;
    std::size_t message_bytes = 0;
    std::size_t bytes = 0;  // with the entry's own
    std::list<std::string>::iterator age;
  };
  void drop(std::unordered_map<std::string, entry>::iterator it);
  mutable std::mutex mutex_;
  std::size_t bytes_max_;
  std::size_t bytes_ = 0;
  std::list<std::string> ages_;  // most recent first
  std::unordered_map<std::string, entry> entries_;
};

} // namespace keel::actors
