// The six sandbox tools (exec, read, write, edit, glob, grep) behind one entry point that applies
// the policy: a call runs, asks a person first (with the form that person must see), or is
// refused. Workers call it; so does `keel tool`.
#pragma once

#include "runtime/wire.hpp"
#include "sandbox/policy.hpp"
#include "sandbox/workspace.hpp"

#include <string>
#include <vector>

namespace keel::sandbox {

struct tool_request {
  std::string tool;
  wire::value arguments;
  bool approved = false;                    // a person approved this very call
  std::vector<std::string> allow_patterns;  // command patterns the run was told to always allow
  std::string task_id;                      // given to commands as KEEL_TASK_ID
};

enum class outcome_kind { done, needs_approval, refused };

struct tool_outcome {
  outcome_kind kind = outcome_kind::done;
  // done: the tool's result; `is_error` says whether the model should read it as a failure.
  wire::value result;
  bool is_error = false;
  // needs_approval: {tool, reason, context: {...}} as a person must see it.
  wire::value form;
  std::string message;  // refused: why
};

tool_outcome run_tool(const workspace& ws, const policy& p, const tool_request& request);

const std::vector<std::string>& tool_names();
// The JSON schema of a tool's arguments and a description, for model providers.
wire::value tool_definition(const std::string& name);

} // namespace keel::sandbox
