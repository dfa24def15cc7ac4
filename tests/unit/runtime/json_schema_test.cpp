#include "runtime/json_schema.hpp"
#include "runtime/tool_declaration.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

using keel::schema::json_schema;
using json = nlohmann::json;

namespace {

json_schema compiled(const char* text) {
  auto s = json_schema::compile(json::parse(text));
  INFO(text << ": " << (s ? "" : s.error().message));
  REQUIRE(s.ok());
  return *s;
}

std::string problem(const char* schema, const char* value) {
  return compiled(schema).problem(json::parse(value), "arguments");
}

std::string refused(const char* schema) {
  auto s = json_schema::compile(json::parse(schema));
  REQUIRE_FALSE(s.ok());
  return s.error().message;
}

} // namespace

TEST_CASE("json schema: each keyword keel checks accepts what conforms and names where what does not", "[runtime]") {
  const char* ticket = R"({"type": "object", "properties": {
      "id": {"type": "string", "pattern": "^T-[0-9]+$", "maxLength": 12},
      "priority": {"type": "integer", "minimum": 1, "maximum": 5},
      "tags": {"type": "array", "items": {"type": "string", "enum": ["bug", "ops"]}, "uniqueItems": true, "maxItems": 3},
      "ratio": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.25}},
    "required": ["id"], "additionalProperties": false})";
  CHECK(problem(ticket, R"({"id": "T-12", "priority": 3, "tags": ["bug"], "ratio": 0.75})").empty());
  CHECK(problem(ticket, R"({"id": "T-12", "priority": 3.0})").empty());  // an integral float is an integer
  CHECK(problem(ticket, R"({})") == "arguments: lacks the required field 'id'");
  CHECK(problem(ticket, R"({"id": 12})") == "arguments.id: expected a string, got an integer");
  CHECK(problem(ticket, R"({"id": "X-1"})") == "arguments.id: does not match the pattern ^T-[0-9]+$");
  CHECK(problem(ticket, R"({"id": "T-1234567890123"})") == "arguments.id: is 15 characters long, at most 12 allowed");
  CHECK(problem(ticket, R"({"id": "T-1", "priority": 9})") == "arguments.priority: must be at most 5");
  CHECK(problem(ticket, R"({"id": "T-1", "priority": 2.5})") == "arguments.priority: expected an integer, got a number");
  CHECK(problem(ticket, R"({"id": "T-1", "tags": ["bug", "web"]})") == R"(arguments.tags[1]: must be one of ["bug","ops"])");
  CHECK(problem(ticket, R"({"id": "T-1", "tags": ["bug", "bug"]})") == "arguments.tags[1]: repeats an earlier item");
  CHECK(problem(ticket, R"({"id": "T-1", "tags": ["bug", "ops", "bug", "ops"]})") == "arguments.tags: has 4 items, at most 3 allowed");
  CHECK(problem(ticket, R"({"id": "T-1", "ratio": 0})") == "arguments.ratio: must be more than 0");
  CHECK(problem(ticket, R"({"id": "T-1", "ratio": 0.3})") == "arguments.ratio: must be a multiple of 0.25");
  CHECK(problem(ticket, R"({"id": "T-1", "owner": "me"})") == "arguments: has the field 'owner', which is not allowed");
  CHECK(problem(ticket, R"([1])") == "arguments: expected an object, got an array");
}

TEST_CASE("json schema: combinators, refs, tuples and conditionals", "[runtime]") {
  const char* shapes = R"({"$defs": {"point": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}], "items": false}},
    "type": "object", "properties": {
      "at": {"$ref": "#/$defs/point"},
      "kind": {"oneOf": [{"const": "circle"}, {"const": "square"}]},
      "size": {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 2}]},
      "not_zero": {"not": {"const": 0}}},
    "if": {"properties": {"kind": {"const": "circle"}}}, "then": {"required": ["size"]}})";
  CHECK(problem(shapes, R"({"at": [1, 2.5], "kind": "square"})").empty());
  CHECK(problem(shapes, R"({"at": [1, 2, 3]})") == "arguments.at[2]: no value is allowed here");
  CHECK(problem(shapes, R"({"at": ["x", 2]})") == "arguments.at[0]: expected a number, got a string");
  CHECK(problem(shapes, R"({"kind": "circle"})") == "arguments: lacks the required field 'size'");
  CHECK(problem(shapes, R"({"kind": "triangle"})").find("arguments.kind: matches none of its 2 choices") == 0);
  CHECK(problem(shapes, R"({"size": "x"})").find("arguments.size: matches none of its 2 choices (the first: arguments.size: expected an integer") == 0);
  CHECK(problem(shapes, R"({"not_zero": 0})") == "arguments.not_zero: matches what 'not' forbids");
  // A recursive schema (a tree) checks to any depth the message allows.
  const char* tree = R"({"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}, "required": ["children"]})";
  CHECK(problem(tree, R"({"children": [{"children": []}, {"children": [{"children": []}]}]})").empty());
  CHECK(problem(tree, R"({"children": [{"children": [{}]}]})") == "arguments.children[0].children[0]: lacks the required field 'children'");
  // Draft 7's forms: definitions, items as a tuple with additionalItems, dependencies with names.
  const char* draft7 = R"({"definitions": {"n": {"type": "integer"}}, "type": "object", "properties": {
      "pair": {"type": "array", "items": [{"$ref": "#/definitions/n"}], "additionalItems": {"type": "string"}}},
    "dependencies": {"a": ["b"]}})";
  CHECK(problem(draft7, R"({"pair": [1, "x", "y"]})").empty());
  CHECK(problem(draft7, R"({"pair": [1, 2]})") == "arguments.pair[1]: expected a string, got an integer");
  CHECK(problem(draft7, R"({"a": 1})") == "arguments: has 'a', which needs 'b' too");
}

TEST_CASE("json schema: a schema keel cannot check whole is refused when declared, naming why", "[runtime]") {
  CHECK(refused(R"({"type": "object", "unevaluatedProperties": false})").find("keel cannot check 'unevaluatedProperties'") != std::string::npos);
  CHECK(refused(R"({"$ref": "https://example.com/schema.json"})").find("is not inside this schema") != std::string::npos);
  CHECK(refused(R"({"$ref": "#/$defs/missing"})").find("names nothing in this schema") != std::string::npos);
  CHECK(refused(R"({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})").find("leads back to itself") != std::string::npos);
  CHECK(refused(R"({"type": "strng"})").find("'type' names no JSON type") != std::string::npos);
  CHECK(refused(R"({"required": "id"})").find("'required' must be an array of strings") != std::string::npos);
  CHECK(refused(R"({"pattern": "(unclosed"})").find("does not compile") != std::string::npos);
  CHECK(refused(R"({"minimum": "1"})").find("'minimum' must be a finite number") != std::string::npos);
  CHECK(refused(R"({"maxLength": 1e300})").find("up to 2^53") != std::string::npos);
  json many_patterns{{"type", "object"}, {"patternProperties", json::object()}};
  for (int i = 0; i < 65; ++i) many_patterns["patternProperties"]["^p" + std::to_string(i) + "$"] = true;
  CHECK(json_schema::compile(many_patterns).error().message.find("more than 64 patterns") != std::string::npos);
  // A short pattern that compiles to a large program is refused, not given the memory.
  auto huge = json_schema::compile(json{{"pattern", "\\pL{1000}\\pL{1000}\\pL{1000}"}});
  REQUIRE_FALSE(huge.ok());
  CHECK(huge.error().message.find("does not compile") != std::string::npos);
  CHECK(refused(R"({"exclusiveMinimum": true})").find("draft 4") != std::string::npos);
  CHECK(refused(R"({"multipleOf": 0})").find("greater than 0") != std::string::npos);
  CHECK(refused(R"(42)").find("a schema is an object or a boolean") != std::string::npos);
  // Nested past 32, and larger than 64 KiB.
  json deep = json::object();
  for (int i = 0; i < 40; ++i) deep = json{{"items", deep}};
  CHECK(json_schema::compile(deep).error().message.find("nested deeper than 32") != std::string::npos);
  json wide{{"type", "object"}, {"properties", json::object()}};
  for (int i = 0; i < 3000; ++i) wide["properties"]["field_" + std::to_string(i)] = json{{"type", "string"}, {"description", "a field of some length"}};
  CHECK(json_schema::compile(wide).error().message.find("larger than 64 KiB") != std::string::npos);
}

TEST_CASE("json schema: numbers that are not finite, and bounds that cannot be checked, never pass", "[runtime]") {
  auto bounded = compiled(R"({"type": "number", "minimum": 0, "maximum": 10})");
  CHECK(bounded.problem(json(std::nan("")), "v") == "v: is not a finite number");
  CHECK(bounded.problem(json(std::numeric_limits<double>::infinity()), "v") == "v: is not a finite number");
  CHECK(compiled(R"({"multipleOf": 1e-300})").problem(json(1e10), "v").find("cannot be checked as a multiple") != std::string::npos);
  // A large enum is named by its size, not listed.
  json big = json::array();
  for (int i = 0; i < 1000; ++i) big.push_back(i);
  auto e = json_schema::compile(json{{"enum", big}});
  REQUIRE(e.ok());
  CHECK(e->problem(json(5000), "v") == "v: is none of the 1000 values allowed");
  CHECK(e->problem(json(999.0), "v").empty());  // 999.0 is 999
}

TEST_CASE("json schema: hostile values and patterns cost bounded time", "[runtime]") {
  // A pattern with nested repetition, which backtracking engines take exponential time on: RE2 is linear.
  auto s = compiled(R"({"type": "string", "pattern": "^(a+)+$"})");
  CHECK(s.problem(json(std::string(100'000, 'a') + "b"), "v") == "v: does not match the pattern ^(a+)+$");
  // 100,000 items unique by value, in n log n.
  json many = json::array();
  for (int i = 0; i < 100'000; ++i) many.push_back(i);
  CHECK(compiled(R"({"type": "array", "uniqueItems": true})").problem(many, "v").empty());
  // anyOf of anyOf nested deep over a large array: the check gives up with a reason instead of running on.
  json nested = json{{"type", "integer"}};
  for (int i = 0; i < 20; ++i) nested = json{{"anyOf", json::array({json{{"type", "string"}}, nested})}};
  auto costly = json_schema::compile(json{{"type", "array"}, {"items", nested}});
  REQUIRE(costly.ok());
  json values(100'000, json(1));
  auto p = costly->problem(values, "v");
  CHECK(p == "v: too costly to check against its schema (more than 1000000 steps)");
}

TEST_CASE("tool declarations: a queue's tools are checked whole, and one bad tool refuses them all, named", "[runtime]") {
  auto good = json::parse(R"({"queue": "tickets", "tools": [
      {"name": "lookup_ticket", "description": "Find a ticket.", "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
       "output_schema": {"type": "object"}, "approval": "never", "form": {"title": "Look up", "show": ["id"]}, "timeout_ms": 5000}]})");
  auto q = keel::tools::queue_tools_from_value(good, 1 << 20);
  REQUIRE(q.ok());
  REQUIRE(q->tools.size() == 1);
  const auto& t = *q->tools[0];
  CHECK(t.key() == "tickets.lookup_ticket");
  CHECK_FALSE(t.approval);
  CHECK(t.timeout_ms == 5000);
  CHECK(t.result_bytes_max == 256 << 10);
  CHECK(t.definition() == json::parse(R"({"name": "lookup_ticket", "description": "Find a ticket.", "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}})"));
  auto form = t.form(json{{"id", "T-1"}, {"note", "x"}});
  CHECK(form["title"] == "Look up");
  CHECK(form["shown"] == json{{"id", "T-1"}});
  // Read back from what is stored: the same tool.
  auto again = keel::tools::queue_tools_from_value(q->to_value(), 1 << 20);
  REQUIRE(again.ok());
  CHECK(again->tools[0]->to_value() == t.to_value());

  auto bad = [](const char* text) {
    auto r = keel::tools::queue_tools_from_value(json::parse(text), 1 << 20);
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  CHECK(bad(R"({"queue": "a b", "tools": []})").find("queue must be") != std::string::npos);
  CHECK(bad(R"({"queue": "q", "tools": [{"name": "x.y", "input_schema": {"type": "object"}}]})").find("tools[0]: name must be") != std::string::npos);
  CHECK(bad(R"({"queue": "q", "tools": [{"name": "x"}]})").find("tool x: input_schema is required") != std::string::npos);
  CHECK(bad(R"({"queue": "q", "tools": [{"name": "x", "input_schema": {"type": "string"}}]})").find("must be an object schema") != std::string::npos);
  CHECK(bad(R"({"queue": "q", "tools": [{"name": "x", "input_schema": {"type": "object", "properties": {"a": {"$ref": "http://x"}}}}]})").find("tool x: input_schema: schema") != std::string::npos);
  CHECK(bad(R"({"queue": "q", "tools": [{"name": "x", "input_schema": {"type": "object"}, "approval": "sometimes"}]})").find("approval must be") != std::string::npos);
  CHECK(bad(R"({"queue": "q", "tools": [{"name": "x", "input_schema": {"type": "object"}, "timeout_ms": 10}]})").find("timeout_ms must be an integer from 1000") != std::string::npos);
  CHECK(bad(R"({"queue": "q", "tools": [{"name": "x", "input_schema": {"type": "object"}, "result_bytes_max": 99999999}]})").find("result_bytes_max must be") != std::string::npos);
  CHECK(bad(R"({"queue": "q", "tools": [{"name": "x", "input_schema": {"type": "object"}}, {"name": "x", "input_schema": {"type": "object"}}]})").find("declared twice") != std::string::npos);
  // A tool declared with no approval given is approved by a person, call by call.
  auto plain = keel::tools::queue_tools_from_value(json::parse(R"({"queue": "q", "tools": [{"name": "x", "input_schema": {"type": "object"}}]})"), 1 << 20);
  REQUIRE(plain.ok());
  CHECK(plain->tools[0]->approval);
}

TEST_CASE("tool declarations: a form shows large arguments cut, with their size, never inside a character", "[runtime]") {
  auto q = keel::tools::queue_tools_from_value(json::parse(R"({"queue": "q", "tools": [
      {"name": "put", "input_schema": {"type": "object"}, "form": {"show": ["body", "name"]}}]})"), 1 << 20);
  REQUIRE(q.ok());
  std::string body;
  while (body.size() < 40'000) body += "é";  // two bytes each
  auto form = q->tools[0]->form(json{{"body", body}, {"name", "n"}});
  CHECK(form["shown"]["name"] == "n");
  CHECK(form["shown"]["body"]["truncated"] == true);
  CHECK(form["shown"]["body"]["bytes"].get<std::size_t>() > 40'000);
  CHECK(form["arguments"]["truncated"] == true);
  auto start = form["shown"]["body"]["start"].get<std::string>();
  CHECK(start.size() % 2 == 1);  // the opening quote, then whole characters
  CHECK(json(start).dump().size() > 0);  // valid UTF-8: dumps without throwing
}
