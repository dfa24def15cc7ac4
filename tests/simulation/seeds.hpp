// Runs a simulation over many seeds: KEEL_SIM_SEEDS (how many, from 1) and KEEL_SIM_SEED (just
// that one) choose them. The first seed whose check fails ends the test with its report and the
// command that replays it.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>

namespace keel::simulation {

// `check(seed)` returns what went wrong, empty when nothing did.
inline void for_each_seed(std::uint64_t default_count, const std::function<std::string(std::uint64_t)>& check) {
  std::uint64_t first = 1, count = default_count;
  if (const char* one = std::getenv("KEEL_SIM_SEED"); one && *one) {
    first = std::strtoull(one, nullptr, 10);
    count = 1;
  } else if (const char* n = std::getenv("KEEL_SIM_SEEDS"); n && *n) {
    count = std::strtoull(n, nullptr, 10);
  }
  for (auto seed = first; seed < first + count; ++seed) {
    auto wrong = check(seed);
    if (wrong.empty()) continue;
    FAIL_CHECK("seed " << seed << " (replay: KEEL_SIM_SEED=" << seed << " build/tests/replication_tests '"
                       << Catch::getResultCapture().getCurrentTestName() << "'):\n" << wrong);
    return;
  }
  SUCCEED(count << " seeds");
}

} // namespace keel::simulation
