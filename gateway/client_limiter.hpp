// Fair use of the gateway's handler threads: each client (a token's name, or an address) has at
// most `running_max` requests on the threads at once; its others wait in its own line, and start
// as its earlier ones end. One client with many requests that wait on the broker therefore holds
// a few threads, never all of them, and every other client's requests still start.
#pragma once

#include "runtime/thread_pool.hpp"

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace keel::gateway {

class client_limiter {
public:
  client_limiter(thread_pool& pool, std::size_t running_max);
  ~client_limiter();
  client_limiter(const client_limiter&) = delete;
  client_limiter& operator=(const client_limiter&) = delete;
  // Starts nothing more (before the pool stops); requests still in a line are dropped.
  void stop();
  // Runs `job` on the pool now, or once `client` has a free place.
  void submit(const std::string& client, std::function<void()> job);
  // Requests of `client` running or waiting in its line.
  std::size_t held(const std::string& client) const;

private:
  struct line {
    std::size_t running = 0;
    std::deque<std::function<void()>> waiting;
  };
  struct state {
    mutable std::mutex mutex;
    thread_pool* pool = nullptr;  // null once stopped
    std::map<std::string, line> lines;
    std::size_t running_max = 1;
  };
  static void start_locked(const std::shared_ptr<state>& s, const std::string& client, std::function<void()> job);
  std::shared_ptr<state> state_;  // shared with jobs that outlive a stop
};

} // namespace keel::gateway
