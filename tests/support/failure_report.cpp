// A Catch listener: on a failing assertion, the reports registered by on_failure are printed; an
// assertion made off the thread that runs the test cases stops the test binary (below).
// Built without the precompiled catch.hpp: the listener interfaces need this define first.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "tests/support/failure_report.hpp"

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

namespace keel::testing {
namespace {

struct registry {
  std::mutex mutex;
  std::vector<std::pair<const on_failure*, std::function<std::string()>>> reports;  // in order made
  bool printed = false;  // once per test case: the logs at the first failure are the telling ones
};

registry& reports() {
  static registry r;
  return r;
}

// Catch v2's assertions and INFO are not thread-safe: one made on another thread while the test's
// thread makes one corrupts Catch's state (a double free, seen only under load). So an assertion
// off the test's thread ends the binary at once, every time, naming where it was written: a helper
// that may run on other threads returns what went wrong instead of asserting.
class failure_listener : public Catch::TestEventListenerBase {
public:
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo&) override {
    test_thread_ = std::this_thread::get_id();
    std::lock_guard lock{reports().mutex};
    reports().printed = false;
  }
  void assertionStarting(const Catch::AssertionInfo& info) override {
    if (std::this_thread::get_id() == test_thread_) return;
    std::cerr << info.lineInfo << ": a Catch assertion (" << info.macroName << ") ran off the test's thread; "
              << "Catch's assertions are not thread-safe: report the result to the test's thread instead\n"
              << std::flush;
    std::abort();
  }
  bool assertionEnded(const Catch::AssertionStats& stats) override {
    if (stats.assertionResult.succeeded()) return true;
    std::vector<std::pair<const on_failure*, std::function<std::string()>>> now;
    {
      std::lock_guard lock{reports().mutex};
      if (reports().printed || reports().reports.empty()) return true;
      reports().printed = true;
      now = reports().reports;
    }
    std::cerr << "=== at the first failure (" << stats.assertionResult.getSourceInfo() << "):\n";
    for (auto& [owner, describe] : now) std::cerr << describe() << "\n";
    std::cerr << "=== end of what was running\n" << std::flush;
    return true;
  }

private:
  std::thread::id test_thread_;
};

CATCH_REGISTER_LISTENER(failure_listener)

} // namespace

on_failure::on_failure(std::function<std::string()> describe) {
  std::lock_guard lock{reports().mutex};
  reports().reports.emplace_back(this, std::move(describe));
}

on_failure::~on_failure() {
  std::lock_guard lock{reports().mutex};
  auto& all = reports().reports;
  all.erase(std::remove_if(all.begin(), all.end(), [this](const auto& r) { return r.first == this; }), all.end());
}

} // namespace keel::testing
