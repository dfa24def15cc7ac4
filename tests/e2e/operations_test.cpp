// Operations (docs/OPERATIONS.md) end to end: retention removes ended runs from a serving node and
// leaves the rest; a backup taken while the node serves restores into a fresh node that serves its
// runs, a waiting approval included. Built binaries, real nats-servers, the scripted model.
#include "tests/e2e/cluster.hpp"
#include "tests/e2e/http_client.hpp"

#include <filesystem>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

const char* agents = R"(
[agents.quick]
script = "{dir}/quick.json"
[agents.quick.sandbox]
workspace = "{dir}/ws"
[agents.coder]
script = "{dir}/coder.json"
[agents.coder.sandbox]
workspace = "{dir}/ws"
)";

const std::vector<std::pair<std::string, std::string>> scripts = {
  {"quick.json", R"({"turns": [{"text": "done"}]})"},
  {"coder.json", R"({"turns": [
    {"text": "Writing.", "tool_calls": [{"name": "write", "arguments": {"path": "a.txt", "content": "A\n"}}]},
    {"text": "Written."}
  ]})"}};

} // namespace

TEST_CASE("operations: retention removes the oldest ended runs beyond max_runs from a serving node and keeps the rest",
          "[e2e][integration][operations]") {
  cluster_options options;
  options.gateway = true;
  options.node_sets = {"retention.max_runs = 5", "retention.interval_ms = 200"};
  cluster c(agents, scripts, options);
  auto waiting = c.invoke("coder", "write it");  // waits for a person: not ended, never removed
  c.await_suspend(waiting);
  std::vector<std::string> runs;
  for (int i = 0; i < 12; ++i) {
    runs.push_back(c.invoke("quick", "go " + std::to_string(i)));
    c.await_status(runs.back(), "completed", 30'000);
  }
  // The 7 oldest ended runs go, the 5 newest stay.
  REQUIRE_EVENTUALLY(20'000, c.keel({"show", runs[6]}).exit_code != 0);
  for (int i = 0; i < 7; ++i) {
    INFO(runs[i]);
    auto shown = c.keel({"show", runs[i]});
    CHECK(shown.exit_code != 0);
    CHECK(shown.err.find("no run") != std::string::npos);
    CHECK(call("GET", c.gateway_url() + "/api/v1/runs/" + runs[i] + "/events").status == 404);
  }
  for (int i = 7; i < 12; ++i) CHECK(c.status(runs[i]) == "completed");
  CHECK(c.status(waiting) == "suspended");
  auto listed = call("GET", c.gateway_url() + "/api/v1/runs?agent=quick&limit=100").parsed();
  CHECK(listed["runs"].size() == 5);
  auto metrics = call("GET", c.gateway_url() + "/metrics").body;
  CHECK(metrics.find("keel_runs_removed_total 7\n") != std::string::npos);
  // The waiting run goes on; once it ends it is the oldest ended run (runs go by when they were
  // created), so it is the one removed, and the five newest stay.
  // (It may be gone before a look finds it completed: retention looks every 200 ms.)
  CHECK(c.keel({"approve", waiting, c.await_suspend(waiting)}).exit_code == 0);
  REQUIRE_EVENTUALLY(30'000, c.keel({"show", waiting}).exit_code != 0);
  for (int i = 7; i < 12; ++i) CHECK(c.status(runs[i]) == "completed");
}

TEST_CASE("operations: a backup taken while the node serves restores into a fresh node that serves its runs, a waiting "
          "approval included",
          "[e2e][integration][operations]") {
  temp_dir restored;
  std::string backup_path;
  std::vector<std::string> done;
  std::string waiting;
  {
    cluster c(agents, scripts);
    for (int i = 0; i < 5; ++i) done.push_back(c.invoke("quick", "go " + std::to_string(i)));
    for (const auto& r : done) c.await_status(r, "completed", 30'000);
    waiting = c.invoke("coder", "write it");
    c.await_suspend(waiting);
    // Bad names and nodes are refused before anything is written.
    for (auto bad : std::vector<std::vector<std::string>>{{"admin", "backup", "n1", "../escape"},
                                                          {"admin", "backup", "n1", "a/b"},
                                                          {"admin", "backup", "no-such-node", "b1"}}) {
      auto refused = c.keel(bad);
      INFO(refused.err);
      CHECK(refused.exit_code != 0);
    }
    auto made = c.keel({"admin", "backup", "n1", "nightly"});
    INFO(made.err);
    REQUIRE(made.exit_code == 0);
    backup_path = c.dir().file("data") + "/backups/nightly";
    CHECK(made.out.find(backup_path) != std::string::npos);
    CHECK(std::filesystem::exists(backup_path + "/CURRENT"));
    // The same name twice: refused, the first kept.
    CHECK(c.keel({"admin", "backup", "n1", "nightly"}).exit_code != 0);
    // The node went on serving meanwhile.
    auto after = c.invoke("quick", "after the backup");
    c.await_status(after, "completed", 30'000);
    std::filesystem::copy(backup_path, restored.file("copy"), std::filesystem::copy_options::recursive);
  }
  // Restore refuses what is not a backup and a data directory that has a store.
  auto not_backup = run_command({KEEL_BINARY_BUILT, "admin", "restore", "--from", restored.path(), "--data-dir", restored.file("d0")});
  CHECK(not_backup.exit_code != 0);
  CHECK(not_backup.err.find("is not a backup") != std::string::npos);
  auto restore = run_command({KEEL_BINARY_BUILT, "admin", "restore", "--from", restored.file("copy"), "--data-dir", restored.file("data")});
  INFO(restore.err);
  REQUIRE(restore.exit_code == 0);
  CHECK(restore.out.find("restored 6 runs of node n1") != std::string::npos);
  auto again = run_command({KEEL_BINARY_BUILT, "admin", "restore", "--from", restored.file("copy"), "--data-dir", restored.file("data")});
  CHECK(again.exit_code != 0);
  CHECK(again.err.find("holds a store already") != std::string::npos);

  cluster_options options;
  options.data_dir = restored.file("data");
  cluster fresh(agents, scripts, options);
  for (const auto& r : done) CHECK(fresh.status(r) == "completed");
  CHECK(fresh.show(done[0])["output"] == "done");
  CHECK(fresh.events(done[0]).size() >= 3);
  // The approval that waited at the backup is answered on the restored node, and the run ends.
  auto step = fresh.await_suspend(waiting);
  CHECK(fresh.keel({"approve", waiting, step}).exit_code == 0);
  fresh.await_status(waiting, "completed", 30'000);
  // New runs too.
  auto next = fresh.invoke("quick", "on the restored node");
  fresh.await_status(next, "completed", 30'000);
}
