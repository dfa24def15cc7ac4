#include "actors/run_machine.hpp"
#include "actors/tool_calls.hpp"
#include "llm/conversation.hpp"
#include "runtime/clock.hpp"

#include <catch2/catch.hpp>

#include <thread>

using namespace keel;
using namespace keel::actors;
using store::run_status;
using wire::value;

namespace {

// What the tool workers of queue "tickets" declared.
std::shared_ptr<const tools::declared_tools> tickets(std::int64_t timeout_ms = 300'000) {
  auto declared = tools::queue_tools_from_value(value::parse(R"({"queue": "tickets", "tools": [
      {"name": "lookup_ticket", "description": "Find a ticket.", "approval": "never", "timeout_ms": )" +
                                                             std::to_string(timeout_ms) + R"(,
       "input_schema": {"type": "object", "properties": {"id": {"type": "string", "pattern": "^T-[0-9]+$"}}, "required": ["id"]},
       "output_schema": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]},
       "result_bytes_max": 1024},
      {"name": "close_ticket", "description": "Close a ticket.", "form": {"title": "Close it?", "show": ["id"]},
       "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}]})"),
                                                1 << 20);
  REQUIRE(declared.ok());
  auto all = std::make_shared<tools::declared_tools>();
  for (const auto& t : declared->tools) (*all)[t->key()] = t;
  return all;
}

struct harness {
  config::agent_config agent;
  std::shared_ptr<const tools::declared_tools> declared;
  run_machine machine;
  std::uint64_t events_seen = 0;

  explicit harness(std::shared_ptr<const tools::declared_tools> d = tickets())
    : agent(make_agent()), declared(std::move(d)),
      machine(run_machine::create("r1", wire::invoke_request{"support", "close T-1", "", ""}, 1), agent, context()) {}

  static config::agent_config make_agent() {
    config::agent_config a;
    a.id = "support";
    a.queue = "support";
    a.max_steps = 30;
    a.tools = {"read", "tickets.lookup_ticket", "tickets.close_ticket"};
    return a;
  }
  run_context context() {
    run_context c{"results", 10'000, 4000, 1024, {}};
    c.declared_tools = [this] { return declared; };
    return c;
  }
  effects check(effects e) {
    for (const auto& ev : e.transition.events) CHECK(ev.seq == ++events_seen);
    return e;
  }
  effects answer(const wire::task& t, value payload) {
    return check(machine.on_task_result(wire::task_result{"r1", t.step, t.attempt, "w", true, std::move(payload), {}}));
  }
  // The model asks for one call.
  effects model_calls(const wire::task& t, const std::string& name, value arguments) {
    value calls = value::array({{{"id", "c1"}, {"name", name}, {"arguments", std::move(arguments)}}});
    return answer(t, value{{"role", "assistant"}, {"text", "calling"}, {"tool_calls", calls},
                           {"usage", {{"input_tokens", 10}, {"output_tokens", 5}}}, {"stop_reason", "tool_use"}});
  }
  // What the model was told last, as the conversation holds it.
  std::string last_tool_text() const {
    for (std::size_t i = machine.state().messages_count; i-- > 0;)
      if (auto packed = machine.packed(i)) {
        auto m = wire::unpack(*packed);
        if (m && (*m)["role"] == "tool") return (*m)["text"].get<std::string>();
      }
    return "";
  }
};

std::vector<std::string> types(const effects& e) {
  std::vector<std::string> out;
  for (const auto& ev : e.transition.events) out.push_back(ev.event_type);
  return out;
}

const wire::event& last_event(const effects& e) { return e.transition.events.back(); }

} // namespace

TEST_CASE("tool workers: the model is told of declared tools whole, and a call goes to its queue with a deadline", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  REQUIRE(started.tasks.size() == 1);
  const auto& told = started.tasks[0].payload["tools"];
  REQUIRE(told.size() == 3);
  CHECK(told[0] == "read");  // built in: by name
  CHECK(told[1]["name"] == "lookup_ticket");
  CHECK(told[1]["input_schema"]["required"] == value::array({"id"}));
  CHECK_FALSE(told[1].contains("approval"));  // the model is told what it needs, nothing of the policy

  auto before = wall_ms();
  auto sent = h.model_calls(started.tasks[0], "lookup_ticket", {{"id", "T-1"}});
  CHECK(types(sent) == std::vector<std::string>{"llm_step_completed", "tool_call_started"});
  CHECK(last_event(sent).data["queue"] == "tickets");
  REQUIRE(sent.tasks.size() == 1);
  const auto& t = sent.tasks[0];
  CHECK(t.queue == "tickets");
  CHECK(t.kind == wire::task_kind::tool);
  CHECK(t.payload["tool"] == "lookup_ticket");
  CHECK(t.payload["arguments"] == value{{"id", "T-1"}});
  CHECK_FALSE(t.payload.contains("allow_rules"));
  CHECK(t.payload["deadline_ms"].get<std::int64_t>() >= before + 300'000);
  CHECK(sent.deadline_ms == t.payload["deadline_ms"].get<std::int64_t>());
  // The task is encoded with its queue, and read back with it.
  auto decoded = wire::decode<wire::task>(wire::encode(t));
  REQUIRE(decoded.ok());
  CHECK(decoded->queue == "tickets");

  auto done = h.answer(t, value{{"status", "done"}, {"result", {{"title", "Login fails"}}}, {"is_error", false}});
  CHECK(types(done) == std::vector<std::string>{"tool_call_completed", "llm_step_started"});
  CHECK(last_event(done).event_type == "llm_step_started");
  CHECK(done.transition.events[0].data["is_error"] == false);
  CHECK(h.last_tool_text().find("Login fails") != std::string::npos);
  // A model task built-in tools alone are named, the rest declared: a model step after goes on as before.
  REQUIRE(done.tasks.size() == 1);
  CHECK(done.tasks[0].queue.empty());
}

TEST_CASE("tool workers: what cannot go is refused before any task, and the model is told why", "[actors]") {
  SECTION("arguments that do not match the declared schema") {
    harness h;
    auto started = h.check(h.machine.start());
    auto refused = h.model_calls(started.tasks[0], "lookup_ticket", {{"id", "42"}});
    CHECK(types(refused) == std::vector<std::string>{"llm_step_completed", "tool_call_completed", "llm_step_started"});
    CHECK(refused.transition.events[1].data["is_error"] == true);
    CHECK(h.last_tool_text().find("arguments.id: does not match the pattern ^T-[0-9]+$") != std::string::npos);
    REQUIRE(refused.tasks.size() == 1);
    CHECK(refused.tasks[0].kind == wire::task_kind::llm);
  }
  SECTION("a tool that no worker of its queue has declared: the model was not told of it either") {
    harness h(std::make_shared<tools::declared_tools>());
    auto started = h.check(h.machine.start());
    CHECK(started.tasks[0].payload["tools"] == value::array({"read"}));
    h.model_calls(started.tasks[0], "lookup_ticket", {{"id", "T-1"}});
    CHECK(h.last_tool_text().find("no tool worker of queue 'tickets' has declared it") != std::string::npos);
  }
  SECTION("a name the agent does not list") {
    harness h;
    auto started = h.check(h.machine.start());
    h.model_calls(started.tasks[0], "exec", {{"command", "ls"}});
    CHECK(h.last_tool_text().find("tool 'exec' is not available to this agent") != std::string::npos);
  }
}

TEST_CASE("tool workers: a tool that asks for approval waits for a person before any task, with its form", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto asked = h.model_calls(started.tasks[0], "close_ticket", {{"id", "T-1"}, {"note", "x"}});
  CHECK(types(asked) == std::vector<std::string>{"llm_step_completed", "suspend"});
  CHECK(asked.tasks.empty());
  CHECK(asked.transition.record.status == run_status::suspended);
  const auto& form = last_event(asked).data["form"];
  CHECK(form["kind"] == "tool");
  CHECK(form["title"] == "Close it?");
  CHECK(form["queue"] == "tickets");
  CHECK(form["shown"] == value{{"id", "T-1"}});
  auto key = last_event(asked).data["step_key"].get<std::string>();

  SECTION("approved: the task goes, marked approved") {
    wire::resume_request yes;
    yes.step_key = key;
    yes.approved = true;
    auto resumed = h.machine.on_resume(yes);
    REQUIRE(resumed.ok());
    h.check(*resumed);
    CHECK(types(*resumed) == std::vector<std::string>{"resumed", "tool_call_started"});
    REQUIRE(resumed->tasks.size() == 1);
    CHECK(resumed->tasks[0].queue == "tickets");
    CHECK(resumed->tasks[0].payload["approved"] == true);
    // The tool asks again after approval: never a loop; the model is told.
    auto again = h.answer(resumed->tasks[0], value{{"status", "needs_approval"}, {"form", {{"why", "x"}}}});
    CHECK(h.last_tool_text().find("asked for approval again") != std::string::npos);
    CHECK(again.transition.record.status == run_status::running);
  }
  SECTION("rejected: no task; the model gets the feedback") {
    wire::resume_request no;
    no.step_key = key;
    no.approved = false;
    no.feedback = "not yet";
    auto resumed = h.machine.on_resume(no);
    REQUIRE(resumed.ok());
    h.check(*resumed);
    REQUIRE(resumed->tasks.size() == 1);
    CHECK(resumed->tasks[0].kind == wire::task_kind::llm);
    CHECK(h.last_tool_text().find("not yet") != std::string::npos);
  }
}

TEST_CASE("tool workers: an answer that breaks what the tool declared becomes an error result that says so", "[actors]") {
  struct bad {
    value payload;
    std::string told;
  };
  std::vector<bad> answers = {
    {value("just text"), "the tool worker's answer is not a tool result: it is not a map"},
    {value{{"status", "finished"}}, "status \"finished\" is none of done, needs_approval, refused"},
    {value{{"status", "done"}, {"is_error", "no"}}, "is_error is not a boolean"},
    {value{{"status", "done"}, {"result", {{"name", "x"}}}}, "does not match its output_schema: result: lacks the required field 'title'"},
    {value{{"status", "done"}, {"result", {{"title", std::string(2000, 'x')}}}}, "more than its result_bytes_max (1024)"},
    {value{{"status", "refused"}, {"message", "read-only today"}}, "read-only today"},
  };
  for (const auto& a : answers) {
    harness h;
    auto started = h.check(h.machine.start());
    auto sent = h.model_calls(started.tasks[0], "lookup_ticket", {{"id", "T-1"}});
    auto done = h.answer(sent.tasks[0], a.payload);
    INFO(a.payload.dump());
    CHECK(done.transition.events[0].event_type == "tool_call_completed");
    CHECK(done.transition.events[0].data["is_error"] == true);
    CHECK(h.last_tool_text().find(a.told) != std::string::npos);
    CHECK(done.transition.record.status == run_status::running);  // the run goes on
  }
  // An error the tool reports itself is passed on as it is, without the output schema.
  harness h;
  auto started = h.check(h.machine.start());
  auto sent = h.model_calls(started.tasks[0], "lookup_ticket", {{"id", "T-1"}});
  h.answer(sent.tasks[0], value{{"status", "done"}, {"result", {{"error", "no ticket T-1"}}}, {"is_error", true}});
  CHECK(h.last_tool_text().find("no ticket T-1") != std::string::npos);
  CHECK(h.last_tool_text().find("output_schema") == std::string::npos);
}

TEST_CASE("tool workers: no result by the deadline: the model is told, and a late result changes nothing", "[actors]") {
  harness h(tickets(1000));
  auto started = h.check(h.machine.start());
  auto sent = h.model_calls(started.tasks[0], "lookup_ticket", {{"id", "T-1"}});
  REQUIRE(sent.tasks.size() == 1);
  const auto t = sent.tasks[0];
  // Too early (a timer woken early by a clock set back): nothing happens.
  CHECK_FALSE(h.machine.on_deadline(t.step, t.attempt).changed);
  while (wall_ms() < sent.deadline_ms) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto timed_out = h.check(h.machine.on_deadline(t.step, t.attempt));
  REQUIRE(timed_out.changed);
  CHECK(types(timed_out) == std::vector<std::string>{"task_timed_out", "tool_call_completed", "llm_step_started"});
  CHECK(timed_out.transition.events[0].data["queue"] == "tickets");
  CHECK(h.last_tool_text().find("gave no result within 1 s") != std::string::npos);
  // The worker answers after all: not in flight any more.
  CHECK_FALSE(h.machine.expects(wire::task_result{"r1", t.step, t.attempt, "w", true, value::object(), {}}));
  CHECK_FALSE(h.answer(t, value{{"status", "done"}, {"result", {{"title", "late"}}}}).changed);
  // And the deadline of an attempt no longer in flight is ignored.
  CHECK_FALSE(h.machine.on_deadline(t.step, t.attempt).changed);
}

TEST_CASE("tool workers: a declared tool's step recorded and read back keeps its queue and deadline", "[actors]") {
  store::pending_step p;
  p.step = 4;
  p.model = false;
  p.queue = "tickets";
  p.deadline_ms = 1234;
  auto back = store::pending_step_from_value(store::to_value(p), "pending");
  REQUIRE(back.ok());
  CHECK(back->queue == "tickets");
  CHECK(back->deadline_ms == 1234);
  // A step of a built-in tool stores neither.
  store::pending_step plain;
  CHECK_FALSE(store::to_value(plain).contains("queue"));
  CHECK_FALSE(store::to_value(plain).contains("deadline_ms"));
}

TEST_CASE("tool workers: a worker's result is shown as it came, and no field of the wrong type throws", "[actors]") {
  std::vector<value> odd = {
    value{{"status", "done"}, {"result", {{"rejected", false}, {"message", nullptr}}}},  // keel's rejection, faked
    value{{"status", "done"}, {"result", {{"exit_code", "0"}, {"stdout", 7}}}},         // exec's shape, wrong types
    value{{"status", "refused"}, {"message", 42}},
    value{{"status", "done"}, {"result", {{"files", value::array({{{"path", "a"}}})}}}},
  };
  for (const auto& payload : odd) {
    harness h;
    auto started = h.check(h.machine.start());
    auto sent = h.model_calls(started.tasks[0], "lookup_ticket", {{"id", "T-1"}});
    INFO(payload.dump());
    effects done;
    REQUIRE_NOTHROW(done = h.answer(sent.tasks[0], payload));
    CHECK(done.transition.record.status == run_status::running);
    CHECK(h.last_tool_text().find("The person rejected") == std::string::npos);
  }
  // keel's own tools read their fields by type too.
  CHECK(llm::tool_result_text("exec", value{{"exit_code", "x"}, {"stdout", 1}}, false) == "exit code 0\nstdout:\n\nstderr:\n");
  CHECK(llm::tool_result_text("glob", value{{"files", value::array({1, "a"})}}, false) == "a\n");
  CHECK(llm::tool_result_text("read", value{{"rejected", true}, {"message", 5}}, false) == "The person rejected this call.");
}

TEST_CASE("tool workers: a call's deadline is set once: an attempt sent again keeps it", "[actors]") {
  harness h;
  auto started = h.check(h.machine.start());
  auto sent = h.model_calls(started.tasks[0], "lookup_ticket", {{"id", "T-1"}});
  auto first = sent.deadline_ms;
  REQUIRE(first > 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto again = h.check(h.machine.on_task_lost(sent.tasks[0].step, sent.tasks[0].attempt, "lost"));
  REQUIRE(again.tasks.size() == 1);
  CHECK(again.tasks[0].attempt == 2);
  CHECK(again.deadline_ms == first);
  CHECK(again.tasks[0].payload["deadline_ms"] == first);
}

TEST_CASE("tool workers: an approval of a declared call cannot be remembered as a command", "[actors]") {
  auto declared = tools::queue_tools_from_value(value::parse(R"({"queue": "ops", "tools": [
      {"name": "exec", "input_schema": {"type": "object"}}]})"), 1 << 20);
  REQUIRE(declared.ok());
  auto all = std::make_shared<tools::declared_tools>();
  for (const auto& t : declared->tools) (*all)[t->key()] = t;
  harness h(all);
  h.agent.tools = {"ops.exec"};
  auto started = h.check(h.machine.start());
  auto asked = h.model_calls(started.tasks[0], "exec", {{"command", "rm -rf /"}});
  REQUIRE(asked.transition.record.status == run_status::suspended);
  wire::resume_request yes;
  yes.step_key = last_event(asked).data["step_key"].get<std::string>();
  yes.approved = true;
  yes.always = "exact";
  auto refused = h.machine.on_resume(yes);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().message.find("only an exec call can be remembered") != std::string::npos);
}

TEST_CASE("tool workers: the declared tools a model task carries are bounded in bytes", "[actors]") {
  value list = value::array();
  config::agent_config agent;
  for (int i = 0; i < 128; ++i) {
    list.push_back({{"name", "t" + std::to_string(i)}, {"description", std::string(8000, 'd')}, {"input_schema", {{"type", "object"}}}});
    agent.tools.push_back("big.t" + std::to_string(i));
  }
  auto declared = tools::queue_tools_from_value(value{{"queue", "big"}, {"tools", list}}, 1 << 20);
  REQUIRE(declared.ok());
  tools::declared_tools all;
  for (const auto& t : declared->tools) all[t->key()] = t;
  auto told = model_tool_list(agent, &all);
  CHECK(told.size() > 20);
  CHECK(told.size() < 128);
  CHECK(wire::pack(told).size() <= 256u << 10);
}
