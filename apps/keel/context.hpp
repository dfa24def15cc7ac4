// Where the `keel` command finds the cluster: flags, then KEEL_NATS_URL, then the context file
// that `keel dev` writes ($KEEL_HOME/context.toml, ~/.keel by default), then the defaults.
#pragma once

#include "runtime/result.hpp"

#include <string>

namespace keel::cli {

struct context {
  std::string nats_url = "nats://127.0.0.1:4222";
  std::string prefix = "keel";
  std::string ns = "default";
  std::string dashboard_url;
  long pid = 0;  // of the `keel dev` that wrote it
};

std::string keel_home();
std::string context_path();
result<context> read_context();            // the defaults when there is no file
result<void> write_context(const context& c);
void remove_context_if_owned(long pid);

} // namespace keel::cli
