// Prometheus metrics (docs/OPERATIONS.md) from outside: every endpoint passes Debian's promtool,
// a real Prometheus scrapes a gateway and a worker's own listener with bearer tokens, scrapes
// without the token are refused, and the JSON log names the run and node of its lines. Built
// binaries, a real nats-server, the scripted model.
#include "tests/e2e/cluster.hpp"
#include "tests/e2e/http_client.hpp"

#include <curl/curl.h>

#include <fstream>
#include <map>
#include <sstream>
#include <thread>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

const char* agents = R"(
[agents.coder]
model = "scripted-coder-1"
script = "{dir}/coder.json"
[agents.coder.sandbox]
workspace = "{dir}/ws"
exec_security = "allow-always"
)";

const std::pair<std::string, std::string> script = {"coder.json", R"({"turns": [
    {"text": "Running.", "tool_calls": [{"name": "exec", "arguments": {"command": "echo hi"}}]},
    {"text": "Done."}
  ]})"};

// promtool's verdict on a scrape: its exit code and what it said.
command_output promtool_check(const temp_dir& dir, const std::string& name, const std::string& body) {
  auto path = dir.file(name + ".prom");
  write_file(path, body);
  return run_command({"sh", "-c", "promtool check metrics < '" + path + "'"}, 30'000);
}

std::string url_encode(const std::string& text) {
  char* out = curl_easy_escape(nullptr, text.c_str(), static_cast<int>(text.size()));
  std::string s = out ? out : "";
  curl_free(out);
  return s;
}

// The value of a PromQL query answered with one sample; -1 when none yet.
double query(int port, const std::string& promql) {
  auto a = call("GET", "http://127.0.0.1:" + std::to_string(port) + "/api/v1/query?query=" + url_encode(promql), "",
                {"Authorization:"});
  auto j = a.parsed();
  if (j.is_discarded() || j.value("status", "") != "success" || j["data"]["result"].empty()) return -1;
  return std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
}

} // namespace

TEST_CASE("observability: every metrics endpoint passes promtool, refuses a scrape without its token, and a real "
          "Prometheus scrapes the cluster",
          "[e2e][integration][observability]") {
  temp_dir work;
  auto worker_port = free_loopback_port();
  REQUIRE(worker_port);
  write_file(work.file("metrics-token"), "s3cret-scrape-token\n");
  cluster_options options;
  options.gateway = true;
  options.separate_worker = true;
  options.node_sets = {"log.format = \"json\""};
  options.worker_sets = {"metrics.listen = \"127.0.0.1:" + std::to_string(*worker_port) + "\"",
                         "metrics.token_file = \"" + work.file("metrics-token") + "\""};
  cluster c(agents, {script}, options);
  std::vector<std::string> runs;
  for (int i = 0; i < 5; ++i) runs.push_back(c.invoke("coder", "echo " + std::to_string(i)));
  for (const auto& r : runs) c.await_status(r, "completed", 30'000);

  const std::string worker_url = "http://127.0.0.1:" + std::to_string(*worker_port) + "/metrics";
  REQUIRE(call("GET", c.gateway_url() + "/api/v1/agents").status == 200);  // counted by the next scrape
  auto gateway = call("GET", c.gateway_url() + "/metrics");
  auto worker = call("GET", worker_url, "", {"Authorization: Bearer s3cret-scrape-token"});
  REQUIRE(gateway.status == 200);
  REQUIRE(worker.status == 200);
  CHECK(gateway.headers["content-type"].find("text/plain; version=0.0.4") == 0);
  {
    INFO(gateway.body);
    auto checked = promtool_check(work, "gateway", gateway.body);
    INFO(checked.out << checked.err);
    CHECK(checked.exit_code == 0);
    CHECK(checked.err.empty());  // not even a lint warning
    CHECK(gateway.body.find("keel_runs_started_total{agent=\"coder\"} 5\n") != std::string::npos);
    CHECK(gateway.body.find("keel_runs_ended_total{agent=\"coder\",status=\"completed\"} 5\n") != std::string::npos);
    CHECK(gateway.body.find("keel_step_duration_seconds_count{agent=\"coder\",kind=\"model\"} 10\n") != std::string::npos);
    CHECK(gateway.body.find("keel_step_duration_seconds_count{agent=\"coder\",kind=\"tool\"} 5\n") != std::string::npos);
    CHECK(gateway.body.find("keel_tokens_total{agent=\"coder\",type=\"input\"} ") != std::string::npos);
    CHECK(gateway.body.find("keel_runs{status=\"running\"} 0\n") != std::string::npos);
    CHECK(gateway.body.find("keel_http_requests_total{code=\"200\",method=\"GET\"} ") != std::string::npos);
    CHECK(gateway.body.find("keel_build_info{node=\"n1\"") != std::string::npos);
  }
  {
    INFO(worker.body);
    auto checked = promtool_check(work, "worker", worker.body);
    INFO(checked.out << checked.err);
    CHECK(checked.exit_code == 0);
    CHECK(checked.err.empty());
    CHECK(worker.body.find("gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name=\"chat\",gen_ai_provider_name="
                           "\"scripted\",gen_ai_request_model=\"scripted-coder-1\"} 10\n") != std::string::npos);
    CHECK(worker.body.find("gen_ai_client_token_usage_count{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"scripted\","
                           "gen_ai_request_model=\"scripted-coder-1\",gen_ai_token_type=\"output\"} 10\n") != std::string::npos);
    CHECK(worker.body.find("keel_tool_call_duration_seconds_count{tool=\"exec\"} 5\n") != std::string::npos);
    CHECK(worker.body.find("keel_worker_tasks_total{kind=\"model\",outcome=\"ok\"} 10\n") != std::string::npos);
    CHECK(worker.body.find("keel_tasks_waiting{queue=\"coder\"} 0\n") != std::string::npos);
    CHECK(worker.body.find("keel_worker_slots ") != std::string::npos);
  }
  // Without the token, with another, or another route or method: refused, and nothing leaks.
  CHECK(call("GET", c.gateway_url() + "/metrics", "", {"Authorization:"}).status == 401);
  CHECK(call("GET", worker_url, "", {"Authorization:"}).status == 401);
  CHECK(call("GET", worker_url, "", {"Authorization: Bearer s3cret-scrape-tokenX"}).status == 401);
  CHECK(call("GET", worker_url, "", {"Authorization: bearer s3cret-scrape-token"}).status == 401);
  auto other = call("GET", "http://127.0.0.1:" + std::to_string(*worker_port) + "/api/v1/runs", "",
                    {"Authorization: Bearer s3cret-scrape-token"});
  CHECK(other.status == 404);
  CHECK(call("POST", worker_url, "x", {"Authorization: Bearer s3cret-scrape-token"}).status == 405);
  // A token replaced in its file is the one taken from the next scrape on.
  write_file(work.file("metrics-token"), "rotated\n");
  CHECK(call("GET", worker_url, "", {"Authorization: Bearer s3cret-scrape-token"}).status == 401);
  CHECK(call("GET", worker_url, "", {"Authorization: Bearer rotated"}).status == 200);
  // A name of a web page's own, pointed at this address (DNS rebinding), is refused.
  CHECK(call("GET", worker_url, "", {"Authorization: Bearer rotated", "Host: metrics.evil.example"}).status == 403);

  // A real Prometheus scrapes both, with their tokens.
  auto prometheus_port = free_loopback_port();
  REQUIRE(prometheus_port);
  write_file(work.file("gateway-token"), c.gateway_token() + "\n");
  auto gateway_host = c.gateway_url().substr(std::string("http://").size());
  write_file(work.file("prometheus.yml"),
             "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
             "  - job_name: keel-gateway\n    authorization:\n      credentials_file: " + work.file("gateway-token") +
               "\n    static_configs:\n      - targets: ['" + gateway_host + "']\n"
             "  - job_name: keel-worker\n    authorization:\n      credentials_file: " + work.file("metrics-token") +
               "\n    static_configs:\n      - targets: ['127.0.0.1:" + std::to_string(*worker_port) + "']\n");
  auto prometheus = start_command({"prometheus", "--config.file=" + work.file("prometheus.yml"),
                                   "--storage.tsdb.path=" + work.file("tsdb"),
                                   "--web.listen-address=127.0.0.1:" + std::to_string(*prometheus_port)},
                                  work, "prometheus");
  REQUIRE_EVENTUALLY(60'000, query(*prometheus_port, "sum(up{job=~\"keel-.*\"})") == 2);
  REQUIRE_EVENTUALLY(30'000, query(*prometheus_port, "sum(keel_runs_ended_total{status=\"completed\"})") == 5);
  REQUIRE_EVENTUALLY(30'000, query(*prometheus_port, "sum(gen_ai_client_operation_duration_seconds_count)") == 10);

  // The JSON log: one object per line, each with the node; lines about a run name it.
  auto log = c.node_log();
  std::istringstream lines(log);
  int parsed = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    auto j = json::parse(line, nullptr, false);
    REQUIRE(!j.is_discarded());
    ++parsed;
    CHECK(j["node"] == "n1");
    for (const char* key : {"time", "level", "logger", "message"}) CHECK(j.contains(key));
    if (j.contains("run_id")) {
      CHECK(j["message"].get<std::string>().find(j["run_id"].get<std::string>()) != std::string::npos);
    }
  }
  CHECK(parsed > 3);
  CHECK(log.find("\n20") == std::string::npos);  // no text lines ("2026-...") among them
}

TEST_CASE("observability: each model step's cost by the configured prices is in its event, the run, keel show and the "
          "metrics, and a run past its budget fails before its next model call",
          "[e2e][integration][observability]") {
  cluster_options options;
  options.gateway = true;
  cluster c(R"(
[agents.coder]
model = "scripted-coder-1"
script = "{dir}/coder.json"
budget_usd = 0.05
[agents.coder.sandbox]
workspace = "{dir}/ws"
exec_security = "allow-always"
[prices."scripted/scripted-coder-1"]
input = 10000
output = 20000
[agents.unpriced]
model = "no-price"
script = "{dir}/coder.json"
[agents.unpriced.sandbox]
workspace = "{dir}/ws"
exec_security = "allow-always"
)",
            {script}, options);
  auto run = c.invoke("coder", "echo");
  c.await_status(run, "failed", 30'000);
  auto shown = c.show(run);
  INFO(shown.dump());
  auto error = shown["error"].get<std::string>();
  CHECK(error.rfind("budget_exceeded: the run has cost $", 0) == 0);
  CHECK(error.find("agents.coder.budget_usd ($0.050000)") != std::string::npos);
  double cost = shown["cost_usd"].get<double>();
  CHECK(cost >= 0.05);
  CHECK(shown["total_cost_usd"].get<double>() == cost);
  // One model call, its tool call, then no second model call.
  auto events = c.events(run);
  int model_steps = 0;
  bool tool_ran = false, failed_for_budget = false;
  for (const auto& e : events) {
    if (e["event_type"] == "llm_step_completed") {
      ++model_steps;
      auto u = e["data"]["usage"];
      double expected = (u["input_tokens"].get<double>() * 10000 + u["output_tokens"].get<double>() * 20000) / 1e6;
      CHECK(std::abs(e["data"]["cost_usd"].get<double>() - expected) < 1e-12);
      CHECK(e["data"]["run_cost_usd"].get<double>() == e["data"]["cost_usd"].get<double>());
    }
    if (e["event_type"] == "tool_call_completed") tool_ran = true;
    if (e["event_type"] == "run_failed") failed_for_budget = e["data"].value("reason", "") == "budget_exceeded";
  }
  CHECK(model_steps == 1);
  CHECK(tool_ran);
  CHECK(failed_for_budget);
  auto text = c.keel({"show", run});
  CHECK(text.out.find("Cost:    $") != std::string::npos);
  auto api = call("GET", c.gateway_url() + "/api/v1/runs/" + run).parsed();
  CHECK(api["cost_usd"].get<double>() == cost);
  auto metrics = call("GET", c.gateway_url() + "/metrics").body;
  CHECK(metrics.find("keel_cost_usd_total{agent=\"coder\"} ") != std::string::npos);
  // A model with no price costs nothing here and has no budget to pass.
  auto free = c.invoke("unpriced", "echo");
  c.await_status(free, "completed", 30'000);
  CHECK(c.show(free)["cost_usd"].get<double>() == 0);
  CHECK(c.keel({"show", free}).out.find("Cost:") == std::string::npos);
  for (const auto& e : c.events(free))
    if (e["event_type"] == "llm_step_completed") CHECK(!e["data"].contains("cost_usd"));
  // Per agent, over a window: the API, and `keel costs`.
  auto costs = call("GET", c.gateway_url() + "/api/v1/costs").parsed();
  INFO(costs.dump());
  std::map<std::string, json> per_agent;
  for (auto& row : costs["agents"]) per_agent[row["agent"]] = row;
  REQUIRE(per_agent.count("coder") == 1);
  CHECK(per_agent["coder"]["runs"] == 1);
  CHECK(std::abs(per_agent["coder"]["cost_usd"].get<double>() - cost) < 1e-9);
  CHECK(per_agent["coder"]["input_tokens"].get<std::int64_t>() > 0);
  CHECK(per_agent["unpriced"]["cost_usd"].get<double>() == 0);
  CHECK(per_agent["unpriced"]["runs"] == 1);
  CHECK(costs["cut"] == false);
  auto later = call("GET", c.gateway_url() + "/api/v1/costs?since_ms=" + std::to_string(wall_ms() + 60'000) + "&until_ms=" +
                               std::to_string(wall_ms() + 120'000)).parsed();
  CHECK(later["agents"].empty());
  for (const char* bad : {"?since_ms=abc", "?since_ms=-1", "?until_ms=1&since_ms=5", "?since_ms=99999999999999999999"})
    CHECK(call("GET", c.gateway_url() + "/api/v1/costs" + bad).status == 400);
  auto cli = c.keel({"costs", "--json"});
  INFO(cli.err);
  REQUIRE(cli.exit_code == 0);
  auto listed = json::parse(cli.out);
  bool found = false;
  for (auto& row : listed["agents"])
    if (row["agent"] == "coder") found = std::abs(row["cost_usd"].get<double>() - cost) < 1e-9;
  CHECK(found);
  CHECK(c.keel({"costs"}).out.find("coder") != std::string::npos);
  CHECK(c.keel({"costs", "--hours", "0"}).exit_code != 0);
}
