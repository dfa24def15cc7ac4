// What a failing test prints of the processes it ran: their logs as they are when an assertion
// fails, not as they were when the test began (Catch's INFO is evaluated where it is written).
#pragma once

#include <functional>
#include <string>

namespace keel::testing {

// While it lives, the first failing assertion of the test case prints (to stderr) what
// `describe` returns at that moment.
class on_failure {
public:
  explicit on_failure(std::function<std::string()> describe);
  ~on_failure();
  on_failure(const on_failure&) = delete;
  on_failure& operator=(const on_failure&) = delete;
};

} // namespace keel::testing
