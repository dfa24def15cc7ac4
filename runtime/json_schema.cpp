#include "runtime/json_schema.hpp"

#include "runtime/wire.hpp"

#include <re2/re2.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <vector>

namespace keel::schema {

using json = nlohmann::json;

namespace {

constexpr std::size_t schema_bytes_max = 64 << 10;
constexpr int schema_depth_max = 32;
constexpr int check_depth_max = 256;        // a $ref that leads back to itself ends here
constexpr std::size_t check_visits_max = 1'000'000;  // what one check may cost
constexpr std::size_t patterns_max = 64;

enum type_bit : unsigned {
  t_null = 1, t_boolean = 2, t_object = 4, t_array = 8, t_number = 16, t_string = 32, t_integer = 64,
};

struct node {
  std::optional<bool> boolean;  // the schema `true` or `false`
  unsigned types = 0;           // 0: any
  std::optional<std::set<json>> enumeration;  // equal numbers compare equal (1 and 1.0)
  std::optional<json> constant;
  std::map<std::string, int> properties;
  std::vector<std::string> required;
  int additional = -1;
  std::vector<std::pair<std::shared_ptr<const RE2>, int>> pattern_properties;
  int property_names = -1;
  std::optional<std::uint64_t> min_properties, max_properties;
  std::vector<std::pair<std::string, std::vector<std::string>>> dependent_required;
  std::vector<int> prefix_items;
  int items = -1;
  int contains = -1;
  std::optional<std::uint64_t> min_contains, max_contains, min_items, max_items;
  bool unique_items = false;
  std::optional<std::uint64_t> min_length, max_length;
  std::shared_ptr<const RE2> pattern;
  std::string pattern_text;
  std::optional<double> minimum, maximum, exclusive_minimum, exclusive_maximum, multiple_of;
  std::vector<int> all_of, any_of, one_of;
  int negated = -1, if_ = -1, then_ = -1, else_ = -1;
  int ref = -1;
  std::string ref_text;  // until resolved
};

// Keywords that change what a value may be but that keel does not check: a schema with one is
// refused rather than applied in part.
const std::set<std::string> unsupported = {"$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor",
                                           "$anchor", "unevaluatedProperties", "unevaluatedItems",
                                           "dependentSchemas"};

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::binary: return "bytes";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    default: return "a number";
  }
}

bool is_integral(const json& v) {
  if (v.is_number_integer()) return true;
  if (!v.is_number_float()) return false;
  double d = v.get<double>();
  return std::isfinite(d) && std::floor(d) == d;
}

std::uint64_t code_points(const std::string& s) {
  std::uint64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

class compiler {
public:
  explicit compiler(const json& root) : root_(root) {}

  result<std::vector<node>> run() {
    auto top = compile(root_, "", 0);
    if (!top) return top.error();
    // Resolve every $ref now, compiling what a ref names that no keyword reached.
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].ref_text.empty()) continue;
      auto target = resolve(nodes_[i].ref_text);
      if (!target) return target.error();
      nodes_[i].ref = *target;
    }
    // A chain of refs alone that comes back to where it began matches nothing, ever.
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      int at = static_cast<int>(i);
      for (int hops = 0; at >= 0 && nodes_[static_cast<std::size_t>(at)].ref >= 0; ++hops) {
        at = nodes_[static_cast<std::size_t>(at)].ref;
        if (at == static_cast<int>(i) || hops > 64) return bad("", "$ref leads back to itself without end");
      }
    }
    return std::move(nodes_);
  }

private:
  static error bad(const std::string& where, const std::string& what) {
    return make_error(errc::invalid_argument, "schema" + (where.empty() ? std::string() : " at #" + where) + ": " + what);
  }

  result<int> resolve(const std::string& ref) {
    if (ref.empty() || ref[0] != '#')
      return bad("", "$ref " + ref + " is not inside this schema (only #... refs are followed)");
    std::string pointer;
    for (std::size_t i = 1; i < ref.size(); ++i) {  // the fragment, percent-decoded
      if (ref[i] == '%' && i + 2 < ref.size() + 0 && std::isxdigit(static_cast<unsigned char>(ref[i + 1])) &&
          std::isxdigit(static_cast<unsigned char>(ref[i + 2]))) {
        pointer += static_cast<char>(std::stoi(ref.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        pointer += ref[i];
      }
    }
    if (auto known = by_pointer_.find(pointer); known != by_pointer_.end()) return known->second;
    if (!pointer.empty() && pointer[0] != '/') return bad("", "$ref " + ref + " is not a JSON pointer");
    const json* at = nullptr;
    try {
      at = &root_.at(json::json_pointer(pointer));
    } catch (const std::exception&) {
      return bad("", "$ref " + ref + " names nothing in this schema");
    }
    return compile(*at, pointer, 0);
  }

  result<int> compile(const json& s, const std::string& where, int depth) {
    if (depth > schema_depth_max) return bad(where, "nested deeper than " + std::to_string(schema_depth_max));
    if (auto known = by_pointer_.find(where); known != by_pointer_.end()) return known->second;
    int index = static_cast<int>(nodes_.size());
    nodes_.emplace_back();
    by_pointer_[where] = index;
    if (s.is_boolean()) {
      nodes_.back().boolean = s.get<bool>();
      return index;
    }
    if (!s.is_object()) return bad(where, "a schema is an object or a boolean, not " + type_name(s));
    node n;
    for (const auto& [key, v] : s.items()) {
      if (unsupported.count(key)) return bad(where, "keel cannot check '" + key + "'");
      auto r = keyword(n, key, v, where + "/" + escape(key), depth);
      if (!r) return r.error();
    }
    nodes_[static_cast<std::size_t>(index)] = std::move(n);
    return index;
  }

  static std::string escape(const std::string& key) {
    std::string out;
    for (char c : key) {
      if (c == '~') out += "~0";
      else if (c == '/') out += "~1";
      else out += c;
    }
    return out;
  }

  result<int> sub(const json& v, const std::string& where, int depth) { return compile(v, where, depth + 1); }

  result<std::vector<int>> list(const json& v, const std::string& where, int depth, const std::string& key) {
    if (!v.is_array() || v.empty()) return bad(where, "'" + key + "' must be a non-empty array of schemas");
    std::vector<int> out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      auto c = sub(v[i], where + "/" + std::to_string(i), depth);
      if (!c) return c.error();
      out.push_back(*c);
    }
    return out;
  }

  static result<std::uint64_t> count(const json& v, const std::string& where, const std::string& key) {
    if (!is_integral(v) || v.get<double>() < 0 || v.get<double>() > 9007199254740992.0)
      return bad(where, "'" + key + "' must be a non-negative integer up to 2^53");
    return static_cast<std::uint64_t>(v.get<double>());
  }

  static result<double> number(const json& v, const std::string& where, const std::string& key) {
    if (!v.is_number() || !std::isfinite(v.get<double>())) return bad(where, "'" + key + "' must be a finite number");
    return v.get<double>();
  }

  result<std::shared_ptr<const RE2>> regex(const json& v, const std::string& where) {
    if (!v.is_string()) return bad(where, "a pattern must be a string");
    if (++patterns_ > patterns_max) return bad(where, "more than " + std::to_string(patterns_max) + " patterns");
    RE2::Options options;
    options.set_log_errors(false);
    options.set_max_mem(256 << 10);  // a pattern that needs more is refused (a schema holds at most 64 of them)
    auto re = std::make_shared<const RE2>(v.get<std::string>(), options);
    if (!re->ok()) return bad(where, "pattern " + v.get<std::string>() + " does not compile: " + re->error());
    return std::shared_ptr<const RE2>(re);
  }

  result<void> keyword(node& n, const std::string& key, const json& v, const std::string& where, int depth) {
    auto assign = [](auto& field, auto r) -> result<void> {
      if (!r) return r.error();
      field = *r;
      return success();
    };
    if (key == "type") {
      auto one = [&](const json& t) -> result<void> {
        static const std::map<std::string, unsigned> names = {{"null", t_null},     {"boolean", t_boolean},
                                                              {"object", t_object}, {"array", t_array},
                                                              {"number", t_number}, {"string", t_string},
                                                              {"integer", t_integer}};
        auto it = t.is_string() ? names.find(t.get<std::string>()) : names.end();
        if (it == names.end()) return bad(where, "'type' names no JSON type: " + t.dump());
        n.types |= it->second;
        return success();
      };
      if (v.is_array()) {
        if (v.empty()) return bad(where, "'type' must not be an empty array");
        for (const auto& t : v)
          if (auto r = one(t); !r) return r;
        return success();
      }
      return one(v);
    }
    if (key == "enum") {
      if (!v.is_array()) return bad(where, "'enum' must be an array");
      n.enumeration = std::set<json>(v.begin(), v.end());
      return success();
    }
    if (key == "const") {
      n.constant = v;
      return success();
    }
    if (key == "properties" || key == "patternProperties" || key == "$defs" || key == "definitions" ||
        key == "dependentRequired") {
      if (!v.is_object()) return bad(where, "'" + key + "' must be an object");
      for (const auto& [name, s] : v.items()) {
        std::string at = where + "/" + escape(name);
        if (key == "dependentRequired") {
          auto names = strings(s, at, key);
          if (!names) return names.error();
          n.dependent_required.emplace_back(name, std::move(*names));
          continue;
        }
        auto c = sub(s, at, depth);
        if (!c) return c.error();
        if (key == "properties") n.properties[name] = *c;
        if (key == "patternProperties") {
          auto re = regex(json(name), at);
          if (!re) return re.error();
          n.pattern_properties.emplace_back(*re, *c);
        }
      }
      return success();
    }
    if (key == "dependencies") {  // draft 7: arrays only (the schema form is dependentSchemas)
      if (!v.is_object()) return bad(where, "'dependencies' must be an object");
      for (const auto& [name, s] : v.items()) {
        if (!s.is_array()) return bad(where, "keel cannot check 'dependencies' with a schema; use arrays of names");
        auto names = strings(s, where + "/" + escape(name), key);
        if (!names) return names.error();
        n.dependent_required.emplace_back(name, std::move(*names));
      }
      return success();
    }
    if (key == "required") {
      auto names = strings(v, where, key);
      if (!names) return names.error();
      n.required = std::move(*names);
      return success();
    }
    if (key == "additionalProperties") return assign(n.additional, sub(v, where, depth));
    if (key == "propertyNames") return assign(n.property_names, sub(v, where, depth));
    if (key == "minProperties") return assign(n.min_properties, count(v, where, key));
    if (key == "maxProperties") return assign(n.max_properties, count(v, where, key));
    if (key == "items" && v.is_array()) return assign(n.prefix_items, list(v, where, depth, key));  // draft 7 tuples
    if (key == "items" || key == "additionalItems") {
      // additionalItems (draft 7) is items after the tuple, as items is in 2020-12.
      if (key == "additionalItems" && n.items >= 0) return success();
      return assign(n.items, sub(v, where, depth));
    }
    if (key == "prefixItems") return assign(n.prefix_items, list(v, where, depth, key));
    if (key == "contains") return assign(n.contains, sub(v, where, depth));
    if (key == "minContains") return assign(n.min_contains, count(v, where, key));
    if (key == "maxContains") return assign(n.max_contains, count(v, where, key));
    if (key == "minItems") return assign(n.min_items, count(v, where, key));
    if (key == "maxItems") return assign(n.max_items, count(v, where, key));
    if (key == "uniqueItems") {
      if (!v.is_boolean()) return bad(where, "'uniqueItems' must be a boolean");
      n.unique_items = v.get<bool>();
      return success();
    }
    if (key == "minLength") return assign(n.min_length, count(v, where, key));
    if (key == "maxLength") return assign(n.max_length, count(v, where, key));
    if (key == "pattern") {
      auto re = regex(v, where);
      if (!re) return re.error();
      n.pattern = *re;
      n.pattern_text = v.get<std::string>();
      return success();
    }
    if (key == "minimum") return assign(n.minimum, number(v, where, key));
    if (key == "maximum") return assign(n.maximum, number(v, where, key));
    if (key == "exclusiveMinimum" || key == "exclusiveMaximum") {
      if (v.is_boolean()) return bad(where, "'" + key + "' as a boolean is draft 4; give the bound as a number");
      return assign(key == "exclusiveMinimum" ? n.exclusive_minimum : n.exclusive_maximum, number(v, where, key));
    }
    if (key == "multipleOf") {
      auto m = number(v, where, key);
      if (!m) return m.error();
      if (!(*m > 0)) return bad(where, "'multipleOf' must be greater than 0");
      n.multiple_of = *m;
      return success();
    }
    if (key == "allOf") return assign(n.all_of, list(v, where, depth, key));
    if (key == "anyOf") return assign(n.any_of, list(v, where, depth, key));
    if (key == "oneOf") return assign(n.one_of, list(v, where, depth, key));
    if (key == "not") return assign(n.negated, sub(v, where, depth));
    if (key == "if") return assign(n.if_, sub(v, where, depth));
    if (key == "then") return assign(n.then_, sub(v, where, depth));
    if (key == "else") return assign(n.else_, sub(v, where, depth));
    if (key == "$ref") {
      if (!v.is_string()) return bad(where, "'$ref' must be a string");
      n.ref_text = v.get<std::string>();
      return success();
    }
    return success();  // an annotation (title, description, default, format, ...) or unknown: ignored
  }

  static result<std::vector<std::string>> strings(const json& v, const std::string& where, const std::string& key) {
    if (!v.is_array()) return bad(where, "'" + key + "' must be an array of strings");
    std::vector<std::string> out;
    for (const auto& s : v) {
      if (!s.is_string()) return bad(where, "'" + key + "' must be an array of strings");
      out.push_back(s.get<std::string>());
    }
    return out;
  }

  const json& root_;
  std::size_t patterns_ = 0;
  std::vector<node> nodes_;
  std::map<std::string, int> by_pointer_;
};

} // namespace

struct compiled {
  json source;
  std::vector<node> nodes;
};

namespace {

class checker {
public:
  explicit checker(const compiled& c) : c_(c) {}

  // "" when it conforms.
  std::string check(int index, const json& v, const std::string& where, int depth) {
    if (++visits_ > check_visits_max) {
      exhausted_ = true;
      return where + ": too costly to check against its schema";
    }
    if (depth > check_depth_max) return where + ": the schema refers to itself deeper than " + std::to_string(check_depth_max);
    const node& n = c_.nodes[static_cast<std::size_t>(index)];
    if (n.boolean) return *n.boolean ? "" : where + ": no value is allowed here";
    if (n.ref >= 0)
      if (auto p = check(n.ref, v, where, depth + 1); !p.empty()) return p;
    if (n.types != 0 && !type_matches(n.types, v)) return where + ": expected " + expected(n.types) + ", got " + type_name(v);
    if (n.constant && !(*n.constant == v)) return where + ": must be " + shown(*n.constant);
    if (n.enumeration && n.enumeration->count(v) == 0) {
      if (n.enumeration->size() > 20) return where + ": is none of the " + std::to_string(n.enumeration->size()) + " values allowed";
      return where + ": must be one of " + shown(json(std::vector<json>(n.enumeration->begin(), n.enumeration->end())));
    }
    if (v.is_object())
      if (auto p = object(n, v, where, depth); !p.empty()) return p;
    if (v.is_array())
      if (auto p = array(n, v, where, depth); !p.empty()) return p;
    if (v.is_string())
      if (auto p = string(n, v, where); !p.empty()) return p;
    if (v.is_number())
      if (auto p = number(n, v, where); !p.empty()) return p;
    return combinators(n, v, where, depth);
  }

private:
  static bool type_matches(unsigned types, const json& v) {
    switch (v.type()) {
      case json::value_t::null: return types & t_null;
      case json::value_t::boolean: return types & t_boolean;
      case json::value_t::object: return types & t_object;
      case json::value_t::array: return types & t_array;
      case json::value_t::string: return types & t_string;
      case json::value_t::number_integer:
      case json::value_t::number_unsigned: return types & (t_number | t_integer);
      case json::value_t::number_float: return (types & t_number) || ((types & t_integer) && is_integral(v));
      default: return false;
    }
  }

  static std::string expected(unsigned types) {
    static const std::pair<unsigned, const char*> names[] = {
      {t_null, "null"},        {t_boolean, "a boolean"}, {t_object, "an object"}, {t_array, "an array"},
      {t_number, "a number"}, {t_string, "a string"},   {t_integer, "an integer"}};
    std::string out;
    for (const auto& [bit, name] : names)
      if (types & bit) out += (out.empty() ? "" : " or ") + std::string(name);
    return out;
  }

  static std::string shown(const json& v) {
    auto text = v.dump(-1, ' ', false, json::error_handler_t::replace);
    return text.size() > 200 ? text.substr(0, 200) + "..." : text;
  }

  std::string object(const node& n, const json& v, const std::string& where, int depth) {
    for (const auto& name : n.required)
      if (!v.contains(name)) return where + ": lacks the required field '" + name + "'";
    if (n.min_properties && v.size() < *n.min_properties)
      return where + ": has " + std::to_string(v.size()) + " fields, at least " + std::to_string(*n.min_properties) + " needed";
    if (n.max_properties && v.size() > *n.max_properties)
      return where + ": has " + std::to_string(v.size()) + " fields, at most " + std::to_string(*n.max_properties) + " allowed";
    for (const auto& [name, needs] : n.dependent_required)
      if (v.contains(name))
        for (const auto& other : needs)
          if (!v.contains(other)) return where + ": has '" + name + "', which needs '" + other + "' too";
    for (const auto& [key, field] : v.items()) {
      std::string at = where + "." + key;
      bool matched = false;
      if (auto named = n.properties.find(key); named != n.properties.end()) {
        matched = true;
        if (auto p = check(named->second, field, at, depth + 1); !p.empty()) return p;
      }
      visits_ += n.pattern_properties.size();  // each pattern tried on each key is work too
      for (const auto& [re, index] : n.pattern_properties)
        if (RE2::PartialMatch(key, *re)) {
          matched = true;
          if (auto p = check(index, field, at, depth + 1); !p.empty()) return p;
        }
      if (!matched && n.additional >= 0) {
        const node& extra = c_.nodes[static_cast<std::size_t>(n.additional)];
        if (extra.boolean && !*extra.boolean) return where + ": has the field '" + key + "', which is not allowed";
        if (auto p = check(n.additional, field, at, depth + 1); !p.empty()) return p;
      }
      if (n.property_names >= 0)
        if (auto p = check(n.property_names, json(key), where + " (the name '" + key + "')", depth + 1); !p.empty()) return p;
    }
    return "";
  }

  std::string array(const node& n, const json& v, const std::string& where, int depth) {
    if (n.min_items && v.size() < *n.min_items)
      return where + ": has " + std::to_string(v.size()) + " items, at least " + std::to_string(*n.min_items) + " needed";
    if (n.max_items && v.size() > *n.max_items)
      return where + ": has " + std::to_string(v.size()) + " items, at most " + std::to_string(*n.max_items) + " allowed";
    for (std::size_t i = 0; i < v.size(); ++i) {
      int index = i < n.prefix_items.size() ? n.prefix_items[i] : n.items;
      if (index < 0) continue;
      if (auto p = check(index, v[i], where + "[" + std::to_string(i) + "]", depth + 1); !p.empty()) return p;
    }
    if (n.contains >= 0) {
      std::uint64_t found = 0;
      for (const auto& item : v)
        if (check(n.contains, item, where, depth + 1).empty()) ++found;
      std::uint64_t least = n.min_contains.value_or(1);
      if (found < least) return where + ": has " + std::to_string(found) + " items of the kind 'contains' asks for, at least " + std::to_string(least) + " needed";
      if (n.max_contains && found > *n.max_contains)
        return where + ": has " + std::to_string(found) + " items of the kind 'contains' asks for, at most " + std::to_string(*n.max_contains) + " allowed";
    }
    if (n.unique_items) {
      std::set<json> seen;
      for (std::size_t i = 0; i < v.size(); ++i)
        if (!seen.insert(v[i]).second) return where + "[" + std::to_string(i) + "]: repeats an earlier item";
    }
    return "";
  }

  static std::string string(const node& n, const json& v, const std::string& where) {
    const auto& s = v.get_ref<const std::string&>();
    auto length = n.min_length || n.max_length ? code_points(s) : 0;
    if (n.min_length && length < *n.min_length)
      return where + ": is " + std::to_string(length) + " characters long, at least " + std::to_string(*n.min_length) + " needed";
    if (n.max_length && length > *n.max_length)
      return where + ": is " + std::to_string(length) + " characters long, at most " + std::to_string(*n.max_length) + " allowed";
    if (n.pattern && !RE2::PartialMatch(s, *n.pattern)) return where + ": does not match the pattern " + n.pattern_text;
    return "";
  }

  static std::string number(const node& n, const json& v, const std::string& where) {
    long double x = v.is_number_unsigned() ? static_cast<long double>(v.get<std::uint64_t>())
                    : v.is_number_integer() ? static_cast<long double>(v.get<std::int64_t>())
                                            : static_cast<long double>(v.get<double>());
    if (!std::isfinite(static_cast<double>(x))) return where + ": is not a finite number";
    auto text = [](double d) {
      if (std::floor(d) == d && std::fabs(d) < 1e15) return std::to_string(static_cast<long long>(d));
      return json(d).dump();
    };
    if (n.minimum && x < *n.minimum) return where + ": must be at least " + text(*n.minimum);
    if (n.maximum && x > *n.maximum) return where + ": must be at most " + text(*n.maximum);
    if (n.exclusive_minimum && x <= *n.exclusive_minimum) return where + ": must be more than " + text(*n.exclusive_minimum);
    if (n.exclusive_maximum && x >= *n.exclusive_maximum) return where + ": must be less than " + text(*n.exclusive_maximum);
    if (n.multiple_of) {
      long double q = x / *n.multiple_of;
      if (!std::isfinite(static_cast<double>(q)) || std::fabs(q) > 9007199254740992.0L)
        return where + ": cannot be checked as a multiple of " + text(*n.multiple_of);
      if (std::fabs(q - std::nearbyint(q)) > 1e-9L * std::max<long double>(1, std::fabs(q)))
        return where + ": must be a multiple of " + text(*n.multiple_of);
    }
    return "";
  }

  std::string combinators(const node& n, const json& v, const std::string& where, int depth) {
    for (int index : n.all_of)
      if (auto p = check(index, v, where, depth + 1); !p.empty()) return p;
    if (!n.any_of.empty()) {
      std::string first;
      bool any = false;
      for (int index : n.any_of) {
        auto p = check(index, v, where, depth + 1);
        if (p.empty()) {
          any = true;
          break;
        }
        if (first.empty()) first = p;
      }
      if (!any) return where + ": matches none of its " + std::to_string(n.any_of.size()) + " choices (the first: " + first + ")";
    }
    if (!n.one_of.empty()) {
      std::size_t matched = 0;
      std::string first;
      for (int index : n.one_of) {
        auto p = check(index, v, where, depth + 1);
        if (p.empty()) ++matched;
        else if (first.empty()) first = p;
      }
      if (matched == 0) return where + ": matches none of its " + std::to_string(n.one_of.size()) + " choices (the first: " + first + ")";
      if (matched > 1) return where + ": matches " + std::to_string(matched) + " of its choices, where exactly one must match";
    }
    if (n.negated >= 0 && check(n.negated, v, where, depth + 1).empty()) return where + ": matches what 'not' forbids";
    if (n.if_ >= 0) {
      bool holds = check(n.if_, v, where, depth + 1).empty();
      int then = holds ? n.then_ : n.else_;
      if (then >= 0)
        if (auto p = check(then, v, where, depth + 1); !p.empty()) return p;
    }
    return "";
  }

public:
  bool exhausted() const { return exhausted_; }

private:
  const compiled& c_;
  std::size_t visits_ = 0;
  bool exhausted_ = false;  // a branch that ran out is no answer: the whole check is
};

} // namespace

json_schema::json_schema() {
  auto c = std::make_shared<compiled>();
  c->source = true;
  c->nodes.emplace_back();
  c->nodes.back().boolean = true;
  compiled_ = std::move(c);
}

result<json_schema> json_schema::compile(const json& schema) {
  if (wire::pack(schema).size() > schema_bytes_max)
    return make_error(errc::invalid_argument, "schema: larger than " + std::to_string(schema_bytes_max >> 10) + " KiB");
  auto nodes = compiler(schema).run();
  if (!nodes) return nodes.error();
  auto c = std::make_shared<compiled>();
  c->source = schema;
  c->nodes = std::move(*nodes);
  return json_schema(std::move(c));
}

std::string json_schema::problem(const json& v, const std::string& where) const {
  checker c(*compiled_);
  auto p = c.check(0, v, where, 0);
  if (c.exhausted())
    return where + ": too costly to check against its schema (more than " + std::to_string(check_visits_max) + " steps)";
  return p;
}

const json& json_schema::source() const { return compiled_->source; }

} // namespace keel::schema
