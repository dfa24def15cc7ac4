// Group commit: run actors hand their transitions here; one thread writes everything waiting as
// one RocksDB batch with one sync, then runs each transition's continuation in order. Concurrent
// runs share the cost of a sync, which is what lets one node take thousands of steps a second.
// When nothing is queued or being written, the caller writes itself: at low load a step then
// costs no hand-off to another thread.
#pragma once

#include "replication/log_writer.hpp"
#include "runtime/run_store.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

namespace keel::actors {

class store_writer {
public:
  // Runs on the writer thread after the batch is on disk; `written` carries the write's outcome.
  using continuation = std::function<void(const result<void>& written)>;

  // A batch is handed here (the replicated log) before it is written to the store: what comes
  // back names the runs refused before anything of theirs was sent (not written to the store
  // either), and what waits for the others' confirmations once the store has them (per run, what
  // failed). A run's transitions are done (and acted on) only when both succeeded; one run's
  // failure fails that run only.
  using replicate_fn = std::function<replication::log_writer::started(const std::vector<store::run_transition>&)>;

  store_writer(store::run_store& store, std::size_t batch_max, replicate_fn replicate = {});
  ~store_writer();  // writes what is queued, then stops
  store_writer(const store_writer&) = delete;
  store_writer& operator=(const store_writer&) = delete;

  // `announce`, when given, runs as soon as the transition has its place in the write order
  // (before the caller writes it itself; the writer's thread may have it already): whatever is
  // submitted once announce has run is written after it.
  void submit(store::run_transition transition, continuation then, const std::function<void()>& announce = {});
  // Always on the writer's thread, so that the caller can go on while it is written.
  void submit_async(store::run_transition transition, continuation then);
  // Runs `then` once everything submitted before it is written (for a reply that writes nothing).
  void after_pending(continuation then);
  void stop();

private:
  struct item {
    std::optional<store::run_transition> transition;
    continuation then;
  };
  void loop();
  void write(std::vector<item>& batch);
  void enqueue(item i);

  store::run_store& store_;
  std::size_t batch_max_;
  replicate_fn replicate_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<item> queue_;
  bool stopping_ = false;
  bool writing_ = false;  // a batch (the writer's or a caller's) is being written
  std::thread thread_;
};

} // namespace keel::actors
