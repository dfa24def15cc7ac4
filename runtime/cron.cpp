#include "runtime/cron.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <sstream>
#include <vector>

namespace keel {

namespace {

const char* month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
const char* day_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

// One field: a value of [lo, hi], or a name (month/day names map to their numbers).
result<int> value_of(std::string token, int lo, int hi, const char* const* names, int name_base, const std::string& field) {
  for (auto& ch : token) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (names)
    for (int i = 0; i < (name_base == 1 ? 12 : 7); ++i)  // months from 1, days from 0 (Sunday)
      if (token == names[i]) return i + name_base;
  if (token.empty() || token.size() > 4 || !std::all_of(token.begin(), token.end(), ::isdigit))
    return make_error(errc::invalid_argument, field + ": \"" + token + "\" is not a number or a name");
  int v = std::stoi(token);
  if (v < lo || v > hi)
    return make_error(errc::invalid_argument, field + ": " + token + " is outside " + std::to_string(lo) + "-" + std::to_string(hi));
  return v;
}

template <std::size_t N>
result<bool> parse_field(const std::string& text, int lo, int hi, const char* const* names, int name_base,
                         const std::string& field, std::bitset<N>& out) {
  bool star = false;
  std::stringstream parts(text);
  std::string part;
  int count = 0;
  while (std::getline(parts, part, ',')) {
    if (++count > 60) return make_error(errc::invalid_argument, field + ": too many parts");
    const bool stepped = part.find('/') != std::string::npos;
    int step = 1;
    if (auto slash = part.find('/'); slash != std::string::npos) {
      auto s = value_of(part.substr(slash + 1), 1, hi - lo + 1, nullptr, 0, field + " step");
      if (!s) return s.error();
      step = *s;
      part = part.substr(0, slash);
    }
    int from = lo, to = hi;
    if (part == "*") {
      star = star || step == 1;
    } else if (auto dash = part.find('-'); dash != std::string::npos) {
      auto a = value_of(part.substr(0, dash), lo, hi, names, name_base, field);
      auto b = value_of(part.substr(dash + 1), lo, hi, names, name_base, field);
      if (!a) return a.error();
      if (!b) return b.error();
      if (*a > *b) return make_error(errc::invalid_argument, field + ": range " + part + " runs backwards");
      from = *a, to = *b;
    } else {
      auto a = value_of(part, lo, hi, names, name_base, field);
      if (!a) return a.error();
      from = *a;
      to = stepped ? hi : *a;  // "5/15": from 5 on, every 15
    }
    for (int v = from; v <= to; v += step) out.set(static_cast<std::size_t>(v));
  }
  if (count == 0) return make_error(errc::invalid_argument, field + ": empty");
  return star;
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

} // namespace

result<cron_spec> parse_cron(const std::string& given) {
  std::string text = given;
  if (text == "@hourly") text = "0 * * * *";
  else if (text == "@daily" || text == "@midnight") text = "0 0 * * *";
  else if (text == "@weekly") text = "0 0 * * 0";
  else if (text == "@monthly") text = "0 0 1 * *";
  else if (text == "@yearly" || text == "@annually") text = "0 0 1 1 *";
  std::vector<std::string> fields;
  std::istringstream in(text);
  for (std::string f; in >> f;) fields.push_back(f);
  if (fields.size() != 5)
    return make_error(errc::invalid_argument, "cron \"" + given + "\": 5 fields (minute hour day-of-month month day-of-week), got " +
                                                std::to_string(fields.size()));
  cron_spec s;
  s.text = given;
  auto fail = [&](const keel::error& e) { return make_error(errc::invalid_argument, "cron \"" + given + "\": " + e.message); };
  if (auto r = parse_field(fields[0], 0, 59, nullptr, 0, "minute", s.minutes); !r) return fail(r.error());
  if (auto r = parse_field(fields[1], 0, 23, nullptr, 0, "hour", s.hours); !r) return fail(r.error());
  auto days = parse_field(fields[2], 1, 31, nullptr, 0, "day of month", s.days);
  if (!days) return fail(days.error());
  if (auto r = parse_field(fields[3], 1, 12, month_names, 1, "month", s.months); !r) return fail(r.error());
  std::bitset<8> weekdays;
  auto any_weekday = parse_field(fields[4], 0, 7, day_names, 0, "day of week", weekdays);
  if (!any_weekday) return fail(any_weekday.error());
  for (int d = 0; d < 7; ++d) s.weekdays[d] = weekdays[d];
  if (weekdays[7]) s.weekdays[0] = true;  // 7 is Sunday too
  s.any_day = *days;
  s.any_weekday = *any_weekday;
  return s;
}

std::int64_t next_tick(const cron_spec& s, const time_zone& zone, std::int64_t after_ms) {
  std::int64_t t = (floor_div(after_ms, 60'000) + 1) * 60;  // UTC seconds, the next whole minute
  const std::int64_t limit = t + 5LL * 366 * 86400;
  while (t < limit) {
    std::int32_t offset = zone.offset_at(t);
    std::time_t local_seconds = static_cast<std::time_t>(t + offset);
    std::tm l{};
    gmtime_r(&local_seconds, &l);
    bool day_ok = s.any_day && s.any_weekday ? true
                  : s.any_day                ? s.weekdays[l.tm_wday]
                  : s.any_weekday            ? s.days[l.tm_mday]
                                             : (s.days[l.tm_mday] || s.weekdays[l.tm_wday]);
    if (!s.months[l.tm_mon + 1] || !day_ok) {
      // To the next local midnight, as the zone has it (a day of a clock change is not 24 h long);
      // always forward.
      std::int64_t midnight = (floor_div(t + offset, 86400) + 1) * 86400;
      t = std::max(t + 60, midnight - zone.offset_at(midnight - offset));
      continue;
    }
    if (!s.hours[l.tm_hour]) {
      t += 3600 - l.tm_min * 60;
      continue;
    }
    if (!s.minutes[l.tm_min]) {
      t += 60;
      continue;
    }
    // A local time repeated (the clocks went back within the last hours): only its first occurrence.
    std::int32_t earlier = zone.offset_at(t - 3 * 3600);
    if (earlier > offset) {
      std::int64_t first = t - (earlier - offset);
      if (zone.offset_at(first) == earlier) {
        t += 60;
        continue;
      }
    }
    return t * 1000;
  }
  return 0;
}

} // namespace keel
