// Replays (docs/FORKS.md): a recorded run driven through a new run machine, the recorded answers
// of the model, the tools and the people standing in for them, its decisions compared with the
// recorded ones. A determinism check of keel itself: an old run replayed by a new build.
#include "actors/run_fork.hpp"
#include "actors/event_fields.hpp"

#include <deque>
#include <optional>

namespace keel::actors {

using wire::value;

namespace {

// A decision as both sides are compared on: what the machine chose to do next, never when or by
// whom (times, sequence numbers, workers and costs differ between a run and its replay).
std::string decision_of(const wire::event& e) {
  const auto& d = e.data;
  const auto& t = e.event_type;
  if (t == "llm_step_started") return "model step " + std::to_string(number_in(d, "step"));
  if (t == "tool_call_started") return "call " + text_in(d, "tool") + " " + text_in(d, "call_id");
  if (t == "tool_call_completed")
    return "result of " + text_in(d, "call_id") + (flag_in(d, "is_error") ? " (an error)" : "");
  if (t == "suspend") return "ask approval " + text_in(d, "step_key") + " for " + text_in(d, "call_id");
  if (t == "resumed") return "answer " + text_in(d, "step_key") + (flag_in(d, "approved") ? ": approved" : ": rejected");
  if (t == "sub_agent_started") return "sub-agent " + text_in(d, "agent") + " for " + text_in(d, "call_id");
  if (t == "wait_started") return "wait (" + text_in(d, "kind") + ") for " + text_in(d, "call_id");
  if (t == "fan_out_started") return "fan-out for " + text_in(d, "call_id");
  if (t == "run_completed") return "completed (" + text_in(d, "stop_reason") + ")";
  if (t == "run_failed") return "failed";
  if (t == "run_cancelled") return "cancelled";
  return {};
}

struct recorded_answers {
  std::map<std::uint64_t, value> completions;  // by model step: the completion as a model task's payload
  std::map<std::string, value> results;        // by call id: the last result recorded for it
  std::map<std::string, value> forms;          // by step key: an approval a tool's worker asked for
  std::map<std::string, wire::resume_request> answers;  // by step key
  std::map<std::string, std::string> children;  // by call id: the sub-agent's child run it started
  std::optional<wire::event> ended;             // how the run ended, when it did (failed or cancelled)
};

recorded_answers answers_of(const recorded_run& from) {
  recorded_answers a;
  for (const auto& e : from.events) {
    const auto& d = e.data;
    if (e.event_type == "llm_step_completed") {
      value completion{{"role", "assistant"}, {"text", text_in(d, "text")}, {"stop_reason", text_in(d, "stop_reason")},
                       {"tool_calls", d.contains("tool_calls") && d["tool_calls"].is_array() ? d["tool_calls"] : value::array()},
                       {"usage", d.contains("usage") ? d["usage"] : value::object()}};
      a.completions[number_in(d, "step")] = std::move(completion);
    } else if (e.event_type == "tool_call_completed") {
      a.results[text_in(d, "call_id")] = value{{"status", "done"}, {"result", d.contains("result") ? d["result"] : value::object()},
                                               {"is_error", flag_in(d, "is_error")}};
    } else if (e.event_type == "suspend") {
      a.forms[text_in(d, "step_key")] = d.contains("form") ? d["form"] : value();
    } else if (e.event_type == "sub_agent_started") {
      a.children[text_in(d, "call_id")] = text_in(d, "run_id");
    } else if (e.event_type == "run_failed" || e.event_type == "run_cancelled") {
      a.ended = e;
    } else if (e.event_type == "run_retried") {
      a.ended.reset();
    } else if (e.event_type == "resumed") {
      wire::resume_request r;
      r.step_key = text_in(d, "step_key");
      r.approved = flag_in(d, "approved");
      r.feedback = text_in(d, "feedback");
      r.always = text_in(d, "always");
      r.always_scope = text_in(d, "always_scope");
      r.by = text_in(d, "by");
      a.answers[r.step_key] = std::move(r);
    }
  }
  return a;
}

// Where the record has no answer for what the machine asked, it ended there: failed (the step's
// failure, as one no attempt changes) or cancelled. The machine is driven to that end; false when
// the record did not end (it waits there).
bool end_recorded(run_machine& machine, const recorded_answers& answers, effects& e) {
  if (!answers.ended || store::is_terminal(machine.record().status)) return false;
  if (answers.ended->event_type == "run_cancelled") {
    auto cancelled = machine.cancel(text_in(answers.ended->data, "reason"), text_in(answers.ended->data, "by"));
    if (!cancelled) return false;
    e = std::move(*cancelled);
    return true;
  }
  const auto& pending = machine.state().pending;
  if (!pending) return false;
  wire::task_result failure;
  failure.run_id = machine.run_id();
  failure.step = pending->step;
  failure.attempt = pending->attempt;
  failure.worker = "replay";
  failure.ok = false;
  failure.failure = keel::error{errc::invalid_argument, text_in(answers.ended->data, "error")};
  e = machine.on_task_result(failure);
  return e.changed;
}

} // namespace

wire::value to_value(const replay_report& r) {
  value v{{"same", r.same}, {"model_steps", r.model_steps}, {"tool_calls", r.tool_calls}, {"approvals", r.approvals},
          {"decisions", r.decisions}, {"stopped", r.stopped}, {"difference", value()}};
  if (r.index) v["difference"] = value{{"index", *r.index}, {"recorded", r.recorded}, {"replayed", r.replayed}};
  return v;
}

replay_report replay_run(const recorded_run& from, const config::agent_config& agent, run_context context) {
  replay_report report;
  // What the recorded run decided, in order; and where it stopped being checkable by replay (a
  // failure it was retried from, time or an outside event, a fan-out: driven by what replay has not).
  std::vector<std::string> recorded;
  std::string recorded_stop;
  for (std::size_t i = 0; i < from.events.size(); ++i) {
    const auto& e = from.events[i];
    if (e.event_type == "run_retried") {
      recorded_stop = "the run failed and was retried: the check covers what came before";
      break;
    }
    if (e.event_type == "approval_expired" || e.event_type == "wait_started" || e.event_type == "fan_out_started") {
      recorded_stop = "the run waited for time, an outside event or child runs (" + e.event_type +
                      "): the check covers what came before";
      break;
    }
    auto d = decision_of(e);
    if (!d.empty()) recorded.push_back(std::move(d));
  }
  const auto answers = answers_of(from);
  // The replay's machine: the recorded run's input and header, a clock held still.
  wire::invoke_request invoke;
  invoke.agent = from.record.agent;
  auto state = store::run_state_from_value(from.record.state);
  if (!state) {
    report.same = false;
    report.stopped = "the recorded run's state cannot be read: " + state.error().message;
    return report;
  }
  invoke.input = state->input;
  if (!from.messages.empty() && from.messages[0].is_object() && from.messages[0].contains("text"))
    invoke.input = from.messages[0]["text"];  // the input whole (the state keeps a large one's start)
  invoke.session_id = from.record.session_id;
  invoke.by = state->started_by;
  invoke.provider = state->provider;
  invoke.model = state->model;
  const auto at = from.record.created_ms;
  context.clock = [at] { return at; };
  auto record = run_machine::create(from.record.run_id, invoke, at);
  if (state->system_prompt) record.state["system_prompt"] = *state->system_prompt;
  config::agent_config unqueued = agent;
  unqueued.run_queue.clear();  // its place in line decides nothing of what it does
  run_machine machine(std::move(record), unqueued, context);
  std::vector<std::string> replayed;
  auto take = [&](const effects& e) {
    for (const auto& ev : e.transition.events) {
      auto d = decision_of(ev);
      if (!d.empty()) replayed.push_back(std::move(d));
    }
  };
  effects e = machine.start();
  take(e);
  // One input at a time, as long as the machine asks for something the record answers.
  for (std::size_t guard = 0; guard < 1'000'000 && report.stopped.empty(); ++guard) {
    const auto status = machine.record().status;
    if (status == store::run_status::suspended && machine.state().suspended) {
      const auto& key = machine.state().suspended->step_key;
      auto it = answers.answers.find(key);
      if (it == answers.answers.end()) {  // the recorded run waits there too, or was cancelled there
        if (end_recorded(machine, answers, e)) take(e);
        break;
      }
      auto request = it->second;
      request.run_id = machine.run_id();
      auto answered = machine.on_resume(request);
      if (!answered) {
        report.stopped = "the answer to " + key + " was refused: " + answered.error().message;
        break;
      }
      ++report.approvals;
      take(*answered);
      e = std::move(*answered);
      continue;
    }
    if (e.tasks.empty()) {
      // Nothing asked of the outside: the end, or one the record has from outside (a cancel).
      if (end_recorded(machine, answers, e)) take(e);
      break;
    }
    const auto task = e.tasks.front();
    wire::task_result result;
    result.run_id = machine.run_id();
    result.step = task.step;
    result.attempt = task.attempt;
    result.worker = "replay";
    if (task.kind == wire::task_kind::llm) {
      auto it = answers.completions.find(static_cast<std::uint64_t>(machine.state().steps) + 1);
      if (it == answers.completions.end()) {  // no recorded answer: the recorded run ended or waits here
        if (!end_recorded(machine, answers, e)) break;
        take(e);
        continue;
      }
      result.payload = it->second;
      ++report.model_steps;
    } else {
      auto call_id = text_in(task.payload, "call_id");
      bool approved = flag_in(task.payload, "approved");
      // A sub-agent's call: its child run, as the record has it, then its outcome (a result).
      if (task.payload.contains("sub_agent"))
        if (auto child = answers.children.find(call_id); child != answers.children.end()) take(machine.on_child_started(task.step, child->second));
      auto asked = answers.forms.find("approve-" + std::to_string(task.step));
      auto done = answers.results.find(call_id);
      if (!approved && asked != answers.forms.end()) {
        result.payload = value{{"status", "needs_approval"}, {"form", asked->second}};
      } else if (done != answers.results.end()) {
        result.payload = done->second;
        ++report.tool_calls;
      } else {  // no recorded result: the recorded run ended or waits here
        if (!end_recorded(machine, answers, e)) break;
        take(e);
        continue;
      }
    }
    e = machine.on_task_result(result);
    take(e);
  }
  // Compared as far as the record can be checked.
  std::size_t n = recorded_stop.empty() ? std::max(recorded.size(), replayed.size())
                                        : std::min(recorded.size(), replayed.size());
  if (!recorded_stop.empty()) report.stopped = recorded_stop;
  for (std::size_t i = 0; i < n; ++i) {
    auto r = i < recorded.size() ? recorded[i] : std::string();
    auto p = i < replayed.size() ? replayed[i] : std::string();
    ++report.decisions;
    if (r != p) {
      report.same = false;
      report.index = i;
      report.recorded = r.empty() ? "(nothing more)" : r;
      report.replayed = p.empty() ? "(nothing more)" : p;
      break;
    }
  }
  return report;
}

} // namespace keel::actors
