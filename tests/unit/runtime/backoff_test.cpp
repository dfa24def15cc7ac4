// The one rule for waits between tries: doubling from the first wait to the bound, spread waits
// within the upper half, a loop's waits starting again after a success.
#include "runtime/backoff.hpp"

#include <catch2/catch.hpp>

#include <vector>

using namespace keel;

TEST_CASE("backoff: waits double from the first up to the bound, and start again after a success", "[backoff]") {
  backoff pause{100, 1000};
  std::vector<std::int64_t> waits;
  for (int i = 0; i < 7; ++i) waits.push_back(pause.next_ms());
  CHECK(waits == std::vector<std::int64_t>{100, 200, 400, 800, 1000, 1000, 1000});
  pause.reset();
  CHECK(pause.next_ms() == 100);
  // Many failures neither overflow nor pass the bound; a bound under the first wait wins.
  CHECK(backoff_wait_ms(1'000'000, 1000, 60'000) == 60'000);
  CHECK(backoff_wait_ms(0, 1000, 60'000) == 1000);
  CHECK(backoff_wait_ms(3, 5000, 2000) == 2000);
  CHECK(backoff_wait_ms(5, 0, 100) == 16);  // a first wait of 0 is 1 ms
  for (std::uint32_t failures = 1; failures < 40; ++failures) {
    auto ceiling = backoff_wait_ms(failures, 250, 30'000);
    for (int i = 0; i < 20; ++i) {
      auto w = backoff_wait_spread_ms(failures, 250, 30'000);
      CHECK(w >= ceiling / 2);
      CHECK(w <= ceiling);
    }
  }
}
