// What a node sizes its threads by: the CPUs it may use, not the machine's.
#include "runtime/cpus.hpp"

#include <catch2/catch.hpp>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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
