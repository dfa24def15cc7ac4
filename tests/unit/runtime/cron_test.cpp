// Cron expressions and time zones (runtime/cron, runtime/time_zone) against the system's tz
// database: ticks in UTC and in zones with daylight saving, both hemispheres, half-hour offsets,
// and dates past the database's last transition (its POSIX rule).
#include "runtime/cron.hpp"
#include "runtime/time_zone.hpp"

#include <catch2/catch.hpp>

#include <ctime>

using namespace keel;

namespace {

// UTC ms of a UTC calendar time.
std::int64_t utc(int y, int mo, int d, int h, int mi) {
  std::tm t{};
  t.tm_year = y - 1900;
  t.tm_mon = mo - 1;
  t.tm_mday = d;
  t.tm_hour = h;
  t.tm_min = mi;
  return static_cast<std::int64_t>(timegm(&t)) * 1000;
}

cron_spec cron(const char* text) {
  auto c = parse_cron(text);
  INFO(text << ": " << (c ? std::string() : c.error().message));
  REQUIRE(c.ok());
  return *c;
}

time_zone zone(const char* name) {
  auto z = time_zone::load(name);
  INFO(name << ": " << (z ? std::string() : z.error().message));
  REQUIRE(z.ok());
  return *z;
}

} // namespace

TEST_CASE("cron: expressions parse, and every mistake is named", "[runtime][cron]") {
  auto utc_zone = time_zone::utc();
  CHECK(next_tick(cron("* * * * *"), utc_zone, utc(2027, 1, 1, 0, 0)) == utc(2027, 1, 1, 0, 1));
  CHECK(next_tick(cron("*/15 * * * *"), utc_zone, utc(2027, 1, 1, 0, 1)) == utc(2027, 1, 1, 0, 15));
  CHECK(next_tick(cron("5/20 * * * *"), utc_zone, utc(2027, 1, 1, 0, 6)) == utc(2027, 1, 1, 0, 25));
  // A single value beside a stepped part of the same field stays a single value.
  CHECK(next_tick(cron("10,*/15 * * * *"), utc_zone, utc(2027, 1, 1, 0, 10)) == utc(2027, 1, 1, 0, 15));
  CHECK(next_tick(cron("5,20-40/10 * * * *"), utc_zone, utc(2027, 1, 1, 0, 5)) == utc(2027, 1, 1, 0, 20));
  CHECK(next_tick(cron("0 9-17/4 * * *"), utc_zone, utc(2027, 1, 1, 9, 0)) == utc(2027, 1, 1, 13, 0));
  CHECK(next_tick(cron("30 8 * * MON-FRI"), utc_zone, utc(2027, 1, 1, 9, 0)) == utc(2027, 1, 4, 8, 30));  // Fri -> Mon
  CHECK(next_tick(cron("0 0 1 JAN *"), utc_zone, utc(2027, 1, 1, 0, 0)) == utc(2028, 1, 1, 0, 0));
  CHECK(next_tick(cron("@daily"), utc_zone, utc(2027, 1, 1, 0, 0)) == utc(2027, 1, 2, 0, 0));
  CHECK(next_tick(cron("@hourly"), utc_zone, utc(2027, 1, 1, 0, 30)) == utc(2027, 1, 1, 1, 0));
  CHECK(next_tick(cron("0 0 * * 7"), utc_zone, utc(2027, 1, 1, 0, 0)) == utc(2027, 1, 3, 0, 0));  // 7 is Sunday
  // Day of month and day of week both given: either ticks (the 13th, or a Friday).
  CHECK(next_tick(cron("0 0 13 * 5"), utc_zone, utc(2027, 1, 1, 0, 0)) == utc(2027, 1, 8, 0, 0));
  CHECK(next_tick(cron("0 0 29 2 *"), utc_zone, utc(2027, 1, 1, 0, 0)) == utc(2028, 2, 29, 0, 0));
  CHECK(next_tick(cron("0 0 31 2 *"), utc_zone, utc(2027, 1, 1, 0, 0)) == 0);  // never
  for (const char* bad : {"", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
                          "5-1 * * * *", "*/0 * * * *", "a * * * *", "* * * FOO *", "1,,2 * * * *", "@often"}) {
    INFO(bad);
    auto parsed = parse_cron(bad);
    CHECK_FALSE(parsed.ok());
    if (!parsed) CHECK(parsed.error().message.find("cron") != std::string::npos);
  }
}

TEST_CASE("cron: in a zone with daylight saving a skipped time has no tick and a repeated one ticks once", "[runtime][cron]") {
  auto berlin = zone("Europe/Berlin");
  // 28 March 2027: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
  auto spec = cron("30 2 * * *");
  CHECK(next_tick(spec, berlin, utc(2027, 3, 26, 12, 0)) == utc(2027, 3, 27, 1, 30));  // 02:30 CET
  CHECK(next_tick(spec, berlin, utc(2027, 3, 27, 12, 0)) == utc(2027, 3, 29, 0, 30));  // skipped the 28th; CEST on the 29th
  // 31 October 2027: 03:00 CEST becomes 02:00 CET; 02:30 comes twice, the tick once (the first).
  CHECK(next_tick(spec, berlin, utc(2027, 10, 30, 12, 0)) == utc(2027, 10, 31, 0, 30));
  CHECK(next_tick(spec, berlin, utc(2027, 10, 31, 0, 30)) == utc(2027, 11, 1, 1, 30));
  // Every 30 minutes across the change: no repeat, no gap in UTC beyond the hour that was skipped.
  auto half = cron("*/30 * * * *");
  std::int64_t t = utc(2027, 10, 30, 23, 0), ticks = 0;
  while ((t = next_tick(half, berlin, t)) < utc(2027, 10, 31, 3, 0)) ++ticks;
  // 01:30, 02:00, 02:30 CEST; 02:00 and 02:30 CET come again and do not tick; 03:00, 03:30 CET.
  CHECK(ticks == 5);
  // The day after a spring change: its midnight is a tick (a day of 23 hours is not skipped past).
  CHECK(next_tick(cron("0 0 * * MON"), berlin, utc(2024, 3, 24, 12, 0)) == utc(2024, 3, 24, 23, 0));   // Mon 25 March, CET
  CHECK(next_tick(cron("0 0 * * MON"), berlin, utc(2024, 3, 25, 12, 0)) == utc(2024, 3, 31, 22, 0));   // Mon 1 April, CEST
  CHECK(next_tick(cron("0 0 1 * *"), berlin, utc(2024, 3, 1, 12, 0)) == utc(2024, 3, 31, 22, 0));      // 1 April
  CHECK(next_tick(cron("0 0 * * *"), zone("America/New_York"), utc(2024, 3, 10, 12, 0)) == utc(2024, 3, 11, 4, 0));
  // Past the database's last transition (2037), its rule: CEST in July 2045, CET in January.
  CHECK(berlin.offset_at(utc(2045, 7, 1, 0, 0) / 1000) == 7200);
  CHECK(berlin.offset_at(utc(2045, 1, 1, 0, 0) / 1000) == 3600);
  CHECK(berlin.offset_at(utc(2045, 3, 26, 0, 59) / 1000) == 3600);  // the last Sunday of March, before 01:00 UTC
  CHECK(berlin.offset_at(utc(2045, 3, 26, 1, 0) / 1000) == 7200);
}

TEST_CASE("cron: zones of both hemispheres and of half hours", "[runtime][cron]") {
  auto daily9 = cron("0 9 * * *");
  CHECK(next_tick(daily9, zone("America/New_York"), utc(2027, 1, 15, 0, 0)) == utc(2027, 1, 15, 14, 0));  // EST
  CHECK(next_tick(daily9, zone("America/New_York"), utc(2027, 7, 15, 0, 0)) == utc(2027, 7, 15, 13, 0));  // EDT
  CHECK(next_tick(daily9, zone("Australia/Sydney"), utc(2027, 1, 15, 0, 0)) == utc(2027, 1, 15, 22, 0));  // AEDT, +11
  CHECK(next_tick(daily9, zone("Australia/Sydney"), utc(2027, 7, 15, 0, 0)) == utc(2027, 7, 15, 23, 0));  // AEST, +10
  CHECK(next_tick(daily9, zone("Asia/Kolkata"), utc(2027, 1, 15, 0, 0)) == utc(2027, 1, 15, 3, 30));
  CHECK(zone("Australia/Sydney").offset_at(utc(2045, 1, 1, 0, 0) / 1000) == 11 * 3600);
  CHECK(zone("Australia/Sydney").offset_at(utc(2045, 7, 1, 0, 0) / 1000) == 10 * 3600);
  for (const char* bad : {"Mars/Olympus", "../etc/passwd", "/etc/localtime", "Europe/Berlin/..", "", "Europe Berlin"}) {
    INFO(bad);
    CHECK_FALSE(time_zone::load(bad).ok());
  }
  CHECK(time_zone::load("UTC")->offset_at(0) == 0);
}
