// Fan-out and join (the run_agents tool, docs/WORKFLOWS.md): the run starts child runs of its
// sub-agents at once and waits, on disk only (status waiting, wait kind "join"), for all of them
// or for the first that completes. Each child, when it ends, hands its outcome to the run as an
// event only keel may send (keel.join/<step>/<index>, from the sender keel-join), so an outcome
// is taken once, in any order, whether the run is in memory or not. The run looks after children
// that were not started or not heard from (a crash between a write and a request) at growing
// intervals; the children's idempotency keys make a start asked twice one run. Part of
// run_machine.
#include "actors/run_machine.hpp"
#include "actors/tool_calls.hpp"
#include "actors/workflow_tools.hpp"

#include "runtime/clock.hpp"
#include "runtime/ids.hpp"

#include <algorithm>

namespace keel::actors {

using wire::value;
using store::run_status;

namespace {

// Children not started or not heard from are looked at after 5 s, then less often, up to 5 min.
std::int64_t check_after_ms(std::uint64_t checks) {
  return std::min<std::int64_t>(5000LL << std::min<std::uint64_t>(checks, 6), 300'000);
}

std::string child_status(const store::join_child& c) {
  if (c.outcome.is_null()) return c.run_id.empty() ? "not started" : "running";
  const auto& r = c.outcome.contains("result") ? c.outcome["result"] : c.outcome;
  return r.is_object() ? r.value("status", std::string("unknown")) : std::string("unknown");
}

} // namespace

void run_machine::begin_join(effects& e) {
  const store::tool_call call = state_.calls.at(state_.call_index);
  auto plan = plan_fan_out(agent_, call.arguments);
  const auto chain = state_.parent.is_object() && state_.parent.contains("chain") && state_.parent["chain"].is_array()
                       ? state_.parent["chain"].size() : 0;
  if (plan.problem.empty() && chain + 1 >= sub_agent_depth_max)
    plan.problem = "sub-agents nest at most " + std::to_string(sub_agent_depth_max) + " runs deep; this run is " +
                   std::to_string(chain + 1) + " deep";
  if (!plan.problem.empty()) {
    add_tool_message(e, call, value{{"error", plan.problem}}, true);
    state_.call_index += 1;
    return advance(e);
  }
  auto at = now();
  store::join_state join;
  join.step = ++state_.task_seq;
  join.wait = plan.wait;
  join.cancel_rest = plan.cancel_rest;
  join.deadline_ms = agent_.step_timeout_ms > 0 ? at + agent_.step_timeout_ms : 0;
  join.check_ms = at + check_after_ms(0);
  value runs = value::array();
  effects::join_work work;
  work.step = join.step;
  for (std::size_t i = 0; i < plan.runs.size(); ++i) {
    join.children.push_back(store::join_child{plan.runs[i].first, plan.runs[i].second, {}, value()});
    runs.push_back(value{{"index", i}, {"agent", plan.runs[i].first}});
    work.start.push_back(i);
  }
  state_.join = std::move(join);
  record_.status = run_status::waiting;
  state_.waiting = store::wait_state{"join", state_.call_index, "", 0, at};
  emit(e, "fan_out_started", value{{"call_id", call.id}, {"task_step", state_.join->step}, {"runs", runs},
                                   {"wait", plan.wait}, {"on_failure", plan.cancel_rest ? "cancel_rest" : "continue"}});
  e.join = std::move(work);
}

bool run_machine::awaits_join_child(std::uint64_t step, std::size_t index, const std::string& child_run_id) const {
  if (damaged_ || record_.status != run_status::waiting || !state_.waiting || state_.waiting->kind != "join" || !state_.join ||
      state_.join->step != step || index >= state_.join->children.size())
    return false;
  const auto& c = state_.join->children[index];
  return c.outcome.is_null() && (c.run_id.empty() || c.run_id == child_run_id);
}

effects run_machine::on_join_child(std::uint64_t step, std::size_t index, const std::string& child_run_id) {
  effects e = begin();
  if (!awaits_join_child(step, index, child_run_id) || !state_.join->children[index].run_id.empty()) {
    e.changed = false;
    return e;
  }
  record_join_child(e, index, child_run_id);
  finish(e);
  return e;
}

// The child at `index` exists: listed with the run's children (sub_agent_started), once.
void run_machine::record_join_child(effects& e, std::size_t index, const std::string& child_run_id) {
  auto& child = state_.join->children[index];
  child.run_id = child_run_id;
  const auto& call = state_.calls.at(state_.waiting ? state_.waiting->call_index : state_.call_index);
  value listed{{"run_id", child_run_id}, {"agent", child.agent}, {"call_id", call.id}, {"task_step", state_.join->step}, {"index", index}};
  if (!state_.children.is_array()) state_.children = value::array();
  state_.children.push_back(listed);
  emit(e, "sub_agent_started", listed);
}

result<effects> run_machine::join_outcome(const store::signal_record& signal) {
  auto reply = [&](bool delivered, bool duplicate) {
    return value{{"v", wire::protocol_version}, {"type", "signal_reply"}, {"run_id", record_.run_id},
                 {"id", signal.id}, {"delivered", delivered}, {"duplicate", duplicate}};
  };
  if (store::is_terminal(record_.status))
    return make_error(errc::conflict, "run " + record_.run_id + " has " + std::string(store::to_string(record_.status)) +
                                        "; the outcome is not needed");
  // keel.join/<step>/<index>
  auto rest = signal.name.substr(std::string(join_event_prefix).size());
  auto slash = rest.find('/');
  std::uint64_t step = 0;
  std::size_t index = 0;
  try {
    step = std::stoull(rest.substr(0, slash));
    index = slash == std::string::npos ? SIZE_MAX : std::stoull(rest.substr(slash + 1));
  } catch (...) {
    return make_error(errc::invalid_argument, "a fan-out outcome is named keel.join/<step>/<index>");
  }
  effects e = begin();
  const bool waiting = record_.status == run_status::waiting && state_.waiting && state_.waiting->kind == "join" &&
                       state_.join && state_.join->step == step && index < state_.join->children.size();
  if (!waiting || !state_.join->children[index].outcome.is_null()) {
    // Another join's, or one this join no longer needs (ended, or told already): nothing is kept.
    e.changed = false;
    e.signal_reply = reply(false, true);
    return e;
  }
  auto& join = *state_.join;
  auto& child = join.children[index];
  child.outcome = signal.payload;
  const auto& result = child.outcome.is_object() && child.outcome.contains("result") ? child.outcome["result"] : value();
  // Its outcome came before word that it exists (that word was lost to a crash): listed now.
  if (child.run_id.empty() && result.is_object() && !result.value("run_id", std::string()).empty())
    record_join_child(e, index, result.value("run_id", std::string()));
  add_children_usage(result);
  const auto status = child_status(child);
  emit(e, "fan_out_child_ended", value{{"task_step", step}, {"index", index}, {"run_id", child.run_id}, {"status", status}});
  std::size_t ended = 0;
  for (const auto& c : join.children) ended += c.outcome.is_null() ? 0 : 1;
  if (join.wait == "first" && status == "completed")
    end_join(e, "another run of the fan-out of run " + record_.run_id + " finished first");
  else if (join.wait == "all" && join.cancel_rest && status != "completed")
    end_join(e, "a run of the fan-out of run " + record_.run_id + " failed (on_failure = cancel_rest)");
  else if (ended == join.children.size())
    end_join(e, "");
  e.signal_reply = reply(true, false);
  finish(e);
  return e;
}

void run_machine::join_wake(effects& e, std::int64_t at) {
  auto& join = *state_.join;
  if (join.deadline_ms > 0 && at >= join.deadline_ms) {
    emit(e, "step_timed_out", value{{"task_step", join.step}, {"kind", "fan_out"}, {"tool", "run_agents"},
                                    {"timeout_ms", agent_.step_timeout_ms}, {"outcome", "child runs cancelled"}});
    return end_join(e, "its parent run " + record_.run_id + " gave its fan-out no more time (step_timeout_ms, " +
                         std::to_string(agent_.step_timeout_ms / 1000) + " s)");
  }
  // A look at children not started (their start may have been lost) or not heard from (their
  // outcome may have been): asked again, idempotently.
  effects::join_work work;
  work.step = join.step;
  for (std::size_t i = 0; i < join.children.size(); ++i) {
    const auto& c = join.children[i];
    if (!c.outcome.is_null()) continue;
    if (c.run_id.empty()) work.start.push_back(i);
    else work.check.emplace_back(i, c.run_id);
  }
  join.checks += 1;
  join.check_ms = at + check_after_ms(join.checks);
  e.join = std::move(work);
}

void run_machine::cancel_join(effects& e, const std::string& reason) {
  if (!state_.join) return;
  for (const auto& c : state_.join->children)
    if (c.outcome.is_null() && !c.run_id.empty()) e.cancel_children.push_back(c.run_id);
  if (!e.cancel_children.empty()) e.cancel_reason = reason;
}

void run_machine::end_join(effects& e, const std::string& why_cancel) {
  const auto& join = *state_.join;
  value runs = value::array();
  std::optional<std::size_t> winner;
  bool all_completed = true;
  for (std::size_t i = 0; i < join.children.size(); ++i) {
    const auto& c = join.children[i];
    auto status = child_status(c);
    value r{{"index", i}, {"agent", c.agent}, {"run_id", c.run_id}, {"status", status}};
    const auto& result = c.outcome.is_object() && c.outcome.contains("result") ? c.outcome["result"] : value();
    if (result.is_object()) {
      if (result.contains("output")) r["output"] = result["output"];
      if (result.contains("error")) r["error"] = result["error"];
    }
    if (c.outcome.is_null()) r["status"] = why_cancel.empty() ? status : "cancelled";
    if (status == "completed" && !winner) winner = i;
    all_completed = all_completed && status == "completed";
    runs.push_back(std::move(r));
  }
  value out{{"wait", join.wait}, {"runs", runs}};
  bool is_error = false;
  if (join.wait == "first") {
    if (winner) {
      out["first"] = *winner;
      out["output"] = runs[*winner].value("output", std::string());
    } else {
      is_error = true;
      out["summary"] = "no run of the fan-out completed";
    }
  } else {
    is_error = !all_completed;
    if (is_error) out["summary"] = "not every run of the fan-out completed";
  }
  if (!why_cancel.empty()) cancel_join(e, why_cancel);
  emit(e, "wait_ended", value{{"reason", "join"}, {"task_step", join.step}, {"is_error", is_error}});
  end_wait(e, out, is_error);
}

} // namespace keel::actors
