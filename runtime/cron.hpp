// Cron expressions (minute hour day-of-month month day-of-week; names JAN-DEC and SUN-SAT; *,
// lists, ranges and steps; @hourly, @daily, @weekly, @monthly, @yearly) evaluated in a time zone
// with its daylight-saving rules: a local time that does not exist (the hour skipped in spring)
// has no tick, one that occurs twice (the hour repeated in autumn) ticks once, at its first.
// Day of month and day of week, both restricted, tick on either (as cron does).
#pragma once

#include "runtime/result.hpp"
#include "runtime/time_zone.hpp"

#include <bitset>
#include <cstdint>
#include <string>

namespace keel {

struct cron_spec {
  std::bitset<60> minutes;
  std::bitset<24> hours;
  std::bitset<32> days;     // 1-31
  std::bitset<13> months;   // 1-12
  std::bitset<7> weekdays;  // 0 = Sunday
  bool any_day = true, any_weekday = true;
  std::string text;
};

result<cron_spec> parse_cron(const std::string& text);

// The first tick strictly after `after_ms` (UTC ms, a whole minute), or 0 if none within 5 years.
std::int64_t next_tick(const cron_spec& spec, const time_zone& zone, std::int64_t after_ms);

} // namespace keel
