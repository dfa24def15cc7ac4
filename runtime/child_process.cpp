#include "runtime/child_process.hpp"

#include "runtime/clock.hpp"
#include "runtime/spawner.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace keel {

namespace {
int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

} // namespace

result<child_process> child_process::start(const child_options& options) {
  spawn_options o;
  o.argv = options.argv;
  o.own_process_group = options.own_process_group;
  o.die_with_parent = options.die_with_parent;
  // Output files are opened here, close-on-exec: the child gets them as 1 and 2 only.
  auto open_output = [](const std::string& path) -> result<int> {
    if (path.empty()) return -1;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return make_error(errc::io, "cannot open " + path + ": " + std::strerror(errno));
    return fd;
  };
  auto out = open_output(options.stdout_path);
  if (!out) return out.error();
  auto err = open_output(options.stderr_path);
  if (!err) {
    if (*out >= 0) ::close(*out);
    return err.error();
  }
  o.stdout_fd = *out;
  o.stderr_fd = *err;
  o.stdin_fd = STDIN_FILENO;
  auto pid = spawn(o);
  for (int fd : {*out, *err})
    if (fd >= 0) ::close(fd);
  if (!pid) return pid.error();
  child_process child;
  child.pid_ = *pid;
  child.own_group_ = options.own_process_group;
  return child;
}

child_process::child_process(child_process&& other) noexcept
  : pid_(other.pid_), own_group_(other.own_group_), status_(other.status_) {
  other.pid_ = -1;
}

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) stop(0);
    pid_ = other.pid_;
    own_group_ = other.own_group_;
    status_ = other.status_;
    other.pid_ = -1;
  }
  return *this;
}

child_process::~child_process() {
  if (pid_ > 0) stop(0);
}

bool child_process::running() {
  if (pid_ <= 0 || status_ >= 0) return false;
  int status = 0;
  pid_t got = ::waitpid(pid_, &status, WNOHANG);
  if (got == pid_) {
    status_ = decode_status(status);
    return false;
  }
  return got == 0;
}

void child_process::signal(int sig) {
  if (pid_ <= 0 || status_ >= 0) return;
  if (own_group_) ::kill(-pid_, sig);
  else ::kill(pid_, sig);
}

result<int> child_process::wait(std::int64_t timeout_ms) {
  if (pid_ <= 0) return make_error(errc::invalid_argument, "no child");
  auto deadline = steady_ms() + timeout_ms;
  while (running()) {
    if (steady_ms() >= deadline)
      return make_error(errc::timeout, "child " + std::to_string(pid_) + " still running");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

int child_process::stop(std::int64_t grace_ms) {
  if (pid_ <= 0) return -1;
  if (running()) {
    if (grace_ms > 0) {
      signal(SIGTERM);
      if (auto s = wait(grace_ms); s) return *s;
    }
    signal(SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    status_ = decode_status(status);
  }
  // Anything left in the group (a grandchild) goes too.
  if (own_group_) ::kill(-pid_, SIGKILL);
  return status_;
}

result<int> free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errc::io, std::string("socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return make_error(errc::io, std::string("bind: ") + std::strerror(errno));
  }
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return static_cast<int>(ntohs(address.sin_port));
}

bool port_accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return ok;
}

} // namespace keel
