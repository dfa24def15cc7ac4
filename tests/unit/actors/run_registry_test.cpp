// What the run registry tells a worker that asks about a step whose result came and could not be
// written: ask again while the worker that holds the result still offers it, then the run's own
// answer.
#include "actors/run_registry.hpp"

#include <catch2/catch.hpp>

#include <thread>

using namespace keel::actors;

TEST_CASE("run registry: a result not written holds its step until written, or until its worker stops offering it",
          "[actors]") {
  run_registry runs;
  runs.sent("r1", 3, 1);
  REQUIRE(runs.received("r1", 3));
  CHECK_FALSE(runs.result_unwritten("r1", 3));
  runs.receive_failed("r1", 3, 60'000);
  CHECK(runs.result_unwritten("r1", 3));
  CHECK_FALSE(runs.result_unwritten("r1", 2));  // another step: the run answers
  CHECK_FALSE(runs.result_unwritten("r2", 3));  // another run
  // Offered again and written: the hold ends.
  REQUIRE(runs.received("r1", 3));
  runs.result_written("r1", 3);
  CHECK_FALSE(runs.result_unwritten("r1", 3));

  // A later step written ends an earlier step's hold; an earlier one does not end a later one's.
  runs.receive_failed("r1", 4, 60'000);
  runs.result_written("r1", 3);
  CHECK(runs.result_unwritten("r1", 4));
  runs.result_written("r1", 5);
  CHECK_FALSE(runs.result_unwritten("r1", 4));

  // Nobody offers it again (its worker died): the hold ends after its time, and each failed
  // offer renews it.
  runs.receive_failed("r1", 6, 150);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  runs.receive_failed("r1", 6, 150);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(runs.result_unwritten("r1", 6));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK_FALSE(runs.result_unwritten("r1", 6));
}

TEST_CASE("run registry: holds of 100,000 runs whose workers stopped offering are swept, not kept", "[actors]") {
  run_registry runs;
  for (int i = 0; i < 100'000; ++i) runs.receive_failed("run-" + std::to_string(i), 1, 0);
  // Each expired at once: every one reads as not held, and the sweep kept the map small.
  CHECK_FALSE(runs.result_unwritten("run-99999", 1));
  CHECK(runs.unwritten_count() <= 1024);
}
