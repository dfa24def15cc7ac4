// The run machine's workflows (actors/run_waits.cpp): waiting tools, events, time limits, on a
// clock the test moves. A machine made again from the record it wrote stands for a run loaded from
// disk (a restart, a takeover): what it waits for is in that record.
#include "actors/run_machine.hpp"
#include "actors/workflow_tools.hpp"

#include <catch2/catch.hpp>

#include <memory>

using namespace keel;
using namespace keel::actors;
using store::run_status;
using wire::value;

namespace {

constexpr std::int64_t t0 = 1'800'000'000'000;  // 2027-01-15

struct flow {
  config::agent_config agent;
  std::shared_ptr<std::int64_t> clock = std::make_shared<std::int64_t>(t0);
  std::unique_ptr<run_machine> machine;

  explicit flow(config::agent_config a) : agent(std::move(a)) {
    machine = std::make_unique<run_machine>(
      run_machine::create("r1", wire::invoke_request{"coder", "do it", "", ""}, *clock), agent, context());
  }
  run_context context() {
    run_context c{"results", 10'000, 4000, 1024, {}};
    c.clock = [clock = clock] { return *clock; };
    return c;
  }
  // The run as a node that loads it from disk sees it.
  void reload() {
    auto record = machine->record();
    machine = std::make_unique<run_machine>(std::move(record), agent, context());
  }
  effects model_says(const wire::task& t, value calls) {
    value payload{{"role", "assistant"}, {"text", ""}, {"tool_calls", std::move(calls)},
                  {"usage", {{"input_tokens", 10}, {"output_tokens", 5}}}, {"stop_reason", "tool_use"}};
    return machine->on_task_result(wire::task_result{"r1", t.step, t.attempt, "w", true, std::move(payload), {}});
  }
  static value call(const std::string& name, value arguments) {
    return value::array({{{"id", "c1"}, {"name", name}, {"arguments", std::move(arguments)}}});
  }
};

config::agent_config agent() {
  config::agent_config a;
  a.id = "coder";
  a.tools = {"exec"};
  a.workflow_tools = {"sleep", "wait_until", "wait_for_event"};
  a.max_steps = 30;
  a.queue = "coder";  // its worker queue
  a.wait_max_ms = 7 * 86'400'000LL;
  a.approval_timeout_answer = "reject";
  a.approval_timeout_feedback = "Nobody answered in time.";
  return a;
}

std::vector<std::string> types(const effects& e) {
  std::vector<std::string> out;
  for (const auto& ev : e.transition.events) out.push_back(ev.event_type);
  return out;
}

// The last tool message the model will read, as the task after it carries it.
value last_tool_message(const effects& e) {
  REQUIRE_FALSE(e.transition.messages.empty());
  for (auto it = e.transition.messages.rbegin(); it != e.transition.messages.rend(); ++it) {
    auto m = wire::unpack(*it);
    if (m && (*m)["role"] == "tool") return *m;
  }
  FAIL("no tool message");
  return {};
}

store::signal_record signal(const std::string& name, const std::string& id, value payload = value::object()) {
  return store::signal_record{id, name, std::move(payload), "ana", t0};
}

} // namespace

TEST_CASE("workflows: a sleep waits on disk, survives a reload, and ends once, when its time came", "[actors][workflows]") {
  flow f(agent());
  auto started = f.machine->start();
  auto slept = f.model_says(started.tasks[0], flow::call("sleep", {{"seconds", 3600}}));
  CHECK(types(slept) == std::vector<std::string>{"llm_step_completed", "wait_started"});
  CHECK(slept.tasks.empty());
  CHECK(slept.leave_memory);  // nothing in memory while it waits
  CHECK(slept.transition.record.status == run_status::waiting);
  CHECK(f.machine->next_wake_ms() == t0 + 3'600'000);
  CHECK(slept.transition.events[1].data["until"] == rfc3339(t0 + 3'600'000));

  f.reload();
  CHECK(f.machine->record().status == run_status::waiting);
  CHECK(f.machine->next_wake_ms() == t0 + 3'600'000);
  *f.clock = t0 + 3'599'999;
  CHECK_FALSE(f.machine->on_wake().changed);  // woken early: nothing happens
  *f.clock = t0 + 3'600'000;
  auto woke = f.machine->on_wake();
  CHECK(types(woke) == std::vector<std::string>{"wait_ended", "tool_call_completed", "llm_step_started"});
  CHECK(woke.transition.record.status == run_status::running);
  REQUIRE(woke.tasks.size() == 1);
  CHECK(last_tool_message(woke)["text"].get<std::string>().find(rfc3339(t0 + 3'600'000)) != std::string::npos);
  CHECK(f.machine->next_wake_ms() == 0);
  // A second wake (a repeated timer, a node that took the run over) does nothing.
  CHECK_FALSE(f.machine->on_wake().changed);
  f.reload();
  CHECK_FALSE(f.machine->on_wake().changed);
}

TEST_CASE("workflows: what a waiting tool is asked that it cannot do is told to the model, and the run goes on", "[actors][workflows]") {
  flow f(agent());
  auto started = f.machine->start();
  struct bad { const char* tool; value arguments; const char* said; };
  std::vector<bad> cases = {
    {"sleep", {{"seconds", -1}}, "sleep needs seconds"},
    {"sleep", {{"seconds", "ten"}}, "sleep needs seconds"},
    {"sleep", value::array(), "takes a map"},
    {"sleep", {{"seconds", 8 * 86'400}}, "at most 604800 s"},
    {"wait_until", {{"time", "tomorrow"}}, "RFC 3339"},
    {"wait_until", {{"time", "2027-02-30T10:00:00Z"}}, "RFC 3339"},
    {"wait_until", {{"time", "2030-01-01T00:00:00Z"}}, "at most"},
    {"wait_for_event", {{"name", ""}}, "needs name"},
    {"wait_for_event", {{"name", "a b"}}, "needs name"},
    {"wait_for_event", {{"name", "ok"}, {"timeout_seconds", -3}}, "timeout_seconds"},
  };
  auto task = started.tasks[0];
  for (const auto& c : cases) {
    INFO(c.tool << " " << c.arguments.dump());
    auto e = f.model_says(task, flow::call(c.tool, c.arguments));
    CHECK(types(e) == std::vector<std::string>{"llm_step_completed", "tool_call_completed", "llm_step_started"});
    auto told = last_tool_message(e);
    CHECK(told["is_error"] == true);
    CHECK(told["text"].get<std::string>().find(c.said) != std::string::npos);
    REQUIRE(e.tasks.size() == 1);
    task = e.tasks[0];
  }
  // A time already past, and a sleep of 0: answered at once.
  auto past = f.model_says(task, flow::call("wait_until", {{"time", "2020-01-01T00:00:00+02:00"}}));
  CHECK(types(past) == std::vector<std::string>{"llm_step_completed", "tool_call_completed", "llm_step_started"});
  auto zero = f.model_says(past.tasks[0], flow::call("sleep", {{"seconds", 0}}));
  CHECK(types(zero) == std::vector<std::string>{"llm_step_completed", "tool_call_completed", "llm_step_started"});
  // Not listed in workflow_tools: not the orchestrator's, refused as any unknown tool.
  auto a = agent();
  a.workflow_tools = {"sleep"};
  flow g(a);
  auto s = g.machine->start();
  auto refused = g.model_says(s.tasks[0], flow::call("wait_for_event", {{"name", "x"}}));
  CHECK(last_tool_message(refused)["text"].get<std::string>().find("not available") != std::string::npos);
}

TEST_CASE("workflows: an event sent before its wait is kept and taken at once, and a repeat is not taken twice", "[actors][workflows]") {
  flow f(agent());
  auto started = f.machine->start();
  auto kept = f.machine->on_signal(signal("approved", "e1", {{"by", "lead"}}));
  REQUIRE(kept.ok());
  CHECK(types(*kept) == std::vector<std::string>{"event_received"});
  CHECK((*kept->signal_reply)["delivered"] == false);
  CHECK(kept->transition.record.status == run_status::running);  // the step in flight goes on
  f.reload();
  // Sent again (a client's retry): answered, nothing changes.
  auto again = f.machine->on_signal(signal("approved", "e1"));
  REQUIRE(again.ok());
  CHECK_FALSE(again->changed);
  CHECK((*again->signal_reply)["duplicate"] == true);

  auto waited = f.model_says(started.tasks[0], flow::call("wait_for_event", {{"name", "approved"}, {"timeout_seconds", 60}}));
  CHECK(types(waited) == std::vector<std::string>{"llm_step_completed", "wait_started", "wait_ended", "tool_call_completed",
                                                  "llm_step_started"});
  auto told = last_tool_message(waited);
  CHECK(told["is_error"] == false);
  CHECK(told["text"].get<std::string>().find("lead") != std::string::npos);  // the payload
  CHECK(f.machine->state().signals.empty());
  // Taken: a repeat now is answered as delivered, and is not kept for a later wait.
  auto late = f.machine->on_signal(signal("approved", "e1"));
  REQUIRE(late.ok());
  CHECK_FALSE(late->changed);
  CHECK((*late->signal_reply)["delivered"] == true);
  CHECK((*late->signal_reply)["duplicate"] == true);
}

TEST_CASE("workflows: an event wait goes on with the event sent to it, or gives up at its timeout", "[actors][workflows]") {
  flow f(agent());
  auto started = f.machine->start();
  auto waiting = f.model_says(started.tasks[0], flow::call("wait_for_event", {{"name", "deploy/done"}, {"timeout_seconds", 30}}));
  CHECK(waiting.transition.record.status == run_status::waiting);
  CHECK(f.machine->next_wake_ms() == t0 + 30'000);
  f.reload();
  // Another name is kept for later; this one is taken.
  auto other = f.machine->on_signal(signal("other", "o1"));
  REQUIRE(other.ok());
  CHECK((*other->signal_reply)["delivered"] == false);
  CHECK(f.machine->record().status == run_status::waiting);
  auto came = f.machine->on_signal(signal("deploy/done", "d1", {{"version", 7}}));
  REQUIRE(came.ok());
  CHECK(types(*came) == std::vector<std::string>{"event_received", "wait_ended", "tool_call_completed", "llm_step_started"});
  CHECK((*came->signal_reply)["delivered"] == true);
  CHECK(came->transition.record.status == run_status::running);

  auto timing_out = f.model_says(came->tasks[0], flow::call("wait_for_event", {{"name", "never"}, {"timeout_seconds", 5}}));
  CHECK(timing_out.transition.record.status == run_status::waiting);
  *f.clock += 5'000;
  f.reload();
  auto gave_up = f.machine->on_wake();
  CHECK(types(gave_up) == std::vector<std::string>{"wait_ended", "tool_call_completed", "llm_step_started"});
  CHECK(gave_up.transition.events[0].data["reason"] == "timeout");
  CHECK(last_tool_message(gave_up)["text"].get<std::string>().find("timed_out") != std::string::npos);
  // The event that comes after the wait gave up is kept (a later wait may take it).
  auto after = f.machine->on_signal(signal("never", "n1"));
  REQUIRE(after.ok());
  CHECK((*after->signal_reply)["delivered"] == false);
}

TEST_CASE("workflows: events sent to a run are checked and bounded, and an ended run keeps none", "[actors][workflows]") {
  flow f(agent());
  f.machine->start();
  CHECK(f.machine->on_signal(signal("a b", "x")).error().code == errc::invalid_argument);
  CHECK(f.machine->on_signal(signal(std::string(129, 'a'), "x")).error().code == errc::invalid_argument);
  CHECK(f.machine->on_signal(signal("ok", "")).error().code == errc::invalid_argument);
  CHECK(f.machine->on_signal(signal("ok", std::string(129, 'i'))).error().code == errc::invalid_argument);
  CHECK(f.machine->on_signal(signal("ok", "big", value(std::string(65 << 10, 'p')))).error().code == errc::invalid_argument);
  // Nesting past what the run's stored state can hold is refused (the store reads 64 levels back).
  value deep = value::object();
  for (int i = 0; i < 40; ++i) deep = value::array({deep});
  CHECK(f.machine->on_signal(signal("ok", "deep", deep)).error().message.find("nests") != std::string::npos);
  // Kept payloads are bounded in bytes too: 4 of 60 KiB are, the 5th is not.
  {
    flow g(agent());
    g.machine->start();
    for (int i = 0; i < 4; ++i) REQUIRE(g.machine->on_signal(signal("big", "b" + std::to_string(i), value(std::string(60 << 10, 'x')))).ok());
    CHECK(g.machine->on_signal(signal("big", "b5", value(std::string(60 << 10, 'x')))).error().code == errc::unavailable);
  }
  for (std::size_t i = 0; i < events_kept_max; ++i) REQUIRE(f.machine->on_signal(signal("ok", "k" + std::to_string(i))).ok());
  auto full = f.machine->on_signal(signal("ok", "one-more"));
  CHECK(full.error().code == errc::unavailable);
  CHECK(full.error().message.find("64 events") != std::string::npos);
  auto cancelled = f.machine->cancel("done here", "ana");
  REQUIRE(cancelled.ok());
  auto ended = f.machine->on_signal(signal("ok", "late"));
  CHECK(ended.error().code == errc::conflict);
  CHECK(ended.error().message.find("cancelled") != std::string::npos);
}

TEST_CASE("workflows: an approval nobody answers is escalated, then gets the agent's default answer", "[actors][workflows]") {
  for (std::string answer : {"reject", "approve", "fail"}) {
    DYNAMIC_SECTION("answer " << answer) {
      auto a = agent();
      a.approval_escalate_after_ms = 60'000;
      a.approval_escalate_to = "#oncall";
      a.approval_timeout_ms = 600'000;
      a.approval_timeout_answer = answer;
      flow f(a);
      auto started = f.machine->start();
      auto asked = f.model_says(started.tasks[0], value::array({{{"id", "c1"}, {"name", "exec"}, {"arguments", {{"command", "make deploy"}}}}}));
      auto suspended = f.machine->on_task_result(wire::task_result{"r1", asked.tasks[0].step, asked.tasks[0].attempt, "w", true,
                                                                   value{{"status", "needs_approval"}, {"form", value::object()}}, {}});
      REQUIRE(suspended.transition.record.status == run_status::suspended);
      CHECK(suspended.transition.events[0].data["expiry_answer"] == answer);
      CHECK(f.machine->next_wake_ms() == t0 + 60'000);
      f.reload();
      *f.clock = t0 + 60'000;
      auto escalated = f.machine->on_wake();
      CHECK(types(escalated) == std::vector<std::string>{"approval_escalated"});
      CHECK(escalated.transition.events[0].data["to"] == "#oncall");
      CHECK(escalated.transition.record.status == run_status::suspended);
      CHECK(f.machine->next_wake_ms() == t0 + 600'000);  // escalated once
      f.reload();
      *f.clock = t0 + 600'000;
      auto expired = f.machine->on_wake();
      REQUIRE_FALSE(expired.transition.events.empty());
      CHECK(expired.transition.events[0].event_type == "approval_expired");
      if (answer == "reject") {
        CHECK(types(expired) == std::vector<std::string>{"approval_expired", "resumed", "tool_call_completed", "llm_step_started"});
        CHECK(last_tool_message(expired)["text"].get<std::string>().find("Nobody answered in time.") != std::string::npos);
      } else if (answer == "approve") {
        CHECK(types(expired) == std::vector<std::string>{"approval_expired", "resumed", "tool_call_started"});
        REQUIRE(expired.tasks.size() == 1);
        CHECK(expired.tasks[0].payload["approved"] == true);
      } else {
        CHECK(types(expired) == std::vector<std::string>{"approval_expired", "run_failed"});
        CHECK(expired.transition.record.status == run_status::failed);
      }
      CHECK(expired.transition.events[1].data.value("by", std::string()) == (answer == "fail" ? "" : "keel (approval_timeout_ms)"));
      // A person's answer after the expiry is refused (the step is no longer waiting).
      auto late = f.machine->on_resume(wire::resume_request{"r1", suspended.transition.events[0].data["step_key"].get<std::string>(),
                                                            answer != "approve", "", false, "", "", ""});
      CHECK_FALSE(late.ok());
    }
  }
}

TEST_CASE("workflows: a run past its time limit fails, whatever it waits on, and a retry gives it the limit again", "[actors][workflows]") {
  auto a = agent();
  a.run_timeout_ms = 120'000;
  flow f(a);
  auto started = f.machine->start();
  CHECK(f.machine->next_wake_ms() == t0 + 120'000);
  auto sleeping = f.model_says(started.tasks[0], flow::call("sleep", {{"seconds", 3600}}));
  CHECK(f.machine->next_wake_ms() == t0 + 120'000);  // the limit comes before the sleep's end
  *f.clock = t0 + 120'000;
  f.reload();
  auto stopped = f.machine->on_wake();
  CHECK(types(stopped) == std::vector<std::string>{"run_timed_out", "run_failed"});
  CHECK(stopped.transition.record.status == run_status::failed);
  CHECK(stopped.transition.events[1].data["error"].get<std::string>().find("run_timeout_ms") != std::string::npos);
  CHECK(f.machine->next_wake_ms() == 0);
  auto retried = f.machine->retry("ana");
  REQUIRE(retried.ok());
  CHECK(retried->transition.record.status == run_status::waiting);  // the sleep it was in, again
  CHECK(f.machine->next_wake_ms() == t0 + 240'000);
  // The limit taken out of the config: a retry sets no deadline (the past one would fail it again).
  *f.clock = t0 + 240'000;
  auto stopped_again = f.machine->on_wake();
  REQUIRE(stopped_again.transition.record.status == run_status::failed);
  f.agent.run_timeout_ms = 0;
  f.reload();
  REQUIRE(f.machine->retry("ana").ok());
  CHECK(f.machine->next_wake_ms() == t0 + 240'000 + 3'600'000);  // the sleep's end only
  // A limit while a step is in flight: the step's late result changes nothing.
  flow g(a);
  auto s = g.machine->start();
  *g.clock = t0 + 200'000;
  auto over = g.machine->on_wake();
  CHECK(over.transition.record.status == run_status::failed);
  CHECK_FALSE(g.machine->expects(s.tasks[0].step));
}

TEST_CASE("workflows: a cancelled waiting run wakes for nothing", "[actors][workflows]") {
  flow f(agent());
  auto started = f.machine->start();
  f.model_says(started.tasks[0], flow::call("wait_for_event", {{"name", "x"}}));
  CHECK(f.machine->next_wake_ms() == t0 + 7 * 86'400'000LL);  // no timeout given: the longest wait
  auto cancelled = f.machine->cancel("no longer needed", "ana");
  REQUIRE(cancelled.ok());
  CHECK(cancelled->transition.record.status == run_status::cancelled);
  CHECK(f.machine->next_wake_ms() == 0);
  *f.clock += 8 * 86'400'000LL;
  CHECK_FALSE(f.machine->on_wake().changed);
}

TEST_CASE("workflows: RFC 3339 times", "[actors][workflows]") {
  CHECK(parse_rfc3339("1970-01-01T00:00:00Z") == 0);
  CHECK(parse_rfc3339("1970-01-01T01:00:00+01:00") == 0);
  CHECK(parse_rfc3339("1969-12-31T19:00:00-05:00") == 0);
  CHECK(parse_rfc3339("2024-02-29T12:30:15.250Z") == parse_rfc3339("2024-02-29t12:30:15.25z"));
  CHECK(parse_rfc3339("2024-02-29 12:30:15.123456789Z").has_value());
  for (const char* bad : {"", "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-01T24:00:00Z",
                          "2024-01-01T00:00:00", "2024-01-01T00:00:00+2:00", "2024-01-01T00:00:00.Z", "2024-01-01",
                          "2024-01-01T00:00:00Zjunk", "２０２４-01-01T00:00:00Z"})
    CHECK_FALSE(parse_rfc3339(bad).has_value());
  CHECK(rfc3339(0) == "1970-01-01T00:00:00.000Z");
  CHECK(parse_rfc3339(rfc3339(t0 + 123)) == t0 + 123);
}

TEST_CASE("workflows: a run of a run queue waits in line, starts when admitted, and frees its slot once it ends", "[actors][workflows]") {
  auto a = agent();
  a.run_queue = "deploys";
  flow f(a);
  wire::invoke_request invoke{"coder", "deploy", "", ""};
  invoke.concurrency_key = "repo-1";
  f.machine = std::make_unique<run_machine>(run_machine::create("r1", invoke, t0), f.agent, f.context());
  auto started = f.machine->start();
  CHECK(types(started) == std::vector<std::string>{"run_started", "run_queued"});
  CHECK(started.transition.record.status == run_status::queued);
  CHECK(started.tasks.empty());
  CHECK(started.leave_memory);  // in line: on disk only
  REQUIRE(started.queue_enter);
  CHECK(started.queue_enter->name == "deploys");
  CHECK(started.queue_enter->key == "repo-1");
  CHECK(started.queue_enter->since_ms == t0);
  CHECK_FALSE(started.queue_release);
  CHECK(started.transition.events[1].data["key"] == "repo-1");
  // Loaded from disk: its place is asked for again (the first ask may have been lost).
  *f.clock = t0 + 5000;
  f.reload();
  auto again_loaded = f.machine->start();
  CHECK_FALSE(again_loaded.changed);
  REQUIRE(again_loaded.queue_enter);
  CHECK(again_loaded.queue_enter->since_ms == t0);
  // An admission of another place is not this one's; this place's starts the first model step, once.
  CHECK_FALSE(f.machine->on_admitted(t0 - 1).changed);
  auto admitted = f.machine->on_admitted(t0);
  CHECK(types(admitted) == std::vector<std::string>{"run_admitted", "llm_step_started"});
  CHECK(admitted.transition.events[0].data["waited_ms"] == 5000);
  CHECK(admitted.transition.record.status == run_status::running);
  REQUIRE(admitted.tasks.size() == 1);
  CHECK_FALSE(admitted.queue_enter);
  CHECK_FALSE(f.machine->on_admitted().changed);  // a repeat changes nothing
  // It fails: the slot is freed; a retry puts it back in line, later, and goes on from the step.
  auto failed = f.machine->on_task_result(wire::task_result{"r1", admitted.tasks[0].step, admitted.tasks[0].attempt, "w", false,
                                                            value{}, make_error(errc::invalid_argument, "bad request")});
  REQUIRE(failed.transition.record.status == run_status::failed);
  REQUIRE(failed.queue_release);
  CHECK(failed.queue_release->since_ms == t0);
  *f.clock = t0 + 9000;
  auto retried = f.machine->retry("ana");
  REQUIRE(retried.ok());
  CHECK(retried->transition.record.status == run_status::queued);
  REQUIRE(retried->queue_enter);
  CHECK(retried->queue_enter->since_ms == t0 + 9000);
  CHECK(retried->tasks.empty());
  auto again = f.machine->on_admitted();
  CHECK(types(again) == std::vector<std::string>{"run_admitted", "task_retried"});
  REQUIRE(again.tasks.size() == 1);
  CHECK(again.tasks[0].step == admitted.tasks[0].step);
}

TEST_CASE("workflows: a run in line can be cancelled or time out, and frees its place", "[actors][workflows]") {
  auto a = agent();
  a.run_queue = "deploys";
  a.run_timeout_ms = 60'000;
  flow f(a);
  auto started = f.machine->start();
  REQUIRE(started.queue_enter);
  CHECK(f.machine->next_wake_ms() == t0 + 60'000);
  *f.clock = t0 + 60'000;
  f.reload();
  auto over = f.machine->on_wake();
  CHECK(types(over) == std::vector<std::string>{"run_timed_out", "run_failed"});
  REQUIRE(over.queue_release);
  CHECK(over.queue_release->name == "deploys");
  CHECK_FALSE(f.machine->on_admitted().changed);  // admitted after it ended: nothing
  flow g(a);
  REQUIRE(g.machine->start().queue_enter);
  auto cancelled = g.machine->cancel("not needed", "ana");
  REQUIRE(cancelled.ok());
  CHECK(cancelled->queue_release);
  CHECK_FALSE(g.machine->on_admitted().changed);
}

TEST_CASE("workflows: a step past step_timeout_ms is given up: a model call is sent again, a tool's call gets an error result", "[actors][workflows]") {
  auto a = agent();
  a.step_timeout_ms = 30'000;
  a.exec_security = "allow-always";
  flow f(a);
  auto started = f.machine->start();
  REQUIRE(started.tasks.size() == 1);
  CHECK(started.deadline_ms == t0 + 30'000);
  auto step = started.tasks[0].step;
  *f.clock = t0 + 29'999;
  CHECK_FALSE(f.machine->on_deadline(step, 1).changed);  // early: nothing
  *f.clock = t0 + 30'000;
  f.reload();  // the limit is in the record
  auto again = f.machine->on_deadline(step, 1);
  CHECK(types(again) == std::vector<std::string>{"step_timed_out", "task_retried"});
  CHECK(again.transition.events[0].data["kind"] == "model");
  REQUIRE(again.tasks.size() == 1);
  CHECK(again.tasks[0].attempt == 2);
  CHECK(again.deadline_ms == t0 + 30'000 + again.task_delay_ms + 30'000);  // its own limit
  CHECK_FALSE(f.machine->on_deadline(step, 1).changed);  // the old attempt's: nothing
  // An answer of the attempt given up that comes late is still taken if it comes first (the step
  // is the same, and it is paid for).
  CHECK(f.machine->expects(wire::task_result{"r1", step, 1, "w", true, {}, {}}));
  auto tool = f.model_says(again.tasks[0], flow::call("exec", {{"command", "sleep 100"}}));
  REQUIRE(tool.tasks.size() == 1);
  auto tool_step = tool.tasks[0].step;
  CHECK(tool.deadline_ms == *f.clock + 30'000);
  *f.clock += 30'000;
  auto given_up = f.machine->on_deadline(tool_step, 1);
  CHECK(types(given_up) == std::vector<std::string>{"step_timed_out", "tool_call_completed", "llm_step_started"});
  CHECK(given_up.transition.events[0].data["outcome"] == "error result");
  auto told = last_tool_message(given_up);
  CHECK(told.dump().find("step_timeout_ms") != std::string::npos);
  // Without the key, no limit (only a declared tool's own).
  auto b = agent();
  flow g(b);
  CHECK(g.machine->start().deadline_ms == 0);
}
