#include "actors/schedule_definitions.hpp"

#include <algorithm>

namespace keel::actors {

using wire::value;

namespace {

result<void> take_text(const value& v, const char* key, std::string& to, bool required) {
  if (!v.contains(key)) {
    if (required) return make_error(errc::invalid_argument, std::string(key) + " is required");
    return success();
  }
  if (!v[key].is_string()) return make_error(errc::invalid_argument, std::string(key) + " must be a string");
  to = v[key].get<std::string>();
  return success();
}

result<void> take_integer(const value& v, const char* key, std::int64_t& to) {
  if (!v.contains(key)) return success();
  if (!v[key].is_number_integer()) return make_error(errc::invalid_argument, std::string(key) + " must be an integer");
  to = v[key].get<std::int64_t>();
  return success();
}

} // namespace

value schedule_value(const config::schedule_config& s) {
  return value{{"name", s.name}, {"agent", s.agent}, {"cron", s.cron}, {"timezone", s.timezone}, {"input", s.input},
               {"missed", s.missed}, {"catch_up_max", s.catch_up_max}, {"late_ms_max", s.late_ms_max}};
}

result<config::schedule_config> schedule_from_request(const value& v) {
  if (!v.is_object()) return make_error(errc::invalid_argument, "a schedule is a map: {name, agent, cron, ...}");
  static const char* known[] = {"name", "agent", "cron", "timezone", "input", "missed", "catch_up_max", "late_ms_max"};
  for (const auto& [key, _] : v.items())
    if (std::find(std::begin(known), std::end(known), key) == std::end(known))
      return make_error(errc::invalid_argument, "unknown field '" + key + "' (docs/WORKFLOWS.md lists a schedule's fields)");
  config::schedule_config s;
  for (auto r : {take_text(v, "name", s.name, true), take_text(v, "agent", s.agent, true), take_text(v, "cron", s.cron, true),
                 take_text(v, "timezone", s.timezone, false), take_text(v, "input", s.input, false),
                 take_text(v, "missed", s.missed, false), take_integer(v, "catch_up_max", s.catch_up_max),
                 take_integer(v, "late_ms_max", s.late_ms_max)})
    if (!r) return r.error();
  return s;
}

std::string encode(const schedule_definition& d) {
  value v{{"generation", d.generation}, {"by", d.by}};
  if (d.generation) v["schedule"] = schedule_value(d.schedule);
  return wire::pack(v);
}

result<schedule_definition> decode_schedule_definition(const std::string& bytes) {
  auto v = wire::unpack(bytes);
  if (!v) return v.error();
  if (!v->is_object() || !v->contains("generation") || !(*v)["generation"].is_number_integer())
    return make_error(errc::invalid_argument, "a schedule definition without its generation");
  schedule_definition d;
  d.generation = (*v)["generation"].get<std::int64_t>();
  d.by = v->value("by", std::string());
  if (d.generation == 0) return d;
  if (!v->contains("schedule")) return make_error(errc::invalid_argument, "a schedule definition without its schedule");
  auto s = schedule_from_request((*v)["schedule"]);
  if (!s) return s.error();
  d.schedule = std::move(*s);
  return d;
}

} // namespace keel::actors
