// The one pool of joinable threads that keel's roles run work on (a worker's slots, the gateway's
// handlers, the orchestrator's task publisher). Its state outlives it: a thread left running at a
// stop (a long tool call) still has what it needs, and ends on its own.
#pragma once

#include <chrono>
#include <condition_variable>
#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <pthread.h>
#include <string>
#include <thread>
#include <vector>

namespace keel {

class thread_pool {
public:
  // `on_error` hears what a job threw (a job must not take its thread down).
  // `name` (at most 15 characters) names its threads, for top -H and profiles.
  explicit thread_pool(std::size_t threads, std::function<void(const char*)> on_error = {}, std::string name = {})
    : state_(std::make_shared<state>()) {
    state_->on_error = std::move(on_error);
    state_->alive = threads;
    for (std::size_t i = 0; i < threads; ++i)
      threads_.emplace_back([s = state_, name] {
        if (!name.empty()) pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
        loop(*s);
        std::lock_guard lock{s->mutex};
        --s->alive;
        if (s->detached) --left_running();
      });
  }
  ~thread_pool() {
    if (!threads_.empty()) stop(0);
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  // False when the pool is stopping (the job is dropped).
  bool submit(std::function<void()> job) {
    {
      std::lock_guard lock{state_->mutex};
      if (state_->stopping) return false;
      state_->jobs.push_back(std::move(job));
    }
    state_->wake.notify_one();
    return true;
  }
  // Takes no more jobs and drops those not started; joins the threads if every running job ends
  // within the time (true), else leaves them to end on their own (false).
  bool stop(std::int64_t timeout_ms) {
    {
      std::lock_guard lock{state_->mutex};
      state_->stopping = true;
      state_->jobs.clear();
    }
    state_->wake.notify_all();
    state_->stopped.notify_all();
    std::unique_lock lock{state_->mutex};
    state_->done.wait_for(lock, std::chrono::milliseconds(timeout_ms), [this] { return state_->running == 0; });
    bool all_idle = state_->running == 0;
    if (!all_idle) {
      state_->detached = true;
      left_running() += state_->alive;
    }
    lock.unlock();
    for (auto& t : threads_) {
      if (all_idle) t.join();
      else t.detach();
    }
    threads_.clear();
    return all_idle;
  }
  // Threads of stopped pools still running a job that overran its stop (across all pools): a
  // process must not run its static destructors under them (see keel-node's exit).
  static std::size_t threads_left_running() { return left_running(); }
  // Whether stop() was called (for a job that waits in a loop).
  bool stopping() const {
    std::lock_guard lock{state_->mutex};
    return state_->stopping;
  }
  // Waits up to `timeout_ms` for stop(); true when it came.
  bool wait_for_stop(std::int64_t timeout_ms) const {
    std::unique_lock lock{state_->mutex};
    return state_->stopped.wait_for(lock, std::chrono::milliseconds(timeout_ms), [this] { return state_->stopping; });
  }

private:
  struct state {
    mutable std::mutex mutex;
    std::condition_variable wake;             // a job came, or the pool stops
    mutable std::condition_variable stopped;  // the pool stops (for jobs that wait)
    std::condition_variable done;
    std::deque<std::function<void()>> jobs;
    std::size_t running = 0;
    bool stopping = false;
    std::size_t alive = 0;  // threads not yet out of loop()
    bool detached = false;  // stop() gave up waiting: each thread leaves left_running() as it ends
    std::function<void(const char*)> on_error;
  };
  static std::atomic<std::size_t>& left_running() {
    static std::atomic<std::size_t> count{0};
    return count;
  }
  static void loop(state& s) {
    std::unique_lock lock{s.mutex};
    while (true) {
      s.wake.wait(lock, [&] { return s.stopping || !s.jobs.empty(); });
      if (s.stopping) return;
      auto job = std::move(s.jobs.front());
      s.jobs.pop_front();
      ++s.running;
      lock.unlock();
      try {
        job();
      } catch (const std::exception& e) {
        if (s.on_error) s.on_error(e.what());
      }
      lock.lock();
      --s.running;
      s.done.notify_all();
    }
  }
  std::shared_ptr<state> state_;
  std::vector<std::thread> threads_;
};

} // namespace keel
