#include "sandbox/exec.hpp"

#include "runtime/clock.hpp"
#include "runtime/spawner.hpp"
#include "sandbox/text.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace keel::sandbox {

constexpr std::int64_t written_poll_ms = 20;

namespace {

// Reads whatever is ready on the open pipes for up to `wait_ms`; closes a pipe at its end.
void pump(int fds[2], head_tail_buffer* buffers[2], int wait_ms) {
  pollfd polled[2];
  int count = 0;
  int which[2];
  for (int i = 0; i < 2; ++i) {
    if (fds[i] < 0) continue;
    polled[count] = {fds[i], POLLIN, 0};
    which[count++] = i;
  }
  if (count == 0) return;
  if (::poll(polled, static_cast<nfds_t>(count), wait_ms) <= 0) return;
  char chunk[65536];
  for (int k = 0; k < count; ++k) {
    if (!(polled[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    int i = which[k];
    auto n = ::read(fds[i], chunk, sizeof chunk);
    if (n > 0) buffers[i]->append(std::string_view(chunk, static_cast<std::size_t>(n)));
    else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      ::close(fds[i]);
      fds[i] = -1;
    }
  }
}

// What the child takes on between fork and exec, after its descriptors are set.
struct preparation {
  resource_limits limits;
  bool cgroup_bounds_processes = false;
  const local_confinement* confinement = nullptr;
  const identity* run_as = nullptr;
};

int prepare_child(const void* context, const char** failed_step) noexcept {
  const auto& p = *static_cast<const preparation*>(context);
  // Orphans of the command are reaped inside the call, so what they write is counted.
  ::syscall(SYS_prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  auto set = [](int resource, std::int64_t value) {
    if (value <= 0) return;
    rlimit l{static_cast<rlim_t>(value), static_cast<rlim_t>(value)};
    ::syscall(SYS_prlimit64, 0, resource, &l, nullptr);
  };
  // CPU: SIGXCPU at the limit (it says why), SIGKILL a second later.
  if (p.limits.cpu_seconds_max > 0) {
    rlimit cpu{static_cast<rlim_t>(p.limits.cpu_seconds_max), static_cast<rlim_t>(p.limits.cpu_seconds_max + 1)};
    ::syscall(SYS_prlimit64, 0, RLIMIT_CPU, &cpu, nullptr);
  }
  set(RLIMIT_AS, p.limits.memory_bytes_max);
  // No one file may outgrow what the whole call may write.
  auto file_max = p.limits.file_bytes_max;
  if (p.limits.written_bytes_max > 0 && (file_max <= 0 || p.limits.written_bytes_max < file_max))
    file_max = p.limits.written_bytes_max;
  set(RLIMIT_FSIZE, file_max);
  // RLIMIT_NPROC counts every process of the uid, across calls: only where no cgroup counts.
  if (!p.cgroup_bounds_processes) set(RLIMIT_NPROC, p.limits.processes_max);
  if (p.confinement) return p.confinement->apply_in_child(*p.run_as, failed_step);
  return become(*p.run_as, failed_step);
}

// The spawn options for a request: its program (a shell, or its argv), environment, directory,
// namespaces, private /tmp, cgroup and the child's preparation.
spawn_options options_for(const exec_request& request, const call_cgroup& cgroup, const preparation& prepared) {
  spawn_options o;
  o.argv = request.wrapper;
  if (request.argv.empty()) o.argv.insert(o.argv.end(), {"/bin/sh", "-c", request.command});
  else o.argv.insert(o.argv.end(), request.argv.begin(), request.argv.end());
  o.env = request.env;  // only what the request gives: nothing of keel's own environment
  o.kept_fds = request.inherited_fds;
  o.cwd_fd = request.cwd_fd;
  o.cwd_path = request.cwd_path;
  // The child leads its own session (no terminal to type into) and dies with this thread. In a
  // pid namespace of its own, everything it starts dies when it ends, however it ends.
  o.new_session = true;
  o.die_with_parent = true;
  o.namespaces = request.namespaces;
  o.fresh_proc = (request.namespaces & CLONE_NEWPID) && (request.namespaces & CLONE_NEWNS);
  if (!request.private_tmp.empty() && (request.namespaces & CLONE_NEWNS)) {
    o.tmpfs_path = request.private_tmp;
    o.tmpfs_options = "size=" + std::to_string(std::max<std::int64_t>(request.limits.written_bytes_max, 1 << 20)) +
                      ",mode=0700,uid=" + std::to_string(request.run_as.uid) +
                      ",gid=" + std::to_string(request.run_as.gid);
  }
  o.cgroup_procs_files = cgroup.procs_files();
  o.prepare = prepare_child;
  o.prepare_context = &prepared;
  return o;
}

} // namespace

result<exec_result> run_command(const exec_request& request) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return make_error(errc::io, std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return make_error(errc::io, std::string("pipe: ") + std::strerror(errno));
  }
  auto cgroup = call_cgroup::make(request.limits);
  preparation prepared{request.limits, cgroup.active(), request.confinement, &request.run_as};

  spawn_options o = options_for(request, cgroup, prepared);
  o.stdout_fd = out_pipe[1];
  o.stderr_fd = err_pipe[1];
  auto spawned = spawn(o);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (!spawned) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return make_error(spawned.error().code, "keel sandbox: " + spawned.error().message);
  }
  const pid_t child = *spawned;
  // The command's time starts once it runs: time the worker spent preparing it (or stopped
  // before it started) is not taken from it.
  const auto started = steady_ms();

  int fds[2] = {out_pipe[0], err_pipe[0]};
  head_tail_buffer out(request.output_chars_max), err(request.output_chars_max);
  head_tail_buffer* buffers[2] = {&out, &err};

  exec_result r;
  int status = 0;
  rusage usage{};
  bool reaped = false;
  auto reap = [&](int flags) {
    if (reaped) return true;
    pid_t got;
    do got = ::wait4(child, &status, flags, &usage);
    while (got < 0 && errno == EINTR);
    reaped = got == child;
    return reaped;
  };
  auto deadline = started + request.timeout_ms;
  auto next_poll = started + written_poll_ms;
  auto over_written = [&] {
    if (steady_ms() < next_poll) return false;
    next_poll = steady_ms() + written_poll_ms;
    r.written_bytes = cgroup.poll_written_bytes(child);
    return request.limits.written_bytes_max > 0 && r.written_bytes > request.limits.written_bytes_max;
  };
  while (!reap(WNOHANG)) {
    if (steady_ms() >= deadline) {
      r.timed_out = true;
      r.killed_by = "timeout";
      break;
    }
    if (over_written()) {
      r.killed_by = "written_bytes_max";
      break;
    }
    if (fds[0] < 0 && fds[1] < 0) ::usleep(5000);  // both pipes closed, the shell lives on
    else pump(fds, buffers, 20);
  }
  // Whatever is left (a background child, or everything on a limit) is killed, so that nobody
  // holds the pipes open; then what was written is read to the end.
  ::kill(-child, SIGKILL);
  if (!r.killed_by.empty()) ::kill(child, SIGKILL);
  cgroup.kill_all();  // whatever left the group (a new session) but not the cgroup
  reap(0);
  auto drain_deadline = steady_ms() + 1000;
  while ((fds[0] >= 0 || fds[1] >= 0) && steady_ms() < drain_deadline) pump(fds, buffers, 20);
  for (int fd : fds)
    if (fd >= 0) ::close(fd);

  // The child's usage counts every process it reaped; in a pid namespace of its own that is
  // every process of the call, however short-lived (blocks of 512 bytes written to storage).
  std::int64_t reaped_written = static_cast<std::int64_t>(usage.ru_oublock) * 512;
  r.written_bytes = std::max({r.written_bytes, cgroup.poll_written_bytes(), reaped_written});
  if (r.killed_by.empty() && request.limits.written_bytes_max > 0 && r.written_bytes > request.limits.written_bytes_max)
    r.killed_by = "written_bytes_max";
  if (!r.killed_by.empty()) r.exit_code = 137;
  else if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) r.exit_code = 128 + WTERMSIG(status);
  if (r.killed_by.empty() && cgroup.memory_limit_hit()) r.killed_by = "memory_bytes_max";
  r.stdout_text = sanitize_utf8(strip_ansi(out.text()));
  r.stderr_text = sanitize_utf8(strip_ansi(err.text()));
  r.stdout_cut = out.cut();
  r.stderr_cut = err.cut();
  r.duration_ms = steady_ms() - started;
  r.processes_limited_by = cgroup.active() ? "cgroup" : "rlimit";
  return r;
}

result<std::unique_ptr<running_program>> running_program::start(const exec_request& request) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) return make_error(errc::io, std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    for (int fd : in_pipe) ::close(fd);
    return make_error(errc::io, std::string("pipe: ") + std::strerror(errno));
  }
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]}) ::close(fd);
    return make_error(errc::io, std::string("pipe: ") + std::strerror(errno));
  }
  std::unique_ptr<running_program> program(new running_program(call_cgroup::make(request.limits)));
  preparation prepared{request.limits, program->cgroup_.active(), request.confinement, &request.run_as};
  spawn_options o = options_for(request, program->cgroup_, prepared);
  o.stdin_fd = in_pipe[0];
  o.stdout_fd = out_pipe[1];
  o.stderr_fd = err_pipe[1];
  auto spawned = spawn(o);
  for (int fd : {in_pipe[0], out_pipe[1], err_pipe[1]}) ::close(fd);
  program->in_ = in_pipe[1];
  program->out_ = out_pipe[0];
  program->err_ = err_pipe[0];
  if (!spawned) return make_error(spawned.error().code, "keel sandbox: " + spawned.error().message);
  program->pid_ = *spawned;
  for (int fd : {program->in_, program->out_, program->err_}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return program;
}

bool running_program::ended(std::string* status) {
  if (!reaped_ && pid_ > 0) {
    pid_t got;
    do got = ::waitpid(pid_, &status_, WNOHANG);
    while (got < 0 && errno == EINTR);
    reaped_ = got == pid_;
  }
  if (reaped_ && status) {
    if (WIFEXITED(status_)) *status = "exited with status " + std::to_string(WEXITSTATUS(status_));
    else if (WIFSIGNALED(status_)) *status = std::string("killed by signal ") + ::strsignal(WTERMSIG(status_));
  }
  return reaped_;
}

running_program::~running_program() {
  for (int fd : {in_, out_, err_})
    if (fd >= 0) ::close(fd);
  if (pid_ > 0 && !reaped_) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
  }
  cgroup_.kill_all();
  if (pid_ > 0 && !reaped_) {
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

} // namespace keel::sandbox
