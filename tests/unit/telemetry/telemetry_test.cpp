// Traces (telemetry/): ids every node works out alike, W3C traceparent read strictly, the OTLP/JSON
// body as opentelemetry-proto's JSON mapping writes it, the standard OTEL_* variables, and an
// exporter whose collector is down drops and counts spans instead of holding anyone up.
#include "runtime/child_process.hpp"
#include "runtime/metrics.hpp"
#include "telemetry/otlp_exporter.hpp"
#include "telemetry/trace_ids.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <map>
#include <thread>

using namespace keel;
using namespace keel::telemetry;

namespace {
std::function<const char*(const char*)> env_of(std::map<std::string, std::string> vars) {
  auto held = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [held](const char* name) -> const char* {
    auto it = held->find(name);
    return it == held->end() ? nullptr : it->second.c_str();
  };
}

double metric_value(const std::string& text, const std::string& series) {
  auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return 0;
  return std::stod(text.substr(at + series.size() + 2));
}
} // namespace

TEST_CASE("traces: ids are hex of the right length, the same on every node, distinct per run", "[telemetry]") {
  auto t = trace_id_of("0ABC-o1");
  CHECK(t.size() == 32);
  CHECK(t == trace_id_of("0ABC-o1"));
  CHECK(t != trace_id_of("0ABC-o2"));
  CHECK(run_span_id("0ABC-o1").size() == 16);
  CHECK(run_span_id("0ABC-o1") != span_id_of("0ABC-o1/task/1/1"));
  auto parsed = parse_traceparent(traceparent(t, run_span_id("0ABC-o1")));
  REQUIRE(parsed);
  CHECK(parsed->trace_id == t);
  CHECK(parsed->span_id == run_span_id("0ABC-o1"));
}

TEST_CASE("traces: a traceparent that is not version 00 with lower-case hex and non-zero ids is not taken", "[telemetry]") {
  std::string trace(32, 'a'), span(16, 'b');
  CHECK(parse_traceparent("00-" + trace + "-" + span + "-01"));
  for (const std::string& bad :
       {std::string(""), "01-" + trace + "-" + span + "-01", "00-" + std::string(32, '0') + "-" + span + "-01",
        "00-" + trace + "-" + std::string(16, '0') + "-01", "00-" + std::string(32, 'A') + "-" + span + "-01",
        "00-" + trace + "-" + span + "-01-extra", "00-" + trace + "-" + span, "00_" + trace + "-" + span + "-01",
        "00-" + trace.substr(1) + "g-" + span + "-01"}) {
    INFO(bad);
    CHECK(!parse_traceparent(bad));
  }
}

TEST_CASE("traces: the OTLP/JSON body has hex ids, 64-bit times as strings, typed attributes and the resource", "[telemetry]") {
  span s;
  s.trace_id = trace_id_of("r-1");
  s.span_id = run_span_id("r-1");
  s.name = "chat m";
  s.kind = span_kind::client;
  s.start_ns = 1'700'000'000'000'000'000;
  s.end_ns = 1'700'000'000'500'000'000;
  s.attributes = {{"gen_ai.request.model", "m"}, {"gen_ai.usage.input_tokens", 12}, {"ratio", 0.5},
                  {"flag", true}, {"gen_ai.response.finish_reasons", {"end_turn"}}};
  s.error = true;
  s.status_message = "boom";
  resource r;
  r.service_name = "svc";
  r.attributes = {{"service.instance.id", "n1"}};
  auto j = nlohmann::json::parse(to_otlp_json(r, {s}));
  auto& res = j["resourceSpans"][0];
  bool named = false;
  for (auto& kv : res["resource"]["attributes"])
    if (kv["key"] == "service.name") named = kv["value"]["stringValue"] == "svc";
  CHECK(named);
  auto& out = res["scopeSpans"][0]["spans"][0];
  CHECK(out["traceId"] == s.trace_id);
  CHECK(out["spanId"] == s.span_id);
  CHECK(!out.contains("parentSpanId"));
  CHECK(out["kind"] == 3);
  CHECK(out["startTimeUnixNano"] == "1700000000000000000");
  CHECK(out["endTimeUnixNano"] == "1700000000500000000");
  CHECK(out["status"]["code"] == 2);
  CHECK(out["status"]["message"] == "boom");
  std::map<std::string, nlohmann::json> attrs;
  for (auto& kv : out["attributes"]) attrs[kv["key"]] = kv["value"];
  CHECK(attrs["gen_ai.request.model"]["stringValue"] == "m");
  CHECK(attrs["gen_ai.usage.input_tokens"]["intValue"] == "12");
  CHECK(attrs["ratio"]["doubleValue"] == 0.5);
  CHECK(attrs["flag"]["boolValue"] == true);
  CHECK(attrs["gen_ai.response.finish_reasons"]["arrayValue"]["values"][0]["stringValue"] == "end_turn");
}

TEST_CASE("traces: the standard OTEL variables configure the exporter, the node's config wins, and bad values are named",
          "[telemetry]") {
  auto none = exporter_options_from(env_of({}), {});
  REQUIRE(none);
  CHECK(none->endpoint.empty());
  auto base = exporter_options_from(env_of({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"},
                                            {"OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, x-team = t"},
                                            {"OTEL_SERVICE_NAME", "agents"},
                                            {"OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"},
                                            {"OTEL_BSP_MAX_QUEUE_SIZE", "100"},
                                            {"OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"}}),
                                    {});
  REQUIRE(base);
  CHECK(base->endpoint == "http://c:4318/v1/traces");
  REQUIRE(base->headers.size() == 2);
  CHECK(base->headers[0] == std::pair<std::string, std::string>{"api-key", "a b"});
  CHECK(base->headers[1] == std::pair<std::string, std::string>{"x-team", "t"});
  CHECK(base->about.service_name == "agents");
  CHECK(base->about.attributes["deployment.environment"] == "prod");
  CHECK(base->queue_max == 100);
  auto traces = exporter_options_from(env_of({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"},
                                              {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x"}}),
                                      {});
  REQUIRE(traces);
  CHECK(traces->endpoint == "http://t:1/x");
  exporter_settings mine;
  mine.endpoint = "https://mine/v1/traces";
  mine.service_name = "from-config";
  auto wins = exporter_options_from(env_of({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"}, {"OTEL_SERVICE_NAME", "env"}}), mine);
  REQUIRE(wins);
  CHECK(wins->endpoint == "https://mine/v1/traces");
  CHECK(wins->about.service_name == "from-config");
  CHECK(exporter_options_from(env_of({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"}, {"OTEL_SDK_DISABLED", "true"}}), {})->endpoint.empty());
  CHECK(exporter_options_from(env_of({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"}, {"OTEL_TRACES_EXPORTER", "none"}}), {})->endpoint.empty());
  // What cannot be taken is an error naming the variable, never a silent default.
  for (auto [name, value] : std::vector<std::pair<std::string, std::string>>{
         {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}, {"OTEL_EXPORTER_OTLP_HEADERS", "novalue"},
         {"OTEL_EXPORTER_OTLP_HEADERS", "a=b\r\nInjected: 1"}, {"OTEL_EXPORTER_OTLP_TIMEOUT", "soon"},
         {"OTEL_BSP_MAX_QUEUE_SIZE", "0"}, {"OTEL_TRACES_EXPORTER", "zipkin"}, {"OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c"}}) {
    INFO(name << "=" << value);
    auto bad = exporter_options_from(env_of({{name, value}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", name == "OTEL_EXPORTER_OTLP_ENDPOINT" ? "" : "http://c/v1/traces"}}), {});
    REQUIRE(!bad);
    CHECK(bad.error().message.find(name) != std::string::npos);
  }
}

TEST_CASE("traces: with the collector down, recording never waits: spans past the queue are dropped and counted",
          "[telemetry]") {
  metrics::reset_for_tests();
  auto port = free_loopback_port();  // nothing listens there
  REQUIRE(port);
  exporter_options o;
  o.endpoint = "http://127.0.0.1:" + std::to_string(*port) + "/v1/traces";
  o.queue_max = 100;
  o.batch_max = 50;
  o.delay_ms = 20;
  o.timeout_ms = 500;
  start_exporter(o);
  REQUIRE(tracing());
  for (int i = 0; i < 10'000; ++i) {
    span s;
    s.trace_id = trace_id_of("r");
    s.span_id = span_id_of(std::to_string(i));
    s.name = "x";
    record(std::move(s));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop_exporter(100);
  CHECK(!tracing());
  auto text = metrics::render();
  auto full = metric_value(text, "keel_trace_spans_dropped_total{reason=\"queue_full\"}");
  auto failed = metric_value(text, "keel_trace_spans_dropped_total{reason=\"export_failed\"}");
  auto stopped = metric_value(text, "keel_trace_spans_dropped_total{reason=\"stopped\"}");
  CHECK(full >= 5'000);  // the queue (100) and what the thread took meanwhile; the rest never waited
  CHECK(full + failed + stopped == 10'000);  // every span is accounted for
  CHECK(metric_value(text, "keel_trace_spans_exported_total") == 0);
  record(span{});  // after the stop: nothing, no crash
}
