#include "actors/store_writer.hpp"
#include "tests/support/test_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <future>

using namespace keel;
using namespace keel::actors;

namespace {

store::run_transition received(const std::string& run, std::uint64_t order) {
  store::run_transition t;
  t.entries_only = true;
  t.record.run_id = run;
  t.received.push_back({order, "result " + std::to_string(order)});
  return t;
}

store::run_transition removal(const std::string& run, std::uint64_t order) {
  store::run_transition t;
  t.entries_only = true;
  t.sync = false;
  t.record.run_id = run;
  t.received_done.push_back(order);
  return t;
}

} // namespace

TEST_CASE("store writer: what is submitted once a write is announced is written after it", "[actors]") {
  // The results subscription announces a received result to the run's actor before writing it;
  // the actor's transition, which removes that result, must never land first.
  testing::temp_dir dir;
  auto store = store::run_store::open({dir.file("db"), true});
  REQUIRE(store.ok());
  store_writer writer(**store, 64);
  constexpr int runs = 40;
  std::vector<std::promise<void>> written(runs);
  std::atomic<int> announced_before_written{0};
  std::atomic<int> failed{0};  // counted, not asserted: continuations run on the writer's thread
  for (int i = 0; i < runs; ++i) {
    std::string run = "r" + std::to_string(i);
    // Every other round, keep the writer's thread busy so that the write is queued, not inline.
    if (i % 2) writer.submit_async(received("busy" + std::to_string(i), 1), [](const result<void>&) {});
    auto done = std::make_shared<std::atomic<bool>>(false);
    writer.submit(
      received(run, 7),
      [done, &failed](const result<void>& w) {
        if (!w) failed += 1;
        *done = true;
      },
      [&, done, run, i] {
        if (!*done) announced_before_written += 1;
        writer.submit_async(removal(run, 7), [&written, &failed, i](const result<void>& w) {
          if (!w) failed += 1;
          written[static_cast<std::size_t>(i)].set_value();
        });
      });
  }
  for (auto& w : written) REQUIRE(w.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  CHECK(failed == 0);
  for (int i = 0; i < runs; ++i) CHECK((*store)->received("r" + std::to_string(i))->empty());
  CHECK(announced_before_written > 0);  // at least the inline writes announce before writing
}

TEST_CASE("store writer: a caller writing inline writes the one transition queued behind it, more go to the writer's thread",
          "[actors]") {
  // At low load the run's actor submits what follows from a result while the result's thread
  // writes it: that thread writes it too, with no wake-up of the writer's thread. Two or more
  // queued are left to the writer's thread, which writes them together.
  testing::temp_dir dir;
  auto store = store::run_store::open({dir.file("db"), true});
  REQUIRE(store.ok());
  store_writer writer(**store, 64);
  for (int queued : {1, 2}) {
    auto caller = std::this_thread::get_id();
    std::vector<std::thread::id> ran_on(static_cast<std::size_t>(queued));
    std::vector<int> written(static_cast<std::size_t>(queued));  // set on the writing thread, checked here
    std::vector<std::promise<void>> done(static_cast<std::size_t>(queued));
    std::string run = "q" + std::to_string(queued);
    writer.submit(received(run, 1), [](const result<void>&) {}, [&] {
      for (int k = 0; k < queued; ++k)
        writer.submit_async(removal(run, 1), [&, k](const result<void>& w) {
          written[static_cast<std::size_t>(k)] = w.ok() ? 1 : 0;
          ran_on[static_cast<std::size_t>(k)] = std::this_thread::get_id();
          done[static_cast<std::size_t>(k)].set_value();
        });
    });
    for (auto& d : done) REQUIRE(d.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    for (int w : written) CHECK(w == 1);
    for (const auto& id : ran_on) CHECK((id == caller) == (queued == 1));
    CHECK((*store)->received(run)->empty());
  }
}
