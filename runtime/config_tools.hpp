// Reading [agents.<id>.commands.<name>] and [agents.<id>.mcp.<name>]: tables named by the user,
// each checked whole when the config is loaded (config.cpp calls these). docs/TOOLS.md has the keys.
#pragma once

#include "runtime/config.hpp"

#include <toml++/toml.h>

#include <functional>
#include <initializer_list>
#include <map>
#include <vector>
#include <optional>
#include <string>

namespace keel::config::detail {

struct table_problem {
  const toml::node* node;  // where (for its line)
  std::string key;
  std::string text;
};

using path_resolver = std::function<std::string(const std::string&)>;

// Reads the keys of one table named by the user, each checked; the first problem is kept.
struct reader {
  const toml::table& table;
  std::string key;
  std::optional<table_problem> problem;

  const toml::node* get(const char* name) const { return table.get(name); }
  void fail(const toml::node* n, const std::string& name, const std::string& text) {
    if (!problem) problem = table_problem{n ? n : &table, key + (name.empty() ? "" : "." + name), text};
  }

  std::string str(const char* name, std::string def, std::size_t max = 4096) {
    const auto* n = get(name);
    if (!n) return def;
    if (!n->is_string()) {
      fail(n, name, "expected a string");
      return def;
    }
    auto v = *n->value<std::string>();
    if (v.size() > max) fail(n, name, "expected at most " + std::to_string(max) + " characters");
    return v;
  }
  std::int64_t integer(const char* name, std::int64_t def, std::int64_t min, std::int64_t max) {
    const auto* n = get(name);
    if (!n) return def;
    if (!n->is_integer() || *n->value<std::int64_t>() < min || *n->value<std::int64_t>() > max) {
      fail(n, name, "expected an integer from " + std::to_string(min) + " to " + std::to_string(max));
      return def;
    }
    return *n->value<std::int64_t>();
  }
  std::vector<std::string> strings(const char* name, std::size_t max_items) {
    std::vector<std::string> out;
    const auto* n = get(name);
    if (!n) return out;
    const auto* a = n->as_array();
    if (!a || a->size() > max_items) {
      fail(n, name, "expected an array of at most " + std::to_string(max_items) + " strings");
      return out;
    }
    for (const auto& item : *a) {
      if (!item.is_string()) {
        fail(&item, name, "expected an array of strings");
        return {};
      }
      out.push_back(*item.value<std::string>());
    }
    return out;
  }
  std::map<std::string, std::string> string_map(const char* name) {
    std::map<std::string, std::string> out;
    const auto* n = get(name);
    if (!n) return out;
    const auto* t = n->as_table();
    if (!t) {
      fail(n, name, "expected a table of strings");
      return out;
    }
    for (const auto& [k, v] : *t) {
      if (!v.is_string()) {
        fail(&v, name + std::string(".") + std::string(k.str()), "expected a string");
        return {};
      }
      out[std::string(k.str())] = *v.value<std::string>();
    }
    return out;
  }
  std::string approval(const char* name, const toml::node* n, const std::string& v) {
    if (v != "always" && v != "never") fail(n, name, "expected \"always\" (a person approves each call) or \"never\", got \"" + v + "\"");
    return v;
  }
  void only(std::initializer_list<const char*> known, const std::string& docs = "docs/TOOLS.md") {
    for (const auto& [k, v] : table) {
      bool found = false;
      for (const char* name : known) found = found || k.str() == name;
      if (!found) fail(&v, std::string(k.str()), "unknown key (" + docs + " lists every key)");
    }
  }
};


std::optional<table_problem> read_commands(const toml::table& commands, const std::string& key, agent_config& agent);
std::optional<table_problem> read_mcp_servers(const toml::table& servers, const std::string& key, agent_config& agent,
                                              const path_resolver& relative);

// [schedules.<name>] and [webhooks.<name>] (config_triggers.cpp), and the agent each names, once
// all are read.
std::optional<table_problem> read_schedules(const toml::table& schedules, node_config& config);
std::optional<table_problem> read_webhooks(const toml::table& hooks, node_config& config, const path_resolver& relative);
std::optional<table_problem> read_queues(const toml::table& queues, node_config& config);
// [prices."<provider>/<model>"] input, output, cache_read, cache_write (USD per million tokens).
std::optional<table_problem> read_prices(const toml::table& prices, node_config& config);
std::string check_schedules(const node_config& config);

// The model-facing names an agent's tools, commands and MCP servers take: "" or the clash found.
std::string check_tool_names(const node_config& config, const agent_config& agent);

} // namespace keel::config::detail
