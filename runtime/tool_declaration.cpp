#include "runtime/tool_declaration.hpp"

#include <algorithm>
#include <cctype>
#include <set>

namespace keel::tools {

using json = nlohmann::json;

namespace {

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

error bad(const std::string& where, const std::string& what) {
  return make_error(errc::invalid_argument, where + ": " + what);
}

result<std::int64_t> bounded(const json& t, const char* key, std::int64_t fallback, std::int64_t least,
                             std::int64_t most, const std::string& where) {
  if (!t.contains(key) || t[key].is_null()) return fallback;
  if (!t[key].is_number_integer() || t[key].get<std::int64_t>() < least || t[key].get<std::int64_t>() > most)
    return bad(where, std::string(key) + " must be an integer from " + std::to_string(least) + " to " + std::to_string(most));
  return t[key].get<std::int64_t>();
}

result<std::shared_ptr<const declared_tool>> tool_from_value(const json& t, const std::string& queue,
                                                             std::int64_t result_bytes_cap, std::size_t index) {
  std::string where = "tools[" + std::to_string(index) + "]";
  if (!t.is_object()) return bad(where, "a tool is a map");
  if (!t.contains("name") || !t["name"].is_string() || !valid_name(t["name"].get<std::string>()))
    return bad(where, "name must be 1 to 64 of A-Z a-z 0-9 _ -");
  auto d = std::make_shared<declared_tool>();
  d->queue = queue;
  d->name = t["name"].get<std::string>();
  where = "tool " + d->name;
  if (t.contains("description") && !t["description"].is_null()) {
    if (!t["description"].is_string()) return bad(where, "description must be a string");
    d->description = t["description"].get<std::string>();
    if (d->description.size() > description_bytes_max)
      return bad(where, "description is longer than " + std::to_string(description_bytes_max) + " bytes");
  }
  if (!t.contains("input_schema")) return bad(where, "input_schema is required (the JSON Schema of its arguments)");
  const json& in = t["input_schema"];
  if (!in.is_object() || in.value("type", json()) != json("object"))
    return bad(where, "input_schema must be an object schema ({\"type\": \"object\", ...}): a tool's arguments are a map");
  auto input = schema::json_schema::compile(in);
  if (!input) return bad(where, "input_schema: " + input.error().message);
  d->input = std::move(*input);
  if (t.contains("output_schema") && !t["output_schema"].is_null()) {
    auto output = schema::json_schema::compile(t["output_schema"]);
    if (!output) return bad(where, "output_schema: " + output.error().message);
    d->output = std::move(*output);
  }
  if (t.contains("approval") && !t["approval"].is_null()) {
    auto a = t["approval"].is_string() ? t["approval"].get<std::string>() : std::string();
    if (a != "always" && a != "never") return bad(where, "approval must be \"always\" or \"never\"");
    d->approval = a == "always";
  }
  if (t.contains("form") && !t["form"].is_null()) {
    const json& f = t["form"];
    if (!f.is_object()) return bad(where, "form must be a map {title, show}");
    if (f.contains("title")) {
      if (!f["title"].is_string() || f["title"].get<std::string>().size() > 200)
        return bad(where, "form.title must be a string of at most 200 bytes");
      d->form_title = f["title"].get<std::string>();
    }
    if (f.contains("show")) {
      if (!f["show"].is_array() || f["show"].size() > 32) return bad(where, "form.show must be an array of at most 32 argument names");
      for (const auto& s : f["show"]) {
        if (!s.is_string()) return bad(where, "form.show must be an array of argument names");
        d->form_fields.push_back(s.get<std::string>());
      }
    }
  }
  auto timeout = bounded(t, "timeout_ms", timeout_ms_default, 1000, timeout_ms_max, where);
  if (!timeout) return timeout.error();
  d->timeout_ms = *timeout;
  auto cap = std::max<std::int64_t>(1024, result_bytes_cap);
  auto size = bounded(t, "result_bytes_max", std::min(result_bytes_default, cap), 1024, cap, where);
  if (!size) return size.error();
  d->result_bytes_max = *size;
  return std::shared_ptr<const declared_tool>(std::move(d));
}

} // namespace

json declared_tool::definition() const {
  return json{{"name", name}, {"description", description}, {"input_schema", input.source()}};
}

namespace {
// What a form shows of a value the model chose: whole up to a bound, else its start and its size
// (the whole call is in the run's llm_step_completed event).
constexpr std::size_t form_value_bytes_max = 4 << 10;
constexpr std::size_t form_arguments_bytes_max = 16 << 10;
json bounded_value(const json& v, std::size_t max) {
  auto text = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() <= max) return v;
  auto cut = max / 4;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // never inside a character
  return json{{"truncated", true}, {"bytes", text.size()}, {"start", text.substr(0, cut)}};
}
} // namespace

json declared_tool::form(const json& whole) const {
  json shown = json::object();
  if (whole.is_object())
    for (const auto& field : form_fields)
      if (whole.contains(field)) shown[field] = bounded_value(whole[field], form_value_bytes_max);
  json arguments = bounded_value(whole, form_arguments_bytes_max);
  return json{{"kind", "tool"},
              {"tool", name},
              {"queue", queue},
              {"title", form_title.empty() ? "Run " + name + "?" : form_title},
              {"description", description},
              {"shown", shown},
              {"arguments", arguments}};
}

json declared_tool::to_value() const {
  json t{{"name", name},
         {"description", description},
         {"input_schema", input.source()},
         {"approval", approval ? "always" : "never"},
         {"timeout_ms", timeout_ms},
         {"result_bytes_max", result_bytes_max}};
  if (output) t["output_schema"] = output->source();
  if (!form_title.empty() || !form_fields.empty()) t["form"] = json{{"title", form_title}, {"show", form_fields}};
  return t;
}

json queue_tools::to_value() const {
  json list = json::array();
  for (const auto& t : tools) list.push_back(t->to_value());
  return json{{"queue", queue}, {"by", by}, {"time_ms", time_ms}, {"tools", list}};
}

result<queue_tools> queue_tools_from_value(const json& v, std::int64_t result_bytes_cap) {
  if (!v.is_object()) return make_error(errc::malformed, "a declaration is a map {queue, tools}");
  if (!v.contains("queue") || !v["queue"].is_string() || !valid_name(v["queue"].get<std::string>()))
    return make_error(errc::invalid_argument, "queue must be 1 to 64 of A-Z a-z 0-9 _ -");
  if (!v.contains("tools") || !v["tools"].is_array()) return make_error(errc::invalid_argument, "tools must be an array");
  const json& list = v["tools"];
  if (list.size() > tools_per_queue_max)
    return make_error(errc::invalid_argument, "a queue declares at most " + std::to_string(tools_per_queue_max) + " tools");
  queue_tools q;
  q.queue = v["queue"].get<std::string>();
  if (v.contains("by") && v["by"].is_string()) q.by = v["by"].get<std::string>();
  if (v.contains("time_ms") && v["time_ms"].is_number_integer()) q.time_ms = v["time_ms"].get<std::int64_t>();
  std::set<std::string> names;
  for (std::size_t i = 0; i < list.size(); ++i) {
    auto t = tool_from_value(list[i], q.queue, result_bytes_cap, i);
    if (!t) return t.error();
    if (!names.insert((*t)->name).second) return make_error(errc::invalid_argument, "tool " + (*t)->name + " is declared twice");
    q.tools.push_back(std::move(*t));
  }
  return q;
}

} // namespace keel::tools
