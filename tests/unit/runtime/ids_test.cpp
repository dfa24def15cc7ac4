#include "runtime/ids.hpp"

#include <catch2/catch.hpp>

#include <set>

using namespace keel;

TEST_CASE("ids: a run id names its owner node", "[runtime][ids]") {
  auto id = make_run_id(node_id{"orch-1"});
  CHECK(id.owner() == "orch-1");
  CHECK(id.value.size() == 16 + 1 + 6);
  CHECK(is_valid_name(id.value));
  CHECK(run_id{"not-a-keel-id"}.owner().empty());
}

TEST_CASE("ids: run ids are unique and sort by creation", "[runtime][ids]") {
  std::set<std::string> seen;
  std::string previous;
  for (int i = 0; i < 10000; ++i) {
    auto id = make_run_id(node_id{"n"}).value;
    CHECK(seen.insert(id).second);
    CHECK(id.substr(0, 10) >= previous.substr(0, std::min<std::size_t>(10, previous.size())));
    previous = id;
  }
}

TEST_CASE("ids: names are restricted to subject-safe characters", "[runtime][ids]") {
  CHECK(is_valid_name("coder_2-x"));
  CHECK_FALSE(is_valid_name(""));
  CHECK_FALSE(is_valid_name("a.b"));
  CHECK_FALSE(is_valid_name("a b"));
  CHECK_FALSE(is_valid_name("a*"));
  CHECK_FALSE(is_valid_name(std::string(65, 'a')));
}

TEST_CASE("ids: a task id says run, step and attempt", "[runtime][ids]") {
  CHECK(task_id{"r1", 3, 2}.to_string() == "r1/3/2");
}

TEST_CASE("ids: only a run id of keel's form is valid, anything a client could slip into a subject is not", "[ids]") {
  CHECK(keel::run_id{"0k3q9zt1vh2m4c8a-orch-1"}.valid());
  CHECK(keel::make_run_id(keel::node_id{"n1"}).valid());
  for (const char* bad : {"", "r1", "0k3q9zt1vh2m4c8a", "0k3q9zt1vh2m4c8a-", "0k3q9zt1vh2m4c8a-a.b", "0k3q9zt1vh2m4c8a-*",
                          "0k3q9zt1vh2m4c8a->", "0k3q9zt1vh2m4c8a-a b", "0K3Q9ZT1VH2M4C8A-n1", "0k3q9zt1vh2m4c8i-n1",
                          "0k3q9zt1.h2m4c8a-n1", "0k3q9zt1vh2m4c8a_n1"}) {
    INFO(bad);
    CHECK_FALSE(keel::run_id{bad}.valid());
  }
  CHECK_FALSE(keel::run_id{"0k3q9zt1vh2m4c8a-" + std::string(65, 'n')}.valid());
}

TEST_CASE("ids: a run's lane is the same on every call, within the lanes, and runs spread over all of them", "[ids]") {
  std::vector<std::size_t> counts(6, 0);
  for (int i = 0; i < 6000; ++i) {
    auto id = make_run_id(node_id{"n1"}).value;
    auto lane = lane_of(id, 6);
    REQUIRE(lane < 6);
    CHECK(lane_of(id, 6) == lane);
    counts[lane] += 1;
  }
  for (auto c : counts) {
    CHECK(c > 700);   // an even share is 1,000
    CHECK(c < 1300);
  }
  CHECK(lane_of("anything", 1) == 0);
  CHECK(lane_of("anything", 0) == 0);  // no lanes: the first, never a division by zero
  CHECK(lane_of("", 5) < 5);
}

TEST_CASE("ids: the owner of a temporary run id outlives it", "[runtime][ids]") {
  // A view into a temporary would dangle once the statement ends (found by AddressSanitizer in
  // the command line's client): the owner of an rvalue id is a copy.
  auto owner = keel::run_id{"0123456789abcdef-node-7"}.owner();
  static_assert(std::is_same_v<decltype(owner), std::string>);
  std::string other(1000, 'x');  // reuses freed memory, if any was freed
  CHECK(owner == "node-7");
  keel::run_id kept{"0123456789abcdef-node-8"};
  static_assert(std::is_same_v<decltype(kept.owner()), std::string_view>);
  CHECK(kept.owner() == "node-8");
}
