// A NATS connection for the broker-level tests: one server, quick reconnects; fails the test if
// there is none.
#pragma once

#include "broker/connection.hpp"

#include <catch2/catch.hpp>

#include <memory>
#include <string>

namespace keel::testing {

inline std::shared_ptr<broker::connection> connect(const std::string& url) {
  broker::connection_options o;
  o.servers = {url};
  o.reconnect_wait_ms = 50;
  auto c = broker::connection::connect(o);
  REQUIRE(c.ok());
  return *c;
}

} // namespace keel::testing
