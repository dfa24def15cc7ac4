// Several keel-node processes on a cluster of nats-servers, as the cluster and failover tests
// start them: each node its own process with its own config, logs kept for a failure's report.
#pragma once

#include "broker/connection.hpp"
#include "broker/key_value.hpp"
#include "broker/work_queue.hpp"
#include "broker/run_log.hpp"
#include "runtime/ids.hpp"
#include "runtime/wire.hpp"
#include "tests/e2e/http_client.hpp"
#include "tests/support/failure_report.hpp"
#include "tests/support/fake_service.hpp"
#include "tests/support/test_support.hpp"

#include <sys/stat.h>

#include <arpa/inet.h>
#include <csignal>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <atomic>
#include <mutex>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <thread>

namespace keel::testing::e2e {

using nlohmann::json;

// A gateway's table: its address and a tokens file with the tests' token ("tester"), which every
// HTTP call of the tests then sends.
inline std::string gateway_section(const temp_dir& dir, int port) {
  auto token = write_gateway_token(dir.file("gateway-tokens"), "tester");
  set_default_authorization("Authorization: Bearer " + token);
  return "[gateway]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\ntokens_file = \"" + dir.file("gateway-tokens") + "\"\n";
}

struct multi_node {
  temp_dir dir;
  nats_cluster nats;
  std::map<std::string, child_process> nodes;
  int gateway_port = 0;
  std::string sandbox_extra;  // more keys of [agents.ops.sandbox]

  // `servers`: the nats-servers this node knows, first the one it tries first.
  void start(const std::string& name, const std::string& roles, const std::vector<std::size_t>& servers,
             const std::string& extra = "") {
    std::string urls;
    for (auto i : servers) urls += std::string(urls.empty() ? "" : ", ") + "\"" + nats.url(i) + "\"";
    auto path = dir.file(name + ".toml");
    write_file(path, "[node]\nname = \"" + name + "\"\nroles = [" + roles + "]\ndata_dir = \"" + dir.file("data-" + name) +
                       "\"\n[nats]\nservers = [" + urls + "]\n[limits]\nheartbeat_interval_ms = 200\ntask_replicas = 3\n"
                       "shutdown_timeout_ms = 5000\n" + extra +
                       "\n[agents.ops]\nscript = \"" + dir.file("ops.json") + "\"\n[agents.ops.sandbox]\nworkspace = \"" +
                       dir.file("ws") + "\"\nscope = \"agent\"\n" + sandbox_extra);
    child_options o;
    o.argv = {KEEL_NODE_BINARY, "--config", path};
    o.stdout_path = dir.file(name + ".out");
    o.stderr_path = dir.file(name + ".err");
    auto started = child_process::start(o);
    REQUIRE(started.ok());
    nodes[name] = std::move(*started);
  }
  command_output keel(std::vector<std::string> args, std::size_t server = 0) {
    args.insert(args.begin(), KEEL_BINARY);
    args.insert(args.end(), {"--nats", nats.url(server)});
    return run_command(args, 60'000, {"KEEL_HOME=" + dir.file("home")});
  }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(gateway_port); }
  // An invoke sent through nats-server `server`, as a client connected there would send it. (The
  // broker gives a request to a queue member on the sender's server when there is one: clients
  // on every server are what spreads runs over the orchestrators.)
  std::map<std::size_t, std::shared_ptr<broker::connection>> clients;  // made first, then only read
  void connect_clients() {
    for (std::size_t i = 0; i < nats.size(); ++i) {
      broker::connection_options o;
      o.servers = {nats.url(i)};
      auto connected = broker::connection::connect(o);
      REQUIRE(connected.ok());
      clients[i] = *connected;
    }
  }
  result<wire::invoke_reply> invoke_via(std::size_t server, const wire::invoke_request& request) {
    auto reply = clients.at(server)->request("keel.default.invoke.tester", wire::encode(request), 10'000);
    if (!reply) return reply.error();
    return wire::decode<wire::invoke_reply>(reply->data);
  }
  std::string logs() {
    std::string out;
    for (auto& [name, p] : nodes) {
      auto text = read_file(dir.file(name + ".err"));
      if (text.size() > 12'000) text = text.substr(0, 4'000) + "\n[...]\n" + text.substr(text.size() - 8'000);
      out += "--- " + name + "\n" + text + "\n";
    }
    return out;
  }
};

} // namespace keel::testing::e2e
