// What the run registry tells a worker that asks about a step whose result came and could not be
// written: ask again while the worker that holds the result still offers it, then the run's own
// answer.
#include "actors/run_registry.hpp"

#include <catch2/catch.hpp>

#include <thread>

using namespace keel::actors;
using answer = run_registry::task_answer;


TEST_CASE("run registry: a result not written holds its step until written, or until its worker stops offering it",
          "[actors]") {
  // The run's actor dropped after the failed write (what answer_task says of a run in memory is
  // the e2e test's: disk full: a step in flight ...).
  run_registry runs;
  CHECK(runs.answer_task("r1", 3, 1) == answer::unknown);
  runs.receive_failed("r1", 3, 60'000);
  CHECK(runs.result_unwritten("r1", 3));
  CHECK(runs.answer_task("r1", 3, 1) == answer::held);
  CHECK(runs.answer_task("r1", 4, 1) == answer::unknown);  // another step: the run answers
  CHECK_FALSE(runs.result_unwritten("r1", 2));
  CHECK_FALSE(runs.result_unwritten("r2", 3));  // another run
  // Offered again and written: the hold ends; a failure of an older copy reported after that
  // makes none.
  runs.result_written("r1", 3, 60'000);
  CHECK_FALSE(runs.result_unwritten("r1", 3));
  CHECK(runs.answer_task("r1", 3, 1) == answer::unknown);
  runs.receive_failed("r1", 3, 60'000);
  CHECK_FALSE(runs.result_unwritten("r1", 3));

  // A later step written ends an earlier step's hold; an earlier one does not end a later one's.
  runs.receive_failed("r1", 4, 60'000);
  runs.result_written("r1", 3, 60'000);
  CHECK(runs.result_unwritten("r1", 4));
  runs.result_written("r1", 5, 60'000);
  CHECK_FALSE(runs.result_unwritten("r1", 4));
}

TEST_CASE("run registry: a hold ends once its worker stops offering the result, and each offer not written renews it",
          "[actors]") {
  run_registry runs;
  // Margins of 800 ms: a busy machine's late wake-ups do not decide the outcome.
  runs.receive_failed("r1", 6, 2000);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  runs.renew_hold("r1", 6, 2000);  // offered again while the run loads
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  CHECK(runs.result_unwritten("r1", 6));
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  CHECK_FALSE(runs.result_unwritten("r1", 6));
  runs.renew_hold("r1", 6, 2000);  // a hold that ended is not made again by a renewal
  CHECK_FALSE(runs.result_unwritten("r1", 6));
}

TEST_CASE("run registry: holds of 100,000 runs whose workers stopped offering are swept, not kept", "[actors]") {
  run_registry runs;
  for (int i = 0; i < 100'000; ++i) runs.receive_failed("run-" + std::to_string(i), 1, 0);
  for (int i = 0; i < 100'000; ++i) runs.result_written("done-" + std::to_string(i), 1, 0);
  // Each expired at once: every one reads as not held, and the sweeps kept the map small.
  CHECK_FALSE(runs.result_unwritten("run-99999", 1));
  CHECK(runs.unwritten_count() <= 1024);
}
