// `keel dev`: a nats-server child (JetStream on, its store under the data dir) and one keel-node
// with every role, for development. Ctrl-C stops both. Records where it listens in the context
// file so that other keel commands need no flags.
#include "apps/keel/commands.hpp"
#include "apps/keel/credentials.hpp"

#include "broker/authorization.hpp"
#include "broker/connection.hpp"
#include "runtime/child_process.hpp"
#include "runtime/clock.hpp"
#include "runtime/secrets.hpp"
#include "runtime/wire.hpp"

#include <CLI/CLI.hpp>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>
#include <unistd.h>

namespace keel::cli {

namespace {

namespace fs = std::filesystem;

struct dev_options {
  std::string config_path;
  bool config_given = false;  // --config; else the coding agent of configs/coder.toml
  std::string data_dir;
  int port = 0;
  std::int64_t start_timeout_ms = 20'000;
  std::string gateway_listen;  // empty: 127.0.0.1:8080, or a free port when that one is taken
  credentials_layout credentials;  // the broker's users (made at start)
  std::string person;              // this user's name on the broker
};

std::string sibling_binary(const std::string& name) {
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto candidate = self.parent_path() / name;
    if (fs::exists(candidate)) return candidate.string();
  }
  return name;
}

// configs/coder.toml of this checkout (beside build/apps/keel) or of an installed keel; empty
// when neither is there.
std::string default_config() {
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  std::vector<fs::path> candidates;
  if (!ec) {
    candidates.push_back(self.parent_path() / "../../configs/coder.toml");   // build/apps/keel
    candidates.push_back(self.parent_path() / "../share/keel/configs/coder.toml");
  }
  candidates.push_back(fs::current_path(ec) / "configs/coder.toml");
  for (const auto& c : candidates)
    if (fs::exists(c, ec)) return fs::weakly_canonical(c, ec).string();
  return {};
}

std::string nats_server_binary() {
  if (fs::exists("/usr/sbin/nats-server")) return "/usr/sbin/nats-server";
  return "nats-server";
}

// Starts nats-server on a free port (or the given one), retrying if the port was taken meanwhile.
result<std::pair<child_process, int>> start_nats(const dev_options& o) {
  std::string store_dir = o.data_dir + "/jetstream";
  fs::create_directories(store_dir);
  for (int attempt = 0; attempt < 3; ++attempt) {
    int port = o.port;
    if (port == 0) {
      auto free = free_loopback_port();
      if (!free) return free.error();
      port = *free;
    }
    // Everything in one file, so that a reload (kill -HUP, after `keel credentials add`) keeps
    // it: options given as flags are lost on a reload (JetStream would stop). Only the users of
    // o.credentials may connect, each with its role's subjects.
    std::string conf = o.data_dir + "/nats-server.conf";
    std::error_code ec;
    auto auth = fs::relative(o.credentials.authorization, o.data_dir, ec);
    if (ec || auth.empty()) return make_error(errc::io, "cannot name " + o.credentials.authorization + " from " + o.data_dir);
    std::string text = "# keel dev's nats-server (written at each start)\nlisten: \"127.0.0.1:" + std::to_string(port) +
                       "\"\njetstream {\n  store_dir: \"" + store_dir + "\"\n}\ninclude \"" + auth.string() + "\"\n";
    if (auto written = write_private_file(conf, text); !written) return written.error();
    child_options c;
    c.argv = {nats_server_binary(), "-c", conf};
    c.stdout_path = o.data_dir + "/nats-server.log";
    c.stderr_path = o.data_dir + "/nats-server.log";
    auto child = child_process::start(c);
    if (!child) return child.error();
    auto deadline = steady_ms() + 10'000;
    while (steady_ms() < deadline && child->running() && !port_accepts(port))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (child->running() && port_accepts(port)) return std::make_pair(std::move(*child), port);
    child->stop(500);
    if (o.port != 0) break;
  }
  return make_error(errc::unavailable, "nats-server did not start; see " + o.data_dir +
                                         "/nats-server.log");
}

result<child_process> start_node(const dev_options& o, int port) {
  std::string config = o.config_path;
  if (config.empty()) {
    config = o.data_dir + "/node.toml";
    std::ofstream(config, std::ios::trunc) << "# Written by `keel dev`: every default.\n";
  }
  child_options c;
  c.argv = {sibling_binary("keel-node"), "--config", config,
            "--set", "nats.servers = [\"nats://127.0.0.1:" + std::to_string(port) + "\"]",
            "--set", "node.roles = [\"orchestrator\", \"worker\", \"gateway\"]",
            "--set", "node.data_dir = \"" + o.data_dir + "/node\"",
            "--set", "gateway.listen = \"" + o.gateway_listen + "\"",
            "--set", "nats.credentials_file = \"" + o.credentials.of("orchestrator") + "\""};
  if (!o.config_given) c.argv.insert(c.argv.end(), {"--set", "node.name = \"dev\""});
  // The node stops with `keel dev`; it keeps its own group so Ctrl-C reaches it only through us.
  return child_process::start(c);
}

// Waits for the node's first heartbeat, so that "ready" means ready.
result<wire::heartbeat> await_node(const context& c, child_process& node, std::int64_t timeout_ms) {
  broker::connection_options options;
  options.servers = {c.nats_url};
  options.name = "keel dev";
  options.user = c.user;
  options.password = c.password;
  auto nats = broker::connection::connect(options);
  if (!nats) return nats.error();
  struct awaited {  // shared with the delivery thread, which may outlive this call's frame
    std::mutex mutex;
    std::optional<wire::heartbeat> seen;
  };
  auto state = std::make_shared<awaited>();
  broker::subjects subjects;
  auto sub = (*nats)->subscribe(subjects.heartbeat(), "", [state](broker::message&& m) {
    auto beat = wire::decode<wire::heartbeat>(m.data);
    std::lock_guard lock{state->mutex};
    if (beat && beat->state == "up") state->seen = *beat;
  });
  if (!sub) return sub.error();
  auto deadline = steady_ms() + timeout_ms;
  while (steady_ms() < deadline && node.running()) {
    {
      std::lock_guard lock{state->mutex};
      if (state->seen) return *state->seen;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!node.running()) return make_error(errc::unavailable, "keel-node exited during start");
  return make_error(errc::timeout, "keel-node sent no heartbeat within " +
                                     std::to_string(timeout_ms) + " ms");
}

// The address that carries the dashboard's token (the node made it on its first start), for this
// run's gateway address.
std::string dashboard_token(const std::string& data_dir, const std::string&) {
  std::ifstream in(data_dir + "/node/dashboard-url");
  std::string line;
  std::getline(in, line);
  auto at = line.find("#token=");
  return at == std::string::npos ? std::string() : line.substr(at);
}

void print_banner(const context& c, const wire::heartbeat& beat, const std::string& data_dir) {
  std::string rule(56, '-');
  std::cout << rule << "\n"
            << "  keel dev is running\n"
            << "  NATS:       " << c.nats_url << "\n"
            << "  Dashboard:  " << c.dashboard_url << "/" << dashboard_token(data_dir, c.dashboard_url) << "\n"
            << "  HTTP API:   " << c.dashboard_url << "/api/v1/ (docs/HTTP.md)\n"
            << "  Namespace:  " << c.prefix << "." << c.ns << " (you are '" << c.who() << "' there)\n"
            << "  Node:       " << beat.node_id << " (";
  for (std::size_t i = 0; i < beat.roles.size(); ++i) std::cout << (i ? ", " : "") << beat.roles[i];
  std::cout << ")\n"
            << "  Data:       " << data_dir << "\n"
            << "  Context:    " << context_path() << "\n"
            << rule << "\n"
            << "  In another terminal: keel agents, keel run <agent> \"<task>\", keel runs\n"
            << "  Press Ctrl-C to stop.\n"
            << std::flush;
}

int run_dev(dev_options o) {
  if (o.data_dir.empty()) o.data_dir = keel_home() + "/dev";
  o.data_dir = fs::absolute(o.data_dir).lexically_normal().string();
  fs::create_directories(o.data_dir);
  // The broker's store and the node's runs: for this user only.
  fs::permissions(o.data_dir, fs::perms::owner_all, fs::perm_options::replace);
  if (o.gateway_listen.empty()) {
    o.gateway_listen = "127.0.0.1:8080";
    if (port_accepts(8080)) {
      auto free = free_loopback_port();
      if (free) {
        o.gateway_listen = "127.0.0.1:" + std::to_string(*free);
        std::cout << "keel dev: port 8080 is taken; the dashboard is on " << o.gateway_listen << "\n";
      }
    }
  }
  // Port 0: a free port, chosen here so that the banner and the context name the real one.
  if (auto colon = o.gateway_listen.rfind(':'); colon != std::string::npos && o.gateway_listen.substr(colon + 1) == "0") {
    auto free = free_loopback_port();
    if (!free) {
      std::cerr << "keel dev: " << free.error().message << "\n";
      return 1;
    }
    o.gateway_listen = o.gateway_listen.substr(0, colon + 1) + std::to_string(*free);
  }
  o.config_given = !o.config_path.empty();
  if (!o.config_given) {
    o.config_path = default_config();
    if (!o.config_path.empty()) std::cout << "keel dev: no --config; running the coding agent of " << o.config_path << "\n";
    else std::cout << "keel dev: no --config and no configs/coder.toml found; running with no agents\n";
  }
  if (!o.config_path.empty()) o.config_path = fs::absolute(o.config_path).string();

  // Ctrl-C and SIGTERM are taken here, by sigtimedwait, so we can stop the children in order.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  o.person = context{}.who();
  auto made = ensure_credentials(o.data_dir + "/credentials", broker::subjects{}, {o.person});
  if (!made) {
    std::cerr << "keel dev: " << made.error().message << "\n";
    return 1;
  }
  o.credentials = *made;

  auto nats = start_nats(o);
  if (!nats) {
    std::cerr << "keel dev: " << nats.error().message << "\n";
    return 1;
  }
  auto& [nats_child, port] = *nats;
  context c;
  c.nats_url = "nats://127.0.0.1:" + std::to_string(port);
  c.dashboard_url = "http://" + o.gateway_listen;
  c.pid = ::getpid();
  c.credentials_file = o.credentials.of(o.person);
  c.tokens_file = o.data_dir + "/node/gateway-tokens";
  if (auto creds = broker::read_credentials(c.credentials_file); creds) {
    c.user = creds->user;
    c.password = creds->password;
  }

  auto node = start_node(o, port);
  if (!node) {
    std::cerr << "keel dev: " << node.error().message << "\n";
    nats_child.stop(2000);
    return 1;
  }
  auto beat = await_node(c, *node, o.start_timeout_ms);
  if (!beat) {
    std::cerr << "keel dev: " << beat.error().message << "\n";
    node->stop(2000);
    nats_child.stop(2000);
    return 1;
  }
  if (auto w = write_context(c); !w) std::cerr << "keel dev: " << w.error().message << "\n";
  print_banner(c, *beat, o.data_dir);

  int exit_code = 0;
  timespec tick{0, 200'000'000};
  while (true) {
    int got = sigtimedwait(&stop_signals, nullptr, &tick);
    if (got == SIGINT || got == SIGTERM) break;
    if (!node->running()) {
      std::cerr << "keel dev: keel-node exited; stopping\n";
      exit_code = 1;
      break;
    }
    if (!nats_child.running()) {
      std::cerr << "keel dev: nats-server exited; stopping\n";
      exit_code = 1;
      break;
    }
  }
  std::cout << "\nStopping keel dev...\n" << std::flush;
  int node_status = node->stop(10'000);
  nats_child.stop(5000);
  remove_context_if_owned(c.pid);
  if (node_status != 0 && exit_code == 0) exit_code = 1;
  std::cout << "Stopped.\n";
  return exit_code;
}

} // namespace

void add_dev_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<dev_options>();
  auto* dev = app.add_subcommand("dev", "Run nats-server and one node with every role");
  dev->add_option("-c,--config", options->config_path, "Node config with your agents (default: configs/coder.toml, the coding agent)");
  dev->add_option("--data-dir", options->data_dir, "Where state lives (default ~/.keel/dev)");
  dev->add_option("--port", options->port, "NATS port (default: a free one)");
  dev->add_option("--gateway", options->gateway_listen,
                  "Dashboard and HTTP API address (host:port; default 127.0.0.1:8080, or a free port if taken)");
  dev->callback([options, &exit_code] { exit_code = run_dev(*options); });
}

} // namespace keel::cli
