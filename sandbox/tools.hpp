// The six sandbox tools (exec, read, write, edit, glob, grep) behind one entry point that applies
// the policy: a call runs, asks a person first (with the form that person must see), or is
// refused. Workers call it; so does `keel tool`.
#pragma once

#include "runtime/wire.hpp"
#include "sandbox/command_policy.hpp"
#include "sandbox/policy.hpp"
#include "sandbox/workspace.hpp"

#include <string>
#include <vector>

namespace keel::sandbox {

struct tool_request {
  std::string tool;
  wire::value arguments;
  bool approved = false;            // a person approved this very call...
  wire::value approved_form;        // ...as this form showed it (its context); checked again
  std::vector<allow_rule> allow_rules;  // approvals remembered for the run or the session
  std::string task_id;              // given to commands as KEEL_TASK_ID
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
// A command tool's definition ({name, description, input_schema}).
wire::value tool_definition(const config::command_tool& command);

// Approvals remembered as a run's state keeps them ([{kind, command}], or plain strings, which
// are exact commands).
std::vector<allow_rule> allow_rules_from_value(const wire::value& v);
wire::value to_value(const allow_rule& rule);

} // namespace keel::sandbox
