// What a run makes of the tools its agent lists: built-in ones, run by keel's workers with the
// sandbox's policy, and declared ones (<queue>.<tool>), run by the tool workers of that queue
// (docs/PROTOCOL.md, tool workers): the list the model is given, whether a call the model asked
// for may go (listed, declared, its arguments as declared), and what a tool worker's answer means.
// Plain functions, for the run machine.
#pragma once

#include "runtime/config.hpp"
#include "runtime/tool_declaration.hpp"
#include "runtime/wire.hpp"

#include <functional>
#include <memory>
#include <string>

namespace keel::actors {

// The tools a model task carries: a built-in tool by name, a declared one as its definition
// ({name, description, input_schema}); a declared tool that no worker has declared yet is left
// out (the model cannot call what it was not told of).
wire::value model_tool_list(const config::agent_config& agent, const tools::declared_tools* declared,
                            const std::function<const config::agent_config*(const std::string&)>& find_agent = {});

// Sub-agents: the tool an agent calls another by (agent__<id>), its definition, and how deep a
// chain of runs may go (a root run and at most this many below it).
constexpr const char* sub_agent_prefix = "agent__";
constexpr std::size_t sub_agent_depth_max = 4;
wire::value sub_agent_definition(const std::string& id, const config::agent_config* child);
// The agent a tool name calls, if it is one of `agent`'s sub-agents ("" otherwise).
std::string sub_agent_of(const config::agent_config& agent, const std::string& name);

struct resolved_call {
  enum class kind { built_in, declared, sub_agent, refused };
  kind what = kind::refused;
  std::shared_ptr<const tools::declared_tool> tool;  // declared
  std::string problem;                               // refused: what the model is told
};

// A call the model asked for, by the name it used: a tool the agent lists (built in, or declared
// with arguments that match the declared schema), or refused with the reason.
resolved_call resolve_call(const config::agent_config& agent, const tools::declared_tools* declared,
                           const std::string& name, const wire::value& arguments);

// The declared tool behind a step's queue and call name (null: no longer declared).
std::shared_ptr<const tools::declared_tool> declared_tool_of(const tools::declared_tools* declared,
                                                             const std::string& queue, const std::string& name);

// A tool worker's answer, checked against what its tool declared: `{status: "done", result,
// is_error}`, `{status: "needs_approval", form}` or `{status: "refused", result, message}`. An
// answer that is none of these, a result larger than the tool's result_bytes_max, or one that
// does not match its output_schema becomes an error result that says so (the model sees it, the
// run goes on).
struct tool_answer {
  std::string status = "done";  // done, needs_approval, refused
  wire::value result;
  bool is_error = false;
  wire::value form;             // needs_approval
};
tool_answer check_answer(const tools::declared_tool* tool, const wire::value& payload);

} // namespace keel::actors
