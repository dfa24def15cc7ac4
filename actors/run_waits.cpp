// Workflows in a run (docs/WORKFLOWS.md): the waiting tools (sleep, wait_until, wait_for_event),
// events sent to a run, the time limits of a run and of its approvals. Part of run_machine: each
// input gives one transition, as every other does; what wakes a run at a time is the orchestrator's
// (actors/wake_keeper), which asks on_wake() when next_wake_ms() says.
#include "actors/run_machine.hpp"
#include "actors/workflow_tools.hpp"

#include "runtime/clock.hpp"
#include "runtime/ids.hpp"

#include <algorithm>

namespace keel::actors {

using wire::value;
using store::run_status;

std::int64_t run_machine::now() const { return context_.clock ? context_.clock() : wall_ms(); }

std::int64_t run_machine::next_wake_ms() const {
  if (damaged_) return 0;
  return store::next_wake_ms(state_, store::is_terminal(record_.status));
}

// A run that waits for a person: with the agent's limits on how long, from now.
void run_machine::suspend(effects& e, const std::string& step_key, std::uint64_t call_index, const value& form) {
  const auto& call = state_.calls.at(call_index);
  store::suspension s;
  s.step_key = step_key;
  s.call_index = call_index;
  s.form = form;
  auto at = now();
  if (agent_.approval_timeout_ms > 0) s.expires_ms = at + agent_.approval_timeout_ms;
  if (agent_.approval_escalate_after_ms > 0) s.escalate_ms = at + agent_.approval_escalate_after_ms;
  record_.status = run_status::suspended;
  state_.suspended = s;
  value data{{"step_key", step_key}, {"call_id", call.id}, {"tool", call.name}, {"form", form}};
  if (s.expires_ms > 0) {
    data["expires_at"] = rfc3339(s.expires_ms);
    data["expiry_answer"] = agent_.approval_timeout_answer;
  }
  emit(e, "suspend", std::move(data));
  // A fork's answer given in advance for this call (docs/FORKS.md): taken at once, and once.
  if (auto preset = state_.preset_answers.find(call.id); preset != state_.preset_answers.end()) {
    wire::resume_request request;
    request.run_id = record_.run_id;
    request.step_key = step_key;
    request.approved = preset->second.approved;
    request.feedback = preset->second.feedback;
    request.by = state_.fork.is_object() && state_.fork.contains("by") && state_.fork["by"].is_string()
                   ? state_.fork["by"].get<std::string>() : std::string();
    state_.preset_answers.erase(preset);
    answer(e, request, std::nullopt);
  }
}

// The call at call_index is a waiting tool: the run waits (on disk only), unless what it asks for
// is refused, is already past, or is an event already kept.
void run_machine::begin_wait(effects& e) {
  const store::tool_call call = state_.calls.at(state_.call_index);
  if (call.name == "run_agents") return begin_join(e);
  auto at = now();
  auto plan = plan_wait(agent_, call.name, call.arguments, at);
  if (!plan.problem.empty()) {
    add_tool_message(e, call, value{{"error", plan.problem}}, true);
    state_.call_index += 1;
    return advance(e);
  }
  if (plan.kind == "event") {
    auto kept = std::find_if(state_.signals.begin(), state_.signals.end(),
                             [&](const store::signal_record& s) { return s.name == plan.event; });
    if (kept != state_.signals.end()) {
      auto signal = *kept;
      state_.signals.erase(kept);
      emit(e, "wait_started", value{{"call_id", call.id}, {"tool", call.name}, {"kind", "event"}, {"event", plan.event}});
      return take_event(e, signal);
    }
  } else if (plan.until_ms <= at) {
    return end_wait(e, value{{"slept_until", rfc3339(at)}});
  }
  record_.status = run_status::waiting;
  state_.waiting = store::wait_state{plan.kind, state_.call_index, plan.event, plan.until_ms, at};
  value data{{"call_id", call.id}, {"tool", call.name}, {"kind", plan.kind}, {"until", rfc3339(plan.until_ms)},
             {"until_ms", plan.until_ms}};
  if (plan.kind == "event") data["event"] = plan.event;
  emit(e, "wait_started", std::move(data));
}

// The waiting call's result: the model is told, and the run goes on.
void run_machine::end_wait(effects& e, const value& result, bool is_error) {
  auto index = state_.waiting ? state_.waiting->call_index : state_.call_index;
  const store::tool_call call = state_.calls.at(index);
  record_.status = run_status::running;
  state_.waiting.reset();
  add_tool_message(e, call, result, is_error);
  state_.call_index = index + 1;
  advance(e);
}

void run_machine::take_event(effects& e, const store::signal_record& signal) {
  // Remembered as taken: a repeat of it (same id) is answered as delivered and changes nothing.
  state_.signal_ids.push_back(signal.id);
  if (state_.signal_ids.size() > event_ids_kept_max)
    state_.signal_ids.erase(state_.signal_ids.begin(),
                            state_.signal_ids.begin() + static_cast<std::ptrdiff_t>(state_.signal_ids.size() - event_ids_kept_max));
  emit(e, "wait_ended", value{{"reason", "event"}, {"event", signal.name}, {"id", signal.id}, {"by", signal.by}});
  end_wait(e, value{{"event", signal.name}, {"payload", signal.payload}, {"id", signal.id}, {"by", signal.by},
                    {"sent_at", rfc3339(signal.at_ms)}});
}

effects run_machine::on_wake() {
  effects e = begin();
  auto at = now();
  auto due = [&](std::int64_t t) { return t > 0 && at >= t; };
  const bool limit = due(state_.deadline_ms);
  const bool wait_over = state_.waiting && due(state_.waiting->until_ms);
  const bool escalate = state_.suspended && state_.suspended->escalated_to.empty() && due(state_.suspended->escalate_ms);
  const bool expired = state_.suspended && due(state_.suspended->expires_ms);
  const bool join_due = state_.waiting && state_.waiting->kind == "join" && state_.join &&
                        (due(state_.join->deadline_ms) || due(state_.join->check_ms));
  if (damaged_ || store::is_terminal(record_.status) || (!limit && !wait_over && !escalate && !expired && !join_due)) {
    e.changed = false;
    return e;
  }
  if (limit) {
    auto seconds = (state_.deadline_ms - record_.created_ms) / 1000;
    emit(e, "run_timed_out", value{{"limit_ms", agent_.run_timeout_ms}, {"deadline", rfc3339(state_.deadline_ms)},
                                   {"status", store::to_string(record_.status)}});
    // A sub-agent working for it stops too, as on a cancel.
    if (state_.pending && !state_.pending->sub_agent.empty() && state_.children.is_array())
      for (const auto& child : state_.children)
        if (child.value("task_step", std::uint64_t{0}) == state_.pending->step)
          e.cancel_children.push_back(child.value("run_id", std::string{}));
    if (!e.cancel_children.empty()) e.cancel_reason = "its parent run " + record_.run_id + " went past its time limit (run_timeout_ms)";
    if (state_.waiting && state_.waiting->kind == "join")
      cancel_join(e, "its parent run " + record_.run_id + " went past its time limit (run_timeout_ms)");
    // What it waited on is dropped; a retry goes on from the call it waited in.
    if (state_.waiting) state_.call_index = state_.waiting->call_index;
    if (state_.suspended) state_.call_index = state_.suspended->call_index;
    state_.waiting.reset();
    state_.suspended.reset();
    fail(e, "the run went on longer than its limit (" + std::to_string(seconds) + " s, agents." + agent_.id +
              ".run_timeout_ms)");
    finish(e);
    return e;
  }
  if (join_due) join_wake(e, at);
  if (wait_over && state_.waiting && state_.waiting->kind != "join") {
    const auto wait = *state_.waiting;
    if (wait.kind == "sleep") {
      emit(e, "wait_ended", value{{"reason", "time"}});
      end_wait(e, value{{"slept_until", rfc3339(wait.until_ms)}});
    } else {
      emit(e, "wait_ended", value{{"reason", "timeout"}, {"event", wait.event}});
      end_wait(e, value{{"timed_out", true}, {"event", wait.event},
                        {"message", "no event '" + wait.event + "' came within " +
                                      std::to_string((wait.until_ms - wait.since_ms) / 1000) + " s"}});
    }
  }
  if (escalate && state_.suspended) {
    auto& s = *state_.suspended;
    s.escalated_to = agent_.approval_escalate_to.empty() ? std::string("(nobody named)") : agent_.approval_escalate_to;
    emit(e, "approval_escalated", value{{"step_key", s.step_key}, {"to", s.escalated_to},
                                        {"waited_ms", agent_.approval_escalate_after_ms}});
  }
  if (expired && state_.suspended) {
    const auto s = *state_.suspended;
    const auto& how = agent_.approval_timeout_answer.empty() ? std::string("reject") : agent_.approval_timeout_answer;
    emit(e, "approval_expired", value{{"step_key", s.step_key}, {"answer", how},
                                      {"waited_ms", agent_.approval_timeout_ms}});
    if (how == "fail") {
      state_.call_index = s.call_index;
      state_.suspended.reset();
      fail(e, "nobody answered approval " + s.step_key + " within " + std::to_string(agent_.approval_timeout_ms / 1000) +
                " s (agents." + agent_.id + ".approval_timeout_answer = \"fail\")");
    } else {
      wire::resume_request request;
      request.run_id = record_.run_id;
      request.step_key = s.step_key;
      request.approved = how == "approve";
      request.feedback = request.approved ? std::string() : agent_.approval_timeout_feedback;
      request.by = "keel (approval_timeout_ms)";
      answer(e, request, std::nullopt);
    }
  }
  finish(e);
  return e;
}

result<effects> run_machine::on_signal(const store::signal_record& signal) {
  if (damaged_) return make_error(errc::conflict, "run " + record_.run_id + " cannot be read: " + damaged_->message);
  if (!is_event_name(signal.name))
    return make_error(errc::invalid_argument, "an event's name is 1 to 128 characters of letters, digits and _ . : / -");
  if (signal.id.empty() || signal.id.size() > event_id_bytes_max)
    return make_error(errc::invalid_argument, "an event's id is 1 to " + std::to_string(event_id_bytes_max) + " bytes");
  // A fan-out's child outcome: only keel sends these (actors/run_children).
  if (signal.name.rfind(join_event_prefix, 0) == 0) {
    if (signal.by != join_sender)
      return make_error(errc::invalid_argument, std::string("events named ") + join_event_prefix + "... are keel's own");
    return join_outcome(signal);
  }
  auto reply = [&](bool delivered, bool duplicate) {
    return value{{"v", wire::protocol_version}, {"type", "signal_reply"}, {"run_id", record_.run_id},
                 {"id", signal.id}, {"delivered", delivered}, {"duplicate", duplicate}};
  };
  bool kept_already = std::any_of(state_.signals.begin(), state_.signals.end(),
                                  [&](const store::signal_record& s) { return s.id == signal.id; });
  if (kept_already || std::find(state_.signal_ids.begin(), state_.signal_ids.end(), signal.id) != state_.signal_ids.end()) {
    effects e;
    e.signal_reply = reply(!kept_already, true);
    return e;
  }
  if (store::is_terminal(record_.status))
    return make_error(errc::conflict, "run " + record_.run_id + " has " + std::string(store::to_string(record_.status)) +
                                        "; the event was not kept");
  const auto bytes = wire::pack(signal.payload).size();
  if (bytes > event_payload_bytes_max)
    return make_error(errc::invalid_argument, "an event's payload is at most " +
                                                std::to_string(event_payload_bytes_max >> 10) + " KiB packed");
  // The payload is kept inside the run's stored state, a few levels down: bounded well within
  // what the store reads back.
  if (nesting(signal.payload) > event_payload_depth_max)
    return make_error(errc::invalid_argument, "an event's payload nests at most " + std::to_string(event_payload_depth_max) + " levels");
  const bool waits_for_it = record_.status == run_status::waiting && state_.waiting && state_.waiting->kind == "event" &&
                            state_.waiting->event == signal.name;
  std::size_t kept_bytes = bytes;
  for (const auto& s : state_.signals) kept_bytes += wire::pack(s.payload).size();
  if (!waits_for_it && (state_.signals.size() >= events_kept_max || kept_bytes > events_kept_bytes_max))
    return make_error(errc::unavailable, "run " + record_.run_id + " keeps " + std::to_string(events_kept_max) + " events (" +
                                           std::to_string(events_kept_bytes_max >> 10) +
                                           " KiB of payloads) it has not waited for at most; it takes no more until it waits for them");
  effects e = begin();
  emit(e, "event_received", value{{"event", signal.name}, {"id", signal.id}, {"by", signal.by},
                                  {"delivered", waits_for_it}});
  if (waits_for_it) take_event(e, signal);
  else state_.signals.push_back(signal);  // a repeat meanwhile finds it kept
  e.signal_reply = reply(waits_for_it, false);
  finish(e);
  return e;
}

} // namespace keel::actors

namespace keel::actors {

// A run of an agent with a queue: in line (on disk only) until its queue's record admits it.
void run_machine::enter_queue(effects& e) {
  store::queue_place place;
  place.name = agent_.run_queue;
  place.key = state_.queue ? state_.queue->key : std::string();
  // Strictly later than any place it had: the queue tells an old place from a new one by it.
  place.since_ms = std::max(now(), state_.queue ? state_.queue->since_ms + 1 : 0);
  state_.queue = place;
  record_.status = run_status::queued;
  value data{{"queue", place.name}};
  if (!place.key.empty()) data["key"] = place.key;
  emit(e, "run_queued", std::move(data));
}

effects run_machine::on_admitted(std::int64_t since_ms) {
  effects e = begin();
  // An admission of an earlier place (the run was retried and is in line again) is not this one's.
  if (damaged_ || record_.status != run_status::queued || !state_.queue || (since_ms != 0 && since_ms != state_.queue->since_ms)) {
    e.changed = false;
    return e;
  }
  auto at = now();
  state_.queue->admitted_ms = at;
  record_.status = run_status::running;
  value data{{"queue", state_.queue->name}, {"waited_ms", std::max<std::int64_t>(0, at - state_.queue->since_ms)}};
  if (!state_.queue->key.empty()) data["key"] = state_.queue->key;
  emit(e, "run_admitted", std::move(data));
  go_on(e);
  finish(e);
  return e;
}

} // namespace keel::actors
