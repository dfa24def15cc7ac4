// libFuzzer target: what a tool worker declares and what a model and a worker send for it: a
// JSON Schema of anyone's choosing compiled, then a value of anyone's choosing checked against
// it, and a whole declaration read. Input: schema JSON, a zero byte, value JSON. No crash, no
// undefined behaviour, and bounded time on any of it (a check past its budget says so).
#include "runtime/json_schema.hpp"
#include "runtime/tool_declaration.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string_view>

using namespace keel;
using json = nlohmann::json;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto split = input.find('\0');
  auto schema_text = input.substr(0, split);
  auto value_text = split == std::string_view::npos ? std::string_view("null") : input.substr(split + 1);
  json schema = json::parse(schema_text, nullptr, false);
  json value = json::parse(value_text, nullptr, false);
  if (schema.is_discarded() || value.is_discarded()) return 0;
  if (auto compiled = schema::json_schema::compile(schema)) {
    auto problem = compiled->problem(value, "v");
    // A problem always names where it is.
    if (!problem.empty() && problem.rfind("v", 0) != 0) __builtin_trap();
    // `true` and `{}` accept everything.
    if ((schema == json(true) || schema == json::object()) && !problem.empty()) __builtin_trap();
  }
  json declaration{{"queue", "q"}, {"tools", json::array({{{"name", "t"}, {"input_schema", schema}, {"output_schema", schema}}})}};
  if (auto q = tools::queue_tools_from_value(declaration, 1 << 20)) {
    (void)q->tools[0]->form(value);
    (void)q->to_value();
  }
  return 0;
}
