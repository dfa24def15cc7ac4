// Building and sending a run's tasks: the model step (with the conversation by reference), a tool
// call (built in, declared by a tool worker, or another agent's child run), the form a declared
// tool waits on before anything is sent, and a declared tool's deadline. Part of run_machine.
#include "actors/run_machine.hpp"
#include "actors/run_observer.hpp"
#include "actors/tool_calls.hpp"

#include "llm/conversation.hpp"
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"

#include <algorithm>

namespace keel::actors {

using wire::value;
using store::run_status;

// The task for the step in flight, from what `pending` records: a step sent again is built
// exactly as it was the first time (same conversation, same call, same approval).
wire::task run_machine::pending_task() {
  const auto& pending = *state_.pending;
  wire::task t;
  t.run_id = record_.run_id;
  t.step = pending.step;
  t.attempt = pending.attempt;
  t.kind = pending.model ? wire::task_kind::llm : wire::task_kind::tool;
  t.agent = record_.agent;
  t.reply_to = context_.results_subject;
  if (context_.epoch) t.epoch = context_.epoch(keel::run_id{record_.run_id}.owner());
  if (pending.model) {
    auto known = declared();
    value tools = model_tool_list(agent_, known.get(), context_.find_agent);
    // The conversation by reference: its length, and the messages new since the last model task
    // as far as they fit; a worker keeps what it saw and fetches what it lacks from this node.
    auto count = state_.messages_count;
    std::size_t from = count, bytes = 0;
    while (from > messages_sent_ && from > 0) {
      auto it = packed_.find(from - 1);
      if (it == packed_.end() || bytes + it->second.size() > context_.inline_bytes_max) break;
      bytes += it->second.size();
      --from;
    }
    messages_sent_ = count;
    t.payload = value{{"system_prompt", state_.system_prompt ? *state_.system_prompt : agent_.system_prompt},
                      {"provider", state_.provider.empty() ? agent_.provider : state_.provider},
                      {"model", state_.model.empty() ? agent_.model : state_.model},
                      {"tools", tools},
                      {"conversation", value{{"count", count}, {"from", from}}}};
    std::vector<std::string> fresh;
    for (std::size_t i = from; i < count; ++i) fresh.push_back(packed_.at(i));
    t.payload_messages = wire::pack_list(fresh);
    // What went out and is (or will be, before anything else of this run) on disk is not kept.
    for (auto it = packed_.begin(); it != packed_.end() && it->first < record_.messages_on_disk;)
      it = packed_.erase(it);
  } else {
    const auto& call = state_.calls.at(state_.call_index);
    value rules = value::array();
    for (const auto& r : state_.allow_rules) rules.push_back(value{{"kind", r.kind}, {"command", r.command}});
    t.payload = value{{"tool", call.name}, {"arguments", call.arguments}, {"call_id", call.id},
                      {"approved", pending.approved}, {"allow_rules", rules},
                      {"session_id", record_.session_id}};
    if (!pending.sub_agent.empty()) {  // another agent's child run: the run's actor starts it, no worker
      t.payload.erase("allow_rules");
      t.payload["sub_agent"] = pending.sub_agent;
      t.payload["task"] = call.arguments.is_object() ? call.arguments.value("task", std::string{}) : std::string{};
    }
    if (!pending.queue.empty()) {  // a tool worker's: it needs no sandbox rules, and has a deadline
      t.queue = pending.queue;
      t.payload.erase("allow_rules");
      t.payload["deadline_ms"] = pending.deadline_ms;
    }
    // The form came from a worker: only a map with a map for its context is passed on.
    if (pending.form.is_object()) {
      auto context = pending.form.find("context");
      if (context != pending.form.end() && context->is_object()) t.payload["approved_form"] = *context;
    }
  }
  // Whatever runs the task (a worker, a tool worker of the user's own) puts its spans in the
  // run's trace (docs/OPERATIONS.md).
  t.payload["traceparent"] = traceparent_of(record_, state_);
  return t;
}

void run_machine::dispatch_llm(effects& e) {
  auto step = ++state_.task_seq;
  store::pending_step p;
  p.step = step;
  p.model = true;
  state_.pending = p;
  arm_deadline(0);
  emit(e, "llm_step_started", value{{"step", state_.steps + 1}, {"task_step", step}});
  e.tasks.push_back(pending_task());
}

void run_machine::dispatch_tool(effects& e, bool approved, const value& form) {
  auto step = ++state_.task_seq;
  store::pending_step p;
  p.step = step;
  p.model = false;
  p.approved = approved;
  if (form.is_object()) p.form = form;
  const auto& call = state_.calls.at(state_.call_index);
  auto listed = std::find_if(agent_.tools.begin(), agent_.tools.end(),
                             [&](const std::string& t) { return tools::model_name(t) == call.name; });
  if (listed != agent_.tools.end() && tools::is_declared(*listed)) p.queue = listed->substr(0, listed->find('.'));
  p.sub_agent = sub_agent_of(agent_, call.name);
  state_.pending = p;
  arm_deadline(0);
  emit(e, "tool_call_started", value{{"call_id", call.id}, {"tool", call.name},
                                     {"arguments", call.arguments}, {"approved", approved},
                                     {"task_step", step}});
  if (!p.queue.empty()) e.transition.events.back().data["queue"] = p.queue;
  if (!p.sub_agent.empty()) e.transition.events.back().data["sub_agent"] = p.sub_agent;
  e.tasks.push_back(pending_task());
}

// A declared tool whose calls a person approves: the run waits with the tool's form before any
// task goes (the number of the step key is one no task uses).
void run_machine::ask_first(effects& e, const tools::declared_tool& tool) {
  const auto& call = state_.calls.at(state_.call_index);
  std::string step_key = "approve-" + std::to_string(++state_.task_seq);
  suspend(e, step_key, state_.call_index, tool.form(call.arguments));
}

// When a step is given up if no result came. A tool worker's call: after its tool's timeout_ms
// from when it was first sent (the worker may be hung, or no worker of its queue may be running).
// Any other step, with agents.<id>.step_timeout_ms: a tool's call or a sub-agent's child run after
// that long from when it was first sent; a model call after that long from each attempt's send
// (redispatch() clears it). Set once: an attempt sent again (a failure, a lost task, a restart)
// keeps it, so nothing extends a call for good.
void run_machine::arm_deadline(std::int64_t delay_ms) {
  auto& pending = *state_.pending;
  if (pending.deadline_ms != 0) return;
  if (!pending.queue.empty()) {
    const auto& call = state_.calls.at(state_.call_index);
    auto known = declared();
    auto tool = declared_tool_of(known.get(), pending.queue, call.name);
    pending.deadline_ms = now() + delay_ms + (tool ? tool->timeout_ms : tools::timeout_ms_default);
  } else if (agent_.step_timeout_ms > 0) {
    pending.deadline_ms = now() + delay_ms + agent_.step_timeout_ms;
  }
}

effects run_machine::on_child_started(std::uint64_t step, const std::string& child_run_id) {
  effects e = begin();
  const bool in_flight = record_.status == run_status::running && state_.pending && state_.pending->step == step &&
                         !state_.pending->sub_agent.empty();
  bool known = false;
  if (state_.children.is_array())
    for (const auto& child : state_.children) known = known || child.value("run_id", std::string{}) == child_run_id;
  if (!in_flight || known) {
    e.changed = false;
    return e;
  }
  const auto& call = state_.calls.at(state_.call_index);
  value child{{"run_id", child_run_id}, {"agent", state_.pending->sub_agent}, {"call_id", call.id}, {"task_step", step}};
  if (!state_.children.is_array()) state_.children = value::array();
  state_.children.push_back(child);
  emit(e, "sub_agent_started", child);
  finish(e);
  return e;
}

} // namespace keel::actors
