// What the replication layer needs from the world, behind one interface: a clock, sleeping and
// threads. system_environment() is the real one; tests/simulation drives the same code with
// simulated time on a seeded schedule, one thread at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace keel::replication {

// A thread started by an environment: joined before what it uses goes.
class joinable {
public:
  virtual ~joinable() = default;
  virtual void join() = 0;
};

class environment {
public:
  virtual ~environment() = default;
  // Milliseconds on a clock that never goes back and keeps running while the machine is
  // suspended (CLOCK_BOOTTIME). Leases are measured with it: with a clock that stops during a
  // suspend (CLOCK_MONOTONIC, std::steady_clock), a holder that wakes would count its lease as
  // still valid after the others had taken it.
  virtual std::int64_t now_ms() = 0;
  // Sleeps for `ms`, or less once `stop` is set.
  virtual void sleep_ms(std::int64_t ms, const std::atomic<bool>& stop) = 0;
  // Runs `body` on a thread of its own named `name`. What it throws is reported and ends that
  // body only, never the process.
  virtual std::unique_ptr<joinable> spawn(const std::string& name, std::function<void()> body) = 0;
};

// The machine's: CLOCK_BOOTTIME, std::thread, errors to the "replication" log.
environment& system_environment();

} // namespace keel::replication
