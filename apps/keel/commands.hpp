// The `keel` subcommands. Each registers its options on the CLI11 app and runs when chosen.
#pragma once

#include "apps/keel/context.hpp"

#include <cstdint>
#include <memory>

namespace CLI { class App; }
namespace keel::broker { class connection; }

namespace keel::cli {

// Flags every client command shares: --nats, --prefix, --namespace.
struct client_flags {
  std::string nats_url;
  std::string prefix;
  std::string ns;
  std::string credentials_file;
  std::int64_t timeout_ms = 5000;
  // Resolves flags, KEEL_NATS_URL and the context file into one context.
  result<context> resolve() const;
};

// A NATS connection for one command, named after it, that does not retry a server that is down.
result<std::shared_ptr<broker::connection>> connect_command(const context& c, const std::string& command);

void add_client_flags(CLI::App& command, client_flags& flags);

void add_agents_command(CLI::App& app, int& exit_code);
void add_tools_command(CLI::App& app, int& exit_code);
void add_dev_command(CLI::App& app, int& exit_code);
void add_credentials_command(CLI::App& app, int& exit_code);

void add_nodes_command(CLI::App& app, int& exit_code);
void add_run_commands(CLI::App& app, int& exit_code);
void add_tool_command(CLI::App& app, int& exit_code);
void add_signal(CLI::App& app, int& exit_code);     // workflows.cpp
void add_schedules(CLI::App& app, int& exit_code);  // workflows.cpp
void add_queues(CLI::App& app, int& exit_code);     // workflows.cpp
void add_admin_command(CLI::App& app, int& exit_code);
void add_costs_command(CLI::App& app, int& exit_code);
void add_fork_commands(CLI::App& app, int& exit_code);  // fork, rerun, replay, bulk (forks.cpp)

} // namespace keel::cli
