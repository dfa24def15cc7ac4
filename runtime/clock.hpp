// Time in one place: wall-clock milliseconds for records, steady time for deadlines.
#pragma once

#include <chrono>
#include <cstdint>

namespace keel {

inline std::int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

inline std::int64_t steady_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

} // namespace keel
