// Stores tasks in the broker's work queue from a few threads of its own, so that neither the
// store writer nor a run's actor waits for the broker's acknowledgement. A task the broker did
// not take is offered again, with a growing pause, for as long as its run still wants it; the
// message id (run/step/attempt) makes a repeat that did reach the broker harmless.
#pragma once

#include "broker/work_queue.hpp"
#include "runtime/log.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace keel::actors {

class task_publisher {
public:
  struct job {
    std::string subject;
    std::string bytes;
    std::string id;
    std::function<bool()> still_wanted;  // checked before each new offer
  };

  task_publisher(broker::jetstream& js, std::size_t threads) : js_(js) {
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~task_publisher() { stop(); }

  void submit(job j) {
    {
      std::lock_guard lock{mutex_};
      jobs_.push_back(std::move(j));
    }
    wake_.notify_one();
  }
  // Offers what is queued once more, then stops (a task not stored is sent again at the next start).
  void stop() {
    {
      std::lock_guard lock{mutex_};
      if (stopping_) return;
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

private:
  void loop() {
    std::unique_lock lock{mutex_};
    while (true) {
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      auto j = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      offer(j);
      lock.lock();
    }
  }
  void offer(const job& j) {
    std::int64_t pause_ms = 100;
    for (int tries = 0;; ++tries) {
      auto stored = js_.publish(j.subject, j.bytes, j.id);
      if (stored) return;
      static auto logger = log::get("actors");
      logger->warn("task {} not stored in the work queue (try {}): {}", j.id, tries + 1, stored.error().message);
      {
        std::unique_lock lock{mutex_};
        if (wake_.wait_for(lock, std::chrono::milliseconds(pause_ms), [this] { return stopping_; })) return;
      }
      if (j.still_wanted && !j.still_wanted()) return;
      pause_ms = std::min<std::int64_t>(pause_ms * 2, 5000);
    }
  }

  broker::jetstream& js_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<job> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

} // namespace keel::actors
