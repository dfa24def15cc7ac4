#include "telemetry/spans.hpp"

namespace keel::telemetry {

namespace {

using wire::value;

value any_value(const value& v) {
  if (v.is_string()) return value{{"stringValue", v}};
  if (v.is_boolean()) return value{{"boolValue", v}};
  if (v.is_number_integer()) return value{{"intValue", std::to_string(v.get<std::int64_t>())}};
  if (v.is_number_unsigned()) return value{{"intValue", std::to_string(v.get<std::uint64_t>())}};
  if (v.is_number()) return value{{"doubleValue", v}};
  if (v.is_array()) {
    value values = value::array();
    for (const auto& item : v) values.push_back(any_value(item));
    return value{{"arrayValue", {{"values", values}}}};
  }
  return value{{"stringValue", v.is_null() ? std::string() : v.dump()}};
}

value key_values(const value& attributes) {
  value out = value::array();
  if (!attributes.is_object()) return out;
  for (auto it = attributes.begin(); it != attributes.end(); ++it)
    out.push_back(value{{"key", it.key()}, {"value", any_value(it.value())}});
  return out;
}

} // namespace

std::string to_otlp_json(const resource& r, const std::vector<span>& spans) {
  value attributes = r.attributes.is_object() ? r.attributes : value::object();
  attributes["service.name"] = r.service_name;
  value out_spans = value::array();
  for (const auto& s : spans) {
    value one{{"traceId", s.trace_id},
              {"spanId", s.span_id},
              {"name", s.name},
              {"kind", static_cast<int>(s.kind)},
              {"startTimeUnixNano", std::to_string(s.start_ns)},
              {"endTimeUnixNano", std::to_string(std::max(s.start_ns, s.end_ns))},
              {"attributes", key_values(s.attributes)},
              {"status", s.error ? value{{"code", 2}, {"message", s.status_message}} : value{{"code", 0}}}};
    if (!s.parent_span_id.empty()) one["parentSpanId"] = s.parent_span_id;
    out_spans.push_back(std::move(one));
  }
  value request{{"resourceSpans",
                 value::array({value{{"resource", {{"attributes", key_values(attributes)}}},
                                     {"scopeSpans", value::array({value{{"scope", {{"name", "keel"}, {"version", "0.1.0"}}},
                                                                        {"spans", out_spans}}})}}})}};
  return request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

} // namespace keel::telemetry
