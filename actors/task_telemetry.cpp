#include "actors/task_telemetry.hpp"

#include "runtime/metrics.hpp"
#include "telemetry/otlp_exporter.hpp"
#include "telemetry/trace_ids.hpp"

#include <chrono>

namespace keel::actors {

namespace {

using wire::value;

std::string text(const value& v, const char* key) {
  return v.is_object() && v.contains(key) && v[key].is_string() ? v[key].get<std::string>() : std::string();
}

std::int64_t integer(const value& v, const char* key) {
  return v.is_object() && v.contains(key) && v[key].is_number_integer() ? v[key].get<std::int64_t>() : 0;
}

} // namespace

std::int64_t unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void observe_task(const config::agent_config* agent, const wire::task& t, const result<value>& outcome,
                  const std::string& worker, std::int64_t start_ns, std::int64_t end_ns) {
  const value& p = t.payload;
  const bool model = t.kind == wire::task_kind::llm;
  const double seconds = static_cast<double>(std::max<std::int64_t>(0, end_ns - start_ns)) / 1e9;
  // A tool call that only asked for approval did nothing yet: counted, not timed.
  const bool asked = !model && outcome && text(*outcome, "status") == "needs_approval";
  const bool failed = !outcome || (outcome->is_object() && outcome->value("is_error", false));
  metrics::count("keel_worker_tasks_total", {{"kind", model ? "model" : "tool"}, {"outcome", failed ? "error" : "ok"}});
  std::string provider = text(p, "provider"), request_model = text(p, "model"), tool = text(p, "tool");
  if (agent) {
    if (provider.empty()) provider = agent->provider;
    if (request_model.empty()) request_model = agent->model;
  }
  value usage = outcome && outcome->is_object() && outcome->contains("usage") ? (*outcome)["usage"] : value::object();
  if (model) {
    metrics::labels base{{"gen_ai_operation_name", "chat"}, {"gen_ai_provider_name", provider},
                         {"gen_ai_request_model", request_model}};
    auto timed = base;
    if (!outcome) timed.emplace_back("error_type", std::string(to_string(outcome.error().code)));
    metrics::observe("gen_ai_client_operation_duration_seconds", timed, seconds);
    if (outcome) {
      for (const char* type : {"input", "output"}) {
        auto l = base;
        l.emplace_back("gen_ai_token_type", type);
        metrics::observe("gen_ai_client_token_usage", l,
                         static_cast<double>(integer(usage, (std::string(type) + "_tokens").c_str())));
      }
    }
  } else if (!asked) {
    metrics::observe("keel_tool_call_duration_seconds", {{"tool", tool}}, seconds);
  }
  if (!telemetry::tracing()) return;
  auto parent = telemetry::parse_traceparent(text(p, "traceparent"));
  if (!parent) return;  // a task from an older orchestrator: no trace to join
  telemetry::span s;
  s.trace_id = parent->trace_id;
  s.parent_span_id = parent->span_id;
  s.span_id = telemetry::span_id_of(t.run_id + "/task/" + std::to_string(t.step) + "/" + std::to_string(t.attempt));
  s.kind = model ? telemetry::span_kind::client : telemetry::span_kind::internal;
  s.start_ns = start_ns;
  s.end_ns = end_ns;
  s.attributes = value{{"keel.run.id", t.run_id}, {"keel.task.step", t.step}, {"keel.task.attempt", t.attempt},
                       {"keel.worker", worker}, {"gen_ai.agent.name", t.agent}};
  if (model) {
    s.name = "chat " + request_model;
    s.attributes["gen_ai.operation.name"] = "chat";
    s.attributes["gen_ai.provider.name"] = provider;
    s.attributes["gen_ai.request.model"] = request_model;
    if (outcome) {
      s.attributes["gen_ai.usage.input_tokens"] = integer(usage, "input_tokens");
      s.attributes["gen_ai.usage.output_tokens"] = integer(usage, "output_tokens");
      s.attributes["gen_ai.usage.cache_read.input_tokens"] = integer(usage, "cache_read_tokens");
      s.attributes["gen_ai.usage.cache_creation.input_tokens"] = integer(usage, "cache_write_tokens");
      s.attributes["gen_ai.response.finish_reasons"] = value::array({text(*outcome, "stop_reason")});
    }
  } else {
    s.name = "execute_tool " + tool;
    s.attributes["gen_ai.operation.name"] = "execute_tool";
    s.attributes["gen_ai.tool.name"] = tool;
    s.attributes["gen_ai.tool.call.id"] = text(p, "call_id");
    s.attributes["gen_ai.tool.type"] = "function";
    if (asked) s.attributes["keel.tool.needs_approval"] = true;
  }
  if (failed) {
    s.error = true;
    s.status_message = outcome ? text(*outcome, "message") : outcome.error().message;
    s.attributes["error.type"] = outcome ? std::string("tool_error") : std::string(to_string(outcome.error().code));
  }
  telemetry::record(std::move(s));
}

} // namespace keel::actors
