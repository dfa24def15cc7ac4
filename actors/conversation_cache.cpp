#include "actors/conversation_cache.hpp"

namespace keel::actors {

// What a message holds in memory, counted generously (string and container overheads, a JSON
// value's nodes): the bound is on memory, not on bytes of text.
std::size_t conversation_cache::size_of(const llm::message& m) {
  std::size_t n = 256 + m.text.size() + m.tool_call_id.size() + m.tool_name.size();
  for (const auto& c : m.tool_calls) n += 256 + c.id.size() + c.name.size() + 3 * c.arguments.dump().size();
  return n;
}

shared_messages conversation_cache::get(const std::string& run_id) {
  std::lock_guard lock{mutex_};
  auto it = entries_.find(run_id);
  if (it == entries_.end()) return nullptr;
  ages_.splice(ages_.begin(), ages_, it->second.age);
  return it->second.messages;
}

void conversation_cache::put(const std::string& run_id, shared_messages messages) {
  std::size_t bytes = 512 + 2 * run_id.size();  // the entry itself
  for (const auto& m : *messages) bytes += size_of(m);
  std::lock_guard lock{mutex_};
  if (auto it = entries_.find(run_id); it != entries_.end()) {
    bytes_ -= it->second.bytes;
    ages_.erase(it->second.age);
    entries_.erase(it);
  }
  if (bytes > bytes_max_) return;  // larger than the whole cache: fetched again next time
  while (bytes_ + bytes > bytes_max_ && !ages_.empty()) {
    auto oldest = entries_.find(ages_.back());
    bytes_ -= oldest->second.bytes;
    entries_.erase(oldest);
    ages_.pop_back();
  }
  ages_.push_front(run_id);
  entries_[run_id] = entry{std::move(messages), bytes, ages_.begin()};
  bytes_ += bytes;
}

void conversation_cache::erase(const std::string& run_id) {
  std::lock_guard lock{mutex_};
  auto it = entries_.find(run_id);
  if (it == entries_.end()) return;
  bytes_ -= it->second.bytes;
  ages_.erase(it->second.age);
  entries_.erase(it);
}

std::size_t conversation_cache::bytes() const {
  std::lock_guard lock{mutex_};
  return bytes_;
}

} // namespace keel::actors
