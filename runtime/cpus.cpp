#include "runtime/cpus.hpp"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace keel {
namespace {

std::optional<long long> number(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  long long n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return n;
}

std::optional<std::size_t> quota_cpus(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return std::nullopt;
  return static_cast<std::size_t>(std::max<long long>(1, (quota + period - 1) / period));
}

std::string read_small(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

struct cgroup_mount {
  std::string root;   // the part of the hierarchy mounted (a container sees its own cgroup as "/")
  std::string point;  // where
  bool v2 = false;
  bool cpu = false;   // v1: the cpu controller's hierarchy
};

// The cgroup filesystems mounted here (/proc/self/mountinfo: "id parent dev root point options
// [tags] - type source super-options").
std::vector<cgroup_mount> cgroup_mounts() {
  std::vector<cgroup_mount> out;
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string type, source, options;
    tail >> type >> source >> options;
    if (type != "cgroup" && type != "cgroup2") continue;
    cgroup_mount m{root, point, type == "cgroup2", false};
    std::stringstream names(options);
    for (std::string name; std::getline(names, name, ',');) m.cpu = m.cpu || name == "cpu";
    out.push_back(std::move(m));
  }
  return out;
}

// The smallest quota on the way from the process's cgroup up to the top of what is mounted: a
// parent's quota (a systemd slice, a pod) binds its children too.
std::optional<std::size_t> smallest_quota(const cgroup_mount& m, const std::string& path, bool v2) {
  if (path.compare(0, m.root.size(), m.root) != 0) return std::nullopt;  // not under this mount
  std::string rel = m.root == "/" ? path : path.substr(m.root.size());
  std::optional<std::size_t> smallest;
  while (true) {
    auto dir = m.point + (rel == "/" ? std::string() : rel);
    auto here = v2 ? cpus_of_cpu_max(read_small(dir + "/cpu.max"))
                   : cpus_of_cfs(read_small(dir + "/cpu.cfs_quota_us"), read_small(dir + "/cpu.cfs_period_us"));
    if (here && (!smallest || *here < *smallest)) smallest = here;
    auto slash = rel.rfind('/');
    if (rel.empty() || rel == "/" || slash == std::string::npos) break;
    rel = slash == 0 ? std::string("/") : rel.substr(0, slash);
  }
  return smallest;
}

// The quota of the cgroup this process is in, if the cgroup filesystem shows one.
std::optional<std::size_t> cgroup_cpus() {
  auto mounts = cgroup_mounts();
  std::optional<std::size_t> smallest;
  auto consider = [&](std::optional<std::size_t> n) {
    if (n && (!smallest || *n < *smallest)) smallest = n;
  };
  std::ifstream self("/proc/self/cgroup");
  std::string line;
  while (std::getline(self, line)) {
    // "0::/path" (v2) or "4:cpu,cpuacct:/path" (v1).
    auto first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    auto controllers = line.substr(first + 1, second - first - 1);
    auto path = line.substr(second + 1);
    bool v2 = controllers.empty();
    bool cpu = false;
    std::stringstream names(controllers);
    for (std::string name; std::getline(names, name, ',');) cpu = cpu || name == "cpu";
    if (!v2 && !cpu) continue;
    for (const auto& m : mounts)
      if (m.v2 == v2 && (v2 || m.cpu)) consider(smallest_quota(m, path, v2));
  }
  return smallest;
}

} // namespace

std::optional<std::size_t> cpus_of_cpu_max(std::string_view text) {
  auto space = text.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  auto quota = number(text.substr(0, space)), period = number(text.substr(space + 1));
  if (!quota || !period) return std::nullopt;  // "max": no quota
  return quota_cpus(*quota, *period);
}

std::optional<std::size_t> cpus_of_cfs(std::string_view quota, std::string_view period) {
  auto q = number(quota), p = number(period);
  if (!q || !p) return std::nullopt;
  return quota_cpus(*q, *p);
}

std::size_t usable_cpus() {
  std::size_t n = std::max(1u, std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) n = std::max(1, CPU_COUNT(&set));
  if (auto quota = cgroup_cpus()) n = std::min(n, *quota);
  return n;
}

} // namespace keel
