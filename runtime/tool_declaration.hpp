// A tool that a tool worker declares for its queue (docs/PROTOCOL.md, "Tool workers"): its name,
// what the model is told of it, the JSON Schema of its arguments and of its result, whether a
// person approves each call, and its limits. Checked whole when declared; kept compiled.
#pragma once

#include "runtime/json_schema.hpp"
#include "runtime/result.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel::tools {

constexpr std::size_t tools_per_queue_max = 128;
constexpr std::size_t description_bytes_max = 16 << 10;
constexpr std::int64_t timeout_ms_default = 300'000;
constexpr std::int64_t timeout_ms_max = 86'400'000;
constexpr std::int64_t result_bytes_default = 256 << 10;

struct declared_tool {
  std::string queue;
  std::string name;
  std::string description;
  schema::json_schema input;
  std::optional<schema::json_schema> output;
  bool approval = true;                  // "always" (the default): a person approves each call
  std::string form_title;                // what the approval form is headed with
  std::vector<std::string> form_fields;  // the arguments the form shows first
  std::int64_t timeout_ms = timeout_ms_default;
  std::int64_t result_bytes_max = result_bytes_default;

  std::string key() const { return queue + "." + name; }
  // What a model is told: {name, description, input_schema}.
  nlohmann::json definition() const;
  // The form a person sees before the call runs.
  nlohmann::json form(const nlohmann::json& arguments) const;
  // As declared (to_value(from_value(x)) keeps every field keel reads).
  nlohmann::json to_value() const;
};

// One queue's tools, as its workers declared them last.
struct queue_tools {
  std::string queue;
  std::string by;          // who declared them (their broker user)
  std::int64_t time_ms = 0;
  std::vector<std::shared_ptr<const declared_tool>> tools;

  nlohmann::json to_value() const;
};

// `{queue, tools: [...]}` from a declare request or from the bucket, checked whole: a problem in
// any tool refuses them all, naming the tool and what is wrong (invalid_argument).
// `result_bytes_cap`: the largest result the broker carries (limits.message_bytes_max).
result<queue_tools> queue_tools_from_value(const nlohmann::json& v, std::int64_t result_bytes_cap);

// Every declared tool by key (<queue>.<name>): what the orchestrators hold.
using declared_tools = std::map<std::string, std::shared_ptr<const declared_tool>>;

// The part of an agent's tool name after the queue: "tickets.lookup" → "lookup".
inline std::string model_name(const std::string& listed) {
  auto dot = listed.find('.');
  return dot == std::string::npos ? listed : listed.substr(dot + 1);
}
inline bool is_declared(const std::string& listed) { return listed.find('.') != std::string::npos; }

} // namespace keel::tools
