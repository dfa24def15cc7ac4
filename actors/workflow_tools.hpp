// The waiting tools an agent may give its model (agents.<id>.workflow_tools; docs/WORKFLOWS.md):
// sleep, wait_until, wait_for_event. The orchestrator runs them itself (no worker, no sandbox):
// their definitions for the model, and what a call asks for (checked, bounded), as plain
// functions for the run machine. Also the checks of an event sent to a run.
#pragma once

#include "runtime/config.hpp"
#include "runtime/wire.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace keel::actors {

// Whether `name` is a waiting tool this agent gives its model.
bool is_workflow_tool(const config::agent_config& agent, const std::string& name);
wire::value workflow_tool_definition(const std::string& name, const config::agent_config& agent);

// What a call asks for: a sleep until a time, or a wait for an event (with a time it gives up at,
// or 0); `problem` set when the call is refused (the model is told it).
struct wait_plan {
  std::string kind;  // "sleep" or "event"
  std::int64_t until_ms = 0;
  std::string event;
  std::string problem;
};
wait_plan plan_wait(const config::agent_config& agent, const std::string& tool, const wire::value& arguments,
                    std::int64_t now_ms);

// A fan-out (run_agents): the child runs asked for, checked against the agent's sub-agents and
// bounds; `problem` set when the call is refused (the model is told it).
struct fan_out_plan {
  std::vector<std::pair<std::string, std::string>> runs;  // agent, task
  std::string wait = "all";                               // "all" or "first"
  bool cancel_rest = false;                               // on_failure = "cancel_rest"
  std::string problem;
};
fan_out_plan plan_fan_out(const config::agent_config& agent, const wire::value& arguments);
constexpr std::size_t fan_out_runs_max = 16;
constexpr std::size_t fan_out_task_bytes_max = 16 << 10;
constexpr std::size_t fan_out_output_bytes_max = 8 << 10;  // of each child's output, in the call's result
// Events whose names start so are a fan-out's child outcomes, sent only by keel (join_sender).
constexpr const char* join_event_prefix = "keel.join/";

// Event names: 1 to 128 characters of [A-Za-z0-9_.:/-].
bool is_event_name(const std::string& name);
constexpr std::size_t event_payload_bytes_max = 64 << 10;  // packed
constexpr std::size_t event_id_bytes_max = 128;
constexpr std::size_t events_kept_max = 64;                 // sent and not yet waited for, per run
constexpr std::size_t events_kept_bytes_max = 256 << 10;    // their payloads, packed, per run
constexpr std::size_t event_payload_depth_max = 32;         // nesting (the run's stored state holds it deeper)
// How deep a value nests (a scalar: 1).
std::size_t nesting(const wire::value& v);
constexpr std::size_t event_ids_kept_max = 256;              // taken, remembered against repeats

// RFC 3339 times: wall-clock ms to "2026-12-07T10:00:00.000Z", and back (any offset, optional
// fraction); nullopt when the text is not one.
std::string rfc3339(std::int64_t ms);
std::optional<std::int64_t> parse_rfc3339(const std::string& text);

} // namespace keel::actors
