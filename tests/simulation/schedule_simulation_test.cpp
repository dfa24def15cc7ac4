// Schedules driven by two orchestrators at once (actors/schedule_driver), on a simulated clock for
// an hour of ticks: nodes crash (forgetting all they held) and stay down, pause with what they read
// growing stale, the shared record's writes fail or are made while their caller hears "timeout",
// starts fail or start while their caller hears "timeout", and a person pauses and resumes a
// schedule from either node. After every seed: each tick of a catch-up schedule made exactly one
// run (none lost, none twice, none for a time that is not a tick), no tick in a pause made one, and
// no tick of a skip schedule started later than its late_ms_max.
//   KEEL_SIM_SEEDS=N, KEEL_SIM_SEED=S as in the lease simulation.
#include "actors/schedule_driver.hpp"
#include "tests/simulation/seeds.hpp"

#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>

using namespace keel;
using namespace keel::actors;

namespace {

constexpr std::int64_t start_ms = 1'804'000'000'000;  // 2027-03-01
constexpr std::int64_t hour_ms = 3'600'000;

struct shared_world {
  std::mt19937_64 random;
  std::int64_t now = start_ms;
  std::map<std::string, std::pair<schedule_record, std::uint64_t>> records;
  std::map<std::string, std::int64_t> runs;  // key -> when its run was made
  std::uint64_t revisions = 0;
  std::size_t lost_replies = 0, failed = 0;
  // When the every-minute schedule's record said paused, as written (whatever its writer heard):
  // (paused at, resumed at].
  std::vector<std::pair<std::int64_t, std::int64_t>> paused_windows;
  std::int64_t paused_since = 0;
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(random) < p; }
  std::int64_t between(std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(random); }
};

std::vector<config::schedule_config> schedules() {
  config::schedule_config every;
  every.name = "every-minute";
  every.agent = "a";
  every.cron = "* * * * *";
  every.missed = "catch_up";
  every.catch_up_max = 1000;
  config::schedule_config seventh = every;
  seventh.name = "berlin-7";
  seventh.cron = "*/7 * * * *";
  seventh.timezone = "Europe/Berlin";
  config::schedule_config skip = every;
  skip.name = "skip-5";
  skip.cron = "*/5 * * * *";
  skip.missed = "skip";
  skip.late_ms_max = 30'000;
  return {every, seventh, skip};
}

schedule_io io_for(shared_world& w) {
  schedule_io io;
  io.now = [&w] { return w.now; };
  // Each call may fail without effect, or take effect while its caller hears "timeout".
  auto fault = [&w](bool& applies) -> bool {
    if (w.chance(0.05)) {
      applies = w.chance(0.5);
      if (applies) ++w.lost_replies;
      else ++w.failed;
      return true;
    }
    applies = true;
    return false;
  };
  io.read = [&w](const std::string& name) -> result<std::optional<std::pair<schedule_record, std::uint64_t>>> {
    if (w.chance(0.03)) return make_error(errc::unavailable, "no answer");
    auto it = w.records.find(name);
    if (it == w.records.end()) return std::optional<std::pair<schedule_record, std::uint64_t>>{};
    return std::optional(it->second);
  };
  io.create = [&w, fault](const std::string& name, const schedule_record& r) -> result<std::uint64_t> {
    bool applies = true;
    bool faulty = fault(applies);
    if (!applies) return make_error(errc::unavailable, "no answer");
    if (w.records.count(name)) return make_error(errc::conflict, "exists");
    w.records[name] = {r, ++w.revisions};
    if (faulty) return make_error(errc::unavailable, "timeout");
    return w.revisions;
  };
  io.update = [&w, fault](const std::string& name, const schedule_record& r, std::uint64_t revision) -> result<std::uint64_t> {
    bool applies = true;
    bool faulty = fault(applies);
    if (!applies) return make_error(errc::unavailable, "no answer");
    auto it = w.records.find(name);
    if (it == w.records.end() || it->second.second != revision) return make_error(errc::conflict, "revision");
    if (name == "every-minute" && r.paused != it->second.first.paused) {
      if (r.paused) w.paused_since = w.now;
      else w.paused_windows.emplace_back(w.paused_since, w.now), w.paused_since = 0;
    }
    it->second = {r, ++w.revisions};
    if (faulty) return make_error(errc::unavailable, "timeout");
    return w.revisions;
  };
  io.start = [&w, fault](const config::schedule_config& c, std::int64_t tick) -> result<std::string> {
    bool applies = true;
    bool faulty = fault(applies);
    if (!applies) return make_error(errc::unavailable, "no answer");
    auto key = tick_key(c.name, tick);
    w.runs.emplace(key, w.now);  // the cluster's idempotency: the first claim makes the run
    if (faulty) return make_error(errc::unavailable, "timeout");
    return "run-" + key;
  };
  return io;
}

struct node {
  std::vector<std::unique_ptr<schedule_driver>> drivers;
  std::vector<std::int64_t> due;
  std::int64_t up_at = start_ms;  // down (crashed or paused) until then
  void boot(shared_world& w) {
    drivers.clear();
    due.clear();
    for (auto& c : schedules()) {
      drivers.push_back(std::make_unique<schedule_driver>(c, io_for(w)));
      due.push_back(w.now);
    }
  }
};

std::string run_seed(std::uint64_t seed, std::size_t& runs_made, std::size_t& crashes, std::size_t& pauses) {
  shared_world w;
  w.random.seed(seed);
  std::vector<node> nodes(2);
  for (auto& n : nodes) n.boot(w);
  const std::int64_t end = start_ms + hour_ms, heal = end + 5 * 60'000;
  while (w.now < heal) {
    // The next moment anything happens: a node's look, or it coming back.
    std::int64_t next = heal;
    for (auto& n : nodes) {
      if (n.up_at > w.now) next = std::min(next, n.up_at);
      else for (auto d : n.due) next = std::min(next, d);
    }
    w.now = std::max(w.now, next) + w.between(0, 300);
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      auto& n = nodes[i];
      if (n.up_at > w.now) continue;
      // Faults until the hour ends (then the cluster heals): a crash, a pause, a person's pause.
      if (w.now < end && w.chance(0.004)) {
        ++crashes;
        n.up_at = w.now + w.between(1000, 150'000);
        n.boot(w);  // what it held is gone
        for (auto& d : n.due) d = n.up_at;
        continue;
      }
      if (w.now < end && w.chance(0.004)) {
        ++pauses;
        n.up_at = w.now + w.between(1000, 150'000);  // holds what it read, stale when it wakes
        continue;
      }
      // A person pauses or resumes (as the record stands); told "timeout", they may not know which.
      if (w.now < end && w.chance(0.002)) (void)n.drivers[0]->set_paused(w.paused_since == 0, "person");
      for (std::size_t k = 0; k < n.drivers.size(); ++k)
        if (n.due[k] <= w.now) n.due[k] = n.drivers[k]->step() + w.between(0, 800);
    }
  }
  if (w.paused_since) {
    // Resumed at the end, so that the ticks after it are checked too.
    for (int i = 0; i < 50 && w.paused_since; ++i) (void)nodes[0].drivers[0]->set_paused(false, "person");
    if (w.paused_since) return "the schedule could not be resumed";
    for (auto& d : nodes[0].due) d = w.now;
    for (std::int64_t until = w.now + 3 * 60'000; w.now < until; w.now += 500)
      for (auto& n : nodes)
        for (std::size_t k = 0; k < n.drivers.size(); ++k)
          if (n.due[k] <= w.now) n.due[k] = n.drivers[k]->step();
  }
  runs_made += w.runs.size();
  std::ostringstream wrong;
  auto configs = schedules();
  for (const auto& c : configs) {
    auto spec = *parse_cron(c.cron);
    auto zone = *time_zone::load(c.timezone);
    std::set<std::int64_t> ticks;
    for (std::int64_t t = start_ms; (t = next_tick(spec, zone, t)) != 0 && t <= w.now - 60'000;) ticks.insert(t);
    for (const auto& [key, made_at] : w.runs) {
      if (key.rfind(tick_key(c.name, 0).substr(0, tick_key(c.name, 0).size() - 1), 0) != 0) continue;
      auto tick = std::stoll(key.substr(key.rfind('/') + 1));
      if (!ticks.count(tick) && tick <= w.now - 60'000) wrong << c.name << ": a run for " << tick << ", which is no tick\n";
      if (c.missed == "skip" && made_at - tick > c.late_ms_max)
        wrong << c.name << ": tick " << tick << " started " << made_at - tick << " ms late (late_ms_max " << c.late_ms_max << ")\n";
    }
    if (c.missed != "catch_up") continue;
    for (auto tick : ticks) {
      bool in_pause = false;
      if (c.name == "every-minute")
        for (auto [from, to] : w.paused_windows) in_pause = in_pause || (tick > from && tick <= to);
      bool made = w.runs.count(tick_key(c.name, tick)) == 1;
      if (in_pause && made) wrong << c.name << ": tick " << tick << " made a run while the schedule was paused\n";
      if (!in_pause && !made) wrong << c.name << ": tick " << tick << " made no run\n";
    }
  }
  return wrong.str();
}

} // namespace

TEST_CASE("simulation: schedules: two orchestrators through crashes, pauses and lost answers make one run per tick for an hour",
          "[simulation][schedules]") {
  std::size_t runs = 0, crashes = 0, pauses = 0;
  keel::simulation::for_each_seed(1000, [&](std::uint64_t seed) { return run_seed(seed, runs, crashes, pauses); });
  std::printf("schedules simulation: %zu runs made, %zu crashes, %zu pauses\n", runs, crashes, pauses);
}
