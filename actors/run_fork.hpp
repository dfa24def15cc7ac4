// Forks, reruns and replays of a recorded run (docs/FORKS.md). A fork is a new run whose first
// model steps, and the tool calls they made, are taken from a recorded run (no model call, no tool
// call, no cost), then goes on live with the changes asked for: another provider, model or system
// prompt, another answer at an approval. A replay drives a recorded run through the run machine
// again, with the recorded answers standing in for the model and the tools, and says whether the
// same decisions come out. Plain C++: the supervisor reads the recorded run from its store and
// makes the fork's record or the replay's report with it; tests drive both directly.
#pragma once

#include "actors/run_machine.hpp"
#include "runtime/result.hpp"
#include "runtime/run_state.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace keel::actors {

// A fork's idempotency key as the store keeps it: "keel-fork/<run>/<key>" (an invoke may not use
// the prefix, and a fork's own key may not start with "keel-": keel's keys are its own).
constexpr const char* fork_key_prefix = "keel-fork/";

// What a fork changes (the protocol's fork request, docs/PROTOCOL.md).
struct fork_request {
  std::uint64_t at_step = 0;                 // model steps taken from the recorded run
  std::string provider, model;               // empty: the recorded run's
  std::optional<std::string> system_prompt;  // none: the recorded run's (its agent's)
  std::map<std::string, store::answer> answers;  // by the recorded run's approval step key
  std::string by;                            // who asked (from the subject)
  std::string idempotency_key;               // a repeat with it names the same fork
};
// Every field checked: a wrong type or an unknown field is an error naming it.
result<fork_request> fork_request_from_value(const wire::value& body);

// A recorded run as its owner's store holds it.
struct recorded_run {
  store::run_record record;           // header and state, without the conversation
  std::vector<wire::value> messages;  // its conversation, in order
  std::vector<wire::event> events;
};

// The recorded run from the store: its record, its whole conversation and its events. not_found
// when there is no such run.
result<recorded_run> read_recorded_run(const store::run_store& store, const std::string& run_id);

struct fork_plan {
  store::run_record record;  // as create() makes a run: its first transition starts it
  std::uint64_t replayed_steps = 0;
  std::uint64_t replayed_calls = 0;
};

// The fork's record under `run_id` (nothing else in it names the run: a record planned under
// one id is the same under another). An error (invalid_argument, failed_precondition) says what of
// the request does not fit the recorded run: a step past its last, an approval it never asked, a
// conversation not kept.
result<fork_plan> plan_fork(const std::string& run_id, const recorded_run& from, const fork_request& request,
                            std::int64_t now_ms);

struct replay_report {
  bool same = true;                // every decision checked came out as recorded
  std::uint64_t model_steps = 0;   // recorded answers given to the machine
  std::uint64_t tool_calls = 0;
  std::uint64_t approvals = 0;
  std::uint64_t decisions = 0;     // decisions compared
  // The first difference: its index among the decisions, and each side's (empty: none there).
  std::optional<std::uint64_t> index;
  std::string recorded, replayed;
  std::string stopped;             // why the check ended before the recorded run did (empty: it did not)
};
wire::value to_value(const replay_report& r);

// Drives a new machine of `agent` with the recorded run's input and answers, and compares its
// decisions (model steps, tool calls, approvals asked and answered, results, the end) with the
// recorded ones. The clock is held at the recorded run's creation: nothing falls due by time.
replay_report replay_run(const recorded_run& from, const config::agent_config& agent, run_context context);

} // namespace keel::actors
