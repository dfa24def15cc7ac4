// Where the `keel` command finds the cluster and who it is there: flags, then KEEL_NATS_URL and
// KEEL_NATS_CREDENTIALS, then the context file that `keel dev` and scripts/cluster.sh write
// ($KEEL_HOME/context.toml, ~/.keel by default), then the defaults.
#pragma once

#include "runtime/result.hpp"

#include <string>

namespace keel::cli {

struct context {
  std::string nats_url = "nats://127.0.0.1:4222";
  std::string prefix = "keel";
  std::string ns = "default";
  std::string dashboard_url;
  std::string credentials_file;  // the broker user this command connects as; empty: none
  std::string tokens_file;       // the gateway's named tokens (keel token)
  long pid = 0;  // of the `keel dev` that wrote it
  // Filled by client_flags::resolve from credentials_file.
  std::string user;
  std::string password;
  // The name this command acts under: its broker user, else the local account's name.
  std::string who() const;
};

std::string keel_home();
std::string context_path();
result<context> read_context();            // the defaults when there is no file
result<void> write_context(const context& c);
void remove_context_if_owned(long pid);

} // namespace keel::cli
