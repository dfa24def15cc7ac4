#include "runtime/cpus.hpp"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

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

// The quota of the cgroup this process is in, if the cgroup filesystem shows one.
std::optional<std::size_t> cgroup_cpus() {
  std::ifstream self("/proc/self/cgroup");
  std::string line;
  while (std::getline(self, line)) {
    // "0::/path" (v2) or "4:cpu,cpuacct:/path" (v1).
    auto first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    auto controllers = line.substr(first + 1, second - first - 1);
    auto path = line.substr(second + 1);
    if (controllers.empty()) {
      if (auto n = cpus_of_cpu_max(read_small("/sys/fs/cgroup" + path + "/cpu.max"))) return n;
      continue;
    }
    std::stringstream names(controllers);
    for (std::string name; std::getline(names, name, ',');) {
      if (name != "cpu") continue;
      for (const char* mount : {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"}) {
        auto dir = std::string(mount) + path;
        if (auto n = cpus_of_cfs(read_small(dir + "/cpu.cfs_quota_us"), read_small(dir + "/cpu.cfs_period_us"))) return n;
      }
    }
  }
  return std::nullopt;
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
