// The process's span exporter: spans are queued (bounded) and sent in batches over OTLP/HTTP
// (JSON) by one thread of its own. Recording never blocks a step: with the queue full (a
// collector down or slow) a span is dropped and counted (keel_trace_spans_dropped_total); a batch
// the collector refuses or that cannot be sent is retried once if the answer says so (429, 502,
// 503, 504) and then dropped, counted.
#pragma once

#include "runtime/result.hpp"
#include "telemetry/spans.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace keel::telemetry {

struct exporter_options {
  std::string endpoint;  // the traces URL (…/v1/traces); empty: traces are off
  std::vector<std::pair<std::string, std::string>> headers;
  std::int64_t timeout_ms = 10'000;   // one export
  std::size_t queue_max = 2048;       // spans waiting to be sent
  std::size_t batch_max = 512;
  std::int64_t delay_ms = 1000;       // a batch goes at least this often while spans wait
  resource about;
};

// Overrides taken from the node's config ([telemetry]); empty or 0: the environment's.
struct exporter_settings {
  std::string endpoint;
  std::string headers;  // "name=value,name=value"
  std::string service_name;
  std::int64_t queue_max = 0;
  std::int64_t delay_ms = 0;
};

// The standard variables: OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER (otlp or none),
// OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT, _PROTOCOL (http/json; http/protobuf
// is answered with JSON, which collectors take on the same route; grpc is refused),
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY,
// OTEL_BSP_MAX_EXPORT_BATCH_SIZE; then `settings` over them. A value that cannot be read is an
// error naming the variable or key.
result<exporter_options> exporter_options_from(const std::function<const char*(const char*)>& getenv,
                                               const exporter_settings& settings);

// Starts the process's exporter (once; a second start replaces the first after flushing it).
void start_exporter(exporter_options options);
// Sends what waits, for up to flush_ms, and stops the thread.
void stop_exporter(std::int64_t flush_ms);
bool tracing();  // an exporter runs: worth building spans
void record(span s);

} // namespace keel::telemetry
