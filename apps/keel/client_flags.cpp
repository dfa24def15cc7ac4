#include "apps/keel/commands.hpp"

#include "broker/connection.hpp"

#include <CLI/CLI.hpp>

#include <cstdlib>

namespace keel::cli {

void add_client_flags(CLI::App& command, client_flags& flags) {
  command.add_option("--nats", flags.nats_url, "NATS server URL (default: from `keel dev`)");
  command.add_option("--prefix", flags.prefix, "Subject prefix (default: keel)");
  command.add_option("--namespace", flags.ns, "Namespace (default: default)");
  command.add_option("--timeout-ms", flags.timeout_ms, "How long to wait for a reply");
}

result<context> client_flags::resolve() const {
  auto c = read_context();
  if (!c) return c;
  if (const char* env = std::getenv("KEEL_NATS_URL"); env && *env) c->nats_url = env;
  if (!nats_url.empty()) c->nats_url = nats_url;
  if (!prefix.empty()) c->prefix = prefix;
  if (!ns.empty()) c->ns = ns;
  return c;
}

result<std::shared_ptr<broker::connection>> connect_command(const context& c, const std::string& command) {
  broker::connection_options options;
  options.servers = {c.nats_url};
  options.name = "keel " + command;
  options.reconnect_attempts_max = 0;
  return broker::connection::connect(options);
}

} // namespace keel::cli
