// What an agent's sandbox allows: where its workspace is, which calls run at once, which ask a
// person first, and the bounds on time, work and output. Filled from [agents.<id>.sandbox].
#pragma once

#include "runtime/config.hpp"
#include "sandbox/environment.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace keel::sandbox {

enum class exec_security { approval_always, allowlist, allow_always };
enum class outside_access { approve, deny };  // a path outside the workspace asks, or is refused

struct policy {
  environment env;
  exec_security exec = exec_security::approval_always;
  std::vector<std::string> allowlist;   // command patterns with '*' and '?' over simple commands
  bool file_approval = true;            // writes and edits ask first
  outside_access outside = outside_access::approve;
  std::int64_t exec_timeout_ms = 300'000;
  std::int64_t tool_timeout_ms = 30'000;      // read, write, edit, glob, grep
  std::size_t walk_entries_max = 100'000;     // directory entries glob and grep look at
  std::size_t output_chars_max = 100'000;     // exec's streams, grep's matches
  std::size_t read_bytes_max = 10 << 20;
  std::size_t write_bytes_max = 10 << 20;     // content of one write or edit
  std::size_t read_lines_default = 2000;
  std::size_t line_chars_max = 2000;
  std::size_t glob_results_max = 1000;
  std::size_t grep_results_default = 100;
  std::size_t preview_chars_max = 4000;  // of content shown in an approval form
  std::vector<config::command_tool> commands;  // [agents.<id>.commands.*]
};

// The policy an agent's [agents.<id>.sandbox] config describes; workers and `keel tool` use it.
policy policy_from_config(const config::agent_config& agent);

} // namespace keel::sandbox
