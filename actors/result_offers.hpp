// How a worker offers a task's result to the run's owner, and how long the owner holds the step
// for it once a copy came and could not be written yet: one rule for both sides, whatever each
// node's nats.request_timeout_ms (the hold must outlast the longest gap between two offers, or a
// second worker is told the step is wanted and makes the paid call again).
#pragma once

#include <algorithm>
#include <cstdint>

namespace keel::actors::result_offers {

// A worker waits at most this for an offer's answer (less if its own request timeout is shorter)...
constexpr std::int64_t answer_wait_max_ms = 5000;
// ...and pauses at most this (doubling from 100 ms) before it offers again.
constexpr std::int64_t pause_first_ms = 100;
constexpr std::int64_t pause_max_ms = 2000;

inline std::int64_t answer_wait_ms(std::int64_t request_timeout_ms) {
  return std::clamp<std::int64_t>(request_timeout_ms, 1, answer_wait_max_ms);
}

// The owner's hold: two of the longest gaps between a worker's offers.
constexpr std::int64_t hold_ms = 2 * (answer_wait_max_ms + pause_max_ms);

} // namespace keel::actors::result_offers
