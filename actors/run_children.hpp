// Sub-agents, as a run's actor carries them out (docs/TOOLS.md, sub-agents): a parent's call of
// agent__<id> starts a child run through the orchestrators' own invoke subject, idempotently
// (the key names the parent's run and step, so a call sent again finds the same child); the child,
// when it ends, hands its outcome to the parent's results subject as a task result (the parent's
// owner takes it as it takes a worker's); a parent whose child has not answered in a while asks
// for the child's summary, which covers a hand-over lost to a crash. Each runs off the actor, on
// the orchestrator's children pool: NATS requests that wait.
#pragma once

#include "actors/orchestrator_shared.hpp"

#include <caf/all.hpp>

#include <memory>
#include <string>
#include <vector>

namespace keel::actors {

// What a child's summary (actors/run_views) makes of the parent's call: the task result payload
// {status: "done", result: {run_id, agent, status, output | error, steps, total_usage,
// duration_ms}, is_error}; nullopt while the child has not ended.
std::optional<wire::value> child_outcome(const wire::value& summary);

// A child run's idempotency key: this prefix, the parent's run and step. Only children's invokes
// may use it (an invoke from a client with such a key is refused), so nobody can claim a key
// before the parent does and have their run taken as its child.
constexpr const char* child_key_prefix = "keel-child/";

// Whether a task is a sub-agent's call (carried out by the run's actor, never sent to a worker).
inline bool is_sub_agent_task(const wire::task& t) { return t.payload.is_object() && t.payload.contains("sub_agent"); }

// The invoke of the child run for a parent's sub-agent task.
wire::invoke_request child_invoke(const store::run_record& parent, const wire::task& t);

// Starts (or finds) the child and tells the parent's actor its id (child_atom, with the step and
// the subject the parent takes results on); a refusal (no such agent) becomes the call's error.
void start_child(const std::shared_ptr<orchestrator_shared>& shared, const caf::actor& parent,
                 wire::invoke_request invoke, const wire::task& t);

// Asks the child for its summary; if it has ended, hands its outcome to the parent as its result.
void check_child(const std::shared_ptr<orchestrator_shared>& shared, const std::string& child_run_id,
                 const std::string& parent_run_id, std::uint64_t step, std::uint32_t attempt,
                 const std::string& results_subject);

// A run with a parent that has just ended: its outcome, handed to the parent's results subject
// (a sub-agent's call), or sent to the parent as a fan-out's outcome event.
void notify_parent(const std::shared_ptr<orchestrator_shared>& shared, const store::run_record& child);

// Fan-outs (run_agents, actors/run_joins.cpp). The invoke of child `index` of the parent's join
// `step` (its key: keel-child/<run>/j<step>.<index>).
wire::invoke_request join_child_invoke(const store::run_record& parent, std::uint64_t step, std::size_t index);
// Starts (or finds) each child, and tells the parent through `supervisor` (join_child_atom: run,
// step, index, child id); a refusal (no such agent) is handed to the parent as that child's outcome.
void start_join_children(const std::shared_ptr<orchestrator_shared>& shared, const caf::actor& supervisor,
                         const std::string& parent_run_id, std::uint64_t step,
                         std::vector<std::pair<std::size_t, wire::invoke_request>> invokes);
// Asks each child for its summary; one that ended has its outcome handed to the parent.
void check_join_children(const std::shared_ptr<orchestrator_shared>& shared, const std::string& parent_run_id,
                         std::uint64_t step, const std::vector<std::pair<std::size_t, std::string>>& children);

// A parent cancelled (or past a limit) while its children worked: each is cancelled, with the
// reason given (empty: its parent run was cancelled).
void cancel_children(const std::shared_ptr<orchestrator_shared>& shared, const std::vector<std::string>& children,
                     const std::string& parent_run_id, const std::string& reason = {});

} // namespace keel::actors
