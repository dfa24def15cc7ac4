#include "sandbox/environment.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <mutex>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "runtime/spawner.hpp"

namespace keel::sandbox {

namespace fs = std::filesystem;

std::vector<std::string> bwrap_prefix(const environment& env, const std::string& workspace,
                                      const std::string& cwd,
                                      const std::vector<std::pair<std::string, std::string>>& command_env,
                                      const std::vector<int>& seccomp_fds) {
  // A user namespace whose only uid is an unprivileged one, no capabilities, no way to make
  // further namespaces, a session of its own (no terminal to type into), and death with keel.
  std::vector<std::string> args = {
    "bwrap", "--die-with-parent", "--new-session", "--unshare-all", "--unshare-user",
    "--disable-userns", "--uid", std::to_string(sandbox_uid), "--gid", std::to_string(sandbox_gid),
    "--cap-drop", "ALL", "--hostname", "keel-sandbox"};
  if (env.network) args.push_back("--share-net");
  // A read-only system: programs and libraries, and of /etc only what programs need to start,
  // resolve names and check certificates (no shadow, no keys, no host configuration).
  for (const char* dir : {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt"})
    args.insert(args.end(), {"--ro-bind-try", dir, dir});
  for (const char* name : {"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl",
                           "ca-certificates", "ca-certificates.conf", "nsswitch.conf", "hosts",
                           "host.conf", "resolv.conf", "gai.conf", "protocols", "services",
                           "localtime", "timezone", "mime.types", "os-release", "debian_version",
                           "passwd", "group", "nodejs", "python3", "gitconfig", "inputrc"}) {
    std::string path = std::string("/etc/") + name;
    args.insert(args.end(), {"--ro-bind-try", path, path});
  }
  std::string tmp_size = std::to_string(std::max<std::int64_t>(env.limits.written_bytes_max, 1 << 20));
  args.insert(args.end(), {"--proc", "/proc", "--dev", "/dev", "--size", tmp_size, "--tmpfs", "/dev/shm",
                           "--size", tmp_size, "--tmpfs", "/tmp",
                           "--bind", workspace, workspace, "--chdir", cwd, "--clearenv"});
  // Nothing is writable but the workspace, /tmp and /dev/shm: the root bubblewrap builds (a
  // tmpfs, with /etc's files in it) and /dev are made read-only once everything is mounted.
  args.insert(args.end(), {"--remount-ro", "/", "--remount-ro", "/dev"});
  for (const auto& [name, value] : command_env) args.insert(args.end(), {"--setenv", name, value});
  for (int fd : seccomp_fds) args.insert(args.end(), {"--add-seccomp-fd", std::to_string(fd)});
  args.push_back("--");
  return args;
}

result<void> bwrap_available(const identity& run_as) {
  static std::mutex mutex;
  static std::map<uid_t, result<void>> probed;
  std::lock_guard lock(mutex);
  auto known = probed.find(run_as.uid);
  if (known != probed.end()) return known->second;
  auto probe = [&]() -> result<void> {
    spawn_options o;
    o.argv = {"bwrap", "--die-with-parent", "--unshare-all", "--unshare-user", "--disable-userns", "--uid", "1000",
              "--gid", "1000", "--cap-drop", "ALL", "--ro-bind", "/", "/", "true"};
    o.env = std::vector<std::pair<std::string, std::string>>{{"PATH", "/usr/bin:/bin"}};
    int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    o.stdout_fd = o.stderr_fd = null_fd;
    o.prepare = [](const void* id, const char** step) noexcept { return become(*static_cast<const identity*>(id), step); };
    o.prepare_context = &run_as;
    auto pid = spawn(o);
    if (null_fd >= 0) ::close(null_fd);
    int status = -1;
    if (pid) ::waitpid(*pid, &status, 0);
    if (!pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return make_error(errc::unavailable,
                        "bubblewrap (bwrap) cannot run here as " + run_as.name +
                          ": install it (apt-get install bubblewrap) and allow user namespaces");
    return success();
  };
  return probed.emplace(run_as.uid, probe()).first->second;
}

namespace {

struct hierarchy {
  std::string pids;    // where pids cgroups are made
  std::string memory;  // where memory cgroups are made (the same directory under cgroup v2)
  bool v2 = false;
};

hierarchy find_hierarchy() {
  hierarchy h;
  std::ifstream controllers("/sys/fs/cgroup/cgroup.subtree_control");
  std::string line;
  if (controllers && std::getline(controllers, line)) {
    h.v2 = true;
    if (line.find("pids") != std::string::npos) h.pids = "/sys/fs/cgroup";
    if (line.find("memory") != std::string::npos) h.memory = "/sys/fs/cgroup";
    return h;
  }
  if (fs::exists("/sys/fs/cgroup/pids/cgroup.procs")) h.pids = "/sys/fs/cgroup/pids";
  if (fs::exists("/sys/fs/cgroup/memory/cgroup.procs")) h.memory = "/sys/fs/cgroup/memory";
  return h;
}

std::atomic<std::uint64_t> cgroup_counter{0};

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

std::string make_group(const std::string& root) {
  std::error_code ec;
  std::string base = root + "/keel";
  fs::create_directories(base, ec);
  if (root == "/sys/fs/cgroup") write_file(base + "/cgroup.subtree_control", "+pids +memory");
  std::string dir = base + "/" + std::to_string(::getpid()) + "-" + std::to_string(++cgroup_counter);
  if (!fs::create_directory(dir, ec)) return {};
  return dir;
}

} // namespace

namespace {
// Whether the process that made a call cgroup is still there (any process of that pid: one that
// took the pid of a dead worker keeps its leftovers from being swept, which is the safe side).
bool maker_alive(pid_t pid) {
  if (pid <= 0) return false;
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}
} // namespace

std::string call_temporary_base() {
  const char* base = std::getenv("TMPDIR");
  return base && *base == '/' ? base : "/tmp";
}

std::size_t sweep_orphaned_calls() {
  static const hierarchy h = find_hierarchy();
  std::size_t killed = 0;
  std::error_code listed;
  for (const auto& entry : fs::directory_iterator(call_temporary_base(), listed)) {
    auto name = entry.path().filename().string();
    if (name.rfind("keel-call-", 0) != 0) continue;
    auto pid = static_cast<pid_t>(std::strtol(name.c_str() + 10, nullptr, 10));
    if (pid <= 0 || maker_alive(pid)) continue;
    std::error_code removed;
    fs::remove_all(entry.path(), removed);
  }
  for (const auto& root : {h.pids, h.memory}) {
    if (root.empty()) continue;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(root + "/keel", ec)) {
      if (!entry.is_directory()) continue;
      auto name = entry.path().filename().string();
      auto dash = name.find('-');
      if (dash == std::string::npos) continue;
      auto pid = static_cast<pid_t>(std::strtol(name.substr(0, dash).c_str(), nullptr, 10));
      if (maker_alive(pid)) continue;
      auto dir = entry.path().string();
      for (int round = 0; round < 100; ++round) {
        std::ifstream procs(dir + "/cgroup.procs");
        bool any = false;
        for (pid_t p; procs >> p;) {
          if (::kill(p, SIGKILL) == 0) ++killed;
          any = true;
        }
        if (!any || ::rmdir(dir.c_str()) == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      (void)::rmdir(dir.c_str());
    }
  }
  return killed;
}

call_cgroup call_cgroup::make(const resource_limits& limits) {
  call_cgroup out;
  static const hierarchy h = find_hierarchy();
  out.v2_ = h.v2;
  if (!h.pids.empty()) {
    std::string dir = make_group(h.pids);
    if (!dir.empty()) {
      write_file(dir + "/pids.max", std::to_string(limits.processes_max));
      out.directories_.push_back(dir);
      out.procs_files_.push_back(dir + "/cgroup.procs");
    }
  }
  if (!h.memory.empty() && limits.memory_bytes_max > 0) {
    std::string dir = h.v2 && !out.directories_.empty() ? out.directories_[0] : make_group(h.memory);
    if (!dir.empty()) {
      bool bounded = h.v2 ? write_file(dir + "/memory.max", std::to_string(limits.memory_bytes_max))
                          : write_file(dir + "/memory.limit_in_bytes", std::to_string(limits.memory_bytes_max));
      if (h.v2) write_file(dir + "/memory.swap.max", "0");
      else write_file(dir + "/memory.memsw.limit_in_bytes", std::to_string(limits.memory_bytes_max));
      out.memory_bounded_ = bounded;
      out.memory_dir_ = dir;
      if (!(h.v2 && !out.directories_.empty())) {
        out.directories_.push_back(dir);
        out.procs_files_.push_back(dir + "/cgroup.procs");
      }
    }
  }
  return out;
}

call_cgroup::call_cgroup(call_cgroup&& other) noexcept
  : directories_(std::move(other.directories_)), procs_files_(std::move(other.procs_files_)),
    memory_dir_(std::move(other.memory_dir_)),
    memory_bounded_(other.memory_bounded_), v2_(other.v2_), peak_written_(other.peak_written_) {
  other.directories_.clear();
  other.procs_files_.clear();
}

void call_cgroup::kill_all() const {
  // Repeat: a process may fork while the list is read; the pids limit bounds how many.
  for (int round = 0; round < 100; ++round) {
    bool any = false;
    for (const auto& file : procs_files_) {
      std::ifstream procs(file);
      for (pid_t pid; procs >> pid;) {
        ::kill(pid, SIGKILL);
        any = true;
      }
    }
    if (!any) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::int64_t call_cgroup::poll_written_bytes(pid_t reaper) {
  // A process's count includes the children it has reaped, so the sum over the live processes
  // of the call, and its reaper's (outside the cgroup), counts every byte once.
  std::vector<long> pids;
  if (!procs_files_.empty()) {
    std::ifstream procs(procs_files_.front());
    for (long pid; procs >> pid;) pids.push_back(pid);
  }
  if (reaper > 0 && std::find(pids.begin(), pids.end(), reaper) == pids.end()) pids.push_back(reaper);
  std::int64_t total = 0;
  for (long pid : pids) {
    std::ifstream io("/proc/" + std::to_string(pid) + "/io");
    std::string key;
    std::int64_t value = 0;
    while (io >> key >> value)
      if (key == "write_bytes:") total += value;
  }
  peak_written_ = std::max(peak_written_, total);
  return peak_written_;
}

bool call_cgroup::memory_limit_hit() const {
  if (memory_dir_.empty()) return false;
  std::ifstream events(memory_dir_ + (v2_ ? "/memory.events" : "/memory.oom_control"));
  std::string key;
  std::int64_t value = 0;
  while (events >> key >> value)
    if (key == "oom_kill" && value > 0) return true;
  return false;
}

call_cgroup::~call_cgroup() {
  if (directories_.empty()) return;
  kill_all();
  for (const auto& dir : directories_)
    for (int attempt = 0; attempt < 100; ++attempt) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

} // namespace keel::sandbox
