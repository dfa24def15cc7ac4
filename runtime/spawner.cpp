#include "runtime/spawner.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <linux/close_range.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace keel {

namespace {

// What the child sends back through a close-on-exec pipe when it cannot reach exec.
struct child_failure {
  int error_number;
  char step[96];
};

// A program named without a '/' is looked up on the PATH the child will have (its own
// environment's), else on this process's.
std::string find_on_path(const std::string& name, const spawn_options& options) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  if (options.env)
    for (const auto& [k, v] : *options.env)
      if (k == "PATH") path = v.c_str();
  std::string dirs = path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    auto end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = (end > start ? dirs.substr(start, end - start) : ".") + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return {};
}

// Where this process's command line and environment are in its memory (what /proc shows).
struct shown_memory {
  std::uintptr_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
};

const shown_memory& own_shown_memory() {
  static const shown_memory found = [] {
    shown_memory m;
    std::ifstream stat("/proc/self/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), {});
    auto close = text.rfind(')');  // the name may hold spaces; the fields follow its ')'
    if (close == std::string::npos) return m;
    std::istringstream fields(text.substr(close + 2));
    std::vector<std::string> all;
    for (std::string f; fields >> f;) all.push_back(f);
    // Fields 48 to 51 of stat(5), counted from 3 after the name.
    if (all.size() < 49) return m;
    m.arg_start = std::stoull(all[45]);
    m.arg_end = std::stoull(all[46]);
    m.env_start = std::stoull(all[47]);
    m.env_end = std::stoull(all[48]);
    return m;
  }();
  return found;
}

// Everything the child needs, built in the parent: the child only makes system calls, and makes
// them directly (no C library wrapper a sanitizer intercepts: after a raw clone in a threaded
// process, an interceptor may wait on a lock that another thread held).
struct child_plan {
  const spawn_options* options;
  std::string program;
  std::vector<char*> argv;
  std::vector<std::string> env_storage;
  std::vector<char*> envp;
  int report_fd;
  int null_fd;
  pid_t parent;
  shown_memory shown;
};

// Byte loops through volatile pointers: the compiler may not turn them into calls of memset or
// memcpy, which sanitizers intercept.
void fill(void* to, char value, std::size_t n) {
  auto* out = static_cast<volatile char*>(to);
  for (std::size_t i = 0; i < n; ++i) out[i] = value;
}

void copy(void* to, const char* from, std::size_t n) {
  auto* out = static_cast<volatile char*>(to);
  for (std::size_t i = 0; i < n && from[i]; ++i) out[i] = from[i];
}

[[noreturn]] void fail(const child_plan& plan, const char* step) {
  child_failure failure;
  int error_number = errno;
  fill(&failure, 0, sizeof failure);
  failure.error_number = error_number;
  copy(failure.step, step, sizeof failure.step - 1);
  [[maybe_unused]] auto written = ::syscall(SYS_write, plan.report_fd, &failure, sizeof failure);
  ::syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

void close_all_but_kept(const child_plan& plan) {
  // Everything from 3 up closes at exec; then the descriptors meant for the child are kept.
  if (::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    long open_max = ::sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (open_max > 0 ? open_max : 65536); ++fd) ::syscall(SYS_fcntl, static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
  }
  for (int fd : plan.options->kept_fds)
    if (::syscall(SYS_fcntl, fd, F_SETFD, 0) != 0) fail(plan, "keeping a descriptor");
}

// As pid 1 of a new pid namespace, this process stays behind as the namespace's init: it starts
// the program as its child (which goes on below), reaps every orphan, and when the program ends
// it ends the same way, and with it (by the kernel) everything else in the namespace. The
// program is not pid 1, so signals reach it as anywhere else (SIGXCPU from its CPU limit too).
void be_init(const child_plan& plan) {
  const spawn_options& o = *plan.options;
  ::syscall(SYS_setsid);
  if (o.die_with_parent) ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  // Its memory is a copy of the caller's: what /proc shows of it (its command line, its
  // environment, its name) is blanked in that copy.
  static const char name[] = "keel-call-init";
  ::syscall(SYS_prctl, PR_SET_NAME, name, 0, 0, 0);
  for (auto [start, end] : {std::pair{plan.shown.arg_start, plan.shown.arg_end},
                            std::pair{plan.shown.env_start, plan.shown.env_end}})
    if (start && end > start) fill(reinterpret_cast<void*>(start), 0, end - start);
  if (plan.shown.arg_end > plan.shown.arg_start + sizeof name)
    copy(reinterpret_cast<void*>(plan.shown.arg_start), name, sizeof name);
  long program = ::syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (program < 0) fail(plan, "starting the program in its namespace");
  if (program == 0) return;  // the program: on with its preparation
  // Nothing of the caller's stays open here: the caller sees the end of the report pipe and of
  // the output pipes once the program has exec'd or ended.
  ::syscall(SYS_close_range, 0U, ~0U, 0U);
  int status = 0;
  for (;;) {
    long ended = ::syscall(SYS_wait4, -1, &status, 0, nullptr);
    if (ended == program) break;
    if (ended < 0 && errno != EINTR) ::syscall(SYS_exit_group, 127);
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 127;
  ::syscall(SYS_exit_group, code);
  __builtin_unreachable();
}

// What a program inherits of the caller's signals across exec: the mask, and every signal the
// caller ignores (the node ignores SIGPIPE and blocks its stop signals). It starts with neither.
void reset_signals() {
  struct {
    void* handler;
    unsigned long flags;
    void* restorer;
    unsigned long mask;
  } default_action{};  // SIG_DFL
  for (int sig = 1; sig < 65; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP) ::syscall(SYS_rt_sigaction, sig, &default_action, nullptr, sizeof(unsigned long));
  unsigned long none = 0;
  ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, sizeof none);
}

[[noreturn]] void run_child(const child_plan& plan) {
  const spawn_options& o = *plan.options;
  reset_signals();
  if (o.namespaces & CLONE_NEWNS) {
    // Nothing this child mounts propagates back to the host.
    if (::syscall(SYS_mount, nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) fail(plan, "making its mounts private");
    if (o.fresh_proc && (o.namespaces & CLONE_NEWPID) &&
        ::syscall(SYS_mount, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
      fail(plan, "mounting its own /proc");
    if (!o.tmpfs_path.empty() &&
        ::syscall(SYS_mount, "tmpfs", o.tmpfs_path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, o.tmpfs_options.c_str()) != 0)
      fail(plan, "mounting its temporary directory");
  }
  if (o.namespaces & CLONE_NEWPID) be_init(plan);
  if (o.new_session) ::syscall(SYS_setsid);
  else if (o.own_process_group) ::syscall(SYS_setpgid, 0, 0);
  if (o.die_with_parent) {
    ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    // Outside a new pid namespace, a parent already gone is seen here (inside one, getppid is 0).
    if (!(o.namespaces & CLONE_NEWPID) && ::syscall(SYS_getppid) != plan.parent) ::syscall(SYS_exit_group, 127);
  }
  auto place = [&](int from, int to, const char* step) {
    if (from < 0) return;
    if (from == to ? ::syscall(SYS_fcntl, to, F_SETFD, 0) != 0 : ::syscall(SYS_dup2, from, to) < 0) fail(plan, step);
  };
  place(o.stdin_fd >= 0 ? o.stdin_fd : plan.null_fd, STDIN_FILENO, "setting its standard input");
  place(o.stdout_fd, STDOUT_FILENO, "setting its standard output");
  place(o.stderr_fd, STDERR_FILENO, "setting its standard error");
  for (const auto& file : o.cgroup_procs_files) {
    int fd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, file.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd < 0 || ::syscall(SYS_write, fd, "0", 1) != 1) fail(plan, "joining its cgroup");
    ::syscall(SYS_close, fd);
  }
  if ((o.namespaces & CLONE_NEWNS) && o.cwd_fd >= 0 && !o.cwd_path.empty()) {
    struct stat checked {}, entered {};
    if (::syscall(SYS_fstat, o.cwd_fd, &checked) != 0 || ::syscall(SYS_chdir, o.cwd_path.c_str()) != 0 ||
        ::syscall(SYS_newfstatat, AT_FDCWD, ".", &entered, 0) != 0)
      fail(plan, "changing into its directory");
    if (checked.st_dev != entered.st_dev || checked.st_ino != entered.st_ino) {
      errno = ESTALE;
      fail(plan, "changing into its directory (it was replaced after it was checked)");
    }
  } else if (o.cwd_fd >= 0 && ::syscall(SYS_fchdir, o.cwd_fd) != 0) {
    fail(plan, "changing into its directory");
  }
  close_all_but_kept(plan);
  if (o.prepare) {
    const char* step = "preparing";
    if (int failed = o.prepare(o.prepare_context, &step)) {
      errno = failed;
      fail(plan, step);
    }
  }
  ::syscall(SYS_execve, plan.program.c_str(), plan.argv.data(), plan.envp.data());
  fail(plan, "exec");
}

} // namespace

result<pid_t> spawn(const spawn_options& options) {
  if (options.argv.empty()) return make_error(errc::invalid_argument, "no program to start");
  child_plan plan{&options, find_on_path(options.argv[0], options), {}, {}, {}, -1, -1, ::getpid(), own_shown_memory()};
  if (plan.program.empty())
    return make_error(errc::not_found, options.argv[0] + " is not installed (not on PATH)");
  for (const auto& a : options.argv) plan.argv.push_back(const_cast<char*>(a.c_str()));
  plan.argv.push_back(nullptr);
  if (options.env) {
    for (const auto& [k, v] : *options.env) plan.env_storage.push_back(k + "=" + v);
    for (auto& e : plan.env_storage) plan.envp.push_back(e.data());
  } else {
    for (char** e = environ; *e; ++e) plan.envp.push_back(*e);
  }
  plan.envp.push_back(nullptr);
  // Whatever a library opened without the flag since the last start (nats.c's sockets, a stream's
  // file) is made close-on-exec here too; the child closes everything not meant for it anyway.
  mark_inherited_descriptors_cloexec();
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return make_error(errc::io, std::string("pipe: ") + std::strerror(errno));
  plan.report_fd = report[1];
  plan.null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (plan.null_fd < 0) {
    ::close(report[0]);
    ::close(report[1]);
    return make_error(errc::io, std::string("/dev/null: ") + std::strerror(errno));
  }
  pid_t pid = options.namespaces
                ? static_cast<pid_t>(::syscall(SYS_clone, options.namespaces | SIGCHLD, nullptr, nullptr, nullptr, nullptr))
                : ::fork();
  if (pid == 0) run_child(plan);
  int spawn_errno = errno;
  ::close(report[1]);
  ::close(plan.null_fd);
  if (pid < 0) {
    ::close(report[0]);
    return make_error(errc::io, std::string(options.namespaces ? "clone: " : "fork: ") + std::strerror(spawn_errno));
  }
  child_failure failure{};
  ssize_t got;
  do got = ::read(report[0], &failure, sizeof failure);
  while (got < 0 && errno == EINTR);
  ::close(report[0]);
  if (got == static_cast<ssize_t>(sizeof failure)) {
    ::waitpid(pid, nullptr, 0);
    return make_error(failure.error_number == ENOENT ? errc::not_found : errc::io,
                      "cannot start " + options.argv[0] + ": " + failure.step + ": " +
                        std::strerror(failure.error_number));
  }
  if (!options.new_session && options.own_process_group && !(options.namespaces & CLONE_NEWPID))
    ::setpgid(pid, pid);  // also from here, to win the race with a signal to the group
  return pid;
}

void mark_inherited_descriptors_cloexec() {
  if (::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
  long open_max = ::sysconf(_SC_OPEN_MAX);
  for (long fd = 3; fd < (open_max > 0 ? open_max : 65536); ++fd) ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
}

} // namespace keel
