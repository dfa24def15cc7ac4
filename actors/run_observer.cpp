#include "actors/run_observer.hpp"

#include "runtime/metrics.hpp"
#include "telemetry/otlp_exporter.hpp"
#include "telemetry/trace_ids.hpp"

namespace keel::actors {

namespace {

using wire::value;

constexpr std::int64_t ns_per_ms = 1'000'000;

std::int64_t integer(const value& v, const char* key) {
  if (!v.is_object() || !v.contains(key) || !v[key].is_number()) return 0;
  return v[key].is_number_integer() ? v[key].get<std::int64_t>() : static_cast<std::int64_t>(v[key].get<double>());
}

std::string text(const value& v, const char* key) {
  return v.is_object() && v.contains(key) && v[key].is_string() ? v[key].get<std::string>() : std::string();
}

// The run's place in its trace: the root run's trace, under its parent's span if it has one.
struct lineage {
  std::string trace_id;
  std::string parent_span;
};

lineage lineage_of(const store::run_record& record, const store::run_state& state) {
  std::string root = record.run_id, parent;
  if (state.parent.is_object()) {
    parent = text(state.parent, "run_id");
    if (state.parent.contains("chain") && state.parent["chain"].is_array() && !state.parent["chain"].empty() &&
        state.parent["chain"][0].is_string())
      root = state.parent["chain"][0].get<std::string>();
    else if (!parent.empty())
      root = parent;
  }
  return {telemetry::trace_id_of(root), parent.empty() ? std::string() : telemetry::run_span_id(parent)};
}

telemetry::span child_span(const lineage& where, const store::run_record& record, const std::string& name,
                           std::int64_t start_ms, std::int64_t end_ms, const std::string& key) {
  telemetry::span s;
  s.trace_id = where.trace_id;
  s.span_id = telemetry::span_id_of(record.run_id + "/" + key);
  s.parent_span_id = telemetry::run_span_id(record.run_id);
  s.name = name;
  s.start_ns = start_ms * ns_per_ms;
  s.end_ns = end_ms * ns_per_ms;
  s.attributes = value{{"keel.run.id", record.run_id}, {"gen_ai.agent.name", record.agent}};
  return s;
}

} // namespace

std::string traceparent_of(const store::run_record& record, const store::run_state& state) {
  return telemetry::traceparent(lineage_of(record, state).trace_id, telemetry::run_span_id(record.run_id));
}

std::function<void()> run_observer::take(const store::run_record& record, const store::run_state& state,
                                         const std::vector<wire::event>& events) {
  std::vector<std::function<void()>> after_written;
  const bool traced = telemetry::tracing();
  const std::string agent = record.agent;
  lineage where;
  if (traced) where = lineage_of(record, state);
  for (const auto& ev : events) {
    const auto& t = ev.event_type;
    const auto& d = ev.data;
    // A fork's recorded steps (docs/FORKS.md) were done and counted by the run they came from.
    if (d.is_object() && d.contains("replayed") && d["replayed"].is_boolean() && d["replayed"].get<bool>()) continue;
    if (t == "run_started") {
      after_written.push_back([agent] { metrics::count("keel_runs_started_total", {{"agent", agent}}); });
    } else if (t == "llm_step_started" || t == "tool_call_started") {
      open_step_kind_ = t == "llm_step_started" ? "model" : "tool";
      open_step_ms_ = ev.time_ms;
    } else if (t == "llm_step_completed" || t == "tool_call_completed") {
      std::string kind = t == "llm_step_completed" ? "model" : "tool";
      if (open_step_kind_ == kind && open_step_ms_ > 0) {
        double seconds = static_cast<double>(std::max<std::int64_t>(0, ev.time_ms - open_step_ms_)) / 1000.0;
        after_written.push_back([agent, kind, seconds] {
          metrics::observe("keel_step_duration_seconds", {{"agent", agent}, {"kind", kind}}, seconds);
        });
      }
      open_step_kind_.clear();
      open_step_ms_ = 0;
      if (kind == "model" && d.is_object() && d.contains("usage")) {
        const auto& u = d["usage"];
        std::vector<std::pair<std::string, double>> used;
        for (const char* type : {"input", "output", "cache_read", "cache_write"})
          used.emplace_back(type, static_cast<double>(integer(u, (std::string(type) + "_tokens").c_str())));
        double cost = d.contains("cost_usd") && d["cost_usd"].is_number() ? d["cost_usd"].get<double>() : 0.0;
        after_written.push_back([agent, used, cost] {
          for (const auto& [type, n] : used)
            if (n > 0) metrics::count("keel_tokens_total", {{"agent", agent}, {"type", type}}, n);
          if (cost > 0) metrics::count("keel_cost_usd_total", {{"agent", agent}}, cost);
        });
      }
    } else if (t == "task_retried") {  // a step sent again (a timed-out model call is too)
      after_written.push_back([agent] { metrics::count("keel_step_retries_total", {{"agent", agent}}); });
    } else if (t == "suspend") {
      asked_ms_ = ev.time_ms;
    } else if (t == "wait_started") {
      waited_ms_ = ev.time_ms;
    } else if (t == "resumed" || t == "wait_ended") {
      auto since = t == "resumed" ? asked_ms_ : waited_ms_;
      if (since > 0 && ev.time_ms >= since) {
        if (t == "resumed")
          after_written.push_back([agent, seconds = static_cast<double>(ev.time_ms - since) / 1000.0] {
            metrics::observe("keel_approval_wait_seconds", {{"agent", agent}}, seconds);
          });
        if (traced) {
          auto key = t == "resumed" ? "approval/" + text(d, "step_key") : "wait/" + std::to_string(ev.seq);
          auto s = child_span(where, record, t == "resumed" ? "keel.approval " + text(d, "step_key") : "keel.wait",
                              since, ev.time_ms, key);
          if (t == "resumed") {
            s.attributes["keel.step_key"] = text(d, "step_key");
            s.attributes["keel.approval.approved"] = d.is_object() && d.value("approved", false);
            s.attributes["keel.approval.by"] = text(d, "by");
          } else {
            s.attributes["keel.wait.reason"] = text(d, "reason");
            if (!text(d, "event").empty()) s.attributes["keel.wait.event"] = text(d, "event");
          }
          after_written.push_back([s = std::move(s)]() mutable { telemetry::record(std::move(s)); });
        }
      }
    } else if (t == "run_completed" || t == "run_failed" || t == "run_cancelled") {
      std::string status = t.substr(4);
      after_written.push_back([agent, status] { metrics::count("keel_runs_ended_total", {{"agent", agent}, {"status", status}}); });
      if (traced) {
        telemetry::span s;
        s.trace_id = where.trace_id;
        s.span_id = telemetry::run_span_id(record.run_id);
        s.parent_span_id = where.parent_span;
        s.name = "invoke_agent " + agent;
        s.start_ns = record.created_ms * ns_per_ms;
        s.end_ns = ev.time_ms * ns_per_ms;
        s.attributes = value{{"gen_ai.operation.name", "invoke_agent"},
                             {"gen_ai.agent.name", agent},
                             {"keel.run.id", record.run_id},
                             {"keel.run.status", status},
                             {"keel.run.steps", state.steps},
                             {"gen_ai.usage.input_tokens", state.usage.input_tokens},
                             {"gen_ai.usage.output_tokens", state.usage.output_tokens},
                             {"gen_ai.usage.cache_read.input_tokens", state.usage.cache_read_tokens},
                             {"gen_ai.usage.cache_creation.input_tokens", state.usage.cache_write_tokens}};
        if (!state.provider.empty()) s.attributes["gen_ai.provider.name"] = state.provider;
        if (!record.session_id.empty()) s.attributes["gen_ai.conversation.id"] = record.session_id;
        if (t == "run_failed") {
          s.error = true;
          s.status_message = text(d, "error");
          s.attributes["error.type"] = "run_failed";
        }
        after_written.push_back([s = std::move(s)]() mutable { telemetry::record(std::move(s)); });
      }
    }
  }
  if (after_written.empty()) return {};
  return [after_written = std::move(after_written)] {
    for (const auto& f : after_written) f();
  };
}

} // namespace keel::actors
