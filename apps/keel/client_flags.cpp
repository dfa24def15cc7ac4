#include "apps/keel/commands.hpp"

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

} // namespace keel::cli
