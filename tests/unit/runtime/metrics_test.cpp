// The metrics registry (runtime/metrics.hpp): Prometheus's text format as Prometheus reads it,
// histograms' cumulative buckets, label values escaped, names not declared dropped, collectors'
// gauges replaced at each scrape. promtool checks the real endpoints (tests/e2e/telemetry_test.cpp).
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <set>

using namespace keel;

namespace {
bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}
} // namespace

TEST_CASE("metrics: counters, gauges and histograms render in the text format with HELP and TYPE", "[metrics]") {
  metrics::reset_for_tests();
  metrics::count("keel_runs_started_total", {{"agent", "coder"}});
  metrics::count("keel_runs_started_total", {{"agent", "coder"}}, 2);
  metrics::count("keel_runs_started_total", {{"agent", "coder"}}, -5);  // a counter never goes down
  metrics::set("keel_worker_slots", {}, 64);
  metrics::observe("keel_step_duration_seconds", {{"kind", "model"}, {"agent", "coder"}}, 0.003);
  metrics::observe("keel_step_duration_seconds", {{"agent", "coder"}, {"kind", "model"}}, 0.2);
  metrics::observe("keel_step_duration_seconds", {{"agent", "coder"}, {"kind", "model"}}, 1000);
  auto text = metrics::render();
  CHECK(has_line(text, "# TYPE keel_runs_started_total counter"));
  CHECK(has_line(text, "keel_runs_started_total{agent=\"coder\"} 3"));
  CHECK(has_line(text, "keel_worker_slots 64"));
  CHECK(has_line(text, "# TYPE keel_step_duration_seconds histogram"));
  // Label order does not make two series; buckets are cumulative; +Inf holds every observation.
  CHECK(has_line(text, "keel_step_duration_seconds_bucket{agent=\"coder\",kind=\"model\",le=\"0.0025\"} 0"));
  CHECK(has_line(text, "keel_step_duration_seconds_bucket{agent=\"coder\",kind=\"model\",le=\"0.005\"} 1"));
  CHECK(has_line(text, "keel_step_duration_seconds_bucket{agent=\"coder\",kind=\"model\",le=\"0.25\"} 2"));
  CHECK(has_line(text, "keel_step_duration_seconds_bucket{agent=\"coder\",kind=\"model\",le=\"300\"} 2"));
  CHECK(has_line(text, "keel_step_duration_seconds_bucket{agent=\"coder\",kind=\"model\",le=\"+Inf\"} 3"));
  CHECK(has_line(text, "keel_step_duration_seconds_count{agent=\"coder\",kind=\"model\"} 3"));
  CHECK(text.find("\nkeel_step_duration_seconds_sum{agent=\"coder\",kind=\"model\"} 1000.20") != std::string::npos);
  // A value on a bucket's bound counts in that bucket (le: less or equal).
  metrics::observe("keel_step_duration_seconds", {{"agent", "b"}, {"kind", "tool"}}, 0.5);
  CHECK(has_line(metrics::render(), "keel_step_duration_seconds_bucket{agent=\"b\",kind=\"tool\",le=\"0.5\"} 1"));
}

TEST_CASE("metrics: label values with quotes, backslashes and newlines are escaped, and undeclared names and kinds are dropped",
          "[metrics]") {
  metrics::reset_for_tests();
  metrics::count("keel_runs_started_total", {{"agent", "a\"b\\c\nd"}});
  metrics::count("no_such_metric_total");                       // not declared: dropped
  metrics::set("keel_runs_started_total", {}, 5);               // a counter set as a gauge: dropped
  metrics::observe("keel_worker_slots", {}, 1);                 // a gauge observed: dropped
  metrics::observe("keel_step_duration_seconds", {{"agent", "x"}, {"kind", "model"}}, std::nan(""));  // NaN: dropped
  auto text = metrics::render();
  CHECK(has_line(text, "keel_runs_started_total{agent=\"a\\\"b\\\\c\\nd\"} 1"));
  CHECK(text.find("no_such_metric") == std::string::npos);
  CHECK(text.find("keel_worker_slots_bucket") == std::string::npos);
  CHECK(text.find("keel_step_duration_seconds_count{agent=\"x\"") == std::string::npos);
}

TEST_CASE("metrics: a collector's gauges are read at each scrape and go with it", "[metrics]") {
  metrics::reset_for_tests();
  int calls = 0;
  {
    auto handle = metrics::add_collector([&](const metrics::gauge_setter& set) {
      ++calls;
      set("keel_runs", {{"status", "running"}}, calls == 1 ? 7 : 0);
      if (calls == 1) set("keel_runs", {{"status", "queued"}}, 2);
      set("keel_undeclared", {}, 1);  // dropped with one log line
    });
    auto first = metrics::render();
    CHECK(has_line(first, "keel_runs{status=\"running\"} 7"));
    CHECK(has_line(first, "keel_runs{status=\"queued\"} 2"));
    auto second = metrics::render();
    CHECK(has_line(second, "keel_runs{status=\"running\"} 0"));
    CHECK(second.find("status=\"queued\"") == std::string::npos);  // not set this time: gone
  }
  auto after = metrics::render();
  CHECK(calls == 2);
  CHECK(after.find("keel_runs{") == std::string::npos);  // the handle went: so did its collector
  CHECK(has_line(after, "# TYPE keel_runs gauge"));
  // Process metrics are always there.
  CHECK(after.find("\nprocess_resident_memory_bytes ") != std::string::npos);
  CHECK(after.find("\nprocess_open_fds ") != std::string::npos);
  CHECK(after.find("\nprocess_start_time_seconds ") != std::string::npos);
}

TEST_CASE("metrics: every family declared has a valid name, help and increasing buckets, once", "[metrics]") {
  std::set<std::string> seen;
  for (const auto& f : metrics::catalog()) {
    INFO(f.name);
    CHECK(seen.insert(f.name).second);
    CHECK(!f.help.empty());
    for (char c : f.name) CHECK((std::isalnum(static_cast<unsigned char>(c)) || c == '_'));
    if (f.type == metrics::kind::counter) CHECK(f.name.ends_with("_total"));
    else CHECK(!f.name.ends_with("_total"));
    if (f.type == metrics::kind::histogram) {
      REQUIRE(!f.buckets.empty());
      for (std::size_t i = 1; i < f.buckets.size(); ++i) CHECK(f.buckets[i - 1] < f.buckets[i]);
    }
  }
}

TEST_CASE("logs: a JSON line holds the time, level, logger, node and message, and the run and step it names", "[logs]") {
  auto j = nlohmann::json::parse(log::json_line("2026-12-07T10:00:00.000Z", "warn", "actors", "o1",
                                                "run 0ABCDEFGHIJ012345-o1: task 7 failed: \"quoted\"\n"));
  CHECK(j["time"] == "2026-12-07T10:00:00.000Z");
  CHECK(j["level"] == "warn");
  CHECK(j["logger"] == "actors");
  CHECK(j["node"] == "o1");
  CHECK(j["run_id"] == "0ABCDEFGHIJ012345-o1");
  CHECK(j["step"] == 7);
  CHECK(j["message"] == "run 0ABCDEFGHIJ012345-o1: task 7 failed: \"quoted\"\n");
  // A line about no run has neither; "runs" and "rerun" are not "run"; bytes that are not UTF-8 are replaced.
  auto other = nlohmann::json::parse(log::json_line("t", "info", "node", "", "the runs of o1 were taken over; rerun x-1 \xff"));
  CHECK(!other.contains("run_id"));
  CHECK(!other.contains("step"));
  CHECK(!other.contains("node"));
  auto step = nlohmann::json::parse(log::json_line("t", "info", "actors", "n", "run a-b: step 12 of run a-b timed out"));
  CHECK(step["run_id"] == "a-b");
  CHECK(step["step"] == 12);
}
