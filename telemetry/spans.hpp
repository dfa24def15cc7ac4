// A finished span, as keel records it, and its OTLP/JSON form (the ExportTraceServiceRequest of
// opentelemetry-proto, JSON-encoded: hex ids, 64-bit integers as strings).
#pragma once

#include "runtime/wire.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace keel::telemetry {

enum class span_kind { internal = 1, server = 2, client = 3 };

struct span {
  std::string trace_id;        // 32 hex
  std::string span_id;         // 16 hex
  std::string parent_span_id;  // empty: a root span
  std::string name;
  span_kind kind = span_kind::internal;
  std::int64_t start_ns = 0;   // Unix epoch, nanoseconds
  std::int64_t end_ns = 0;
  wire::value attributes = wire::value::object();  // string, integer, number, boolean, or arrays of those
  bool error = false;
  std::string status_message;  // with error
};

struct resource {
  std::string service_name = "keel";
  wire::value attributes = wire::value::object();  // OTEL_RESOURCE_ATTRIBUTES and the node's
};

std::string to_otlp_json(const resource& r, const std::vector<span>& spans);

} // namespace keel::telemetry
