// JSON Schema, checked: what a tool declares of its arguments and its result (tool workers, MCP
// servers, command tools), compiled once when declared and applied to every call. The keywords
// keel checks are listed in docs/PROTOCOL.md ("JSON Schema"); a schema that uses one keel cannot
// check (a remote $ref, unevaluatedProperties, ...) is refused when declared, never half-applied.
// Patterns are RE2 (linear time): a hostile pattern cannot stall a node.
#pragma once

#include "runtime/result.hpp"

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>

namespace keel::schema {

struct compiled;

class json_schema {
public:
  json_schema();  // `true`: every value conforms
  // Refused (invalid_argument, naming where): not a schema (an object or a boolean), a keyword of
  // the wrong type, a keyword keel cannot check, a $ref that does not resolve inside the schema,
  // a pattern RE2 cannot compile, nested deeper than 32, or larger than 64 KiB packed.
  static result<json_schema> compile(const nlohmann::json& schema);

  // "" when `v` conforms; else the first problem found, naming where it is below `where`
  // ("arguments.items[2].name: expected a string, got a number").
  std::string problem(const nlohmann::json& v, const std::string& where = "value") const;

  const nlohmann::json& source() const;

private:
  explicit json_schema(std::shared_ptr<const compiled> c) : compiled_(std::move(c)) {}
  std::shared_ptr<const compiled> compiled_;
};

} // namespace keel::schema
