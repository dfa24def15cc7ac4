// Run queues end to end (docs/WORKFLOWS.md): at most N runs of a queue at once, per concurrency
// key too, the rest in line in order; listed by `keel queues` and GET /api/v1/queues; through the
// loss of an orchestrator of a cluster. Built binaries, real nats-servers, the scripted model.
#include "tests/e2e/cluster.hpp"
#include "tests/e2e/failover_cluster.hpp"
#include "tests/e2e/http_client.hpp"

#include <map>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

std::string slow_agent(const std::string& name, const std::string& queue) {
  return "\n[agents." + name + "]\nscript = \"{dir}/slow.json\"\nscript_log = \"{dir}/calls.log\"\nrun_queue = \"" + queue +
         "\"\n[agents." + name + ".sandbox]\nworkspace = \"{dir}/ws\"\n";
}

// When each run went, from its events: [admitted, ended].
struct span {
  std::int64_t from = 0, to = 0;
  std::string key;
};

span span_of(const std::vector<json>& events) {
  span s;
  for (const auto& e : events) {
    if (e["event_type"] == "run_admitted") {
      s.from = e["time_ms"].get<std::int64_t>();
      s.key = e["data"].value("key", std::string());
    }
    if (e["event_type"] == "run_completed") s.to = e["time_ms"].get<std::int64_t>();
  }
  return s;
}

// The most runs going at one moment, of the spans given.
std::size_t most_at_once(const std::vector<span>& spans) {
  std::size_t most = 0;
  for (const auto& s : spans) {
    std::size_t n = 0;
    for (const auto& o : spans) n += o.from <= s.from && s.from < o.to ? 1 : 0;
    most = std::max(most, n);
  }
  return most;
}

} // namespace

TEST_CASE("workflows: a run queue lets at most its concurrency go at once, per key too, in line order, and lists its line",
          "[e2e][integration][workflows]") {
  cluster_options options;
  options.gateway = true;
  cluster c("[run_queues.deploys]\nconcurrency = 2\n[run_queues.repos]\nconcurrency = 3\nkey_concurrency = 1\n" +
              slow_agent("deployer", "deploys") + slow_agent("fixer", "repos") +
              "\n[agents.plain]\nscript = \"{dir}/slow.json\"\n[agents.plain.sandbox]\nworkspace = \"{dir}/ws\"\n",
            {{"slow.json", R"({"turns": [{"delay_ms": 2500, "text": "done"}]})"}}, options);
  std::vector<std::string> deploys, fixes;
  for (int i = 0; i < 6; ++i) deploys.push_back(c.invoke("deployer", "deploy " + std::to_string(i)));
  // In line now (two waves of 2.5 s ahead of it): shown as queued, with its place.
  auto shown = c.show(deploys.back());
  CHECK(shown["status"] == "queued");
  CHECK(shown["queue"]["name"] == "deploys");
  std::map<std::string, std::string> key_of;
  for (const char* key : {"repo-a", "repo-a", "repo-b", "repo-a", "repo-c"}) {
    auto made = c.keel({"invoke", "fixer", "fix", "--concurrency-key", key});
    REQUIRE(made.exit_code == 0);
    auto id = made.out;
    while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
    fixes.push_back(id);
    key_of[fixes.back()] = key;
  }
  // Over HTTP too.
  auto posted = call("POST", c.gateway_url() + "/api/v1/runs", R"({"agent": "fixer", "input": "fix", "concurrency_key": "repo-b"})");
  REQUIRE(posted.status == 201);
  fixes.push_back(posted.parsed()["run_id"]);
  key_of[fixes.back()] = "repo-b";
  // Listed by keel queues and the API.
  auto listed = json::parse(c.keel({"queues", "--json"}).out);
  REQUIRE(listed.is_array());
  REQUIRE(listed.size() == 2);
  for (const auto& q : listed) {
    INFO(q.dump());
    CHECK(q["running"].get<int>() <= q["concurrency"].get<int>());
    if (q["name"] == "deploys") CHECK(q["running"].get<int>() + q["waiting"].get<int>() >= 3);
  }
  auto nodes = c.keel({"nodes"}).out;
  CHECK(nodes.find("RUN QUEUE") != std::string::npos);
  CHECK(nodes.find("deploys") != std::string::npos);
  auto text = c.keel({"queues"}).out;
  CHECK(text.find("deploys") != std::string::npos);
  CHECK(text.find("key repo-a") != std::string::npos);
  auto api = call("GET", c.gateway_url() + "/api/v1/queues");
  REQUIRE(api.status == 200);
  CHECK(api.parsed()["queues"].size() == 2);
  // `keel wait` waits through the line to the end.
  CHECK(c.keel({"wait", deploys.back()}, 60'000).exit_code == 0);
  for (const auto& run : deploys) c.await_status(run, "completed", 60'000);
  for (const auto& run : fixes) c.await_status(run, "completed", 60'000);
  // At most 2 deploys at once, in the order they were made; at most 3 fixes, 1 per repository.
  std::vector<span> d, f;
  for (const auto& run : deploys) d.push_back(span_of(c.events(run)));
  for (const auto& run : fixes) f.push_back(span_of(c.events(run)));
  CHECK(most_at_once(d) == 2);
  for (std::size_t i = 1; i < d.size(); ++i) CHECK(d[i - 1].from <= d[i].from);
  CHECK(most_at_once(f) <= 3);
  for (const char* key : {"repo-a", "repo-b"}) {
    std::vector<span> of_key;
    for (const auto& s : f)
      if (s.key == key) of_key.push_back(s);
    CHECK(of_key.size() >= 2);
    CHECK(most_at_once(of_key) == 1);
  }
  auto after = json::parse(c.keel({"queues", "--json"}).out);
  for (const auto& q : after) {
    CHECK(q["running"] == 0);
    CHECK(q["waiting"] == 0);
  }
  // Bad input: a key for an agent without a run queue, a key too long, an unknown queue in config.
  auto no_queue = c.keel({"invoke", "plain", "x", "--concurrency-key", "k"});
  CHECK(no_queue.exit_code != 0);
  CHECK(no_queue.err.find("has no run_queue") != std::string::npos);
  auto long_key = call("POST", c.gateway_url() + "/api/v1/runs",
                       R"({"agent": "fixer", "input": "x", "concurrency_key": ")" + std::string(129, 'k') + "\"}");
  CHECK(long_key.status == 400);
  CHECK(long_key.body.find("at most 128") != std::string::npos);
  write_file(c.dir().file("bad.toml"), "[agents.x]\nrun_queue = \"nope\"\n");
  auto checked = run_command({KEEL_NODE_BINARY, "--config", c.dir().file("bad.toml"), "--check"}, 10'000);
  CHECK(checked.exit_code != 0);
  CHECK(checked.err.find("agents.x.run_queue") != std::string::npos);
}

TEST_CASE("workflows: an orchestrator killed while runs wait in line: the others admit them, never more than the limit at once",
          "[e2e][integration][cluster][failover][workflows]") {
  using namespace keel::testing::e2e;
  failover_cluster c;
  std::string extra = "[run_queues.deploys]\nconcurrency = 2\n[agents.deployer]\nscript = \"" + c.dir.file("slow.json") +
                      "\"\nscript_log = \"" + c.dir.file("slow-calls.log") + "\"\nrun_queue = \"deploys\"\n" +
                      "[agents.deployer.sandbox]\nworkspace = \"" + c.dir.file("ws") + "\"\n";
  write_file(c.dir.file("slow.json"), R"({"turns": [{"delay_ms": 1000, "text": "done"}]})");
  c.start_all(extra);
  std::vector<std::string> runs;
  for (int i = 0; i < 12; ++i)
    runs.push_back(c.invoke_on(i % 2 ? "o1" : "o2", "deployer", "deploy " + std::to_string(i), static_cast<std::size_t>(i % 3)));
  // Some admitted, the rest in line; then the orchestrator that owns half of them dies.
  REQUIRE_EVENTUALLY(20'000, c.show(runs[0], 1).value("status", std::string()) != "queued");
  c.nodes["o1"].signal(SIGKILL);
  REQUIRE(c.nodes["o1"].wait(5000).ok());
  on_failure report{[&] { return c.logs(); }};
  for (const auto& run : runs) c.await_completed(run);
  std::vector<span> spans;
  for (const auto& run : runs) {
    std::vector<json> events;
    auto reply = c.clients.at(0)->request("keel.default.runs." + run + ".history",
                                          wire::pack(wire::value{{"v", 1}, {"type", "get_history"}, {"from_seq", 1}}), 5000);
    REQUIRE(reply.ok());
    auto v = wire::unpack(reply->data);
    REQUIRE(v);
    for (const auto& e : (*v)["events"]) events.push_back(json::parse(e.dump()));
    spans.push_back(span_of(events));
    CHECK(spans.back().from > 0);
  }
  CHECK(most_at_once(spans) <= 2);
  // Each run's model turn was called once: nothing ran twice for its slot.
  std::map<std::string, int> calls;
  for (const auto& line : lines_of(read_file(c.dir.file("slow-calls.log")))) calls[line.substr(0, line.find('/'))] += 1;
  for (const auto& run : runs) CHECK(calls[run] == 1);
}
