// Timestamps at the hand-overs of a step, for finding where a step's time goes. Built only with
// -DKEEL_STEP_TRACE=ON (bench/step_trace.sh does it); otherwise every mark compiles to nothing.
// A node so built writes its marks to $KEEL_STEP_TRACE_FILE when it stops, one "point ns" line
// each; bench/step_trace.py turns them into the medians between consecutive points.
#pragma once

#ifdef KEEL_STEP_TRACE
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#endif

namespace keel::step_trace {

// The points of a step, in the order one step meets them.
enum point : int {
  result_received = 11,   // orchestrator: a task result comes off NATS
  result_decoded = 12,    // ...decoded, about to go to the run's actor
  result_in_actor = 13,   // the run's actor has it
  transition_built = 14,  // the run machine's transition and the events are ready
  batch_building = 15,    // the store builds the write batch
  received_write_started = 23,  // the step's result written alone (with fsync) begins
  received_write_done = 24,     // ...and returns
  write_started = 21,     // RocksDB write (with fsync) begins: what follows from a result
  write_done = 22,        // ...and returns
  publishing = 16,        // events, then the task, go out
  task_published = 17,
  task_received = 1,      // worker: the thread that runs the task has it
  task_decoded = 3,
  task_executed = 4,      // the model call or tool is done; the result is encoded next
  result_published = 5,
};

#ifdef KEEL_STEP_TRACE
namespace detail {
constexpr unsigned capacity = 1u << 20;
struct mark_record {
  int point;
  long long ns;
};
inline mark_record marks[capacity];
inline std::atomic<unsigned> count{0};
} // namespace detail

inline void mark(point p) {
  unsigned i = detail::count.fetch_add(1, std::memory_order_relaxed) % detail::capacity;
  detail::marks[i] = {p, std::chrono::steady_clock::now().time_since_epoch().count()};
}

inline void write_file() {
  const char* path = std::getenv("KEEL_STEP_TRACE_FILE");
  if (!path) return;
  FILE* out = std::fopen(path, "we");
  if (!out) return;
  unsigned n = detail::count.load();
  if (n > detail::capacity) n = detail::capacity;
  for (unsigned i = 0; i < n; ++i) std::fprintf(out, "%d %lld\n", detail::marks[i].point, detail::marks[i].ns);
  std::fclose(out);
}
#else
inline void mark(point) {}
inline void write_file() {}
#endif

} // namespace keel::step_trace
