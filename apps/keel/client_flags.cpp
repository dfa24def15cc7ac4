#include "apps/keel/commands.hpp"

#include "broker/authorization.hpp"
#include "broker/connection.hpp"

#include <CLI/CLI.hpp>

#include <cstdlib>

namespace keel::cli {

void add_client_flags(CLI::App& command, client_flags& flags) {
  command.add_option("--nats", flags.nats_url, "NATS server URL (default: from `keel dev`)");
  command.add_option("--prefix", flags.prefix, "Subject prefix (default: keel)");
  command.add_option("--namespace", flags.ns, "Namespace (default: default)");
  command.add_option("--timeout-ms", flags.timeout_ms, "How long to wait for a reply");
  command.add_option("--credentials", flags.credentials_file,
                     "Broker credentials file (default: KEEL_NATS_CREDENTIALS, then the context file)");
}

result<context> client_flags::resolve() const {
  auto c = read_context();
  if (!c) return c;
  if (const char* env = std::getenv("KEEL_NATS_URL"); env && *env) c->nats_url = env;
  if (!nats_url.empty()) c->nats_url = nats_url;
  if (!prefix.empty()) c->prefix = prefix;
  if (!ns.empty()) c->ns = ns;
  if (const char* env = std::getenv("KEEL_NATS_CREDENTIALS"); env && *env) c->credentials_file = env;
  if (!credentials_file.empty()) c->credentials_file = credentials_file;
  if (!c->credentials_file.empty()) {
    auto creds = broker::read_credentials(c->credentials_file);
    if (!creds) return creds.error();
    c->user = creds->user;
    c->password = creds->password;
  }
  return c;
}

result<std::shared_ptr<broker::connection>> connect_command(const context& c, const std::string& command) {
  broker::connection_options options;
  options.servers = {c.nats_url};
  options.name = "keel " + command;
  options.reconnect_attempts_max = 0;
  options.user = c.user;
  options.password = c.password;
  return broker::connection::connect(options);
}

} // namespace keel::cli
