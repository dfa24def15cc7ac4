// How many CPUs this process may use: what it sizes its threads by (lanes, the actor scheduler).
// A node in a container or under `taskset` on a large machine is allowed a few of its cores;
// sized by the machine's count it would run many more busy threads than it has CPUs.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace keel {

// The smaller of the CPUs in this process's affinity mask and its cgroup's CPU quota (rounded
// up; cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`), at least 1. The machine's count when
// neither can be read.
std::size_t usable_cpus();

// A cgroup v2 `cpu.max` ("max 100000", "150000 100000"): the CPUs it allows, rounded up; none
// for "max" or text that is not a quota.
std::optional<std::size_t> cpus_of_cpu_max(std::string_view text);
// cgroup v1: `cpu.cfs_quota_us` and `cpu.cfs_period_us` (a quota of -1: none).
std::optional<std::size_t> cpus_of_cfs(std::string_view quota, std::string_view period);

} // namespace keel
