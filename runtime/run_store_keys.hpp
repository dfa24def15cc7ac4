// The run store's key layout, shared by its files (run_store.cpp, run_store_retention.cpp).
#pragma once

#include "runtime/run_store.hpp"

#include <cstdint>
#include <optional>
#include <string_view>
#include <string>

namespace keel::store::keys {

// Key layout (every id is [A-Za-z0-9_-], so '/' separates without ambiguity):
//   h/<run>                 header: status, agent, created (small; read to update indexes)
//   r/<run>                 snapshot: the whole run_record
//   j/<run>/<seq:8 BE>      journal entry
//   x/<run>/<order:8 BE>    task result received, not yet applied (the message as it came)
//   e/<run>/<seq:8 BE>      event
//   s/<status>/<run>        index by status
//   a/<agent>/<created:8 BE>/<run>   index by agent, in creation order
//   t/<created:8 BE>/<run>  index by time
//   k/<agent>/<key>         idempotency key -> run
//   m/<key>                 node metadata
inline std::string big_endian(std::uint64_t n) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, n >>= 8) out[i] = static_cast<char>(n & 0xff);
  return out;
}

inline std::string header_key(const std::string& run) { return "h/" + run; }
inline std::string snapshot_key(const std::string& run) { return "r/" + run; }
inline std::string journal_key(const std::string& run, std::uint64_t seq) {
  return "j/" + run + "/" + big_endian(seq);
}
inline std::string received_key(const std::string& run, std::uint64_t order) {
  return "x/" + run + "/" + big_endian(order);
}
inline std::string message_key(const std::string& run, std::uint64_t index) {
  return "c/" + run + "/" + big_endian(index);
}
inline std::string event_key(const std::string& run, std::uint64_t seq) {
  return "e/" + run + "/" + big_endian(seq);
}
inline std::string status_key(run_status s, const std::string& run) {
  return "s/" + std::string(to_string(s)) + "/" + run;
}
inline std::string agent_key(const std::string& agent, std::int64_t created, const std::string& run) {
  return "a/" + agent + "/" + big_endian(static_cast<std::uint64_t>(created)) + "/" + run;
}
inline std::string time_key(std::int64_t created, const std::string& run) {
  return "t/" + big_endian(static_cast<std::uint64_t>(created)) + "/" + run;
}
inline std::string idempotency_key(const std::string& agent, const std::string& key) {
  return "k/" + agent + "/" + key;
}

// A key of the time index as (created, run); nullopt for any other key.
inline std::optional<run_store::time_entry> time_entry_of(std::string_view key) {
  if (!key.starts_with("t/") || key.size() < 2 + 8 + 2) return std::nullopt;
  std::uint64_t created = 0;
  for (int i = 0; i < 8; ++i) created = (created << 8) | static_cast<unsigned char>(key[2 + i]);
  return run_store::time_entry{static_cast<std::int64_t>(created), std::string(key.substr(11))};
}

} // namespace keel::store::keys
