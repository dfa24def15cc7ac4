// What a node sizes its threads by: the CPUs it may use, not the machine's.
#include "runtime/cpus.hpp"

#include <catch2/catch.hpp>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <thread>

using namespace keel;

TEST_CASE("cpus: a cgroup quota counts as the CPUs it allows, rounded up, and no quota counts as none", "[cpus]") {
  CHECK(cpus_of_cpu_max("200000 100000\n") == std::optional<std::size_t>(2));
  CHECK(cpus_of_cpu_max("150000 100000") == std::optional<std::size_t>(2));
  CHECK(cpus_of_cpu_max("50000 100000") == std::optional<std::size_t>(1));
  CHECK_FALSE(cpus_of_cpu_max("max 100000\n"));
  CHECK_FALSE(cpus_of_cpu_max(""));
  CHECK_FALSE(cpus_of_cpu_max("0 100000"));
  CHECK_FALSE(cpus_of_cpu_max("100000 0"));
  CHECK_FALSE(cpus_of_cpu_max("12x 100000"));
  CHECK(cpus_of_cfs("400000\n", "100000\n") == std::optional<std::size_t>(4));
  CHECK_FALSE(cpus_of_cfs("-1\n", "100000\n"));
  CHECK_FALSE(cpus_of_cfs("", ""));
}

TEST_CASE("cpus: a process allowed one CPU counts one, whatever the machine has", "[cpus]") {
  auto all = usable_cpus();
  CHECK(all >= 1);
  CHECK(all <= std::max(1u, std::thread::hardware_concurrency()));
  // In a child, so that this process's own affinity is left alone.
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (::sched_setaffinity(0, sizeof(one), &one) != 0) ::_exit(2);
    ::_exit(usable_cpus() == 1 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("cpus: a CPU quota on the process's cgroup or on a parent of it counts, wherever the hierarchy is mounted",
          "[cpus]") {
  // Needs root and the cgroup v1 cpu controller mounted at /sys/fs/cgroup/cpu (as on the machines
  // keel is tested on); elsewhere there is nothing to try it on.
  const std::string top = "/sys/fs/cgroup/cpu";
  if (::geteuid() != 0 || ::access((top + "/cgroup.procs").c_str(), W_OK) != 0) {
    WARN("no writable cgroup v1 cpu hierarchy here: not tried");
    return;
  }
  const std::string parent = top + "/keel-cpus-test-" + std::to_string(::getpid()), child = parent + "/inner";
  REQUIRE(::mkdir(parent.c_str(), 0755) == 0);
  REQUIRE(::mkdir(child.c_str(), 0755) == 0);
  auto write = [](const std::string& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
    out.flush();
    return static_cast<bool>(out);
  };
  // 1.5 CPUs on the parent (rounded up: 2), 0.5 on the child (1) in the second round.
  CHECK(write(parent + "/cpu.cfs_quota_us", "150000"));
  auto in_child = [&] {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (!write(child + "/cgroup.procs", std::to_string(::getpid()))) ::_exit(100);
      ::_exit(static_cast<int>(std::min<std::size_t>(usable_cpus(), 99)));
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  auto machine = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  CHECK(in_child() == std::min(machine, 2));   // the parent's quota binds its child
  CHECK(write(child + "/cpu.cfs_quota_us", "50000"));
  CHECK(in_child() == 1);                      // the smaller of the two
  ::rmdir(child.c_str());
  ::rmdir(parent.c_str());
}
