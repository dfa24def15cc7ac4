#include "actors/conversation_cache.hpp"

namespace keel::actors {

// What a message holds in memory, counted generously (string and container overheads, a JSON
// value's nodes): the bound is on memory, not on bytes of text.
std::size_t conversation_cache::size_of(const llm::message& m) {
  std::size_t n = 256 + m.text.size() + m.tool_call_id.size() + m.tool_name.size();
  for (const auto& c : m.tool_calls) n += 256 + c.id.size() + c.name.size() + 3 * c.arguments.dump().size();
  return n;
}

void conversation_cache::drop(std::unordered_map<std::string, entry>::iterator it) {
  bytes_ -= it->second.bytes;
  ages_.erase(it->second.age);
  entries_.erase(it);
}

std::optional<conversation_cache::held> conversation_cache::take(const std::string& run_id) {
  std::lock_guard lock{mutex_};
  auto it = entries_.find(run_id);
  if (it == entries_.end()) return std::nullopt;
  held out{std::move(it->second.messages), it->second.message_bytes};
  drop(it);
  return out;
}

void conversation_cache::put(const std::string& run_id, std::vector<llm::message> messages, std::size_t counted,
                             std::size_t counted_bytes) {
  if (counted > messages.size()) counted = 0, counted_bytes = 0;
  std::size_t message_bytes = counted_bytes;
  for (std::size_t i = counted; i < messages.size(); ++i) message_bytes += size_of(messages[i]);
  std::size_t bytes = 512 + 2 * run_id.size() + message_bytes;  // the entry itself, and its messages
  std::lock_guard lock{mutex_};
  if (auto it = entries_.find(run_id); it != entries_.end()) {
    // A later step of the run put back more while this one was at its model (a slow attempt):
    // the longer prefix stays.
    if (it->second.messages.size() > messages.size()) return;
    drop(it);
  }
  if (bytes > bytes_max_) return;  // larger than the whole cache: fetched again next time
  while (bytes_ + bytes > bytes_max_ && !ages_.empty()) drop(entries_.find(ages_.back()));
  // The entry first, then its age: if either cannot be made, nothing half made is left.
  auto [it, made] = entries_.try_emplace(run_id, entry{std::move(messages), message_bytes, bytes, {}});
  try {
    ages_.push_front(run_id);
  } catch (...) {
    entries_.erase(it);
    throw;
  }
  it->second.age = ages_.begin();
  bytes_ += bytes;
}

void conversation_cache::erase(const std::string& run_id) {
  std::lock_guard lock{mutex_};
  if (auto it = entries_.find(run_id); it != entries_.end()) drop(it);
}

std::size_t conversation_cache::bytes() const {
  std::lock_guard lock{mutex_};
  return bytes_;
}

} // namespace keel::actors
