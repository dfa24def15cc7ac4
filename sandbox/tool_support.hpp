// What the six tools share inside the sandbox folder: outcomes, argument access with errors the
// model can act on, and the check of a location against the path restriction and against what
// a person approved.
#pragma once

#include "sandbox/exec.hpp"
#include "sandbox/tools.hpp"

#include <map>
#include <optional>
#include <string>

namespace keel::sandbox::detail {

tool_outcome done(wire::value result);
tool_outcome failed(const std::string& message);
tool_outcome refused(const std::string& message);
tool_outcome ask(const std::string& tool, const std::string& reason, wire::value context);

struct arguments {
  const wire::value& v;
  const std::string& tool;
  std::optional<std::string> problem;

  std::string str(const char* key, bool required);
  std::int64_t integer(const char* key, std::int64_t fallback, std::int64_t min, std::int64_t max);
  bool boolean(const char* key, bool fallback);
  std::vector<std::string> strings(const char* key);
  std::map<std::string, std::string> env(const char* key);
};

outside_paths outside_mode(const policy& p);

// For a location outside the workspace: refused (deny), a form to approve, or, when this call
// was approved, a check that it still resolves to the path the form showed. nullopt: go on.
std::optional<tool_outcome> check_outside(const workspace& ws, const policy& p, const tool_request& r,
                                          const location& at, const std::string& given,
                                          wire::value context);

// An approved call acts on what its form showed: the form's `key` must equal `now`.
std::optional<tool_outcome> check_approved(const tool_request& r, const char* key, const std::string& now);

std::string preview(const std::string& content, std::size_t chars_max);

// What a program that ran gives the model (exec and command tools alike): exit code, streams,
// whether time or a limit ended it, what was cut; a non-zero exit is an error result.
tool_outcome program_outcome(const exec_result& ran);

tool_outcome exec_tool(const workspace& ws, const policy& p, const tool_request& r);
tool_outcome read_tool(const workspace& ws, const policy& p, const tool_request& r);
tool_outcome write_tool(const workspace& ws, const policy& p, const tool_request& r);
tool_outcome edit_tool(const workspace& ws, const policy& p, const tool_request& r);
tool_outcome glob_tool(const workspace& ws, const policy& p, const tool_request& r);
tool_outcome grep_tool(const workspace& ws, const policy& p, const tool_request& r);
const config::command_tool* find_command(const policy& p, const std::string& name);
tool_outcome command_tool(const workspace& ws, const policy& p, const tool_request& r, const config::command_tool& c);

} // namespace keel::sandbox::detail
