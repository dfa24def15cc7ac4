// A nats-server with the users `keel credentials` makes (an orchestrator, a worker, a gateway,
// people), on a free loopback port, JetStream on: for tests of who may publish what, and of
// what a node does when the broker refuses it something.
#pragma once

#include "broker/authorization.hpp"
#include "broker/connection.hpp"
#include "tests/support/test_support.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <csignal>
#include <memory>
#include <string>

namespace keel::testing {

struct authorized_broker {
  temp_dir dir;
  int port = 0;
  child_process server;
  std::string url;

  authorized_broker() {
    ::chmod(dir.path().c_str(), 0711);
    auto made = run_command({KEEL_BINARY, "credentials", "init", dir.file("creds"), "--person", "ana", "--person", "bob"});
    INFO(made.out << made.err);
    REQUIRE(made.exit_code == 0);
    auto free = free_loopback_port();
    REQUIRE(free.ok());
    port = *free;
    url = "nats://127.0.0.1:" + std::to_string(port);
    start();
  }
  void start() {
    server = start_command({"/usr/sbin/nats-server", "-c", dir.file("creds/nats-auth.conf"), "-a", "127.0.0.1", "-p",
                            std::to_string(port), "-js", "-sd", dir.file("js")},
                           dir, "nats");
    REQUIRE_EVENTUALLY(10'000, port_accepts(port));
  }
  // With its users read again (a reload would lose the JetStream flags of this command line).
  void restart() {
    server.signal(SIGTERM);
    REQUIRE(server.wait(10'000).ok());
    start();
  }
  std::string creds(const std::string& user) const { return dir.file("creds/" + user + ".creds"); }
  result<std::shared_ptr<broker::connection>> as(const std::string& user, const std::string& password = {}) {
    broker::connection_options o;
    o.servers = {url};
    o.reconnect_attempts_max = 0;
    if (!user.empty()) {
      o.user = user;
      o.password = password;
      if (password.empty()) o.password = broker::read_credentials(creds(user))->password;
    }
    return broker::connection::connect(o);
  }
};

} // namespace keel::testing
