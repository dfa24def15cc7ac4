// keel: the command line. `keel dev` runs a development cluster; the other commands are clients
// that speak the wire protocol over NATS (docs/PROTOCOL.md).
#include "apps/keel/commands.hpp"

#include <CLI/CLI.hpp>

#include <cstdlib>

int main(int argc, char** argv) {
  CLI::App app{"keel: a durable runtime for AI agents"};
  app.require_subcommand(1);
  int exit_code = 0;
  keel::cli::add_dev_command(app, exit_code);
  keel::cli::add_credentials_command(app, exit_code);
  keel::cli::add_nodes_command(app, exit_code);
  keel::cli::add_admin_command(app, exit_code);
  keel::cli::add_costs_command(app, exit_code);
  keel::cli::add_agents_command(app, exit_code);
  keel::cli::add_tools_command(app, exit_code);
  keel::cli::add_run_commands(app, exit_code);
  keel::cli::add_fork_commands(app, exit_code);
  keel::cli::add_tool_command(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
