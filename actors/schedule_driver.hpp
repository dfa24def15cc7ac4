// Schedules (docs/WORKFLOWS.md): which ticks of a schedule to start now, and starting them so that
// each tick makes one run however many orchestrators drive it, through their crashes and pauses.
// Every orchestrator that has a schedule drives it; a tick's run is made with the idempotency key
// keel-schedule/<name>/<tick ms>, which the cluster gives one run (the first to claim it makes
// it), so two drivers starting one tick make one run. The shared record of a schedule (its last
// tick started, whether it is paused) is read and written at a revision: it only moves forward.
// Plain C++ with its clock, store and starter as interfaces: the real ones are NATS and JetStream
// (actors/schedule_keeper), simulated ones are in tests/simulation.
#pragma once

#include "runtime/config.hpp"
#include "runtime/cron.hpp"
#include "runtime/result.hpp"
#include "runtime/time_zone.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace keel::actors {

struct schedule_record {
  std::int64_t last_tick_ms = 0;  // ticks up to here are started or given up (when created: its time)
  std::int64_t last_started_ms = 0;  // the latest tick whose run was made (0: none yet)
  bool paused = false;
  std::string paused_by;
  std::int64_t skipped = 0;       // ticks missed past late_ms_max and not started (missed = "skip")
  // When the pause began, and the pauses after the last tick started: the ticks each covered,
  // (from, to], are not missed ones and never start (ticks due before it that no node started are
  // still due). At most 32 are kept (past that, the ticks before the oldest are given up).
  std::int64_t paused_at_ms = 0;
  std::vector<std::pair<std::int64_t, std::int64_t>> gaps;
};
std::string encode(const schedule_record& r);
result<schedule_record> decode_schedule_record(const std::string& bytes);

// The ticks to start at `now_ms` after `last_ms`: with missed = "skip", those no older than
// late_ms_max (the others are counted in `skipped`); with "catch_up", the latest catch_up_max.
// `next_ms`: the first tick after now.
struct tick_plan {
  std::vector<std::int64_t> start;
  std::int64_t skipped = 0;
  std::int64_t next_ms = 0;
  std::int64_t last_due_ms = 0;  // the latest tick at or before now (0: none since last_tick_ms)
};
// How far back missed ticks are looked for: a skip schedule, its late_ms_max; a catch-up one, 31
// days (older ones are given up, counted as one skipped).
constexpr std::int64_t catch_up_window_ms = 31LL * 86'400'000;
tick_plan plan_ticks(const config::schedule_config& config, const cron_spec& spec, const time_zone& zone,
                     const schedule_record& record, std::int64_t now_ms);

// The idempotency key of a tick's run.
std::string tick_key(const std::string& schedule, std::int64_t tick_ms);
constexpr const char* schedule_key_prefix = "keel-schedule/";

struct schedule_io {
  std::function<std::int64_t()> now;  // wall clock, ms
  // The shared record at a revision (nullopt: none yet); create it; replace it at a revision
  // (conflict: another wrote first).
  std::function<result<std::optional<std::pair<schedule_record, std::uint64_t>>>(const std::string& name)> read;
  std::function<result<std::uint64_t>(const std::string& name, const schedule_record&)> create;
  std::function<result<std::uint64_t>(const std::string& name, const schedule_record&, std::uint64_t revision)> update;
  // Start the tick's run (idempotent by its key): the run's id.
  std::function<result<std::string>(const config::schedule_config&, std::int64_t tick_ms)> start;
};

class schedule_driver {
public:
  // `config` must have loaded (its cron and time zone checked).
  schedule_driver(config::schedule_config config, schedule_io io);

  // Looks at the schedule now: starts what is due (oldest first; a tick whose start fails is
  // tried at the next look), and says when to look next (wall clock, ms).
  std::int64_t step();
  // Pause or resume (any orchestrator; the shared record says it to all).
  result<schedule_record> set_paused(bool paused, const std::string& by);
  // What the schedule shows (listing): the shared record as last read, the next tick.
  struct view {
    schedule_record record;
    std::int64_t next_ms = 0;
    std::string problem;  // why the last look failed, if it did
  };
  view shown() const;
  const config::schedule_config& config() const { return config_; }

private:
  result<std::pair<schedule_record, std::uint64_t>> current();  // read, or create at now
  result<void> advance_to(std::int64_t tick_ms, std::int64_t skipped, bool started);

  config::schedule_config config_;
  cron_spec spec_;
  time_zone zone_;
  schedule_io io_;
  schedule_record last_read_;
  std::int64_t next_ms_ = 0;
  std::string problem_;
};

} // namespace keel::actors
