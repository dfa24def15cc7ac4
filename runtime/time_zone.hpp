// IANA time zones from the system's tz database (TZif files under /usr/share/zoneinfo, or $TZDIR):
// the offset from UTC at an instant, with daylight saving. Read once, then plain data: no global
// state (unlike TZ and localtime), so any thread may use one.
#pragma once

#include "runtime/result.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace keel {

class time_zone {
public:
  // "UTC", or a name of the database ("Europe/Berlin"); anything else is an error that says so.
  static result<time_zone> load(const std::string& name);
  static time_zone utc();

  // Seconds east of UTC at `utc_seconds`.
  std::int32_t offset_at(std::int64_t utc_seconds) const;
  const std::string& name() const { return name_; }

private:
  std::string name_ = "UTC";
  std::vector<std::int64_t> transitions_;  // UTC seconds, ascending
  std::vector<std::int32_t> offsets_;      // the offset from each transition on
  std::int32_t before_ = 0;                // the offset before the first
  // The footer (POSIX TZ), after the last transition: standard offset, and when set, the daylight one and its rule
  // (Mm.w.d/time, as the footer gives it).
  std::int32_t std_offset_ = 0, dst_offset_ = 0;
  bool has_dst_ = false;
  int start_month_ = 0, start_week_ = 0, start_day_ = 0, start_time_ = 0;
  int end_month_ = 0, end_week_ = 0, end_day_ = 0, end_time_ = 0;
  bool footer_ = false;
};

} // namespace keel
