// A run's state beyond its header: one C++ type, and the one place that converts it to and from
// the value stored in the run's snapshot. Every read is checked: a damaged record is an error
// that names the field, never an exception on whoever reads it.
#pragma once

#include "runtime/result.hpp"
#include "runtime/wire.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace keel::store {

struct token_usage {
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
  std::int64_t cache_read_tokens = 0;
  std::int64_t cache_write_tokens = 0;
};

struct tool_call {
  std::string id;
  std::string name;
  wire::value arguments;  // as the model gave them (any value)
};

struct step_retry {
  std::string reason;
  std::int64_t next_try_ms = 0;  // wall clock
  std::string waiting;           // "waiting on the model, next try in N s"
};

// The task in flight: a model step or the tool call at call_index.
struct pending_step {
  std::uint64_t step = 0;
  std::uint32_t attempt = 1;
  bool model = true;
  bool approved = false;              // tool steps: a person approved this call
  wire::value form;                   // tool steps: the form the person approved (null: none)
  std::int64_t failing_since_ms = 0;  // 0: not failing
  std::uint32_t failures = 0;
  std::int64_t waited_ms = 0;         // the waits asked for between tries so far
  std::optional<step_retry> retry;
  // A declared tool's call (a tool worker's, docs/PROTOCOL.md): the queue its task goes to, and
  // when the call is given up if no result came (wall clock, ms; 0: no deadline).
  std::string queue;
  std::int64_t deadline_ms = 0;
  // A call of another agent (agent__<id>): that agent; its child run is started and followed by
  // the run's actor instead of a worker (docs/TOOLS.md, sub-agents).
  std::string sub_agent;
};

struct suspension {
  std::string step_key;
  std::uint64_t call_index = 0;
  wire::value form;  // what the person is shown (from the worker)
  // Workflow limits (docs/WORKFLOWS.md), wall clock, ms; 0: none. When the approval is answered
  // for the person with the agent's default answer, and when it is escalated (and to whom, once).
  std::int64_t expires_ms = 0;
  std::int64_t escalate_ms = 0;
  std::string escalated_to;
};

// A run that waits for a time or for an outside event (docs/WORKFLOWS.md): the call it answers.
struct wait_state {
  std::string kind;             // "sleep" (until a time) or "event"
  std::uint64_t call_index = 0;
  std::string event;            // kind "event": the name waited for
  std::int64_t until_ms = 0;    // sleep: when it ends; event: when the wait gives up (0: never)
  std::int64_t since_ms = 0;
};

// An outside event sent to a run (`signal`), kept until the run waits for its name.
struct signal_record {
  std::string id;
  std::string name;
  wire::value payload;
  std::string by;
  std::int64_t at_ms = 0;
};

// A run of an agent with a queue (docs/WORKFLOWS.md): its place in line and, once it may run, when.
struct queue_place {
  std::string name;
  std::string key;               // its concurrency key (empty: none)
  std::int64_t since_ms = 0;     // when it got in line (a retry gets in line again, later)
  std::int64_t admitted_ms = 0;  // 0: still in line
};

// A fan-out (the run_agents tool, docs/WORKFLOWS.md): child runs the run waits for, all or the
// first, by a stated rule on failure.
struct join_child {
  std::string agent;
  std::string task;
  std::string run_id;   // empty until it exists
  wire::value outcome;  // null until it ended: {status, result, is_error} as a sub-agent's call gets
};

struct join_state {
  std::uint64_t step = 0;        // its number, in its children's idempotency keys
  std::string wait = "all";      // "all" or "first"
  bool cancel_rest = false;      // on_failure = "cancel_rest": a failure ends the join
  std::int64_t deadline_ms = 0;  // step_timeout_ms from its start (0: none)
  std::int64_t check_ms = 0;     // when children not started or not heard from are looked at
  std::uint64_t checks = 0;
  std::vector<join_child> children;
};

struct answer {
  bool approved = false;
  std::string feedback;
};

struct remembered_rule {
  std::string kind;  // "exact" or "prefix"
  std::string command;
};

struct run_state {
  wire::value input;
  std::uint64_t messages_count = 0;  // the conversation is stored message by message
  std::int64_t steps = 0;            // model steps completed
  token_usage usage;
  std::uint64_t task_seq = 0;        // the last task step number given out
  std::optional<pending_step> pending;
  std::vector<tool_call> calls;      // of the last model answer
  std::uint64_t call_index = 0;      // the next of them to run
  std::optional<suspension> suspended;
  std::map<std::string, answer> answers;  // by step key
  std::vector<remembered_rule> allow_rules;
  std::string started_by;  // who invoked the run (the name its invoke's subject ended with)
  std::string provider;  // empty: the agent's
  std::string model;     // empty: the agent's
  std::string last_text;
  std::optional<std::string> output;
  std::optional<std::string> stop_reason;
  std::optional<std::string> error;
  std::optional<pending_step> failed_pending;  // the step a failed run failed on, for a retry
  // Sub-agents: the run that started this one ({run_id, agent, task_step, attempt, call_id,
  // results_subject, chain: [root ... parent]}; null: none), the child runs this one started
  // ([{run_id, agent, call_id, task_step}]), and the tokens those used, with their own children.
  wire::value parent;
  wire::value children;
  token_usage children_usage;
  // Cost by the configured prices (docs/OPERATIONS.md), US dollars: the run's own model steps,
  // and its child runs' (with theirs). Steps of a model with no price add nothing.
  double cost_usd = 0;
  double children_cost_usd = 0;
  // Workflows (docs/WORKFLOWS.md): what the run waits for, the events sent to it that it has not
  // waited for yet (oldest first), the ids of the latest events taken (a repeat is not taken
  // twice), and when the run is stopped for taking too long (wall clock, ms; 0: never).
  std::optional<wait_state> waiting;
  std::vector<signal_record> signals;
  std::vector<std::string> signal_ids;
  std::int64_t deadline_ms = 0;
  std::optional<queue_place> queue;
  std::optional<join_state> join;
  // A fork (docs/FORKS.md): {run_id, at_step, by, replayed_steps, replayed_calls} of the run it
  // was made from; null: not a fork. Its model steps use `system_prompt` instead of the agent's
  // when set, and a call that asks for approval gets the answer given in advance for its id
  // (`preset_answers`, taken once). `replayed_events`: the recorded steps' events, for the
  // fork's first transition to publish (marked replayed); empty once written.
  wire::value fork;
  std::optional<std::string> system_prompt;
  std::map<std::string, answer> preset_answers;  // by tool call id
  wire::value replayed_events;
};

// The earliest time at which something of the run falls due by the clock alone (a sleep's end, a
// wait's or an approval's expiry, an escalation, the run's deadline); 0: nothing.
std::int64_t next_wake_ms(const run_state& s, bool ended);

// The stored value (without the conversation; "messages_count" says how long it is). A stored
// state that holds its conversation whole (as older versions wrote it) reads too: its count is
// taken from it.
wire::value to_value(const run_state& s);
result<run_state> run_state_from_value(const wire::value& v);

wire::value to_value(const suspension& w);
wire::value to_value(const pending_step& p);
result<pending_step> pending_step_from_value(const wire::value& v, const std::string& where);

} // namespace keel::store
