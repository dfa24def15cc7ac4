// Forks and replays of a recorded run (actors/run_fork.hpp), on machines driven directly: what a
// fork replays and what it sends live, another answer at an approval, the changes it carries, what
// each bad request gets, and the replay's determinism check.
#include "actors/run_fork.hpp"
#include "llm/conversation.hpp"

#include <catch2/catch.hpp>

using namespace keel;
using namespace keel::actors;
using store::run_status;
using wire::value;

namespace {

config::agent_config coder() {
  config::agent_config a;
  a.id = "coder";
  a.tools = {"exec", "write"};
  a.max_steps = 30;
  a.queue = "coder";
  return a;
}

run_context context() { return run_context{"results", 10'000, 4000, 1 << 20, {}}; }

value answer_with(const std::string& text, value calls = value::array()) {
  return value{{"role", "assistant"}, {"text", text}, {"tool_calls", calls},
               {"usage", {{"input_tokens", 100}, {"output_tokens", 10}}}, {"stop_reason", calls.empty() ? "end_turn" : "tool_use"}};
}

value call(const std::string& id, const std::string& tool, value arguments) {
  return value::array({{{"id", id}, {"name", tool}, {"arguments", std::move(arguments)}}});
}

// A run as its store would hold it, built from the transitions a machine gave.
struct recorder {
  config::agent_config agent = coder();
  run_machine machine;
  recorded_run run;
  effects last;
  explicit recorder(const std::string& id = "r1")
    : machine(run_machine::create(id, wire::invoke_request{"coder", "fix the build", "", ""}, 1000), agent, context()) {}
  explicit recorder(store::run_record record) : machine(std::move(record), agent, context()) {}
  effects take(effects e) {
    for (const auto& m : e.transition.messages) run.messages.push_back(*wire::unpack(m));
    for (const auto& ev : e.transition.events) run.events.push_back(ev);
    last = e;
    return e;
  }
  effects model(const value& answer) {
    REQUIRE(last.tasks.size() == 1);
    const auto& t = last.tasks[0];
    REQUIRE(t.kind == wire::task_kind::llm);
    return take(machine.on_task_result(wire::task_result{machine.run_id(), t.step, t.attempt, "w", true, answer, {}}));
  }
  effects tool(const value& payload) {
    REQUIRE(last.tasks.size() == 1);
    const auto& t = last.tasks[0];
    REQUIRE(t.kind == wire::task_kind::tool);
    return take(machine.on_task_result(wire::task_result{machine.run_id(), t.step, t.attempt, "w", true, payload, {}}));
  }
  std::string waiting_key() const { return machine.state().suspended->step_key; }
  void approve(bool yes, const std::string& feedback = "") {
    auto r = machine.on_resume(wire::resume_request{machine.run_id(), waiting_key(), yes, feedback, false, "", "", "ann"});
    REQUIRE(r.ok());
    take(std::move(*r));
  }
  recorded_run done() {
    recorded_run r = run;
    r.record = machine.record();
    return r;
  }
};

// Three model steps: an exec a person approves, a write that runs, the final answer.
recorded_run three_steps(std::string* exec_key = nullptr) {
  recorder r;
  r.take(r.machine.start());
  r.model(answer_with("run the tests", call("c1", "exec", {{"command", "make test"}})));
  r.tool(value{{"status", "needs_approval"}, {"form", {{"command", "make test"}}}});
  if (exec_key) *exec_key = r.waiting_key();
  r.approve(true);
  r.tool(value{{"status", "done"}, {"result", {{"exit_code", 2}, {"stdout", "1 failed"}}}});
  r.model(answer_with("fix it", call("c2", "write", {{"path", "a.c"}, {"content", "int x;"}})));
  r.tool(value{{"status", "done"}, {"result", {{"path", "a.c"}, {"bytes", 6}}}});
  r.model(answer_with("fixed"));
  REQUIRE(r.machine.record().status == run_status::completed);
  return r.done();
}

std::vector<std::string> types(const effects& e) {
  std::vector<std::string> out;
  for (const auto& ev : e.transition.events) out.push_back(ev.event_type);
  return out;
}

fork_request at(std::uint64_t step) {
  fork_request f;
  f.at_step = step;
  f.by = "dev";
  return f;
}

} // namespace

TEST_CASE("fork: a fork at step 1 replays that step and its calls, then sends step 2 live with the model given", "[actors][fork]") {
  auto recorded = three_steps();
  auto request = at(1);
  request.provider = "other";
  request.model = "bigger";
  request.system_prompt = "be careful";
  auto plan = plan_fork("f1", recorded, request, 5000);
  REQUIRE(plan.ok());
  // Planned under one id, the same record under another but for its id (the supervisor plans once).
  auto elsewhere = plan_fork("other", recorded, request, 5000);
  REQUIRE(elsewhere.ok());
  elsewhere->record.run_id = "f1";
  CHECK(store::pack_record(elsewhere->record) == store::pack_record(plan->record));
  CHECK(plan->replayed_steps == 1);
  CHECK(plan->replayed_calls == 1);
  CHECK(plan->record.state.contains("fork"));
  CHECK(store::run_state_from_value(plan->record.state)->fork.is_object());
  auto agent = coder();
  run_machine fork(plan->record, agent, context());
  auto started = fork.start();
  // The run's start, the recorded step and its call (marked replayed), then the next step, live.
  CHECK(types(started) == std::vector<std::string>{"run_started", "llm_step_started", "llm_step_completed", "tool_call_started",
                                                   "suspend", "resumed", "tool_call_started", "tool_call_completed",
                                                   "llm_step_started"});
  CHECK(started.transition.events[0].data["fork"]["run_id"] == "r1");
  for (std::size_t i = 1; i + 1 < started.transition.events.size(); ++i)
    CHECK(started.transition.events[i].data["replayed"] == true);
  CHECK_FALSE(started.transition.events.back().data.contains("replayed"));
  CHECK(started.transition.events.back().data["step"] == 2);
  CHECK_FALSE(started.transition.events[2].data.contains("cost_usd"));
  // One task: the model's step 2, with the conversation so far (input, answer, tool result).
  REQUIRE(started.tasks.size() == 1);
  const auto& task = started.tasks[0];
  CHECK(task.kind == wire::task_kind::llm);
  CHECK(task.payload["provider"] == "other");
  CHECK(task.payload["model"] == "bigger");
  CHECK(task.payload["system_prompt"] == "be careful");
  CHECK(task.payload["conversation"]["count"] == 3);
  // Nothing replayed counts: no tokens, no cost; the replayed step numbers are not reused.
  CHECK(fork.state().usage.input_tokens == 0);
  CHECK(fork.state().cost_usd == 0);
  CHECK(fork.state().steps == 1);
  CHECK(task.step > 3);
  CHECK(fork.state().replayed_events.is_null());
  // What is stored: the conversation whole (three messages), the events once.
  CHECK(started.transition.messages.size() == 3);
  CHECK(started.transition.record.status == run_status::running);
  // It goes on live: its own final answer ends it.
  auto ended = fork.on_task_result(wire::task_result{"f1", task.step, task.attempt, "w", true, answer_with("done otherwise"), {}});
  CHECK(types(ended) == std::vector<std::string>{"llm_step_completed", "run_completed"});
  CHECK(fork.state().usage.input_tokens == 100);
}

TEST_CASE("fork: at step 0 nothing is replayed, at the last step with calls the calls are replayed", "[actors][fork]") {
  auto recorded = three_steps();
  auto agent = coder();
  auto none = plan_fork("f0", recorded, at(0), 5000);
  REQUIRE(none.ok());
  run_machine zero(none->record, agent, context());
  auto started = zero.start();
  CHECK(types(started) == std::vector<std::string>{"run_started", "llm_step_started"});
  CHECK(started.tasks.at(0).payload["conversation"]["count"] == 1);
  auto two = plan_fork("f2", recorded, at(2), 5000);
  REQUIRE(two.ok());
  CHECK(two->replayed_calls == 2);
  run_machine second(two->record, agent, context());
  auto going = second.start();
  REQUIRE(going.tasks.size() == 1);
  CHECK(going.tasks[0].kind == wire::task_kind::llm);
  CHECK(going.tasks[0].payload["conversation"]["count"] == 5);
  CHECK(going.transition.events.back().data["step"] == 3);
}

TEST_CASE("fork: another answer at an approval: the call is live from there, the others replayed", "[actors][fork]") {
  std::string key;
  auto recorded = three_steps(&key);
  auto request = at(1);
  request.answers[key] = store::answer{false, "use make check"};
  auto plan = plan_fork("f1", recorded, request, 5000);
  REQUIRE(plan.ok());
  CHECK(plan->replayed_calls == 0);
  auto agent = coder();
  run_machine fork(plan->record, agent, context());
  auto started = fork.start();
  CHECK(types(started) == std::vector<std::string>{"run_started", "llm_step_started", "llm_step_completed", "tool_call_started"});
  CHECK_FALSE(started.transition.events.back().data.contains("replayed"));
  REQUIRE(started.tasks.size() == 1);
  // The worker asks for approval, as it did: the answer given in advance is taken at once.
  const auto& t = started.tasks[0];
  auto asked = fork.on_task_result(wire::task_result{"f1", t.step, t.attempt, "w", true,
                                                     value{{"status", "needs_approval"}, {"form", value::object()}}, {}});
  CHECK(types(asked) == std::vector<std::string>{"suspend", "resumed", "tool_call_completed", "llm_step_started"});
  CHECK(asked.transition.events[1].data["approved"] == false);
  CHECK(asked.transition.events[1].data["feedback"] == "use make check");
  CHECK(asked.transition.events[1].data["by"] == "dev");
  CHECK(fork.state().preset_answers.empty());
  CHECK(asked.transition.events[2].data["is_error"] == true);
  // And approving where the person rejected runs the call (the task goes, approved).
  auto approve = at(1);
  approve.answers[key] = store::answer{true, ""};
  auto yes = plan_fork("f2", recorded, approve, 5000);
  REQUIRE(yes.ok());
  run_machine again(yes->record, agent, context());
  auto s = again.start();
  const auto& t2 = s.tasks.at(0);
  auto approved = again.on_task_result(wire::task_result{"f2", t2.step, t2.attempt, "w", true,
                                                         value{{"status", "needs_approval"}, {"form", value::object()}}, {}});
  CHECK(types(approved) == std::vector<std::string>{"suspend", "resumed", "tool_call_started"});
  CHECK(approved.tasks.at(0).payload["approved"] == true);
}

TEST_CASE("fork: what each bad request gets", "[actors][fork]") {
  std::string key;
  auto recorded = three_steps(&key);
  auto too_far = plan_fork("f", recorded, at(4), 5000);
  REQUIRE_FALSE(too_far.ok());
  CHECK(too_far.error().code == errc::invalid_argument);
  CHECK(too_far.error().message.find("at most 3") != std::string::npos);
  auto final_answer = plan_fork("f", recorded, at(3), 5000);
  REQUIRE_FALSE(final_answer.ok());
  CHECK(final_answer.error().message.find("final answer") != std::string::npos);
  auto unknown = at(1);
  unknown.answers["approve-99"] = store::answer{true, ""};
  auto never_asked = plan_fork("f", recorded, unknown, 5000);
  REQUIRE_FALSE(never_asked.ok());
  CHECK(never_asked.error().message.find("asked no approval 'approve-99'; it asked: " + key) != std::string::npos);
  auto early = at(0);
  early.answers[key] = store::answer{true, ""};
  auto after = plan_fork("f", recorded, early, 5000);
  REQUIRE_FALSE(after.ok());
  CHECK(after.error().message.find("asked at step 1, after step 0") != std::string::npos);
  auto dropped = recorded;
  dropped.messages.resize(1);  // retention.keep_conversations = false
  auto gone = plan_fork("f", dropped, at(1), 5000);
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.error().code == errc::conflict);
  CHECK(gone.error().message.find("keep_conversations") != std::string::npos);
  auto damaged = recorded;
  damaged.record.state["calls"] = "not a list";
  CHECK_FALSE(plan_fork("f", damaged, at(1), 5000).ok());
  // The request's own fields.
  CHECK(fork_request_from_value(value{{"at_step", 1}}).ok());
  for (const auto& bad : {value{{"model", "m"}}, value{{"at_step", -1}}, value{{"at_step", "1"}}, value{{"at_step", 1}, {"colour", "red"}},
                          value{{"at_step", 1}, {"model", 5}}, value{{"at_step", 1}, {"answers", {{"k", {{"approved", "yes"}}}}}},
                          value{{"at_step", 1}, {"model", std::string(300, 'm')}}, value("fork")}) {
    INFO(bad.dump());
    CHECK_FALSE(fork_request_from_value(bad).ok());
  }
}

TEST_CASE("fork: a fork of a fork replays the first's recorded and live steps alike", "[actors][fork]") {
  auto recorded = three_steps();
  auto plan = plan_fork("f1", recorded, at(1), 5000);
  REQUIRE(plan.ok());
  recorder f(plan->record);
  f.take(f.machine.start());
  f.model(answer_with("another way", call("c9", "exec", {{"command", "make check"}})));
  f.tool(value{{"status", "done"}, {"result", {{"exit_code", 0}}}});
  f.model(answer_with("done"));
  auto first = f.done();
  REQUIRE(first.messages.size() == 6);
  auto second = plan_fork("f2", first, at(2), 6000);
  REQUIRE(second.ok());
  CHECK(second->replayed_steps == 2);
  CHECK(second->replayed_calls == 2);
  run_machine twice(second->record, f.agent, context());
  auto started = twice.start();
  CHECK(started.tasks.at(0).payload["conversation"]["count"] == 5);
  // Replayed twice over: still one mark, and the first fork's live step is replayed too.
  std::size_t replayed = 0;
  for (const auto& ev : started.transition.events) replayed += ev.data.value("replayed", false) ? 1 : 0;
  CHECK(replayed == started.transition.events.size() - 2);
  // And the fork replays to the same decisions.
  CHECK(replay_run(first, f.agent, context()).same);
}

TEST_CASE("replay: a recorded run gives the same decisions, a changed agent differs where it changes one", "[actors][fork]") {
  auto recorded = three_steps();
  auto report = replay_run(recorded, coder(), context());
  INFO(to_value(report).dump());
  CHECK(report.same);
  CHECK(report.model_steps == 3);
  CHECK(report.tool_calls == 2);
  CHECK(report.approvals == 1);
  CHECK(report.decisions >= 10);
  CHECK(report.stopped.empty());
  // An agent without the write tool now: the call is refused, not made.
  auto changed = coder();
  changed.tools = {"exec"};
  auto differs = replay_run(recorded, changed, context());
  CHECK_FALSE(differs.same);
  REQUIRE(differs.index.has_value());
  CHECK(differs.recorded == "call write c2");
  CHECK(differs.replayed.find("result of c2") != std::string::npos);
  // A build that decides otherwise: the recorded step 2 names a call the recording did not make.
  auto other = recorded;
  for (auto& ev : other.events)
    if (ev.event_type == "llm_step_completed" && ev.data["step"] == 2) ev.data["tool_calls"][0]["id"] = "c3";
  auto decided = replay_run(other, coder(), context());
  CHECK_FALSE(decided.same);
  CHECK(decided.recorded == "call write c2");
  CHECK(decided.replayed == "call write c3");
  // A run still waiting on the model: the same as far as it went.
  auto cut = recorded;
  cut.events.resize(cut.events.size() - 2);
  CHECK(replay_run(cut, coder(), context()).same);
}

TEST_CASE("replay: a run cancelled while it waited for a person, and one that failed at a step, replay to the same end",
          "[actors][fork]") {
  recorder cancelled("rc");
  cancelled.take(cancelled.machine.start());
  cancelled.model(answer_with("run it", call("c1", "exec", {{"command", "make"}})));
  cancelled.tool(value{{"status", "needs_approval"}, {"form", value::object()}});
  auto stop = cancelled.machine.cancel("not now", "ann");
  REQUIRE(stop.ok());
  cancelled.take(std::move(*stop));
  auto report = replay_run(cancelled.done(), coder(), context());
  INFO(to_value(report).dump());
  CHECK(report.same);
  CHECK(report.stopped.empty());
  recorder failed("rf");
  failed.take(failed.machine.start());
  failed.model(answer_with("run it", call("c1", "exec", {{"command", "make"}})));
  const auto t = failed.last.tasks.at(0);
  failed.take(failed.machine.on_task_result(
    wire::task_result{"rf", t.step, t.attempt, "w", false, value(), keel::error{errc::denied, "refused by policy"}}));
  REQUIRE(failed.machine.record().status == run_status::failed);
  auto failure = replay_run(failed.done(), coder(), context());
  INFO(to_value(failure).dump());
  CHECK(failure.same);
  CHECK(failure.tool_calls == 0);
}
