// Reading [agents.<id>.commands.<name>] and [agents.<id>.mcp.<name>]: tables named by the user,
// each checked whole when the config is loaded (config.cpp calls these). docs/TOOLS.md has the keys.
#pragma once

#include "runtime/config.hpp"

#include <toml++/toml.h>

#include <functional>
#include <optional>
#include <string>

namespace keel::config::detail {

struct table_problem {
  const toml::node* node;  // where (for its line)
  std::string key;
  std::string text;
};

using path_resolver = std::function<std::string(const std::string&)>;

std::optional<table_problem> read_commands(const toml::table& commands, const std::string& key, agent_config& agent);
std::optional<table_problem> read_mcp_servers(const toml::table& servers, const std::string& key, agent_config& agent,
                                              const path_resolver& relative);

// The model-facing names an agent's tools, commands and MCP servers take: "" or the clash found.
std::string check_tool_names(const node_config& config, const agent_config& agent);

} // namespace keel::config::detail
