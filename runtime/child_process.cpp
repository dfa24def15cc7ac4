#include "runtime/child_process.hpp"

#include "runtime/clock.hpp"

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

void redirect(const std::string& path, int fd) {
  if (path.empty()) return;
  int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out >= 0) {
    ::dup2(out, fd);
    ::close(out);
  }
}
} // namespace

result<child_process> child_process::start(const child_options& options) {
  if (options.argv.empty()) return make_error(errc::invalid_argument, "no program to start");
  std::vector<char*> argv;
  for (const auto& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // A pipe closed on exec tells the parent whether exec succeeded.
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0)
    return make_error(errc::io, std::string("pipe: ") + std::strerror(errno));
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return make_error(errc::io, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::close(report[0]);
    if (options.own_process_group) ::setpgid(0, 0);
    if (options.die_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
    }
    redirect(options.stdout_path, STDOUT_FILENO);
    redirect(options.stderr_path, STDERR_FILENO);
    ::execvp(argv[0], argv.data());
    int code = errno;
    [[maybe_unused]] auto written = ::write(report[1], &code, sizeof code);
    ::_exit(127);
  }
  ::close(report[1]);
  int code = 0;
  auto got = ::read(report[0], &code, sizeof code);
  ::close(report[0]);
  if (got == sizeof code) {
    ::waitpid(pid, nullptr, 0);
    return make_error(errc::not_found,
                      "cannot start " + options.argv[0] + ": " + std::strerror(code));
  }
  if (options.own_process_group) ::setpgid(pid, pid);  // also from here, to win the race
  child_process child;
  child.pid_ = pid;
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
