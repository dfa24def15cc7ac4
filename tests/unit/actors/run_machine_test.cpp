#include "actors/run_machine.hpp"
#include "llm/conversation.hpp"

#include <catch2/catch.hpp>

using namespace keel;
using namespace keel::actors;
using store::run_status;
using wire::value;

namespace {

config::agent_config agent_with(std::int64_t max_steps = 30) {
  config::agent_config a;
  a.id = "coder";
  a.tools = {"exec", "write"};
  a.max_steps = max_steps;
  a.queue = "coder";
  return a;
}

// What every machine of these tests runs with.
// Steps failing for a passing reason are retried for 10 s of waits (1 s, 2 s, 4 s), new messages
// up to 1 KiB go inside a model task.
run_context test_context() { return run_context{"results", 10'000, 4000, 1024, {}}; }

struct harness {
  config::agent_config agent;
  run_machine machine;
  std::uint64_t events_seen = 0;

  explicit harness(config::agent_config a = agent_with())
    : agent(std::move(a)),
      machine(run_machine::create("r1", wire::invoke_request{"coder", "make it", "", ""}, 1), agent,
              test_context()) {}

  // Checks that every effects' events continue the run's sequence without gaps.
  effects check(effects e) {
    for (const auto& ev : e.transition.events) CHECK(ev.seq == ++events_seen);
    return e;
  }
  effects answer(const wire::task& t, value payload) {
    return check(machine.on_task_result(wire::task_result{"r1", t.step, t.attempt, "w", true, std::move(payload), {}}));
  }
  // The tool calls of a model answer that runs one command.
  static value exec_call(const std::string& command) {
    return value::array({{{"id", "c1"}, {"name", "exec"}, {"arguments", {{"command", command}}}}});
  }
  static value llm_answer(const std::string& text, value calls = value::array()) {
    return value{{"role", "assistant"}, {"text", text}, {"tool_calls", calls},
                 {"usage", {{"input_tokens", 10}, {"output_tokens", 5}}}, {"stop_reason", "x"}};
  }
};

std::vector<std::string> types(const effects& e) {
  std::vector<std::string> out;
  for (const auto& ev : e.transition.events) out.push_back(ev.event_type);
  return out;
}

} // namespace

TEST_CASE("run machine: the guide's loop, with an approval, to completion", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  CHECK(types(started) == std::vector<std::string>{"run_started", "llm_step_started"});
  REQUIRE(started.tasks.size() == 1);
  CHECK(started.tasks[0].kind == wire::task_kind::llm);
  CHECK(started.tasks[0].reply_to == "results");
  CHECK(started.transition.record.status == run_status::running);
  // The first transition leaves the stored status to the store to read; later ones name it.
  CHECK_FALSE(started.transition.stored_status.has_value());

  auto call = value::array({{{"id", "c1"}, {"name", "write"}, {"arguments", {{"path", "a"}, {"content", "b"}}}}});
  auto asked = h.answer(started.tasks[0], harness::llm_answer("writing", call));
  CHECK(types(asked) == std::vector<std::string>{"llm_step_completed", "tool_call_started"});
  REQUIRE(asked.tasks.size() == 1);
  CHECK(asked.tasks[0].payload["approved"] == false);
  CHECK(asked.transition.journal.size() == 1);
  CHECK(asked.transition.journal[0].kind == "result");  // the result itself, as it came

  auto form = value{{"tool", "write"}, {"context", {{"path", "/w/a"}}}};
  auto suspended = h.answer(asked.tasks[0], value{{"status", "needs_approval"}, {"form", form}});
  CHECK(types(suspended) == std::vector<std::string>{"suspend"});
  CHECK(suspended.leave_memory);
  CHECK(suspended.transition.record.status == run_status::suspended);
  CHECK(asked.transition.stored_status == run_status::running);
  CHECK(suspended.transition.stored_status == run_status::running);
  auto step_key = suspended.transition.events[0].data["step_key"].get<std::string>();
  CHECK(suspended.transition.events[0].data["form"] == form);

  auto resumed = h.machine.on_resume(wire::resume_request{"r1", step_key, true, "", false, "", "", ""});
  REQUIRE(resumed.ok());
  CHECK(resumed->transition.sync);  // its reply says the answer is on disk
  REQUIRE(resumed.ok());
  h.check(*resumed);
  CHECK(types(*resumed) == std::vector<std::string>{"resumed", "tool_call_started"});
  CHECK(resumed->resume_reply->duplicate == false);
  CHECK(resumed->tasks[0].payload["approved"] == true);

  auto ran = h.answer(resumed->tasks[0], value{{"status", "done"}, {"result", {{"path", "a"}, {"bytes", 1}}}});
  CHECK(types(ran) == std::vector<std::string>{"tool_call_completed", "llm_step_started"});
  auto finished = h.answer(ran.tasks[0], harness::llm_answer("all done"));
  CHECK(types(finished) == std::vector<std::string>{"llm_step_completed", "run_completed"});
  CHECK(finished.leave_memory);
  CHECK(finished.transition.record.status == run_status::completed);
  CHECK_FALSE(finished.transition.snapshot.empty());
  const auto& record = h.machine.record();
  CHECK(record.state["output"] == "all done");
  CHECK(record.state["usage"]["input_tokens"] == 20);
  CHECK(h.machine.state().messages_count == 4);  // user, assistant, tool, final assistant
}

TEST_CASE("run machine: a rejection goes back to the model with the feedback", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto call = harness::exec_call("rm -rf /");
  auto asked = h.answer(started.tasks[0], harness::llm_answer("", call));
  auto suspended = h.answer(asked.tasks[0], value{{"status", "needs_approval"}, {"form", value::object()}});
  auto key = suspended.transition.events[0].data["step_key"].get<std::string>();
  auto rejected = h.machine.on_resume(wire::resume_request{"r1", key, false, "never do that", false, "", "", ""});
  REQUIRE(rejected.ok());
  h.check(*rejected);
  CHECK(types(*rejected) == std::vector<std::string>{"resumed", "tool_call_completed", "llm_step_started"});
  // The task as a worker gets it: the conversation by its length, with the messages new since the
  // last model task (the person's task went with the first one).
  auto sent = wire::decode<wire::task>(wire::encode(rejected->tasks[0]));
  REQUIRE(sent.ok());
  const auto& messages = sent->payload["messages"];
  CHECK(sent->payload["conversation"] == value{{"count", 3}, {"from", 1}});
  CHECK(messages == value::array({*wire::unpack(asked.transition.messages[0]), *wire::unpack(rejected->transition.messages[0])}));
  auto last = messages.back();
  CHECK(last["role"] == "tool");
  CHECK(last["is_error"] == true);
  CHECK(last["text"] == "The person rejected this exec call. Their feedback: never do that");
}

TEST_CASE("run machine: resumes that do not fit are errors and a repeat changes nothing", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto early = h.machine.on_resume(wire::resume_request{"r1", "approve-9", true, "", false, "", "", ""});
  REQUIRE_FALSE(early.ok());
  CHECK(early.error().code == errc::conflict);
  CHECK(early.error().message == "run r1 is running; no step approve-9 is waiting");
  auto call = harness::exec_call("ls");
  auto asked = h.answer(started.tasks[0], harness::llm_answer("", call));
  auto suspended = h.answer(asked.tasks[0], value{{"status", "needs_approval"}, {"form", value::object()}});
  auto key = suspended.transition.events[0].data["step_key"].get<std::string>();
  auto wrong = h.machine.on_resume(wire::resume_request{"r1", "approve-1", true, "", false, "", "", ""});
  CHECK(wrong.error().message == "run r1 waits on step " + key + ", not approve-1");
  REQUIRE(h.machine.on_resume(wire::resume_request{"r1", key, true, "", true, "", "", ""}).ok());
  h.events_seen = h.machine.record().last_event_seq;
  auto again = h.machine.on_resume(wire::resume_request{"r1", key, true, "", false, "", "", ""});
  REQUIRE(again.ok());
  CHECK_FALSE(again->changed);
  CHECK(again->resume_reply->duplicate);
  auto contrary = h.machine.on_resume(wire::resume_request{"r1", key, false, "", false, "", "", ""});
  CHECK(contrary.error().message == "step " + key + " was already approved");
  // "always allow" remembered the command for the rest of the run.
  CHECK(h.machine.record().state["allow_rules"] == value::array({value{{"kind", "exact"}, {"command", "ls"}}}));
}

TEST_CASE("run machine: late and repeated results are ignored", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto done = h.answer(started.tasks[0], harness::llm_answer("done"));
  CHECK(done.transition.record.status == run_status::completed);
  auto repeat = h.machine.on_task_result(wire::task_result{"r1", started.tasks[0].step, 2, "w", true,
                                                           harness::llm_answer("other"), {}});
  CHECK_FALSE(repeat.changed);
  CHECK(h.machine.record().state["output"] == "done");
}

TEST_CASE("run machine: failures that may pass are retried with growing waits for a bounded time, then fail the run",
          "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto task = started.tasks[0];
  std::vector<std::int64_t> waits;
  for (std::uint32_t attempt = 1; attempt <= 4; ++attempt) {
    auto e = h.check(h.machine.on_task_result(
      wire::task_result{"r1", task.step, attempt, "w", false, nullptr, make_error(errc::unavailable, "overloaded")}));
    if (attempt < 4) {
      REQUIRE(e.tasks.size() == 1);
      CHECK(e.tasks[0].step == task.step);
      CHECK(e.tasks[0].attempt == attempt + 1);
      waits.push_back(e.task_delay_ms);
      CHECK(e.transition.events[0].event_type == "task_retried");
      CHECK(e.transition.events[0].data["waiting"].get<std::string>().find("waiting on the model, next try in") == 0);
      CHECK(h.machine.record().state["pending"]["retry"]["reason"] == "overloaded");
    } else {
      // 1 + 2 + 4 s waited; 4 s more would pass the 10 s budget.
      CHECK(e.tasks.empty());
      CHECK(e.transition.record.status == run_status::failed);
      CHECK(h.machine.record().state["error"].get<std::string>().find("kept failing for 7 s (4 tries; last: overloaded)") !=
            std::string::npos);
    }
  }
  CHECK(waits == std::vector<std::int64_t>{1000, 2000, 4000});
  // A result of an older attempt of a step that failed is late: nothing changes.
  CHECK_FALSE(h.machine.on_task_result(wire::task_result{"r1", task.step, 2, "w", true, harness::llm_answer("x"), {}}).changed);
}

TEST_CASE("run machine: a task handed out too often goes again as a new attempt after a wait, not ending the run", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto task = started.tasks[0];
  auto e = h.check(h.machine.on_task_result(wire::task_result{
    "r1", task.step, 1, "w", false, nullptr, make_error(errc::exhausted, "the task was handed out 6 times and no worker finished it")}));
  REQUIRE(e.tasks.size() == 1);
  CHECK(e.tasks[0].attempt == 2);  // a new attempt: a new task, its deliveries counted afresh
  CHECK(e.task_delay_ms == 1000);
  CHECK(e.transition.record.status == run_status::running);
  CHECK(e.transition.events[0].event_type == "task_retried");
}

TEST_CASE("run machine: a failed run is retried from the step that failed, and only a failed run", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  CHECK(h.machine.retry("ana").error().code == errc::conflict);  // running
  auto e = h.check(h.machine.on_task_result(wire::task_result{
    "r1", started.tasks[0].step, 1, "w", false, nullptr, make_error(errc::invalid_argument, "bad request")}));
  CHECK(e.transition.record.status == run_status::failed);
  auto retried = h.machine.retry("ana");
  REQUIRE(retried.ok());
  CHECK(retried->transition.events[0].data["by"] == "ana");  // who retried is recorded
  h.check(*retried);
  CHECK(retried->transition.record.status == run_status::running);
  REQUIRE(retried->tasks.size() == 1);
  CHECK(retried->tasks[0].step == started.tasks[0].step);  // the same step
  CHECK(retried->tasks[0].attempt == 2);
  CHECK(retried->task_delay_ms == 0);
  CHECK(types(*retried) == std::vector<std::string>{"run_retried", "task_retried"});
  CHECK_FALSE(h.machine.record().state.contains("error"));
  auto done = h.answer(retried->tasks[0], harness::llm_answer("done"));
  CHECK(done.transition.record.status == run_status::completed);
  CHECK(h.machine.retry("ana").error().message == "run r1 is completed; only a failed run can be retried");
}

TEST_CASE("run machine: a worker is told which attempt is wanted", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto step = started.tasks[0].step;
  CHECK(h.machine.wants(step, 1));
  CHECK_FALSE(h.machine.wants(step, 2));
  CHECK_FALSE(h.machine.wants(step + 1, 1));
  auto retry = h.check(h.machine.on_task_result(
    wire::task_result{"r1", step, 1, "w", false, nullptr, make_error(errc::timeout, "slow")}));
  CHECK_FALSE(h.machine.wants(step, 1));  // superseded by attempt 2
  CHECK(h.machine.wants(step, 2));
  h.answer(retry.tasks[0], harness::llm_answer("done"));
  CHECK_FALSE(h.machine.wants(step, 2));  // answered
}

TEST_CASE("run machine: stop conditions and unavailable tools", "[actors]") {
  harness h(agent_with(1));
  auto started = h.check(h.machine.start());
  auto call = value::array({{{"id", "c1"}, {"name", "grep"}, {"arguments", value::object()}}});
  auto e = h.answer(started.tasks[0], harness::llm_answer("searching", call));
  // grep is not among this agent's tools: the model is told, and max_steps = 1 ends the run.
  CHECK(types(e) == std::vector<std::string>{"llm_step_completed", "tool_call_completed", "run_completed"});
  CHECK(e.transition.events[1].data["result"]["error"] == "tool 'grep' is not available to this agent");
  CHECK(h.machine.record().state["stop_reason"] == "max_steps");
}

TEST_CASE("run machine: a recovered run sends its step in flight again unless the broker still holds it", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto record = h.machine.record();  // what the transition wrote
  auto agent = agent_with();
  run_machine queued(record, agent, test_context());
  auto held = queued.start(true);
  CHECK_FALSE(held.changed);  // queued or running on a worker: its result is on the way
  CHECK(held.tasks.empty());
  CHECK(queued.wants(started.tasks[0].step, 1));
  run_machine recovered(record, agent, test_context());
  auto e = recovered.start();
  REQUIRE(e.tasks.size() == 1);
  CHECK(e.tasks[0].step == started.tasks[0].step);
  CHECK(e.tasks[0].attempt == 2);
  // The same conversation again, named by its length: the recovered machine holds none of it in
  // memory (it is on disk), so the worker keeps or fetches all of it.
  CHECK(e.tasks[0].payload["conversation"] == value{{"count", 1}, {"from", 1}});
  CHECK(e.tasks[0].payload["tools"] == started.tasks[0].payload["tools"]);
  CHECK(e.transition.events[0].event_type == "task_retried");
  CHECK(e.transition.events[0].seq == record.last_event_seq + 1);
}

TEST_CASE("run machine: cancel ends a run once, and records who cancelled it", "[actors]") {
  harness h;
  h.check(h.machine.start());
  auto c = h.machine.cancel("no longer needed", "ana");
  REQUIRE(c.ok());
  CHECK(c->transition.events[0].event_type == "run_cancelled");
  CHECK(c->transition.events[0].data["by"] == "ana");
  CHECK(c->transition.events[0].data["reason"] == "no longer needed");
  CHECK(c->transition.record.status == run_status::cancelled);
  CHECK(c->leave_memory);
  CHECK(h.machine.cancel("again", "ana").error().message == "run r1 has already cancelled");
}

TEST_CASE("run machine: a failure another attempt cannot change ends the run at once", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto e = h.check(h.machine.on_task_result(wire::task_result{
    "r1", started.tasks[0].step, 1, "w", false, nullptr,
    make_error(errc::invalid_argument, "anthropic answered HTTP 400: invalid_request_error: bad")}));
  CHECK(e.tasks.empty());
  CHECK(e.transition.record.status == run_status::failed);
  CHECK(h.machine.record().state["error"] == "anthropic answered HTTP 400: invalid_request_error: bad");
}

TEST_CASE("run machine: each transition carries only the messages it added", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  CHECK(started.transition.messages_from == 0);
  CHECK(started.transition.messages.size() == 1);  // the person's task
  auto call = harness::exec_call("ls");
  auto asked = h.answer(started.tasks[0], harness::llm_answer("listing", call));
  CHECK(asked.transition.messages_from == 1);
  REQUIRE(asked.transition.messages.size() == 1);  // the model's answer
  CHECK(*wire::unpack(asked.transition.messages[0]) == *wire::unpack(*h.machine.packed(1)));
  CHECK(wire::unpack(asked.transition.messages[0])->at("role") == "assistant");
  // A suspension adds no message; its snapshot does not hold the conversation.
  auto suspended = h.answer(asked.tasks[0], value{{"status", "needs_approval"}, {"form", value::object()}});
  CHECK(suspended.transition.messages.empty());
  CHECK(wire::unpack(suspended.transition.snapshot)->at("state").contains("messages_count"));
  CHECK_FALSE(wire::unpack(suspended.transition.snapshot)->at("state").contains("messages"));
  // A run loaded from disk (all its messages there) goes on from there; a start that changes
  // nothing writes nothing and counts nothing as written.
  auto record = h.machine.record();
  auto agent = agent_with();
  run_machine loaded(record, agent, test_context());
  auto nothing = loaded.start();
  CHECK_FALSE(nothing.changed);
  auto step_key = suspended.transition.events[0].data["step_key"].get<std::string>();
  auto rejected = loaded.on_resume(wire::resume_request{"r1", step_key, false, "no", false, "", "", ""});
  REQUIRE(rejected.ok());
  CHECK(rejected->transition.messages_from == 2);
  CHECK(rejected->transition.messages.size() == 1);  // the rejection, as the tool's result
}

TEST_CASE("run machine: a model task carries the new messages that fit, and names the rest by count", "[actors]") {
  harness h(agent_with(100));  // 1 KiB inline
  auto started = h.check(h.machine.start());
  CHECK(started.tasks[0].payload["conversation"] == value{{"count", 1}, {"from", 0}});
  auto task = started.tasks[0];
  // 40 steps, each reading a 600-byte file: every task carries only its step's new messages, and
  // a tool result larger than the inline budget is left for the worker to fetch.
  for (int step = 0; step < 40; ++step) {
    auto call = value::array({{{"id", "c" + std::to_string(step)}, {"name", "exec"}, {"arguments", {{"command", "cat f"}}}}});
    auto asked = h.answer(task, harness::llm_answer("reading", call));
    REQUIRE(asked.tasks.size() == 1);
    auto output = std::string(step % 10 == 9 ? 5000 : 600, 'x');
    auto next = h.answer(asked.tasks[0], value{{"status", "done"}, {"result", {{"stdout", output}, {"exit_code", 0}}}});
    REQUIRE(next.tasks.size() == 1);
    task = next.tasks[0];
    auto count = h.machine.state().messages_count;
    CHECK(task.payload["conversation"]["count"] == count);
    auto from = task.payload["conversation"]["from"].get<std::size_t>();
    if (step % 10 == 9) CHECK(from == count);  // 5 KB: over the budget, fetched
    else CHECK(from == count - 2);             // the model's answer and the tool's result
    CHECK(wire::encode(task).size() < 2048);   // flat, whatever the conversation's length
  }
}

TEST_CASE("run machine: a result recorded on its own is replayed after a crash before its consequences",
          "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto on_disk = h.machine.record();  // the last full transition written
  auto call = harness::exec_call("ls");
  wire::task_result result{"r1", started.tasks[0].step, 1, "w", true, harness::llm_answer("listing", call), {}};
  REQUIRE(h.machine.expects(result));
  auto entry = h.machine.record_result(result);  // the first write of the step
  CHECK(entry.kind == "result");
  CHECK(entry.seq == on_disk.last_journal_seq + 1);
  auto live = h.machine.on_task_result(result, true);  // computed while it is written
  CHECK(live.transition.journal.empty());              // recorded already
  REQUIRE(live.tasks.size() == 1);

  // The node dies before the second write: what is on disk is the record before the result and
  // the journal entry. Replaying gives the same state, the same events and the same next task.
  auto agent = agent_with();
  run_machine again(on_disk, agent, test_context());
  auto replayed = again.recover({entry});
  REQUIRE(replayed.changed);
  CHECK(again.record().state == h.machine.record().state);
  CHECK(again.record().last_journal_seq == entry.seq);
  REQUIRE(replayed.transition.events.size() == live.transition.events.size());
  for (std::size_t i = 0; i < live.transition.events.size(); ++i) {
    CHECK(replayed.transition.events[i].seq == live.transition.events[i].seq);
    CHECK(replayed.transition.events[i].event_type == live.transition.events[i].event_type);
  }
  REQUIRE(replayed.tasks.size() == 1);
  CHECK(replayed.tasks[0].step == live.tasks[0].step);
  CHECK(replayed.tasks[0].payload == live.tasks[0].payload);
  CHECK(replayed.transition.messages == live.transition.messages);

  // Entries the snapshot has already applied are not applied again; a repeat result is not
  // expected and records nothing.
  auto nothing = again.recover({entry});
  CHECK_FALSE(nothing.changed);
  CHECK_FALSE(again.expects(result));
  CHECK_FALSE(h.machine.on_task_result(result).changed);
}

TEST_CASE("run machine: two recorded results past the snapshot replay as one transition, in order",
          "[actors]") {
  // Not expected (a result's consequences are written before the next result is recorded), but
  // a replay must not lose either if it happens.
  harness h;
  auto started = h.check(h.machine.start());
  auto on_disk = h.machine.record();
  auto call = harness::exec_call("ls");
  wire::task_result first{"r1", started.tasks[0].step, 1, "w", true, harness::llm_answer("listing", call), {}};
  auto first_entry = h.machine.record_result(first);
  auto asked = h.machine.on_task_result(first, true);
  REQUIRE(asked.tasks.size() == 1);
  wire::task_result second{"r1", asked.tasks[0].step, 1, "w", true,
                           value{{"status", "needs_approval"}, {"form", value::object()}}, {}};
  auto second_entry = h.machine.record_result(second);
  auto suspended = h.machine.on_task_result(second, true);

  auto agent = agent_with();
  run_machine again(on_disk, agent, test_context());
  auto replayed = again.recover({first_entry, second_entry});
  REQUIRE(replayed.changed);
  CHECK(again.record().state == h.machine.record().state);
  CHECK(again.record().status == run_status::suspended);
  CHECK(again.record().last_journal_seq == second_entry.seq);
  std::vector<std::string> expected = types(asked);
  for (const auto& t : types(suspended)) expected.push_back(t);
  CHECK(types(replayed) == expected);
  for (std::size_t i = 1; i < replayed.transition.events.size(); ++i)
    CHECK(replayed.transition.events[i].seq == replayed.transition.events[i - 1].seq + 1);
  CHECK(replayed.transition.messages_from == on_disk.messages_on_disk);
  CHECK(replayed.transition.messages.size() == asked.transition.messages.size() + suspended.transition.messages.size());
  CHECK(replayed.tasks.empty());  // the run waits for a person
  CHECK(replayed.leave_memory);
}

TEST_CASE("run machine: a received result is applied with its journal entry and removes its record",
          "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto on_disk = h.machine.record();
  auto call = harness::exec_call("ls");
  wire::task_result result{"r1", started.tasks[0].step, 1, "w", true, harness::llm_answer("listing", call), {}};
  auto message = wire::encode(result);

  auto applied = h.machine.apply_received({41, message});
  REQUIRE(applied.ok());
  REQUIRE(applied->changed);
  // The result is journaled first, as it came, so that a replay reads what the worker sent.
  REQUIRE_FALSE(applied->transition.journal.empty());
  const auto& entry = applied->transition.journal[0];
  CHECK(entry.kind == "result");
  CHECK(entry.seq == on_disk.last_journal_seq + 1);
  const auto& bin = entry.data["message"].get_binary();
  CHECK(std::string(bin.begin(), bin.end()) == message);
  CHECK(applied->transition.received_done == std::vector<std::uint64_t>{41});
  // It follows from the received result, which is synced already: it need not wait for a sync.
  CHECK_FALSE(applied->transition.sync);
  CHECK(started.transition.sync);  // what no synced write holds yet waits for one
  CHECK(types(*applied) == std::vector<std::string>{"llm_step_completed", "tool_call_started"});
  REQUIRE(applied->tasks.size() == 1);
  CHECK(applied->transition.record.last_journal_seq == entry.seq);

  // The same result again (a worker's repeat): not applied, nothing changes.
  auto again = h.machine.apply_received({42, message});
  REQUIRE(again.ok());
  CHECK_FALSE(again->changed);
  // Bad input: not a result, or another run's.
  auto garbage = h.machine.apply_received({43, "not msgpack"});
  REQUIRE_FALSE(garbage.ok());
  CHECK(garbage.error().code == errc::malformed);
  wire::task_result other = result;
  other.run_id = "r2";
  auto foreign = h.machine.apply_received({44, wire::encode(other)});
  REQUIRE_FALSE(foreign.ok());
  CHECK(foreign.error().message.find("r2") != std::string::npos);
}

TEST_CASE("run machine: received records replay in order of arrival after a crash, first readable wins",
          "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto on_disk = h.machine.record();
  auto step = started.tasks[0].step;
  auto call = harness::exec_call("ls");
  wire::task_result stale{"r1", step - 1, 1, "w", true, harness::llm_answer("old"), {}};
  wire::task_result first{"r1", step, 1, "w", true, harness::llm_answer("first", call), {}};
  wire::task_result second{"r1", step, 2, "w", true, harness::llm_answer("second"), {}};
  // What the node did before it died: it applied the first readable result for the step and
  // sent the next task once that result was on disk; the consequences were not written.
  std::vector<store::received_result> on_arrival{{10, wire::encode(stale)},
                                                 {11, "damaged"},
                                                 {12, wire::encode(first)},
                                                 {13, wire::encode(second)}};
  REQUIRE_FALSE(h.machine.apply_received(on_arrival[0])->changed);
  REQUIRE_FALSE(h.machine.apply_received(on_arrival[1]).ok());
  auto live = h.machine.apply_received(on_arrival[2]);
  REQUIRE(live.ok());
  REQUIRE(live->tasks.size() == 1);
  REQUIRE_FALSE(h.machine.apply_received(on_arrival[3])->changed);

  auto agent = agent_with();
  run_machine replay(on_disk, agent, test_context());
  auto replayed = replay.recover({}, on_arrival);
  REQUIRE(replayed.changed);
  CHECK(replay.record().state == h.machine.record().state);
  CHECK(replay.record().last_journal_seq == h.machine.record().last_journal_seq);
  CHECK(types(replayed) == types(*live));
  REQUIRE(replayed.tasks.size() == 1);
  CHECK(replayed.tasks[0].payload == live->tasks[0].payload);
  CHECK(replayed.transition.journal.size() == live->transition.journal.size());
  // Every record goes, applied or not.
  CHECK(replayed.transition.received_done == std::vector<std::uint64_t>{10, 11, 12, 13});
  CHECK_FALSE(replayed.transition.sync);

  // Records that apply to nothing are removed all the same, with nothing else written.
  run_machine later(replay.record(), agent, test_context());
  auto nothing = later.recover({}, {{14, wire::encode(second)}});
  CHECK_FALSE(nothing.changed);
  CHECK(nothing.transition.received_done == std::vector<std::uint64_t>{14});
}
