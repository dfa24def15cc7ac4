// Group commit: run actors hand their transitions here; one thread writes everything waiting as
// one RocksDB batch with one sync, then runs each transition's continuation in order. Concurrent
// runs share the cost of a sync, which is what lets one node take thousands of steps a second.
// When nothing is queued or being written, the caller writes itself: at low load a step then
// costs no hand-off to another thread.
#pragma once

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
  // back is called once the store has it, and says whether the batch is replicated too. The
  // two go on at once; a batch is done (and acted on) only when both succeeded. A failure of
  // either fails the batch.
  using replicated_fn = std::function<result<void>()>;
  using replicate_fn = std::function<result<replicated_fn>(const std::vector<store::run_transition>&)>;

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
