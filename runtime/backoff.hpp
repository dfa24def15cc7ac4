// Waits between tries of something that failed for a reason that may pass (a broker away, a
// stream without a leader, a model service overloaded, a run's owner restarting): each twice the
// one before, from a first wait up to a bound, so that what is down is not asked many times a
// second and what comes back is used soon. One rule for the code base; callers differ only in the
// first wait, the bound, and whether waits are spread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

namespace keel {

// The wait after `failures` failures in a row (1: the first wait, `first_ms`).
inline std::int64_t backoff_wait_ms(std::uint32_t failures, std::int64_t first_ms, std::int64_t max_ms) {
  std::int64_t wait = std::max<std::int64_t>(1, first_ms);
  for (std::uint32_t i = 1; i < failures && wait < max_ms; ++i) wait *= 2;
  return std::min(wait, max_ms);
}

// The same, drawn at random from its upper half: callers that failed together (the clients of one
// model service) do not all come back at the same moment.
inline std::int64_t backoff_wait_spread_ms(std::uint32_t failures, std::int64_t first_ms, std::int64_t max_ms) {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  auto ceiling = backoff_wait_ms(failures, first_ms, max_ms);
  return std::uniform_int_distribution<std::int64_t>(ceiling / 2, ceiling)(random);
}

// For a loop: the next wait each time one is due; reset() once a try went through.
class backoff {
public:
  backoff(std::int64_t first_ms, std::int64_t max_ms) : first_ms_(first_ms), max_ms_(max_ms) {}
  std::int64_t next_ms() { return backoff_wait_ms(++failures_, first_ms_, max_ms_); }
  void reset() { failures_ = 0; }
  std::uint32_t failures() const { return failures_; }

private:
  std::int64_t first_ms_;
  std::int64_t max_ms_;
  std::uint32_t failures_ = 0;
};

} // namespace keel
