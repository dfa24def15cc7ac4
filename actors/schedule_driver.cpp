#include "actors/schedule_driver.hpp"

#include "runtime/wire.hpp"

#include <algorithm>

namespace keel::actors {

using wire::value;

namespace {
constexpr int writes_tried_max = 8;  // a record written by others meanwhile is read and tried again
}

std::string encode(const schedule_record& r) {
  return wire::pack(value{{"last_tick_ms", r.last_tick_ms}, {"last_started_ms", r.last_started_ms}, {"paused", r.paused}, {"paused_by", r.paused_by},
                          {"skipped", r.skipped}, {"paused_at_ms", r.paused_at_ms}, {"gaps", r.gaps}});
}

result<schedule_record> decode_schedule_record(const std::string& bytes) {
  auto v = wire::unpack(bytes);
  if (!v || !v->is_object()) return make_error(errc::malformed, "a schedule's record is not a map");
  schedule_record r;
  auto integer = [&](const char* key, std::int64_t& out) {
    if (v->contains(key) && (*v)[key].is_number_integer()) out = (*v)[key].get<std::int64_t>();
  };
  integer("last_tick_ms", r.last_tick_ms);
  integer("skipped", r.skipped);
  integer("last_started_ms", r.last_started_ms);
  integer("paused_at_ms", r.paused_at_ms);
  if (v->contains("gaps") && (*v)["gaps"].is_array())
    for (const auto& g : (*v)["gaps"])
      if (g.is_array() && g.size() == 2 && g[0].is_number_integer() && g[1].is_number_integer())
        r.gaps.emplace_back(g[0].get<std::int64_t>(), g[1].get<std::int64_t>());
  if (v->contains("paused") && (*v)["paused"].is_boolean()) r.paused = (*v)["paused"].get<bool>();
  if (v->contains("paused_by") && (*v)["paused_by"].is_string()) r.paused_by = (*v)["paused_by"].get<std::string>();
  return r;
}

std::string tick_key(const std::string& schedule, std::int64_t tick_ms) {
  return schedule_key_prefix + schedule + "/" + std::to_string(tick_ms);
}

tick_plan plan_ticks(const config::schedule_config& config, const cron_spec& spec, const time_zone& zone,
                     const schedule_record& record, std::int64_t now_ms) {
  tick_plan plan;
  std::vector<std::int64_t> due;
  // Where to look from: ticks older than the window are given up without being walked one by one.
  std::int64_t window = config.missed == "catch_up" ? catch_up_window_ms : config.late_ms_max + 60'000;
  std::int64_t t = record.last_tick_ms;
  if (now_ms - t > window) {
    t = now_ms - window;
    plan.skipped += 1;
  }
  constexpr std::size_t walk_max = 50'000;  // 31 days of minutes is 44,640
  std::size_t walked = 0;
  while ((t = next_tick(spec, zone, t)) != 0 && t <= now_ms && walked++ < walk_max) {
    plan.last_due_ms = t;
    if (std::any_of(record.gaps.begin(), record.gaps.end(), [t](const auto& g) { return t > g.first && t <= g.second; }))
      continue;  // in a pause
    due.push_back(t);
  }
  plan.next_ms = t;
  if (config.missed == "catch_up") {
    auto keep = static_cast<std::size_t>(std::max<std::int64_t>(1, config.catch_up_max));
    if (due.size() > keep) {
      plan.skipped += static_cast<std::int64_t>(due.size() - keep);
      due.erase(due.begin(), due.end() - static_cast<std::ptrdiff_t>(keep));
    }
  } else {
    auto late = std::partition_point(due.begin(), due.end(), [&](std::int64_t tick) { return now_ms - tick > config.late_ms_max; });
    plan.skipped += late - due.begin();
    due.erase(due.begin(), late);
  }
  plan.start = std::move(due);
  return plan;
}

schedule_driver::schedule_driver(config::schedule_config config, schedule_io io)
  : config_(std::move(config)), io_(std::move(io)) {
  auto spec = parse_cron(config_.cron);
  auto zone = time_zone::load(config_.timezone);
  if (spec) spec_ = std::move(*spec);
  else problem_ = spec.error().message;
  if (zone) zone_ = std::move(*zone);
  else problem_ = zone.error().message;
}

result<std::pair<schedule_record, std::uint64_t>> schedule_driver::current() {
  for (int i = 0; i < writes_tried_max; ++i) {
    auto read = io_.read(config_.name);
    if (!read) return read.error();
    if (*read) return **read;
    // Never started anywhere: from now on (ticks before the schedule existed are not missed).
    schedule_record fresh;
    fresh.last_tick_ms = io_.now();
    auto made = io_.create(config_.name, fresh);
    if (made) return std::make_pair(fresh, *made);
    if (made.error().code != errc::conflict) return made.error();
  }
  return make_error(errc::unavailable, "schedule " + config_.name + ": its record keeps changing");
}

// The shared record moves to `tick_ms` (never back), adding `skipped`.
result<void> schedule_driver::advance_to(std::int64_t tick_ms, std::int64_t skipped, bool started) {
  for (int i = 0; i < writes_tried_max; ++i) {
    auto got = current();
    if (!got) return got.error();
    auto [record, revision] = *got;
    if (record.last_tick_ms >= tick_ms) {
      last_read_ = record;
      return success();
    }
    record.last_tick_ms = tick_ms;
    if (started) record.last_started_ms = std::max(record.last_started_ms, tick_ms);
    record.skipped += skipped;
    std::erase_if(record.gaps, [&](const auto& g) { return g.second <= tick_ms; });
    auto written = io_.update(config_.name, record, revision);
    if (written) {
      last_read_ = record;
      return success();
    }
    if (written.error().code != errc::conflict) return written.error();
  }
  return make_error(errc::unavailable, "schedule " + config_.name + ": its record keeps changing");
}

std::int64_t schedule_driver::step() {
  auto now = io_.now();
  if (spec_.text.empty()) return now + 60'000;  // not loadable (the config check refuses these)
  auto got = current();
  if (!got) {
    problem_ = got.error().message;
    return now + 1000;
  }
  last_read_ = got->first;
  if (last_read_.paused) {
    // Paused: nothing starts; ticks that pass meanwhile are not missed ones (resume starts from then).
    next_ms_ = next_tick(spec_, zone_, now);
    return std::min(now + 5000, next_ms_ ? next_ms_ : now + 5000);
  }
  auto plan = plan_ticks(config_, spec_, zone_, last_read_, now);
  next_ms_ = plan.next_ms;
  problem_.clear();
  std::int64_t skipped = plan.skipped;
  if (plan.start.empty() && skipped > 0 && plan.last_due_ms > 0) {
    // All missed: the record moves past them, counting them.
    if (auto r = advance_to(plan.last_due_ms, skipped, false); !r) problem_ = r.error().message;
  }
  for (auto tick : plan.start) {
    auto started = io_.start(config_, tick);
    if (!started) {
      problem_ = "tick " + std::to_string(tick) + ": " + started.error().message;
      return now + 1000;  // tried again at the next look
    }
    if (auto r = advance_to(tick, skipped, true); !r) {
      problem_ = r.error().message;
      return now + 1000;
    }
    skipped = 0;
  }
  // Looked at again by the next tick, and every 5 s meanwhile (a pause from another node).
  return std::min(now + 5000, next_ms_ ? next_ms_ : now + 5000);
}

result<schedule_record> schedule_driver::set_paused(bool paused, const std::string& by) {
  for (int i = 0; i < writes_tried_max; ++i) {
    auto got = current();
    if (!got) return got.error();
    auto [record, revision] = *got;
    if (record.paused == paused) return record;
    record.paused = paused;
    record.paused_by = paused ? by : std::string();
    // Resumed: the ticks of the pause are not missed ones (those before it still are).
    if (paused) {
      record.paused_at_ms = io_.now();
    } else {
      std::erase_if(record.gaps, [&](const auto& g) { return g.second <= record.last_tick_ms; });
      record.gaps.emplace_back(record.paused_at_ms, io_.now());
      constexpr std::size_t gaps_max = 32;
      while (record.gaps.size() > gaps_max) {
        record.last_tick_ms = std::max(record.last_tick_ms, record.gaps.front().second);
        record.gaps.erase(record.gaps.begin());
      }
    }
    auto written = io_.update(config_.name, record, revision);
    if (written) {
      last_read_ = record;
      return record;
    }
    if (written.error().code != errc::conflict) return written.error();
  }
  return make_error(errc::unavailable, "schedule " + config_.name + ": its record keeps changing");
}

schedule_driver::view schedule_driver::shown() const { return view{last_read_, next_ms_, problem_}; }

} // namespace keel::actors
