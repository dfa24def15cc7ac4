// Retention (actors/retention.hpp, run_store::remove_ended): ended runs past their age or beyond
// the count are removed whole (record, conversation, journal, events, indexes, idempotency key);
// runs not ended or in memory are left; and the store's disk use stays flat over 100,000 runs.
#include "actors/retention.hpp"
#include "runtime/run_store.hpp"
#include "tests/support/test_support.hpp"

#include <filesystem>

using namespace keel;
using namespace keel::store;
using keel::testing::temp_dir;

namespace {

std::unique_ptr<run_store> open_store(const std::string& path) {
  auto s = run_store::open({path, false});
  REQUIRE(s.ok());
  return std::move(*s);
}

// A run with a conversation, a journal entry, events and an idempotency key, ended (or not) at `at_ms`.
void make_run(run_store& store, const std::string& id, std::int64_t at_ms, run_status status, const std::string& key = {}) {
  run_transition t;
  t.record.run_id = id;
  t.record.agent = "coder";
  t.record.idempotency_key = key;
  t.record.status = status;
  t.record.created_ms = at_ms;
  t.record.updated_ms = at_ms;
  t.record.last_event_seq = 2;
  t.record.last_journal_seq = 1;
  t.record.state = wire::value{{"messages", {std::string(400, 'x'), std::string(400, 'y')}}};
  t.journal = {{1, "result", at_ms, wire::value{{"text", std::string(300, 'z')}}}};
  t.events = {{id, 1, "run_started", at_ms, wire::value{{"input", std::string(200, 'i')}}},
              {id, 2, "run_completed", at_ms, wire::value{{"output", std::string(200, 'o')}}}};
  REQUIRE(store.apply(t).ok());
}

std::uintmax_t disk_bytes(const std::string& path) {
  std::uintmax_t total = 0;
  for (const auto& f : std::filesystem::recursive_directory_iterator(path))
    if (f.is_regular_file()) total += f.file_size();
  return total;
}

auto never_in_memory = [](const std::string&) { return false; };

} // namespace

TEST_CASE("retention: runs ended past max_age go whole, and runs not ended, newer or in memory stay", "[retention]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  make_run(*store, "old-done", 1000, run_status::completed, "key-1");
  make_run(*store, "old-failed", 1100, run_status::failed);
  make_run(*store, "old-waiting", 1200, run_status::suspended);  // not ended: stays however old
  make_run(*store, "old-in-memory", 1300, run_status::cancelled);
  make_run(*store, "new-done", 9000, run_status::completed);
  actors::retention_policy policy{5000, 0, 1000};
  auto plans = actors::plan_retention(*store, policy, 10'000, [](const std::string& r) { return r == "old-in-memory"; });
  REQUIRE(plans);
  REQUIRE(plans->size() == 1);
  CHECK((*plans)[0].runs == std::vector<std::string>{"old-done", "old-failed"});
  auto removed = store->remove_ended((*plans)[0].runs, (*plans)[0].ended_before_ms);
  REQUIRE(removed);
  CHECK(removed->size() == 2);
  for (const char* gone : {"old-done", "old-failed"}) {
    INFO(gone);
    CHECK(!store->get(gone)->has_value());
    CHECK(store->events(gone)->empty());
    CHECK(store->journal(gone)->empty());
    CHECK(store->messages(gone, 0, 10, 1 << 20)->empty());
  }
  CHECK(!store->find_by_idempotency_key("coder", "key-1")->has_value());  // the key makes a new run now
  CHECK(store->list_by_status(run_status::completed).value() == std::vector<std::string>{"new-done"});
  for (const char* kept : {"old-waiting", "old-in-memory", "new-done"}) CHECK(store->get(kept)->has_value());
  auto oldest = store->list_oldest(-1, {}, 10);
  REQUIRE(oldest);
  REQUIRE(oldest->size() == 3);
  CHECK((*oldest)[0].run_id == "old-waiting");
  // A run that came back to life (retried) between the plan and the removal is not removed.
  make_run(*store, "retried", 1000, run_status::failed);
  auto again = actors::plan_retention(*store, policy, 10'000, never_in_memory);
  REQUIRE(again);
  make_run(*store, "retried", 1000, run_status::running);
  auto none = store->remove_ended((*again)[0].runs, (*again)[0].ended_before_ms);
  REQUIRE(none);
  CHECK(std::find(none->begin(), none->end(), "retried") == none->end());
  CHECK(store->get("retried")->has_value());
}

TEST_CASE("retention: a child run stays while its parent may need it, and old runs that have not ended do not stall it",
          "[retention]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  make_run(*store, "parent-failed", 1000, run_status::failed);
  make_run(*store, "parent-done", 1000, run_status::completed);
  for (auto [child, parent] : {std::pair{"child-of-failed", "parent-failed"}, std::pair{"child-of-done", "parent-done"},
                               std::pair{"child-of-gone", "parent-gone"}}) {
    make_run(*store, child, 1100, run_status::completed);
    auto r = store->get(child).value();
    run_transition t;
    t.record = *r;
    t.record.state["parent"] = wire::value{{"run_id", parent}, {"agent", "coder"}};
    REQUIRE(store->apply(t).ok());
  }
  actors::retention_policy policy{10, 0, 1000};
  auto plans = actors::plan_retention(*store, policy, 10'000, never_in_memory);
  REQUIRE(plans);
  REQUIRE(plans->size() == 1);
  // A failed parent may be retried and must find its child by its key: the child stays.
  CHECK((*plans)[0].runs == std::vector<std::string>{"parent-done", "parent-failed", "child-of-done", "child-of-gone"});
  // 9,000 old runs that wait for a person, then ended ones: passes go past the waiting ones.
  temp_dir other;
  auto many = open_store(other.path());
  for (int i = 0; i < 9000; ++i) make_run(*many, "w" + std::to_string(100000 + i), 1000 + i, run_status::suspended);
  for (int i = 0; i < 10; ++i) make_run(*many, "e" + std::to_string(i), 20'000 + i, run_status::completed);
  actors::retention_cursor cursor;
  std::size_t removed = 0;
  for (int pass = 0; pass < 5 && removed < 10; ++pass) {
    auto p = actors::plan_retention(*many, actors::retention_policy{0, 2, 1000}, 50'000, never_in_memory, &cursor);
    REQUIRE(p);
    for (const auto& plan : *p) removed += many->remove_ended(plan.runs, plan.ended_before_ms)->size();
  }
  CHECK(removed == 8);
  CHECK(many->count_by_status(run_status::completed).value() == 2);
  CHECK(many->count_by_status(run_status::suspended).value() == 9000);
}

TEST_CASE("retention: beyond max_runs the oldest ended runs go, never more than the excess", "[retention]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  for (int i = 0; i < 10; ++i) make_run(*store, "r" + std::to_string(i), 1000 + i, i == 2 ? run_status::running : run_status::completed);
  actors::retention_policy policy{0, 6, 1000};
  auto plans = actors::plan_retention(*store, policy, 5000, never_in_memory);
  REQUIRE(plans);
  REQUIRE(plans->size() == 1);
  // 9 ended, 6 kept: the 3 oldest ended (r2 is running: skipped).
  CHECK((*plans)[0].runs == std::vector<std::string>{"r0", "r1", "r3"});
  REQUIRE(store->remove_ended((*plans)[0].runs, (*plans)[0].ended_before_ms));
  auto after = actors::plan_retention(*store, policy, 5000, never_in_memory);
  REQUIRE(after);
  CHECK(after->empty());
}

TEST_CASE("retention: the store's disk use stays flat over 100,000 runs kept to the newest 5,000", "[retention]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  actors::retention_policy policy{0, 5000, 1000};
  std::uintmax_t at_20k = 0, peak_after = 0;
  for (int i = 0; i < 100'000; ++i) {
    make_run(*store, "run-" + std::to_string(i), 1000 + i, run_status::completed, "key-" + std::to_string(i));
    if (i % 1000 == 999) {
      // As an orchestrator does each retention.interval_ms: a pass (or several, 1,000 at a time).
      for (;;) {
        auto plans = actors::plan_retention(*store, policy, 1'000'000, never_in_memory);
        REQUIRE(plans);
        if (plans->empty()) break;
        for (const auto& p : *plans) REQUIRE(store->remove_ended(p.runs, p.ended_before_ms));
      }
      auto bytes = disk_bytes(dir.path());
      if (i == 19'999) at_20k = bytes;
      if (i > 19'999) peak_after = std::max(peak_after, bytes);
    }
  }
  CHECK(store->list_by_status(run_status::completed)->size() == 5000);
  WARN("disk at 20,000 runs: " << at_20k << " bytes; most after, to 100,000: " << peak_after);
  // RocksDB compacts as it goes; what it holds for 5,000 runs does not grow with the runs removed.
  CHECK(peak_after < at_20k * 2);
  REQUIRE(store->compact());
  auto compacted = disk_bytes(dir.path());
  WARN("after a full compaction: " << compacted);
  CHECK(compacted < at_20k);
}
