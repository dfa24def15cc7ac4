// What reaches an operator's tools (docs/OPERATIONS.md): traces over OTLP/HTTP to a local
// receiver, Prometheus metrics checked by promtool and scraped by a real Prometheus, JSON logs.
// Built binaries, a real nats-server, the scripted model.
#include "tests/e2e/cluster.hpp"
#include "tests/e2e/http_client.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

const char* coder_agent = R"(
[agents.coder]
model = "scripted-coder-1"
script = "{dir}/coder.json"
[agents.coder.sandbox]
workspace = "{dir}/ws"
)";

const std::pair<std::string, std::string> coder_script = {"coder.json", R"({"turns": [
    {"text": "Writing hello.txt.", "tool_calls": [{"name": "write", "arguments": {"path": "hello.txt", "content": "Hello, world!\n"}}]},
    {"text": "Reading it.", "tool_calls": [{"name": "read", "arguments": {"path": "hello.txt"}}]},
    {"text": "Done. Result: {{last_tool_result}}"}
  ]})"};

// A receiver of OTLP/HTTP (tests/support/otlp_receiver.py) on a free port, keeping what it gets.
struct otlp_receiver {
  int port = 0;
  std::string folder;
  child_process process;

  explicit otlp_receiver(const temp_dir& dir) : folder(dir.file("otlp")) {
    auto free = free_loopback_port();
    REQUIRE(free);
    port = *free;
    process = start_command({"python3", std::string(KEEL_SOURCE_DIR) + "/tests/support/otlp_receiver.py",
                             std::to_string(port), folder},
                            dir, "otlp");
    REQUIRE_EVENTUALLY(10'000, port_accepts(port));
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port) + "/v1/traces"; }

  struct received_span {
    json span;
    std::string service_instance;
  };
  std::vector<received_span> spans() const {
    std::vector<received_span> out;
    if (!std::filesystem::exists(folder)) return out;
    for (const auto& entry : std::filesystem::directory_iterator(folder)) {
      if (entry.path().extension() != ".json") continue;
      auto whole = json::parse(read_file(entry.path().string()), nullptr, false);
      if (whole.is_discarded()) continue;
      for (auto& rs : whole["body"]["resourceSpans"]) {
        std::string instance;
        for (auto& kv : rs["resource"]["attributes"])
          if (kv["key"] == "service.instance.id") instance = kv["value"]["stringValue"];
        for (auto& ss : rs["scopeSpans"])
          for (auto& s : ss["spans"]) out.push_back({s, instance});
      }
    }
    return out;
  }
  std::vector<json> headers() const {
    std::vector<json> out;
    for (const auto& entry : std::filesystem::directory_iterator(folder))
      if (entry.path().extension() == ".json") out.push_back(json::parse(read_file(entry.path().string()))["headers"]);
    return out;
  }
};

std::map<std::string, json> attributes_of(const json& span) {
  std::map<std::string, json> out;
  for (auto& kv : span["attributes"]) {
    auto& v = kv["value"];
    if (v.contains("stringValue")) out[kv["key"]] = v["stringValue"];
    else if (v.contains("intValue")) out[kv["key"]] = std::stoll(v["intValue"].get<std::string>());
    else if (v.contains("boolValue")) out[kv["key"]] = v["boolValue"];
    else out[kv["key"]] = v;
  }
  return out;
}

struct env_var {
  std::string name;
  env_var(std::string n, const std::string& value) : name(std::move(n)) { ::setenv(name.c_str(), value.c_str(), 1); }
  ~env_var() { ::unsetenv(name.c_str()); }
};

} // namespace

TEST_CASE("observability: a coding agent's run is one trace across orchestrator and worker: invoke_agent, chat and "
          "execute_tool spans with the GenAI attributes, and its approval",
          "[e2e][integration][observability]") {
  temp_dir receiver_dir;
  otlp_receiver receiver(receiver_dir);
  env_var delay("OTEL_BSP_SCHEDULE_DELAY", "100");
  env_var headers("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=keel%20tests");
  env_var service("OTEL_SERVICE_NAME", "agents-under-test");
  cluster_options options;
  options.separate_worker = true;
  options.node_sets = {"telemetry.otlp_endpoint = \"" + receiver.url() + "\""};
  options.worker_sets = options.node_sets;
  cluster c(coder_agent, {coder_script}, options);
  auto run = c.invoke("coder", "Write hello.txt and read it back.");
  auto step = c.await_suspend(run);  // the write asks a person
  CHECK(c.keel({"approve", run, step}).exit_code == 0);
  c.await_status(run, "completed", 30'000);

  // Each node sends within a fraction of a second; the run's span comes when it ends.
  auto trace = [&] {
    std::vector<otlp_receiver::received_span> mine;
    for (auto& s : receiver.spans())
      if (attributes_of(s.span)["keel.run.id"] == run) mine.push_back(s);
    return mine;
  };
  REQUIRE_EVENTUALLY(20'000, [&] {
    auto spans = trace();
    int chats = 0;
    bool root = false;
    for (auto& s : spans) {
      chats += s.span["name"].get<std::string>().rfind("chat ", 0) == 0 ? 1 : 0;
      root = root || s.span["name"] == "invoke_agent coder";
    }
    return chats >= 3 && root;
  }());
  auto spans = trace();
  json root;
  for (auto& s : spans)
    if (s.span["name"] == "invoke_agent coder") root = s.span;
  auto root_attrs = attributes_of(root);
  CHECK(root_attrs["gen_ai.operation.name"] == "invoke_agent");
  CHECK(root_attrs["gen_ai.agent.name"] == "coder");
  CHECK(root_attrs["keel.run.status"] == "completed");
  CHECK(root_attrs["gen_ai.usage.input_tokens"].get<std::int64_t>() > 0);
  CHECK(!root.contains("parentSpanId"));
  const auto trace_id = root["traceId"].get<std::string>();
  CHECK(trace_id.size() == 32);

  std::set<std::string> instances, names;
  int chats = 0, tools = 0, approvals = 0;
  for (auto& s : spans) {
    INFO(s.span.dump());
    names.insert(s.span["name"]);
    instances.insert(s.service_instance);
    CHECK(s.span["traceId"] == trace_id);  // one trace
    auto a = attributes_of(s.span);
    auto name = s.span["name"].get<std::string>();
    if (name.rfind("chat ", 0) == 0) {
      ++chats;
      CHECK(name == "chat scripted-coder-1");
      CHECK(s.span["kind"] == 3);  // CLIENT
      CHECK(s.span["parentSpanId"] == root["spanId"]);
      CHECK(s.service_instance == "w1");  // made by the worker that called the model
      CHECK(a["gen_ai.operation.name"] == "chat");
      CHECK(a["gen_ai.provider.name"] == "scripted");
      CHECK(a["gen_ai.request.model"] == "scripted-coder-1");
      CHECK(a["gen_ai.usage.input_tokens"].get<std::int64_t>() > 0);
      CHECK(a["gen_ai.usage.output_tokens"].get<std::int64_t>() > 0);
      CHECK(a.count("gen_ai.usage.cache_read.input_tokens") == 1);
      CHECK(a["gen_ai.response.finish_reasons"].is_object());
      CHECK(std::stoll(s.span["endTimeUnixNano"].get<std::string>()) >= std::stoll(s.span["startTimeUnixNano"].get<std::string>()));
    } else if (name.rfind("execute_tool ", 0) == 0) {
      ++tools;
      CHECK(s.span["parentSpanId"] == root["spanId"]);
      CHECK(a["gen_ai.operation.name"] == "execute_tool");
      CHECK((a["gen_ai.tool.name"] == "write" || a["gen_ai.tool.name"] == "read"));
      CHECK(!a["gen_ai.tool.call.id"].get<std::string>().empty());
    } else if (name.rfind("keel.approval ", 0) == 0) {
      ++approvals;
      CHECK(s.span["parentSpanId"] == root["spanId"]);
      CHECK(a["keel.approval.approved"] == true);
      CHECK(s.service_instance == "n1");
    }
  }
  CHECK(chats == 3);
  // The write ran twice on the worker (asked, then done once approved), the read once.
  CHECK(tools == 3);
  CHECK(approvals == 1);
  CHECK(instances == std::set<std::string>{"n1", "w1"});
  // The standard variables reached the export: its headers and the service's name.
  auto sent = receiver.headers();
  REQUIRE(!sent.empty());
  CHECK(sent.front()["x-tenant"] == "keel tests");
  CHECK(read_file(receiver_dir.file("otlp/000001.json")).find("agents-under-test") != std::string::npos);
}

TEST_CASE("observability: with the trace collector down, runs go on and the spans dropped are counted",
          "[e2e][integration][observability]") {
  auto closed = free_loopback_port();
  REQUIRE(closed);
  cluster_options options;
  options.gateway = true;
  options.node_sets = {"telemetry.otlp_endpoint = \"http://127.0.0.1:" + std::to_string(*closed) + "/v1/traces\"",
                       "telemetry.spans_queued_max = 4"};
  cluster c(R"(
[agents.quick]
script = "{dir}/quick.json"
[agents.quick.sandbox]
workspace = "{dir}/ws"
)",
            {{"quick.json", R"({"turns": [{"text": "done"}]})"}}, options);
  std::vector<std::string> runs;
  for (int i = 0; i < 20; ++i) runs.push_back(c.invoke("quick", "go " + std::to_string(i)));
  for (const auto& r : runs) c.await_status(r, "completed", 30'000);
  auto metrics = call("GET", c.gateway_url() + "/metrics");
  REQUIRE(metrics.status == 200);
  INFO(metrics.body);
  CHECK(metrics.body.find("keel_trace_spans_dropped_total{reason=") != std::string::npos);
  CHECK(metrics.body.find("keel_runs_ended_total{agent=\"quick\",status=\"completed\"} 20") != std::string::npos);
}
