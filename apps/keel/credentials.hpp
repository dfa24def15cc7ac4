// The broker's users of a `keel dev` or a local cluster: made where missing, with the
// nats-server authorization they make (credentials.cpp).
#pragma once

#include "broker/connection.hpp"
#include "runtime/result.hpp"

#include <string>
#include <vector>

namespace keel::cli {

// The broker users of every role (and `people`) in `dir`, made where missing, and the
// nats-server authorization they make (credentials.cpp).
struct credentials_layout {
  std::string dir;
  std::string authorization;  // dir/nats-auth.conf
  std::string of(const std::string& user) const { return dir + "/" + user + ".creds"; }
};
result<credentials_layout> ensure_credentials(const std::string& dir, const broker::subjects& subjects,
                                              const std::vector<std::string>& people);

} // namespace keel::cli
