#include "sandbox/exec.hpp"

#include "runtime/clock.hpp"
#include "sandbox/text.hpp"

#include <boost/process/child.hpp>
#include <boost/process/env.hpp>
#include <boost/process/environment.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/io.hpp>
#include <boost/process/pipe.hpp>
#include <boost/process/search_path.hpp>
#include <boost/process/start_dir.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

namespace keel::sandbox {

namespace bp = boost::process;

constexpr std::int64_t written_poll_ms = 100;

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

} // namespace

result<exec_result> run_command(const exec_request& request) {
  auto started = steady_ms();
  bp::pipe out_pipe, err_pipe;
  bp::environment env;  // only what the request gives: nothing of keel's own environment
  for (const auto& [k, v] : request.env) env[k] = v;
  std::vector<std::string> args = request.wrapper;
  args.insert(args.end(), {"/bin/sh", "-c", request.command});
  if (args[0].find('/') == std::string::npos) {  // Boost.Process does not search PATH itself
    auto found = bp::search_path(args[0]);
    if (found.empty()) return make_error(errc::not_found, args[0] + " is not installed (not on PATH)");
    args[0] = found.string();
  }
  std::error_code spawn_error;
  auto cgroup = call_cgroup::make(request.limits);
  std::vector<const char*> procs_files;
  for (const auto& f : cgroup.procs_files()) procs_files.push_back(f.c_str());
  const resource_limits limits = request.limits;
  const int cwd_fd = request.cwd_fd;
  const std::vector<int> inherited = request.inherited_fds;
  const local_confinement* confinement = request.confinement;
  // The child leads its own session and process group, so a timeout (or the end of the shell)
  // can kill everything it started and it has no terminal to type into; it dies with this
  // process too. Between fork and exec it takes its limits, joins its cgroups, changes into the
  // checked directory by descriptor and, in local mode, takes on its confinement. Nothing here
  // allocates: this is a fork of a threaded process.
  bp::child child(args, env, bp::std_in < bp::null, bp::std_out > out_pipe, bp::std_err > err_pipe,
                  spawn_error,
                  bp::extend::on_exec_setup = [&procs_files, limits, cwd_fd, &inherited, confinement](auto&) {
                    auto die = [](const char* what, int error_number) {
                      const char prefix[] = "keel sandbox: cannot start the command: ";
                      [[maybe_unused]] auto a = ::write(2, prefix, sizeof prefix - 1);
                      [[maybe_unused]] auto b = ::write(2, what, std::strlen(what));
                      const char* reason = std::strerror(error_number);
                      [[maybe_unused]] auto c = ::write(2, ": ", 2);
                      [[maybe_unused]] auto d = ::write(2, reason, std::strlen(reason));
                      [[maybe_unused]] auto e = ::write(2, "\n", 1);
                      ::_exit(126);
                    };
                    ::setsid();
                    // Orphans of the command are reaped by its shell, so their writes count.
                    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
                    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
                    auto set = [](int resource, std::int64_t value) {
                      if (value <= 0) return;
                      rlimit l{static_cast<rlim_t>(value), static_cast<rlim_t>(value)};
                      ::setrlimit(resource, &l);
                    };
                    // CPU: SIGXCPU at the limit (it says why), SIGKILL a second later.
                    if (limits.cpu_seconds_max > 0) {
                      rlimit cpu{static_cast<rlim_t>(limits.cpu_seconds_max),
                                 static_cast<rlim_t>(limits.cpu_seconds_max + 1)};
                      ::setrlimit(RLIMIT_CPU, &cpu);
                    }
                    set(RLIMIT_AS, limits.memory_bytes_max);
                    set(RLIMIT_FSIZE, limits.file_bytes_max);
                    set(RLIMIT_NPROC, limits.processes_max);
                    for (const char* procs_file : procs_files) {
                      int fd = ::open(procs_file, O_WRONLY | O_CLOEXEC);
                      if (fd < 0) die("joining its cgroup", errno);
                      if (::write(fd, "0", 1) != 1) die("joining its cgroup", errno);
                      ::close(fd);
                    }
                    if (cwd_fd >= 0 && ::fchdir(cwd_fd) != 0) die("changing into its directory", errno);
                    for (int fd : inherited)
                      if (::fcntl(fd, F_SETFD, 0) != 0) die("keeping a descriptor for bubblewrap", errno);
                    if (confinement) {
                      const char* step = "";
                      if (int failed = confinement->apply_in_child(&step)) die(step, failed);
                    }
                  });
  if (spawn_error)
    return make_error(errc::io, "cannot run the command: " + spawn_error.message());
  pid_t group = child.id();

  // Our copies of the write ends must go, or the pipes never reach their end.
  for (auto* p : {&out_pipe, &err_pipe}) {
    if (p->native_sink() >= 0) ::close(p->native_sink());
    p->assign_sink(-1);
  }
  int fds[2] = {::dup(out_pipe.native_source()), ::dup(err_pipe.native_source())};
  out_pipe.close();
  err_pipe.close();
  head_tail_buffer out(request.output_chars_max), err(request.output_chars_max);
  head_tail_buffer* buffers[2] = {&out, &err};

  exec_result r;
  auto deadline = started + request.timeout_ms;
  auto next_poll = started + written_poll_ms;
  auto over_written = [&] {
    if (steady_ms() < next_poll) return false;
    next_poll = steady_ms() + written_poll_ms;
    r.written_bytes = cgroup.poll_written_bytes();
    return limits.written_bytes_max > 0 && r.written_bytes > limits.written_bytes_max;
  };
  while (child.running()) {
    if (steady_ms() >= deadline) {
      r.timed_out = true;
      r.killed_by = "timeout";
      break;
    }
    if (over_written()) {
      r.killed_by = "written_bytes_max";
      break;
    }
    pump(fds, buffers, 20);
    if (fds[0] < 0 && fds[1] < 0) {
      // Both pipes closed but the shell lives on (it closed them itself): wait for it, bounded.
      while (child.running() && steady_ms() < deadline && !over_written()) ::usleep(5000);
    }
  }
  // Whatever is left in the group (a background child, or everything on timeout) is killed,
  // so that nobody holds the pipes open; then what was written is read to the end.
  ::kill(-group, SIGKILL);
  r.written_bytes = std::max(r.written_bytes, cgroup.poll_written_bytes());
  cgroup.kill_all();  // whatever left the group (a new session) but not the cgroup
  std::error_code wait_error;
  if (!r.killed_by.empty()) child.terminate(wait_error);
  child.wait(wait_error);
  auto drain_deadline = steady_ms() + 1000;
  while ((fds[0] >= 0 || fds[1] >= 0) && steady_ms() < drain_deadline) pump(fds, buffers, 20);
  for (int fd : fds)
    if (fd >= 0) ::close(fd);

  r.exit_code = !r.killed_by.empty() ? 137 : child.exit_code();
  if (r.killed_by.empty() && child.native_exit_code() != 0 && WIFSIGNALED(child.native_exit_code()))
    r.exit_code = 128 + WTERMSIG(child.native_exit_code());
  if (r.killed_by.empty() && cgroup.memory_limit_hit()) r.killed_by = "memory_bytes_max";
  r.stdout_text = sanitize_utf8(strip_ansi(out.text()));
  r.stderr_text = sanitize_utf8(strip_ansi(err.text()));
  r.stdout_cut = out.cut();
  r.stderr_cut = err.cut();
  r.duration_ms = steady_ms() - started;
  r.processes_limited_by = cgroup.active() ? "cgroup" : "rlimit";
  return r;
}

} // namespace keel::sandbox
