// Fields of recorded events and states read as the types they should be: what a store holds may
// be damaged, so a field of another type reads as absent, never as an exception.
#pragma once

#include "runtime/wire.hpp"

#include <cstdint>
#include <string>

namespace keel::actors {

inline std::string text_in(const wire::value& data, const char* key) {
  auto it = data.find(key);
  return it != data.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A count as events hold it (written signed or unsigned, as it was counted); anything else is 0.
inline std::uint64_t number_in(const wire::value& data, const char* key) {
  auto it = data.find(key);
  if (it == data.end() || !it->is_number_integer()) return 0;
  if (it->is_number_unsigned()) return it->get<std::uint64_t>();
  auto n = it->get<std::int64_t>();
  return n > 0 ? static_cast<std::uint64_t>(n) : 0;
}

inline bool flag_in(const wire::value& data, const char* key) {
  auto it = data.find(key);
  return it != data.end() && it->is_boolean() && it->get<bool>();
}

} // namespace keel::actors
