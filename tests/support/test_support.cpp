#include "tests/support/test_support.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sstream>

namespace keel::testing {

const char* node_binary() {
  const char* named = std::getenv("KEEL_TEST_NODE_BINARY");
  return named != nullptr && *named != '\0' ? named : KEEL_NODE_BINARY_BUILT;
}

const char* cli_binary() {
  const char* named = std::getenv("KEEL_TEST_BINARY");
  return named != nullptr && *named != '\0' ? named : KEEL_BINARY_BUILT;
}

temp_dir::temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "keel-test-XXXXXX").string();
  char* made = ::mkdtemp(pattern.data());
  // Not REQUIRE: made on any thread (run_command), where a Catch assertion is not safe.
  if (made == nullptr) throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
  path_ = made;
  // Searchable (not listable) by others: commands run as keel-sandbox and must reach the
  // workspaces made beneath.
  ::chmod(made, 0711);
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

nats_server::nats_server() { start(); }

nats_server::~nats_server() { process_.stop(0); }

bool nats_server::launch(std::int64_t wait_ms) {
  child_options options;
  std::string server = std::filesystem::exists("/usr/sbin/nats-server") ? "/usr/sbin/nats-server"
                                                                        : "nats-server";
  options.argv = {server, "-a", "127.0.0.1", "-p", std::to_string(port_), "-m", std::to_string(monitor_port_),
                  "-js", "-sd", store_.path()};
  options.stdout_path = store_.file("nats.log");
  options.stderr_path = store_.file("nats.log");
  auto started = child_process::start(options);
  REQUIRE(started.ok());
  process_ = std::move(*started);
  auto deadline = steady_ms() + wait_ms;
  while (steady_ms() < deadline && process_.running() && !port_accepts(port_))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (process_.running() && port_accepts(port_)) return true;
  process_.stop(0);
  return false;
}

void nats_server::start() {
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto port = free_loopback_port();
    auto monitor = free_loopback_port();
    REQUIRE(port.ok());
    REQUIRE(monitor.ok());
    port_ = *port;
    monitor_port_ = *monitor;
    if (port_ != monitor_port_ && launch(10'000)) return;
  }
  FAIL("nats-server did not start: " << read_file(store_.file("nats.log")));
}

void nats_server::kill() { process_.stop(0); }

void nats_server::restart() {
  process_.stop(0);
  // Same port, so clients reconnect to the URL they know; the port may linger for a moment.
  auto deadline = steady_ms() + 10'000;
  while (steady_ms() < deadline)
    if (launch(3000)) return;
  FAIL("nats-server did not restart on port " << port_);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

nats_cluster::nats_cluster(std::size_t size, const std::string& extra_config) {
  processes_.resize(size);
  // Ports are picked free, then bound by the servers: another process may take one meanwhile,
  // so a start that fails is tried again on new ports.
  for (int attempt = 0; attempt < 5; ++attempt) {
    ports_.clear();
    cluster_ports_.clear();
    for (std::size_t i = 0; i < size; ++i) {
      auto client = free_loopback_port();
      auto route = free_loopback_port();
      REQUIRE(client.ok());
      REQUIRE(route.ok());
      ports_.push_back(*client);
      cluster_ports_.push_back(*route);
    }
    for (std::size_t i = 0; i < size; ++i) {
      std::string routes;
      for (std::size_t j = 0; j < size; ++j)
        if (j != i) routes += std::string(routes.empty() ? "" : ", ") + "\"nats://127.0.0.1:" + std::to_string(cluster_ports_[j]) + "\"";
      write_file(dir_.file("s" + std::to_string(i) + ".conf"),
                 "server_name: s" + std::to_string(i) + "\nlisten: 127.0.0.1:" + std::to_string(ports_[i]) +
                   "\njetstream { store_dir: \"" + dir_.file("store" + std::to_string(i)) + "\" }\n"
                   "cluster { name: keel-test\n listen: 127.0.0.1:" + std::to_string(cluster_ports_[i]) +
                   "\n routes: [" + routes + "] }\n" + extra_config);
    }
    bool all = true;
    for (std::size_t i = 0; i < size && all; ++i) all = launch(i, 10'000);
    if (all) return;
    for (auto& p : processes_) p.stop(0);
  }
  FAIL("the nats-servers did not start: " << read_file(dir_.file("s0-" + std::to_string(launches_ - size + 1) + ".log"))
                                          << "\n(every server's log: " << dir_.path() << ")");
}

nats_cluster::~nats_cluster() {
  for (auto& p : processes_) p.stop(0);
}

std::vector<std::string> nats_cluster::urls() const {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < size(); ++i) out.push_back(url(i));
  return out;
}

bool nats_cluster::launch(std::size_t i, std::int64_t wait_ms) {
  child_options options;
  std::string server = std::filesystem::exists("/usr/sbin/nats-server") ? "/usr/sbin/nats-server" : "nats-server";
  options.argv = {server, "-c", dir_.file("s" + std::to_string(i) + ".conf")};
  auto log = dir_.file("s" + std::to_string(i) + "-" + std::to_string(++launches_) + ".log");
  options.stdout_path = log;
  options.stderr_path = log;
  auto started = child_process::start(options);
  REQUIRE(started.ok());
  processes_[i] = std::move(*started);
  auto deadline = steady_ms() + wait_ms;
  while (steady_ms() < deadline && processes_[i].running() && !port_accepts(ports_[i]))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return processes_[i].running() && port_accepts(ports_[i]);
}

void nats_cluster::kill(std::size_t i) { processes_[i].stop(0); }

void nats_cluster::restart(std::size_t i) {
  processes_[i].stop(0);
  auto deadline = steady_ms() + 10'000;
  while (steady_ms() < deadline)
    if (launch(i, 3000)) return;
  FAIL("nats-server s" << i << " did not restart");
}

namespace {
std::vector<std::string> with_env(const std::vector<std::string>& argv,
                                  const std::vector<std::string>& env) {
  if (env.empty()) return argv;
  std::vector<std::string> out{"/usr/bin/env"};
  out.insert(out.end(), env.begin(), env.end());
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}
} // namespace

command_output run_command(const std::vector<std::string>& argv, std::int64_t timeout_ms,
                           const std::vector<std::string>& env) {
  // Asserts nothing: it runs on test threads and on others. A command that cannot start has
  // exit code -1 and says why in err.
  temp_dir dir;
  child_options options;
  options.argv = with_env(argv, env);
  options.stdout_path = dir.file("command.out");
  options.stderr_path = dir.file("command.err");
  auto child = child_process::start(options);
  command_output out;
  if (!child) {
    out.exit_code = -1;
    out.err = "could not start " + (argv.empty() ? std::string("(nothing)") : argv[0]) + ": " + child.error().message;
    return out;
  }
  auto status = child->wait(timeout_ms);
  out.exit_code = status ? *status : child->stop(0);
  out.out = read_file(dir.file("command.out"));
  out.err = read_file(dir.file("command.err"));
  return out;
}

child_process start_command(const std::vector<std::string>& argv, const temp_dir& dir,
                            const std::string& name, const std::vector<std::string>& env) {
  child_options options;
  options.argv = with_env(argv, env);
  options.stdout_path = dir.file(name + ".out");
  options.stderr_path = dir.file(name + ".err");
  auto child = child_process::start(options);
  REQUIRE(child.ok());
  return std::move(*child);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_file(const std::string& path, const std::string& content) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
}

} // namespace keel::testing

namespace keel::testing {
loopback_listener::loopback_listener() {
  fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0)
    throw std::runtime_error(std::string("a loopback listener: ") + std::strerror(errno));
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  port = ntohs(a.sin_port);
}

loopback_listener::~loopback_listener() {
  if (fd >= 0) ::close(fd);
}

void give_to_sandbox(const std::string& path) {
  passwd* account = ::getpwnam("keel-sandbox");
  if (!account) throw std::runtime_error("no keel-sandbox account: run scripts/setup.sh");
  auto give = [&](const std::filesystem::path& p) {
    if (::lchown(p.c_str(), account->pw_uid, account->pw_gid) != 0)
      throw std::runtime_error("lchown " + p.string() + ": " + std::strerror(errno));
  };
  give(path);
  if (!std::filesystem::is_directory(std::filesystem::symlink_status(path))) return;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(path)) give(entry.path());
}
} // namespace keel::testing
