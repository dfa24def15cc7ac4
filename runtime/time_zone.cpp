#include "runtime/time_zone.hpp"

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>

namespace keel {

namespace {

std::int64_t be(const std::string& b, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  if (bytes == 4) return static_cast<std::int32_t>(static_cast<std::uint32_t>(v));
  return static_cast<std::int64_t>(v);
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name.front() == '/' || name.find("..") != std::string::npos) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' || c == '_' ||
           c == '-' || c == '+';
  });
}

// POSIX TZ pieces: "<+03>" or "CET" names, offsets "-1" / "+05:30" (POSIX signs: west positive).
bool skip_name(const std::string& s, std::size_t& i) {
  if (i < s.size() && s[i] == '<') {
    auto end = s.find('>', i);
    if (end == std::string::npos) return false;
    i = end + 1;
    return true;
  }
  auto start = i;
  while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
  return i - start >= 3;
}

bool read_hms(const std::string& s, std::size_t& i, int& seconds) {
  int sign = 1;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) sign = s[i++] == '-' ? -1 : 1;
  int parts[3] = {0, 0, 0};
  for (int p = 0; p < 3; ++p) {
    if (p > 0) {
      if (i >= s.size() || s[i] != ':') break;
      ++i;
    }
    auto start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) parts[p] = parts[p] * 10 + (s[i++] - '0');
    if (i == start) return false;
  }
  seconds = sign * (parts[0] * 3600 + parts[1] * 60 + parts[2]);
  return true;
}

bool read_rule(const std::string& s, std::size_t& i, int& month, int& week, int& day, int& time) {
  if (i >= s.size() || s[i] != 'M') return false;  // Jn and n forms: not read (none in the database's zones)
  ++i;
  int* fields[3] = {&month, &week, &day};
  for (int f = 0; f < 3; ++f) {
    if (f > 0) {
      if (i >= s.size() || s[i] != '.') return false;
      ++i;
    }
    auto start = i;
    *fields[f] = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) *fields[f] = *fields[f] * 10 + (s[i++] - '0');
    if (i == start) return false;
  }
  time = 7200;
  if (i < s.size() && s[i] == '/') {
    ++i;
    if (!read_hms(s, i, time)) return false;
  }
  return month >= 1 && month <= 12 && week >= 1 && week <= 5 && day >= 0 && day <= 6;
}

std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

// The local date (days since 1970) of the rule's day in `year`: week 5 is the last such weekday.
std::int64_t rule_day(std::int64_t year, int month, int week, int weekday) {
  std::int64_t first = days_from_civil(year, static_cast<unsigned>(month), 1);
  int first_weekday = static_cast<int>(((first % 7) + 11) % 7);  // 1970-01-01 was a Thursday (4)
  std::int64_t day = first + ((weekday - first_weekday + 7) % 7) + 7 * (week - 1);
  int next_month = month == 12 ? 1 : month + 1;
  std::int64_t next_first = days_from_civil(month == 12 ? year + 1 : year, static_cast<unsigned>(next_month), 1);
  while (day >= next_first) day -= 7;
  return day;
}

} // namespace


time_zone time_zone::utc() { return time_zone(); }

result<time_zone> time_zone::load(const std::string& name) {
  if (name == "UTC" || name == "Etc/UTC" || name == "Z") return utc();
  if (!valid_name(name)) return make_error(errc::invalid_argument, "time zone \"" + name + "\": not a zone name such as Europe/Berlin");
  const char* dir = std::getenv("TZDIR");
  std::string path = std::string(dir && *dir ? dir : "/usr/share/zoneinfo") + "/" + name;
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(errc::invalid_argument, "time zone \"" + name + "\": not in the tz database (" + path + ")");
  std::stringstream read;
  read << in.rdbuf();
  std::string b = read.str();
  auto bad = [&](const char* why) {
    return make_error(errc::invalid_argument, "time zone \"" + name + "\": " + path + " is not a TZif file (" + why + ")");
  };
  if (b.size() < 44 || b.compare(0, 4, "TZif") != 0) return bad("no header");
  auto counts = [&](std::size_t at, std::int64_t c[6]) {
    for (int k = 0; k < 6; ++k) c[k] = be(b, at + 20 + 4 * k, 4);
  };
  std::int64_t c[6];  // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
  counts(0, c);
  std::size_t at = 44;
  int time_bytes = 4;
  if (b[4] >= '2') {  // skip the 32-bit block: the 64-bit one follows
    at += c[3] * 4 + c[3] + c[4] * 6 + c[5] + c[2] * 8 + c[1] + c[0];
    if (b.size() < at + 44 || b.compare(at, 4, "TZif") != 0) return bad("no second header");
    counts(at, c);
    at += 44;
    time_bytes = 8;
  }
  std::size_t need = c[3] * time_bytes + c[3] + c[4] * 6 + c[5] + c[2] * (time_bytes + 4) + c[1] + c[0];
  if (c[4] < 1 || b.size() < at + need) return bad("cut short");
  time_zone z;
  z.name_ = name;
  std::vector<std::int32_t> type_offsets;
  std::vector<bool> type_dst;
  std::size_t types_at = at + c[3] * time_bytes + c[3];
  for (std::int64_t t = 0; t < c[4]; ++t) {
    type_offsets.push_back(static_cast<std::int32_t>(be(b, types_at + 6 * t, 4)));
    type_dst.push_back(b[types_at + 6 * t + 4] != 0);
  }
  for (std::int64_t t = 0; t < c[3]; ++t) {
    z.transitions_.push_back(be(b, at + t * time_bytes, time_bytes));
    auto index = static_cast<unsigned char>(b[at + c[3] * time_bytes + t]);
    if (index >= type_offsets.size()) return bad("a transition names no type");
    z.offsets_.push_back(type_offsets[index]);
  }
  z.before_ = type_offsets[0];
  for (std::size_t t = 0; t < type_offsets.size(); ++t)
    if (!type_dst[t]) {
      z.before_ = type_offsets[t];
      break;
    }
  // The footer (v2+): "\n<POSIX TZ>\n", for instants after the last transition.
  if (time_bytes == 8) {
    std::size_t footer = at + need;
    if (footer < b.size() && b[footer] == '\n') {
      auto end = b.find('\n', footer + 1);
      std::string tz = b.substr(footer + 1, end == std::string::npos ? std::string::npos : end - footer - 1);
      std::size_t i = 0;
      int std_west = 0;
      if (!tz.empty() && skip_name(tz, i) && read_hms(tz, i, std_west)) {
        z.footer_ = true;
        z.std_offset_ = -std_west;
        if (i < tz.size()) {
          int dst_west = std_west - 3600;
          if (skip_name(tz, i)) {
            if (i < tz.size() && tz[i] != ',') read_hms(tz, i, dst_west);
            if (i < tz.size() && tz[i] == ',' && read_rule(tz, ++i, z.start_month_, z.start_week_, z.start_day_, z.start_time_) &&
                i < tz.size() && tz[i] == ',' && read_rule(tz, ++i, z.end_month_, z.end_week_, z.end_day_, z.end_time_)) {
              z.has_dst_ = true;
              z.dst_offset_ = -dst_west;
            }
          }
        }
      }
    }
  }
  return z;
}

std::int32_t time_zone::offset_at(std::int64_t t) const {
  if (transitions_.empty() && !footer_) return before_;
  if (!transitions_.empty() && t < transitions_.front()) return before_;
  if (!transitions_.empty() && (t < transitions_.back() || !footer_)) {
    auto it = std::upper_bound(transitions_.begin(), transitions_.end(), t);
    return offsets_[static_cast<std::size_t>(it - transitions_.begin()) - 1];
  }
  if (!has_dst_) return std_offset_;
  // The rule's changes in the year of `t` (local times: the start in standard time, the end in
  // daylight time), in UTC.
  std::time_t seconds = static_cast<std::time_t>(t + std_offset_);
  std::tm local{};
  gmtime_r(&seconds, &local);
  std::int64_t year = local.tm_year + 1900;
  std::int64_t start = rule_day(year, start_month_, start_week_, start_day_) * 86400 + start_time_ - std_offset_;
  std::int64_t end = rule_day(year, end_month_, end_week_, end_day_) * 86400 + end_time_ - dst_offset_;
  bool dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);  // southern zones: across the new year
  return dst ? dst_offset_ : std_offset_;
}

} // namespace keel
