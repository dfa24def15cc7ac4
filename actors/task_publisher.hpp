// Stores tasks in the broker's work queue, waiting for the broker's confirmation, on threads of
// its own: the path for a task that a quick send could not place (the broker refused it, did not
// confirm it, or could not be reached), or one that must wait (this node's lease on its run
// lapsed). Each is offered again, with a growing pause, for as long as its run still wants it;
// the message id (run/step/attempt) makes a repeat that did reach the broker harmless. Tasks not
// yet offered at a stop are dropped: a restarted orchestrator sends a step whose task the broker
// does not hold.
#pragma once

#include "broker/work_queue.hpp"
#include "runtime/backoff.hpp"
#include "runtime/log.hpp"
#include "runtime/thread_pool.hpp"

#include <spdlog/spdlog.h>

#include <functional>
#include <mutex>
#include <unordered_set>

namespace keel::actors {

class task_publisher {
public:
  struct job {
    std::string subject;
    std::string bytes;
    std::string id;
    std::function<bool()> still_wanted;  // checked before each new offer
    // False while the task must not go yet (the lease on its run's domain has lapsed): it waits,
    // looked at every 50 ms, for as long as it is still wanted.
    std::function<bool()> may_send;
  };

  task_publisher(broker::jetstream& js, std::size_t threads) : js_(js), pool_(threads, {}, "keel publish") {}

  void submit(job j) {
    {
      std::lock_guard lock{mutex_};
      offering_.insert(j.id);
    }
    pool_.submit([this, j = std::move(j)] {
      offer(j);
      std::lock_guard lock{mutex_};
      offering_.erase(j.id);
    });
  }
  void stop() { pool_.stop(5000); }
  // Whether the task with this id (run/step/attempt) is being offered: not in the work queue
  // yet, and not given up.
  bool offering(const std::string& id) {
    std::lock_guard lock{mutex_};
    return offering_.count(id) > 0;
  }

private:
  void offer(const job& j) {
    backoff pause{100, 5000};
    std::int64_t pause_ms = pause.next_ms();
    for (int tries = 0;; ++tries) {
      static auto logger = log::get("actors");
      bool held = j.may_send && !j.may_send();
      if (!held) {
        auto stored = js_.publish(j.subject, j.bytes, j.id);
        if (stored) return;
        logger->warn("task {} not stored in the work queue (try {}): {}", j.id, tries + 1, stored.error().message);
      }
      // Held for a lease, it is looked at often: a renewal ends the wait.
      if (pool_.wait_for_stop(held ? 50 : pause_ms)) return;
      if (j.still_wanted && !j.still_wanted()) return;
      if (!held) pause_ms = pause.next_ms();
    }
  }

  broker::jetstream& js_;
  thread_pool pool_;
  std::mutex mutex_;
  std::unordered_set<std::string> offering_;
};

} // namespace keel::actors
