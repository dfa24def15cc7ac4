#include "sandbox/environment.hpp"

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>
#include <unistd.h>

namespace keel::sandbox {

namespace fs = std::filesystem;

std::vector<std::string> bwrap_prefix(const environment& env, const std::string& workspace,
                                      const std::string& cwd) {
  std::vector<std::string> args = {"bwrap", "--die-with-parent", "--unshare-all"};
  if (env.network) args.push_back("--share-net");
  // A read-only system: the programs and libraries, and /etc for names and certificates.
  for (const char* dir : {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"})
    args.insert(args.end(), {"--ro-bind-try", dir, dir});
  args.insert(args.end(), {"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                           "--bind", workspace, workspace, "--chdir", cwd,
                           "--setenv", "HOME", workspace, "--setenv", "TMPDIR", "/tmp",
                           "--hostname", "keel-sandbox", "--"});
  return args;
}

result<void> bwrap_available() {
  static const result<void> probed = [] () -> result<void> {
    int status = std::system("bwrap --die-with-parent --unshare-all --ro-bind / / true >/dev/null 2>&1");
    if (status != 0)
      return make_error(errc::unavailable,
                        "bubblewrap (bwrap) cannot run here: install it (apt-get install bubblewrap) "
                        "and allow user namespaces");
    return success();
  }();
  return probed;
}

namespace {
// The pids hierarchy: cgroup v2 (unified, pids enabled for children) or v1's pids controller.
std::string pids_root() {
  std::ifstream controllers("/sys/fs/cgroup/cgroup.subtree_control");
  std::string line;
  if (controllers && std::getline(controllers, line) && line.find("pids") != std::string::npos)
    return "/sys/fs/cgroup";
  if (fs::exists("/sys/fs/cgroup/pids/cgroup.procs")) return "/sys/fs/cgroup/pids";
  return {};
}
std::atomic<std::uint64_t> cgroup_counter{0};
} // namespace

pids_cgroup pids_cgroup::make(std::int64_t processes_max) {
  pids_cgroup out;
  static const std::string root = pids_root();
  if (root.empty()) return out;
  std::error_code ec;
  std::string base = root + "/keel";
  fs::create_directories(base, ec);
  std::string dir = base + "/" + std::to_string(::getpid()) + "-" + std::to_string(++cgroup_counter);
  if (!fs::create_directory(dir, ec)) return out;
  std::ofstream(dir + "/pids.max") << processes_max;
  out.directory_ = dir;
  out.procs_file_ = dir + "/cgroup.procs";
  return out;
}

pids_cgroup::pids_cgroup(pids_cgroup&& other) noexcept
  : directory_(std::move(other.directory_)), procs_file_(std::move(other.procs_file_)) {
  other.directory_.clear();
  other.procs_file_.clear();
}

void pids_cgroup::kill_all() const {
  if (directory_.empty()) return;
  // Repeat: a process may fork while the list is read; the pids limit bounds how many.
  for (int round = 0; round < 50; ++round) {
    std::ifstream procs(procs_file_);
    bool any = false;
    for (pid_t pid; procs >> pid;) {
      ::kill(pid, SIGKILL);
      any = true;
    }
    if (!any) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

pids_cgroup::~pids_cgroup() {
  if (directory_.empty()) return;
  kill_all();
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (::rmdir(directory_.c_str()) == 0 || errno == ENOENT) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

} // namespace keel::sandbox
