#include "tests/e2e/cluster.hpp"

#include "gateway/tokens.hpp"
#include "tests/e2e/http_client.hpp"

#include <sys/stat.h>

#include <csignal>

namespace keel::testing {

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

cluster::cluster(const std::string& agents,
                 const std::vector<std::pair<std::string, std::string>>& files, cluster_options options)
  : options_(std::move(options)) {
  for (const auto& [name, content] : files) write_file(dir_.file(name), content);
  // A secret goes into the config file (readable by its owner only), never on the command line.
  std::string secrets;
  for (auto it = options_.node_sets.begin(); it != options_.node_sets.end();) {
    if (it->rfind("gateway.token", 0) == 0) {
      secrets += "[gateway]\ntoken" + it->substr(std::string("gateway.token").size()) + "\n";
      it = options_.node_sets.erase(it);
    } else {
      ++it;
    }
  }
  auto config = [&](const std::string& name, const std::string& roles) {
    return "[node]\nname = \"" + name + "\"\nroles = [" + roles + "]\n"
           "data_dir = \"" + (options_.data_dir.empty() ? dir_.file("data") : options_.data_dir) + "\"\n"
           "[nats]\nservers = [\"" + nats_.url() + "\"]\n"
           "[limits]\nheartbeat_interval_ms = 200\nshutdown_timeout_ms = 5000\n" + secrets +
           "\n" + replace_all(agents, "{dir}", dir_.path());
  };
  // The gateway's token, named "tester": every HTTP call of the tests sends it unless told not to.
  bool token_given = secrets.find("[gateway]") != std::string::npos;
  if (options_.gateway && !token_given) {
    auto token = gateway::random_token();
    REQUIRE(gateway::write_tokens_file(dir_.file("gateway-tokens"), {{"tester", gateway::token_hash(token)}}).ok());
    options_.node_sets.push_back("gateway.tokens_file = \"" + dir_.file("gateway-tokens") + "\"");
    set_default_authorization("Authorization: Bearer " + token);
    token_ = token;
  }
  config_path_ = dir_.file("node.toml");
  std::string roles = options_.separate_worker ? "\"orchestrator\"" : "\"orchestrator\", \"worker\"";
  if (options_.gateway) {
    auto port = free_loopback_port();
    REQUIRE(port.ok());
    gateway_port_ = *port;
    roles += ", \"gateway\"";
    options_.node_sets.push_back("gateway.listen = \"127.0.0.1:" + std::to_string(gateway_port_) + "\"");
  }
  write_file(config_path_, config("n1", roles));
  ::chmod(config_path_.c_str(), 0600);
  if (options_.separate_worker) {
    worker_config_path_ = dir_.file("worker.toml");
    write_file(worker_config_path_, config("w1", "\"worker\""));
  }
  start_node();
  if (options_.separate_worker) start_worker();
}

std::string cluster::logs() const {
  std::string out;
  for (const char* name : {"node", "worker"}) {
    auto text = read_file(dir_.file(std::string(name) + ".err"));
    if (text.empty()) continue;
    if (text.size() > 12'000) text = text.substr(0, 4'000) + "\n[...]\n" + text.substr(text.size() - 8'000);
    out += std::string("--- ") + name + ".err\n" + text + "\n";
  }
  return out;
}

cluster::~cluster() {
  if (options_.separate_worker) {
    worker_.signal(SIGCONT);
    worker_.stop(2000);
  }
  node_.stop(2000);
}

void cluster::start_worker() {
  child_options o;
  o.argv = {KEEL_NODE_BINARY, "--config", worker_config_path_};
  for (const auto& set : options_.worker_sets) o.argv.insert(o.argv.end(), {"--set", set});
  o.stdout_path = dir_.file("worker.out");
  o.stderr_path = dir_.file("worker.err");
  auto started = child_process::start(o);
  REQUIRE(started.ok());
  worker_ = std::move(*started);
  INFO(read_file(dir_.file("worker.err")));
  REQUIRE_EVENTUALLY(15000, keel({"nodes", "--wait-ms", "200"}).out.find("w1") != std::string::npos);
}

void cluster::kill_worker() {
  worker_.signal(SIGKILL);
  REQUIRE(worker_.wait(5000).ok());
}

void cluster::signal_worker(int signal) { worker_.signal(signal); }

result<int> cluster::wait_worker(std::int64_t timeout_ms) { return worker_.wait(timeout_ms); }

void cluster::start_node() {
  ++starts_;
  // Logs of every start go to the same files, so a failing test shows the whole story.
  for (int tries = 0;; ++tries) {
    auto log_before = read_file(dir_.file("node.err")).size();
    child_options options;
    options.argv = {KEEL_NODE_BINARY, "--config", config_path_};
    for (const auto& set : options_.node_sets) options.argv.insert(options.argv.end(), {"--set", set});
    options.stdout_path = dir_.file("node.out");
    options.stderr_path = dir_.file("node.err");
    auto started = child_process::start(options);
    REQUIRE(started.ok());
    node_ = std::move(*started);
    // Ready when it answers a ping. The gateway's free port may be taken between the choice and
    // the node's bind (by a process of another test): the node says so and ends; another is chosen.
    bool ready = false;
    auto deadline = steady_ms() + 15'000;
    while (!ready && steady_ms() < deadline && node_.running())
      ready = keel({"nodes", "--wait-ms", "200"}).out.find("n1") != std::string::npos;
    if (ready) return;
    auto log = read_file(dir_.file("node.err")).substr(log_before);
    if (options_.gateway && tries < 3 && log.find("Address already in use") != std::string::npos) {
      auto port = free_loopback_port();
      REQUIRE(port.ok());
      gateway_port_ = *port;
      for (auto& set : options_.node_sets)
        if (set.rfind("gateway.listen", 0) == 0) set = "gateway.listen = \"127.0.0.1:" + std::to_string(gateway_port_) + "\"";
      continue;
    }
    INFO(read_file(dir_.file("node.err")));
    FAIL("node n1 did not answer a ping within 15 s");
  }
}

void cluster::kill_node() {
  node_.signal(SIGKILL);
  REQUIRE(node_.wait(5000).ok());
}

void cluster::stop_node() {
  node_.signal(SIGTERM);
  auto status = node_.wait(10000);
  REQUIRE(status.ok());
  CHECK(*status == 0);
}

command_output cluster::keel(std::vector<std::string> args, std::int64_t timeout_ms) {
  args.insert(args.begin(), KEEL_BINARY);
  args.insert(args.end(), {"--nats", nats_.url()});
  return run_command(args, timeout_ms, {"KEEL_HOME=" + dir_.file("home")});
}

std::string cluster::invoke(const std::string& agent, const std::string& input) {
  auto r = keel({"invoke", agent, input});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.out.size() > 1);
  return r.out.substr(0, r.out.size() - 1);
}

nlohmann::json cluster::show(const std::string& run_id) {
  auto r = keel({"show", run_id, "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.out);
}

std::string cluster::status(const std::string& run_id) {
  auto r = keel({"show", run_id, "--json"});
  if (r.exit_code != 0) return "unreachable";
  return nlohmann::json::parse(r.out).value("status", std::string{});
}

std::vector<nlohmann::json> cluster::events(const std::string& run_id) {
  auto r = keel({"events", run_id, "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::vector<nlohmann::json> out;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    auto parsed = nlohmann::json::parse(line, nullptr, false);
    INFO("keel events printed a line that is not JSON: " << line.substr(0, 300));
    REQUIRE_FALSE(parsed.is_discarded());
    out.push_back(std::move(parsed));
  }
  return out;
}

bool cluster::has_event(const std::string& run_id, const std::string& type) {
  auto r = keel({"events", run_id, "--json"});
  return r.exit_code == 0 && r.out.find("\"event_type\":\"" + type + "\"") != std::string::npos;
}

std::string cluster::await_suspend(const std::string& run_id, std::int64_t timeout_ms) {
  await_status(run_id, "suspended", timeout_ms);
  auto run = show(run_id);
  REQUIRE(run.contains("waiting"));
  return run["waiting"]["step_key"].get<std::string>();
}

void cluster::await_status(const std::string& run_id, const std::string& wanted, std::int64_t timeout_ms) {
  std::string last;
  auto deadline = steady_ms() + timeout_ms;
  while (steady_ms() < deadline && (last = status(run_id)) != wanted)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  INFO("run " << run_id << " is " << last << ", awaited " << wanted << "\nnode log:\n" << node_log()
               << "\nevents:\n" << keel({"events", run_id}).out);
  REQUIRE(last == wanted);
}

std::shared_ptr<broker::connection> cluster::connect_client() {
  broker::connection_options o;
  o.servers = {nats_.url()};
  auto connected = broker::connection::connect(o);
  REQUIRE(connected.ok());
  return std::move(*connected);
}

} // namespace keel::testing
