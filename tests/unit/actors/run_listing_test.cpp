// Listing runs against a real store: newest first, filters, and pages whose `next` misses no run
// and repeats none, at 3,000 runs, with ties in creation time and a small scan budget.
#include "actors/run_listing.hpp"
#include "tests/support/test_support.hpp"

#include <set>

using namespace keel;
using namespace keel::actors;
using keel::testing::temp_dir;
using wire::value;

namespace {

struct fixture {
  temp_dir dir;
  std::unique_ptr<store::run_store> runs;
  fixture() {
    auto s = store::run_store::open({dir.path(), false});
    REQUIRE(s.ok());
    runs = std::move(*s);
  }
  void add(const std::string& id, std::int64_t created, const std::string& input, store::run_status status = store::run_status::completed,
           const std::string& agent = "a", const std::string& session = "") {
    store::run_transition t;
    t.record.run_id = id;
    t.record.agent = agent;
    t.record.session_id = session;
    t.record.status = status;
    t.record.created_ms = created;
    t.record.updated_ms = created;
    t.record.state = value{{"input", input}};
    REQUIRE(runs->apply(t).ok());
  }
};

value summary_of(const store::run_record& r) {
  return value{{"run_id", r.run_id}, {"created_ms", r.created_ms}, {"input", r.state.value("input", std::string{})}};
}

std::string id_of(int i) {
  char text[32];
  std::snprintf(text, sizeof text, "%016d-n1", i);
  return text;
}

// Every page from the start, following `next`: the runs in the order they came.
std::vector<std::string> all_pages(const store::run_store& runs, list_query q, std::size_t* pages = nullptr) {
  std::vector<std::string> out;
  std::size_t count = 0;
  while (true) {
    auto page = list_runs(runs, q, 1 << 20, summary_of);
    ++count;
    for (auto& r : page["runs"]) out.push_back(r["run_id"]);
    if (!page.contains("next")) break;
    q.before_ms = page["next"]["created_ms"];
    q.before_run = page["next"]["run_id"];
    REQUIRE(count < 10'000);
  }
  if (pages) *pages = count;
  return out;
}

} // namespace

TEST_CASE("run listing: 3,000 runs with ties in time come newest first, each once, through pages of 7", "[actors]") {
  fixture f;
  for (int i = 0; i < 3000; ++i) f.add(id_of(i), 1'000'000 + i / 10, "task " + std::to_string(i));  // ten runs a millisecond
  list_query q;
  q.limit = 7;
  auto seen = all_pages(*f.runs, q);
  REQUIRE(seen.size() == 3000);
  for (int i = 0; i < 3000; ++i) CHECK(seen[static_cast<std::size_t>(i)] == id_of(2999 - i));
  // A time range with ties on both ends: [since, until).
  q.since_ms = 1'000'010;
  q.until_ms = 1'000'020;
  auto range = all_pages(*f.runs, q);
  REQUIRE(range.size() == 100);
  CHECK(range.front() == id_of(199));
  CHECK(range.back() == id_of(100));
}

TEST_CASE("run listing: a filter that matches few runs among many pages on past the scan budget and misses none",
          "[actors]") {
  fixture f;
  std::set<std::string> needles;
  for (int i = 0; i < 3000; ++i) {
    bool needle = i % 600 == 7;
    f.add(id_of(i), 2'000'000 + i, needle ? "find the NEEDLE here" : "hay " + std::to_string(i));
    if (needle) needles.insert(id_of(i));
  }
  list_query q;
  q.text = "needle";  // lower-cased by the parser; any case in the input
  q.scan_max = 100;
  std::size_t pages = 0;
  auto seen = all_pages(*f.runs, q, &pages);
  CHECK(std::set<std::string>(seen.begin(), seen.end()) == needles);
  CHECK(seen.size() == needles.size());
  CHECK(pages >= 30);  // 3,000 runs read 100 at a time
  // With the default budget it is one page.
  q.scan_max = 20'000;
  CHECK(all_pages(*f.runs, q, &pages).size() == needles.size());
  CHECK(pages == 1);
}

TEST_CASE("run listing: status, agent and session filters, and runs in flight read from their index", "[actors]") {
  fixture f;
  for (int i = 0; i < 300; ++i)
    f.add(id_of(i), 3'000'000 + i, "t", i % 3 == 0 ? store::run_status::suspended : store::run_status::completed,
          i % 2 == 0 ? "even" : "odd", i % 5 == 0 ? "s5" : "");
  list_query q;
  q.limit = 9;
  q.status = store::run_status::suspended;
  auto waiting = all_pages(*f.runs, q);
  CHECK(waiting.size() == 100);
  CHECK(waiting.front() == id_of(297));
  q.agent = "even";
  CHECK(all_pages(*f.runs, q).size() == 50);  // i % 6 == 0
  q.session_id = "s5";
  CHECK(all_pages(*f.runs, q).size() == 10);  // i % 30 == 0
  list_query by_session;
  by_session.session_id = "s5";
  CHECK(all_pages(*f.runs, by_session).size() == 60);
}

TEST_CASE("run listing: each bad field of a list request is refused with its name", "[actors]") {
  auto refused = [](const value& body) {
    auto q = parse_list_query(body);
    REQUIRE(!q.ok());
    CHECK(q.error().code == errc::invalid_argument);
    return q.error().message;
  };
  CHECK(refused(value{{"limit", -1}}).find("limit") != std::string::npos);
  CHECK(refused(value{{"limit", "10"}}).find("limit") != std::string::npos);
  CHECK(refused(value{{"status", "sleeping"}}).find("status") != std::string::npos);
  CHECK(refused(value{{"agent", "../x"}}).find("agent") != std::string::npos);
  CHECK(refused(value{{"session_id", ""}}).find("session_id") != std::string::npos);
  CHECK(refused(value{{"session_id", std::string(129, 's')}}).find("session_id") != std::string::npos);
  CHECK(refused(value{{"since_ms", -5}}).find("since_ms") != std::string::npos);
  CHECK(refused(value{{"until_ms", 1.5}}).find("until_ms") != std::string::npos);
  CHECK(refused(value{{"text", std::string(257, 't')}}).find("text") != std::string::npos);
  CHECK(refused(value{{"text", 5}}).find("text") != std::string::npos);
  CHECK(refused(value{{"before", "x"}}).find("before") != std::string::npos);
  CHECK(refused(value{{"before", {{"created_ms", 1}}}}).find("before") != std::string::npos);
  CHECK(refused(value{{"before", {{"created_ms", -1}, {"run_id", "r"}}}}).find("before") != std::string::npos);
  auto clamped = parse_list_query(value{{"limit", 1'000'000}});
  REQUIRE(clamped.ok());
  CHECK(clamped->limit == 1000);
  auto zero = parse_list_query(value{{"limit", 0}});
  REQUIRE(zero.ok());
  CHECK(zero->limit == 1);
}
