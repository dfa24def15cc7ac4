// The typed keys of the config file, as config.cpp and the readers beside it declare them: an
// entry applies one TOML value to the node's config or to the agent being read, and answers what
// was expected when the value is refused.
#pragma once

#include "runtime/config.hpp"

#include <toml++/toml.h>

#include <functional>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

namespace keel::config::detail {

// An entry applies one TOML value to the config (or the agent being read); it returns an empty
// string when the value is accepted, otherwise what was expected.
using apply_fn = std::function<std::string(node_config&, agent_config*, const toml::node&)>;

struct entry {
  key_info info;
  apply_fn apply;
};

inline std::string type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date or time";
  }
}

template <class Field>
using field_ref = std::function<Field&(node_config&, agent_config*)>;

using string_check = std::function<std::string(const std::string&)>;

inline entry string_key(std::string path, std::string def, std::string help, field_ref<std::string> field,
                 string_check check = {}) {
  return {{std::move(path), "string", "\"" + def + "\"", std::move(help)},
          [field, check](node_config& c, agent_config* a, const toml::node& n) -> std::string {
            auto v = n.value<std::string>();
            if (!n.is_string() || !v) return "a string, got " + type_name(n);
            if (check) {
              if (auto problem = check(*v); !problem.empty()) return problem;
            }
            field(c, a) = *v;
            return {};
          }};
}

inline entry integer_key(std::string path, std::int64_t def, std::int64_t min, std::int64_t max,
                  std::string help, field_ref<std::int64_t> field) {
  return {{std::move(path), "integer", std::to_string(def), std::move(help)},
          [field, min, max](node_config& c, agent_config* a, const toml::node& n) -> std::string {
            if (!n.is_integer()) return "an integer, got " + type_name(n);
            auto v = *n.value<std::int64_t>();
            if (v < min || v > max)
              return "an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                     ", got " + std::to_string(v);
            field(c, a) = v;
            return {};
          }};
}

inline entry float_key(std::string path, double def, double min, double max, std::string help,
                field_ref<double> field) {
  std::ostringstream def_text;
  def_text << def;
  if (def_text.str().find('.') == std::string::npos) def_text << ".0";
  return {{std::move(path), "float", def_text.str(), std::move(help)},
          [field, min, max](node_config& c, agent_config* a, const toml::node& n) -> std::string {
            if (!n.is_floating_point() && !n.is_integer()) return "a number, got " + type_name(n);
            double v = n.is_integer() ? static_cast<double>(*n.value<std::int64_t>()) : *n.value<double>();
            if (v < min || v > max) {
              std::ostringstream range;
              range << "a number from " << min << " to " << max;
              return range.str();
            }
            field(c, a) = v;
            return {};
          }};
}

inline entry boolean_key(std::string path, bool def, std::string help, field_ref<bool> field) {
  return {{std::move(path), "boolean", def ? "true" : "false", std::move(help)},
          [field](node_config& c, agent_config* a, const toml::node& n) -> std::string {
            if (!n.is_boolean()) return "true or false, got " + type_name(n);
            field(c, a) = *n.value<bool>();
            return {};
          }};
}

inline entry string_array_key(std::string path, std::vector<std::string> def, std::string help,
                       field_ref<std::vector<std::string>> field, string_check check = {}) {
  std::string def_text = "[";
  for (std::size_t i = 0; i < def.size(); ++i)
    def_text += (i ? ", \"" : "\"") + def[i] + "\"";
  def_text += "]";
  return {{std::move(path), "array of strings", def_text, std::move(help)},
          [field, check](node_config& c, agent_config* a, const toml::node& n) -> std::string {
            const auto* array = n.as_array();
            if (!array) return "an array of strings, got " + type_name(n);
            std::vector<std::string> out;
            for (const auto& element : *array) {
              auto v = element.value<std::string>();
              if (!element.is_string() || !v)
                return "an array of strings, got an element that is " + type_name(element);
              if (check) {
                if (auto problem = check(*v); !problem.empty()) return problem;
              }
              out.push_back(*v);
            }
            field(c, a) = std::move(out);
            return {};
          }};
}

inline std::string one_of(const std::string& value, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed)
    if (value == a) return {};
  std::string text = "one of";
  for (const char* a : allowed) text += std::string(" \"") + a + "\"";
  return text + ", got \"" + value + "\"";
}

// [agents.<id>] keys of workflows (config_workflows.cpp).
void add_workflow_keys(std::vector<entry>& e);

} // namespace keel::config::detail
