// The runs an orchestrator has in memory: each run's actor, the step it has in flight, the runs
// still loading, the runs stopped by a failed write, and the new runs whose first write is not yet
// confirmed. Written by the orchestrator's actors, read by the NATS threads that route results and
// answer workers without a message to the run's actor. One lock per concern.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace keel::actors {

class run_registry {
public:
  // `now`: the steady clock in ms that holds are measured on (a simulation gives its own).
  explicit run_registry(std::function<std::int64_t()> now = {});

  // ---- Actors
  void registered(const std::string& run_id, const caf::actor& a);
  // Forgets the run's actor and what it had in flight.
  void unregistered(const std::string& run_id);
  // Forgets the run this actor served: its id, or empty when it served none now (replaced).
  std::string unregistered(const caf::actor_addr& actor);
  std::vector<caf::actor> all_actors();
  caf::actor find(const std::string& run_id);

  // ---- The task each run in memory has in flight (at most one), so that a worker can ask
  // whether an attempt is still wanted. Set just before the task is stored in the work queue.
  void sent(const std::string& run_id, std::uint64_t step, std::uint32_t attempt);
  // Marks the step's result received; false when that step is not in flight (or its result came).
  bool received(const std::string& run_id, std::uint64_t step);
  // The step's result could not be written: a copy offered again is taken, not called late. Its
  // worker holds it and offers it again, so for `hold_ms` (renewed by each offer that is not
  // written) no worker is told that step is wanted: another worker handed the same task meanwhile
  // (the broker did not hear the first one's "in progress") would make the paid call again. A
  // failure that comes after the same step's result was written makes no hold.
  void receive_failed(const std::string& run_id, std::uint64_t step, std::int64_t hold_ms);
  // A copy of the step's result offered and not written (the run is loading): the hold goes on.
  void renew_hold(const std::string& run_id, std::uint64_t step, std::int64_t hold_ms);
  // The step's result is written: the hold ends (and, where there was one, a failure of an older
  // copy reported later makes none, for `hold_ms`).
  void result_written(const std::string& run_id, std::uint64_t step, std::int64_t hold_ms);
  // Whether a result of the step came and is not written yet (its worker offers it again).
  bool result_unwritten(const std::string& run_id, std::uint64_t step);
  std::size_t unwritten_count();
  // Whether the run in memory has certainly no use for a result of `step`: its result is
  // written, or another step is in flight. Not in memory, or still awaiting it, the answer is no.
  bool result_not_needed(const std::string& run_id, std::uint64_t step);
  // True: wanted; false: not; empty: the run is not in memory, or still starting.
  std::optional<bool> wanted(const std::string& run_id, std::uint64_t step, std::uint32_t attempt);
  // What a worker asking about an attempt is told, in one look: `held` while that step's result
  // is being written (ask again), `unknown` when the run is not in memory or still starting.
  enum class task_answer { wanted, not_wanted, held, unknown };
  task_answer answer_task(const std::string& run_id, std::uint64_t step, std::uint32_t attempt);
  bool still_in_flight(const std::string& run_id, std::uint64_t step, std::uint32_t attempt) {
    return wanted(run_id, step, attempt).value_or(false);
  }

  // ---- Runs whose actor is made but has not yet said what it has in flight (a run loaded from
  // disk asks the broker first): a result or question for one is asked again, not taken as late.
  void starting_now(const std::string& run_id);
  void started(const std::string& run_id);
  bool is_starting(const std::string& run_id);

  // ---- Runs whose actor was dropped because a write failed (a full disk): memory was ahead of
  // disk. Once the store writes again they are loaded from disk and go on by themselves.
  void stalled(const std::string& run_id, const caf::actor_addr& dropped);
  // The runs to load again: those whose dropped actor is gone.
  std::vector<std::string> take_stalled();
  bool any_stalled();

  // ---- New runs whose first write is not yet confirmed (and counted): an invoke naming one by
  // its idempotency key waits for it, answered once the write counted, told to ask again if not.
  void creating(const std::string& run_id);
  // The replies waiting for the run's first write; with `counted`, the run stops being waited on.
  std::vector<std::string> take_waiting(const std::string& run_id, bool counted);
  bool is_counted(const std::string& run_id);
  // False when the run is counted already (answer now) or too many wait (answer "ask again").
  enum class wait_outcome { queued, counted, full };
  wait_outcome wait_until_counted(const std::string& run_id, const std::string& reply);

private:
  struct in_flight_task {
    std::uint64_t step = 0;
    std::uint32_t attempt = 0;
    bool result_received = false;
  };
  struct hold {
    std::uint64_t step = 0;
    std::int64_t until_ms = 0;  // steady
    bool written = false;       // the step's result was written: no hold, whatever fails later
  };
  bool held_locked(const std::string& run_id, std::uint64_t step, std::int64_t now);
  std::function<std::int64_t()> now_;
  void sweep_locked(std::int64_t now);
  std::mutex mutex_;  // actors, in flight, starting, holds
  std::unordered_map<std::string, caf::actor> actors_;
  std::unordered_map<caf::actor_id, std::string> run_of_actor_;  // the same, by actor: O(1) on its exit
  std::unordered_map<std::string, in_flight_task> in_flight_;
  std::unordered_set<std::string> starting_;
  std::unordered_map<std::string, hold> holds_;  // run -> its last result's hold
  std::size_t holds_sweep_at_ = 1024;


  std::mutex stalled_mutex_;
  std::unordered_map<std::string, caf::actor_addr> stalled_;

  std::mutex uncounted_mutex_;
  std::unordered_map<std::string, std::vector<std::string>> uncounted_;  // run -> replies waiting
  std::atomic<std::size_t> uncounted_size_{0};
};

} // namespace keel::actors
