// The run machine's fan-outs (actors/run_joins.cpp): run_agents starts child runs and waits, on
// disk, for all of them or the first; outcomes come as events only keel sends; the rules on
// failure, cancel and time; a machine made again from its record stands for a run loaded from disk.
#include "actors/run_machine.hpp"
#include "actors/workflow_tools.hpp"
#include "runtime/ids.hpp"

#include <catch2/catch.hpp>

#include <memory>

using namespace keel;
using namespace keel::actors;
using store::run_status;
using wire::value;

namespace {

constexpr std::int64_t t0 = 1'800'000'000'000;

config::agent_config lead() {
  config::agent_config a;
  a.id = "lead";
  a.queue = "lead";
  a.max_steps = 30;
  a.workflow_tools = {"run_agents"};
  a.sub_agents = {"fast", "slow"};
  a.wait_max_ms = 86'400'000;
  return a;
}

struct fan {
  config::agent_config agent;
  std::shared_ptr<std::int64_t> clock = std::make_shared<std::int64_t>(t0);
  std::unique_ptr<run_machine> machine;
  explicit fan(config::agent_config a) : agent(std::move(a)) {
    machine = std::make_unique<run_machine>(run_machine::create("p1", wire::invoke_request{"lead", "go", "", ""}, t0), agent, context());
  }
  run_context context() {
    run_context c{"results", 10'000, 4000, 1024, {}};
    c.clock = [clock = clock] { return *clock; };
    return c;
  }
  void reload() {
    auto record = machine->record();
    machine = std::make_unique<run_machine>(std::move(record), agent, context());
  }
  // The model asks for a fan-out.
  effects fan_out(value arguments) {
    auto started = machine->start();
    value calls = value::array({{{"id", "c1"}, {"name", "run_agents"}, {"arguments", std::move(arguments)}}});
    value payload{{"role", "assistant"}, {"text", ""}, {"tool_calls", calls}, {"usage", {{"input_tokens", 10}, {"output_tokens", 5}}},
                  {"stop_reason", "tool_use"}};
    return machine->on_task_result(wire::task_result{"p1", started.tasks[0].step, started.tasks[0].attempt, "w", true, payload, {}});
  }
  // A child's outcome, as keel sends it.
  result<effects> outcome(std::uint64_t step, std::size_t index, const std::string& status, const std::string& by = join_sender) {
    value result{{"run_id", "c" + std::to_string(index)}, {"agent", "fast"}, {"status", status},
                 {"total_usage", {{"input_tokens", 100}, {"output_tokens", 1}}}};
    if (status == "completed") result["output"] = "out " + std::to_string(index);
    else result["error"] = "it " + status;
    return machine->on_signal(store::signal_record{"join-c" + std::to_string(index),
                                                   std::string(join_event_prefix) + std::to_string(step) + "/" + std::to_string(index),
                                                   value{{"status", "done"}, {"result", result}, {"is_error", status != "completed"}},
                                                   by, *clock});
  }
};

value runs(std::initializer_list<const char*> agents) {
  value out = value::array();
  for (const auto* a : agents) out.push_back(value{{"agent", a}, {"task", std::string("do ") + a}});
  return out;
}

std::vector<std::string> types(const effects& e) {
  std::vector<std::string> out;
  for (const auto& ev : e.transition.events) out.push_back(ev.event_type);
  return out;
}

value last_tool_message(const effects& e) {
  for (auto it = e.transition.messages.rbegin(); it != e.transition.messages.rend(); ++it) {
    auto m = wire::unpack(*it);
    if (m && (*m)["role"] == "tool") return *m;
  }
  FAIL("no tool message");
  return {};
}

} // namespace

TEST_CASE("fan-out: run_agents starts its children and waits on disk for all of them, in any order", "[actors][workflows]") {
  fan f(lead());
  auto started = f.fan_out({{"runs", runs({"fast", "slow", "fast"})}});
  CHECK(types(started).back() == "fan_out_started");
  CHECK(started.transition.record.status == run_status::waiting);
  CHECK(started.leave_memory);
  REQUIRE(started.join);
  CHECK(started.join->start == std::vector<std::size_t>{0, 1, 2});
  const auto step = started.join->step;
  CHECK(f.machine->next_wake_ms() == t0 + 5000);  // a look at children not heard from
  // Children exist (told once each; a repeat changes nothing).
  for (std::size_t i = 0; i < 3; ++i) CHECK(f.machine->on_join_child(step, i, "c" + std::to_string(i)).changed);
  CHECK_FALSE(f.machine->on_join_child(step, 1, "c1").changed);
  CHECK_FALSE(f.machine->on_join_child(step + 1, 0, "x").changed);  // not this join
  f.reload();
  auto second = f.outcome(step, 2, "completed");
  REQUIRE(second.ok());
  CHECK(types(*second) == std::vector<std::string>{"fan_out_child_ended"});
  CHECK(second->transition.record.status == run_status::waiting);
  auto repeat = f.outcome(step, 2, "completed");  // the same outcome again: nothing
  REQUIRE(repeat.ok());
  CHECK_FALSE(repeat->changed);
  CHECK((*repeat->signal_reply)["duplicate"] == true);
  REQUIRE(f.outcome(step, 0, "completed").ok());
  auto last = f.outcome(step, 1, "failed");
  REQUIRE(last.ok());
  CHECK(types(*last) == std::vector<std::string>{"fan_out_child_ended", "wait_ended", "tool_call_completed", "llm_step_started"});
  CHECK(last->transition.record.status == run_status::running);
  CHECK(last->cancel_children.empty());
  auto told = last_tool_message(*last);
  auto text = told.dump();
  CHECK(text.find("out 0") != std::string::npos);
  CHECK(text.find("out 2") != std::string::npos);
  CHECK(text.find("it failed") != std::string::npos);
  CHECK(text.find("not every run of the fan-out completed") != std::string::npos);
  CHECK(f.machine->state().children_usage.input_tokens == 300);
  CHECK(f.machine->state().children.size() == 3);
  // After the join: a late outcome is not kept.
  auto late = f.outcome(step, 1, "failed");
  REQUIRE(late.ok());
  CHECK_FALSE(late->changed);
  CHECK(f.machine->state().signals.empty());
}

TEST_CASE("fan-out: wait first takes the first that completes and cancels the rest, a failure does not win", "[actors][workflows]") {
  fan f(lead());
  auto started = f.fan_out({{"runs", runs({"slow", "fast", "slow"})}, {"wait", "first"}});
  const auto step = started.join->step;
  for (std::size_t i = 0; i < 3; ++i) REQUIRE(f.machine->on_join_child(step, i, "c" + std::to_string(i)).changed);
  auto failed = f.outcome(step, 0, "failed");
  REQUIRE(failed.ok());
  CHECK(failed->transition.record.status == run_status::waiting);  // a failure is not a winner
  auto won = f.outcome(step, 1, "completed");
  REQUIRE(won.ok());
  // A child whose start comes back after the join is over is not taken: the run's actor cancels it.
  CHECK_FALSE(f.machine->awaits_join_child(step, 2, "c2"));
  CHECK_FALSE(f.machine->on_join_child(step, 2, "c2-late").changed);
  CHECK(won->transition.record.status == run_status::running);
  CHECK(won->cancel_children == std::vector<std::string>{"c2"});
  CHECK(won->cancel_reason.find("finished first") != std::string::npos);
  auto told = value::parse(last_tool_message(*won)["text"].get<std::string>());
  CHECK(told["first"] == 1);
  CHECK(told["output"] == "out 1");
  CHECK(told["runs"][2]["status"] == "cancelled");
  // None completes: an error result once all have ended.
  fan g(lead());
  auto s2 = g.fan_out({{"runs", runs({"slow", "fast"})}, {"wait", "first"}});
  REQUIRE(g.outcome(s2.join->step, 0, "cancelled").ok());
  auto none = g.outcome(s2.join->step, 1, "failed");
  REQUIRE(none.ok());
  CHECK(last_tool_message(*none).dump().find("no run of the fan-out completed") != std::string::npos);
}

TEST_CASE("fan-out: cancel_rest ends at the first failure, and a cancel, the run's limit or step_timeout_ms cancel the children", "[actors][workflows]") {
  fan f(lead());
  auto started = f.fan_out({{"runs", runs({"slow", "fast"})}, {"on_failure", "cancel_rest"}});
  const auto step = started.join->step;
  REQUIRE(f.machine->on_join_child(step, 0, "c0").changed);
  REQUIRE(f.machine->on_join_child(step, 1, "c1").changed);
  auto failed = f.outcome(step, 1, "failed");
  REQUIRE(failed.ok());
  CHECK(failed->transition.record.status == run_status::running);
  CHECK(failed->cancel_children == std::vector<std::string>{"c0"});
  CHECK(failed->cancel_reason.find("cancel_rest") != std::string::npos);

  fan g(lead());
  auto s2 = g.fan_out({{"runs", runs({"slow", "fast"})}});
  REQUIRE(g.machine->on_join_child(s2.join->step, 0, "c0").changed);  // c1 not started yet: nothing to cancel
  auto cancelled = g.machine->cancel("stop", "ana");
  REQUIRE(cancelled.ok());
  CHECK(cancelled->cancel_children == std::vector<std::string>{"c0"});

  auto limited = lead();
  limited.step_timeout_ms = 60'000;
  fan h(limited);
  auto s3 = h.fan_out({{"runs", runs({"slow"})}});
  REQUIRE(h.machine->on_join_child(s3.join->step, 0, "c0").changed);
  *h.clock = t0 + 60'000;
  h.reload();
  auto over = h.machine->on_wake();
  CHECK(types(over)[0] == "step_timed_out");
  CHECK(over.cancel_children == std::vector<std::string>{"c0"});
  CHECK(over.cancel_reason.find("step_timeout_ms") != std::string::npos);
  CHECK(over.transition.record.status == run_status::running);
}

TEST_CASE("fan-out: children not started or not heard from are looked at again, less and less often", "[actors][workflows]") {
  fan f(lead());
  auto started = f.fan_out({{"runs", runs({"fast", "slow"})}});
  const auto step = started.join->step;
  REQUIRE(f.machine->on_join_child(step, 1, "c1").changed);  // child 0's start was lost
  *f.clock = t0 + 5000;
  f.reload();
  auto look = f.machine->on_wake();
  CHECK(look.changed);
  REQUIRE(look.join);
  CHECK(look.join->start == std::vector<std::size_t>{0});
  REQUIRE(look.join->check.size() == 1);
  CHECK(look.join->check[0].second == "c1");
  CHECK(f.machine->next_wake_ms() == t0 + 5000 + 10'000);
  CHECK(look.transition.record.status == run_status::waiting);
  CHECK_FALSE(f.machine->on_wake().changed);  // early: nothing
  // Its outcome comes before word that it exists (lost to a crash): it is listed then, once.
  auto came = f.outcome(step, 0, "completed");
  REQUIRE(came.ok());
  CHECK(types(*came) == std::vector<std::string>{"sub_agent_started", "fan_out_child_ended"});
  CHECK(f.machine->state().children.size() == 2);
  CHECK_FALSE(f.machine->on_join_child(step, 0, "c0").changed);
}

TEST_CASE("fan-out: bad arguments are told to the model, and only keel sends a child's outcome", "[actors][workflows]") {
  struct bad_case {
    value arguments;
    std::string told;
  };
  std::vector<bad_case> cases = {
    {value::object(), "runs"},
    {{{"runs", value::array()}}, "1 to 16"},
    {{{"runs", runs({"nobody"})}}, "not one this agent may hand tasks to"},
    {{{"runs", value::array({value{{"agent", "fast"}}})}}, "{agent, task}"},
    {{{"runs", runs({"fast"})}, {"wait", "most"}}, "wait is"},
    {{{"runs", runs({"fast"})}, {"on_failure", "panic"}}, "on_failure is"},
    {{{"runs", value::array({value{{"agent", "fast"}, {"task", std::string(17 << 10, 'x')}}})}}, "at most 16 KiB"},
  };
  value many = value::array();
  for (int i = 0; i < 17; ++i) many.push_back(value{{"agent", "fast"}, {"task", "x"}});
  cases.push_back({{{"runs", many}}, "1 to 16"});
  for (const auto& c : cases) {
    INFO(c.arguments.dump().substr(0, 200));
    fan f(lead());
    auto e = f.fan_out(c.arguments);
    CHECK_FALSE(e.join);
    CHECK(e.transition.record.status == run_status::running);
    CHECK(last_tool_message(e).dump().find(c.told) != std::string::npos);
  }
  fan f(lead());
  auto started = f.fan_out({{"runs", runs({"fast"})}});
  auto forged = f.outcome(started.join->step, 0, "completed", "mallory");
  REQUIRE_FALSE(forged.ok());
  CHECK(forged.error().code == errc::invalid_argument);
  CHECK(f.machine->record().status == run_status::waiting);
}
