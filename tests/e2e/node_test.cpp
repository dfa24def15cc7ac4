// Drives the built keel-node and keel binaries against a real nats-server; links none of their
// code.
#include "broker/connection.hpp"
#include "tests/support/test_support.hpp"

#include <filesystem>

#include <csignal>

using namespace keel;
using namespace keel::testing;

namespace {

std::string node_config(const nats_server& server, const temp_dir& dir, const std::string& name,
                        const std::string& roles = R"(["orchestrator", "worker"])") {
  std::string path = dir.file(name + ".toml");
  write_file(dir.file("script.json"), R"({"turns": [{"text": "hi"}]})");
  write_file(path, "[node]\nname = \"" + name + "\"\nroles = " + roles + "\ndata_dir = \"" +
                     dir.file(name + "-data") + "\"\n[nats]\nservers = [\"" + server.url() +
                     "\"]\n[limits]\nheartbeat_interval_ms = 100\nshutdown_timeout_ms = 3000\n"
                     "[agents.coder]\nmodel = \"m\"\nscript = \"" + dir.file("script.json") +
                     "\"\n[agents.coder.sandbox]\nworkspace = \"" + dir.file("ws") + "\"\n");
  return path;
}

command_output nodes(const nats_server& server) {
  return run_command({KEEL_BINARY, "nodes", "--nats", server.url(), "--wait-ms", "300"});
}

} // namespace

TEST_CASE("keel-node: a bad config exits 2 with one line naming the key", "[e2e]") {
  temp_dir dir;
  write_file(dir.file("bad.toml"), "[nats]\nservers = \"nats://127.0.0.1:4222\"\n");
  auto r = run_command({KEEL_NODE_BINARY, "--config", dir.file("bad.toml")});
  CHECK(r.exit_code == 2);
  CHECK(r.err == "keel-node: " + dir.file("bad.toml") +
                   ":2: nats.servers: expected an array of strings, got a string\n");
  write_file(dir.file("unknown.toml"), "[limits]\nheartbeat_ms = 5\n");
  auto unknown = run_command({KEEL_NODE_BINARY, "--config", dir.file("unknown.toml")});
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.find("limits.heartbeat_ms: unknown key") != std::string::npos);
  auto missing = run_command({KEEL_NODE_BINARY, "--config", dir.file("missing.toml")});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err == "keel-node: " + dir.file("missing.toml") + ": cannot read the file\n");
  auto check = run_command({KEEL_NODE_BINARY, "--check", "--config", KEEL_SOURCE_DIR "/configs/reference.toml"});
  CHECK(check.exit_code == 0);
}

TEST_CASE("keel-node: without a reachable NATS server it exits 1 and says so", "[e2e]") {
  temp_dir dir;
  auto port = free_loopback_port();
  REQUIRE(port.ok());
  write_file(dir.file("n.toml"), "[node]\nroles = [\"worker\"]\n[nats]\nservers = "
                                 "[\"nats://127.0.0.1:" + std::to_string(*port) + "\"]\n"
                                 "connect_timeout_ms = 200\n");
  auto r = run_command({KEEL_NODE_BINARY, "--config", dir.file("n.toml")});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("cannot connect to NATS at nats://127.0.0.1:") != std::string::npos);
}

TEST_CASE("keel-node: on a nats-server without JetStream it exits 1 and says how to fix it", "[e2e][integration]") {
  temp_dir dir;
  auto port = free_loopback_port();
  REQUIRE(port.ok());
  // A plain nats-server: no -js.
  auto server = start_command({std::filesystem::exists("/usr/sbin/nats-server") ? "/usr/sbin/nats-server" : "nats-server",
                               "-a", "127.0.0.1", "-p", std::to_string(*port)}, dir, "plain-nats");
  std::string url = "nats://127.0.0.1:" + std::to_string(*port);
  REQUIRE_EVENTUALLY(10'000, run_command({KEEL_BINARY, "nodes", "--nats", url, "--wait-ms", "10"}).exit_code == 0);
  for (const char* roles : {"\"worker\"", "\"orchestrator\""}) {
    INFO(roles);
    write_file(dir.file("n.toml"), std::string("[node]\nroles = [") + roles + "]\ndata_dir = \"" + dir.file("data") +
                                     "\"\n[nats]\nservers = [\"" + url + "\"]\nrequest_timeout_ms = 500\n"
                                     "[agents.a]\nscript = \"" + dir.file("a.json") + "\"\n"
                                     "[agents.a.sandbox]\nworkspace = \"" + dir.file("ws") + "\"\n");
    write_file(dir.file("a.json"), R"({"turns": [{"text": "hi"}]})");
    auto r = run_command({KEEL_NODE_BINARY, "--config", dir.file("n.toml")}, 20'000);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("is JetStream enabled on nats-server? start it with -js") != std::string::npos);
  }
}

TEST_CASE("keel-node: a node announces its roles, and leaves the list on SIGTERM", "[e2e][integration]") {
  nats_server server;
  temp_dir dir;
  auto node = start_command({KEEL_NODE_BINARY, "--config", node_config(server, dir, "n1")}, dir, "n1");
  command_output listed;
  REQUIRE_EVENTUALLY(10000, (listed = nodes(server)).out.find("n1") != std::string::npos);
  CHECK(listed.exit_code == 0);
  CHECK(listed.out.find("orchestrator,worker") != std::string::npos);
  CHECK(listed.out.find("coder") != std::string::npos);
  // keel nodes collects answers for --wait-ms: on a loaded machine one may come later; ask again.
  REQUIRE_EVENTUALLY(10000, run_command({KEEL_BINARY, "nodes", "--json", "--nats", server.url(), "--wait-ms", "300"})
                              .out.find("\"node_id\": \"n1\"") != std::string::npos);

  node.signal(SIGTERM);
  auto status = node.wait(5000);
  REQUIRE(status.ok());
  CHECK(*status == 0);
  CHECK(read_file(dir.file("n1.err")).find("node n1 stopped") != std::string::npos);
  CHECK(nodes(server).out.find("n1") == std::string::npos);
}

TEST_CASE("keel-node: an orchestrator keeps its derived id across restarts", "[e2e][integration]") {
  nats_server server;
  temp_dir dir;
  std::string path = dir.file("o.toml");
  write_file(path, "[node]\nroles = [\"orchestrator\"]\ndata_dir = \"" + dir.file("data") +
                     "\"\n[nats]\nservers = [\"" + server.url() + "\"]\n");
  auto first_ids = [&] {
    auto node = start_command({KEEL_NODE_BINARY, "--config", path}, dir, "o");
    std::string out;
    REQUIRE_EVENTUALLY(10000, (out = nodes(server).out).find("orchestrator") != std::string::npos);
    node.signal(SIGTERM);
    REQUIRE(node.wait(5000).ok());
    return out.substr(out.find('\n') + 1, out.find(' ', out.find('\n') + 1) - out.find('\n') - 1);
  };
  auto first = first_ids();
  auto second = first_ids();
  CHECK_FALSE(first.empty());
  CHECK(first == second);
}

TEST_CASE("keel dev: starts nats-server and a node, and keel nodes finds them with no flags",
          "[e2e][integration]") {
  temp_dir dir;
  std::vector<std::string> env = {"KEEL_HOME=" + dir.file("home")};
  auto dev = start_command({KEEL_BINARY, "dev", "--data-dir", dir.file("dev"), "--gateway",
                            "127.0.0.1:0"}, dir, "dev", env);
  REQUIRE_EVENTUALLY(20000, read_file(dir.file("dev.out")).find("Press Ctrl-C") != std::string::npos);
  auto banner = read_file(dir.file("dev.out"));
  CHECK(banner.find("NATS:       nats://127.0.0.1:") != std::string::npos);
  CHECK(banner.find("Namespace:  keel.default") != std::string::npos);
  CHECK(std::filesystem::exists(dir.file("home/context.toml")));

  auto listed = run_command({KEEL_BINARY, "nodes", "--wait-ms", "300"}, 10000, env);
  CHECK(listed.exit_code == 0);
  CHECK(listed.out.find("dev") != std::string::npos);
  CHECK(listed.out.find("orchestrator,worker,gateway") != std::string::npos);

  dev.signal(SIGINT);
  auto status = dev.wait(15000);
  REQUIRE(status.ok());
  CHECK(*status == 0);
  CHECK(read_file(dir.file("dev.out")).find("Stopped.") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir.file("home/context.toml")));
  // Nothing is left listening: `keel nodes` now cannot reach the server.
  auto after = run_command({KEEL_BINARY, "nodes", "--wait-ms", "100"}, 10000, env);
  CHECK(after.exit_code == 1);
}

TEST_CASE("keel dev: with no config it runs the coding agent, keel run coder works with no flags, and the dashboard shows the run",
          "[e2e][integration]") {
  temp_dir dir;
  std::vector<std::string> env = {"KEEL_HOME=" + dir.file("home")};
  auto dev = start_command({KEEL_BINARY, "dev", "--data-dir", dir.file("dev"), "--gateway", "127.0.0.1:0"}, dir, "dev", env);
  REQUIRE_EVENTUALLY(20000, read_file(dir.file("dev.out")).find("Press Ctrl-C") != std::string::npos);
  auto banner = read_file(dir.file("dev.out"));
  INFO(banner);
  CHECK(banner.find("running the coding agent of " + std::string(KEEL_SOURCE_DIR) + "/configs/coder.toml") != std::string::npos);
  auto at = banner.find("Dashboard:  http://127.0.0.1:");
  REQUIRE(at != std::string::npos);
  auto url = banner.substr(at + 12, banner.find('/', at + 12 + 7) - at - 12);  // http://127.0.0.1:PORT
  CHECK(url.find(":0") == std::string::npos);  // a real port, not 0
  // The dashboard's address carries the installation's token once, in its fragment.
  auto token_at = banner.find("/#token=keel_", at);
  REQUIRE(token_at != std::string::npos);
  auto token = banner.substr(token_at + 8, banner.find('\n', token_at) - token_at - 8);

  command_output agents;
  REQUIRE_EVENTUALLY(10000, (agents = run_command({KEEL_BINARY, "agents"}, 10000, env)).exit_code == 0);
  CHECK(agents.out.find("coder") != std::string::npos);
  auto ran = run_command({KEEL_BINARY, "run", "coder", "Create hello.js that prints a greeting, and run it.", "--yes"}, 60000, env);
  INFO(ran.out << ran.err);
  CHECK(ran.exit_code == 0);
  auto link = ran.out.find("Dashboard: " + url + "/runs/");
  REQUIRE(link != std::string::npos);
  auto run = ran.out.substr(link + 11 + url.size() + 6, ran.out.find('\n', link) - link - 11 - url.size() - 6);
  auto page = run_command({"curl", "-s", url + "/runs/" + run}, 10000);
  CHECK(page.out.find("/assets/app.js") != std::string::npos);
  // The API needs the token: without it 401, with it the run, started and approved by this user.
  CHECK(run_command({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url + "/api/v1/runs/" + run}, 10000).out == "401");
  auto shown = run_command({"curl", "-s", "-H", "Authorization: Bearer " + token, url + "/api/v1/runs/" + run}, 10000);
  CHECK(shown.out.find("\"status\":\"completed\"") != std::string::npos);
  CHECK(ran.out.find("Approved by ") != std::string::npos);
  // The broker of `keel dev` refuses a connection without credentials.
  auto nats_at = banner.find("NATS:       ");
  REQUIRE(nats_at != std::string::npos);
  auto nats_url = banner.substr(nats_at + 12, banner.find('\n', nats_at) - nats_at - 12);
  broker::connection_options anonymous;
  anonymous.servers = {nats_url};
  anonymous.reconnect_attempts_max = 0;
  auto refused = broker::connection::connect(anonymous);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == errc::denied);
  dev.signal(SIGINT);
  REQUIRE(dev.wait(15000).ok());
}
