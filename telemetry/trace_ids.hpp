// Trace and span ids that every node works out alike from a run's ids, so that the spans of one
// run (and of the child runs it starts) make one trace across orchestrators and workers without
// a lookup: the trace of a run is that of its root run, a run's own span is named by its id, and
// a task carries its run's span as W3C `traceparent` for whatever runs it (a worker, a tool
// worker of the user's own).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace keel::telemetry {

std::string trace_id_of(std::string_view root_run_id);    // 32 lower-case hex digits
std::string span_id_of(std::string_view key);             // 16 lower-case hex digits, never all zero
std::string run_span_id(std::string_view run_id);         // a run's invoke_agent span

// "00-<trace>-<span>-01".
std::string traceparent(std::string_view trace_id, std::string_view span_id);

struct span_context {
  std::string trace_id;
  std::string span_id;
};
// A W3C traceparent of version 00 with non-zero ids; anything else: nullopt.
std::optional<span_context> parse_traceparent(std::string_view text);

} // namespace keel::telemetry
