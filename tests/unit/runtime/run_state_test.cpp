#include "runtime/run_state.hpp"
#include "runtime/run_store.hpp"
#include "tests/support/test_support.hpp"

#include <catch2/catch.hpp>

#include <random>

using namespace keel;
using namespace keel::store;
using wire::value;

namespace {

run_state full_state() {
  run_state s;
  s.input = value{{"input", "make it"}};
  s.messages_count = 7;
  s.steps = 3;
  s.usage = {100, 20, 5, 1};
  s.task_seq = 9;
  pending_step p;
  p.step = 9;
  p.attempt = 3;
  p.model = false;
  p.approved = true;
  p.form = value{{"context", {{"command", "ls"}}}};
  p.failing_since_ms = 1000;
  p.failures = 2;
  p.waited_ms = 3000;
  p.retry = step_retry{"overloaded", 5000, "waiting on the model, next try in 2 s"};
  s.pending = p;
  s.calls = {{"c1", "exec", value{{"command", "ls"}}}, {"c2", "read", value{{"path", "a"}}}};
  s.call_index = 1;
  s.suspended = suspension{"approve-8", 1, value{{"tool", "read"}}, 7000, 6000, "#ops"};
  s.waiting = wait_state{"event", 1, "ci/done", 9000, 8000};
  s.signals = {signal_record{"e1", "other", value{{"n", 1}}, "ana", 7500}};
  s.signal_ids = {"e0"};
  s.deadline_ms = 12000;
  s.answers["approve-4"] = answer{false, "not that"};
  s.allow_rules = {{"exact", "ls"}, {"prefix", "git status"}};
  s.provider = "anthropic";
  s.model = "claude";
  s.last_text = "hi";
  s.output = "done";
  s.stop_reason = "end_turn";
  s.error = "none";
  s.failed_pending = p;
  return s;
}

} // namespace

TEST_CASE("run state: every field goes to the stored value and back", "[runtime]") {
  auto s = full_state();
  auto back = run_state_from_value(to_value(s));
  REQUIRE(back.ok());
  CHECK(to_value(*back) == to_value(s));
  CHECK(back->pending->retry->reason == "overloaded");
  CHECK(back->answers.at("approve-4").feedback == "not that");
  CHECK(back->waiting->event == "ci/done");
  CHECK(back->signals.at(0).payload == value{{"n", 1}});
  CHECK(back->suspended->escalated_to == "#ops");
  // The earliest of what falls due by the clock; nothing once the run ended.
  // (The escalation at 6000 was made already: the approval's expiry at 7000 comes first.)
  CHECK(next_wake_ms(*back, false) == 7000);
  CHECK(next_wake_ms(*back, true) == 0);
  // Through the store's packing too: the count of messages survives without the messages.
  run_record r;
  r.run_id = "r1";
  r.state = to_value(s);
  auto packed = wire::unpack(pack_record(r), disk_limits());
  REQUIRE(packed.ok());
  CHECK((*packed)["state"]["messages_count"] == 7);
  CHECK(run_state_from_value((*packed)["state"])->messages_count == 7);
}

TEST_CASE("run state: older records read (whole conversation, exact commands as strings)", "[runtime]") {
  value old{{"input", "x"}, {"messages", value::array({value{{"role", "user"}, {"text", "x"}}})}, {"steps", 0},
            {"usage", value::object()}, {"task_seq", 1}, {"pending", {{"step", 1}, {"attempt", 1}, {"kind", "llm"}}},
            {"calls", value::array()}, {"call_index", 0}, {"suspended", nullptr}, {"answers", value::object()},
            {"allow_patterns", value::array({"npm test"})}};
  auto s = run_state_from_value(old);
  REQUIRE(s.ok());
  CHECK(s->messages_count == 1);
  REQUIRE(s->allow_rules.size() == 1);
  CHECK(s->allow_rules[0].kind == "exact");
  CHECK(s->allow_rules[0].command == "npm test");
}

TEST_CASE("run state: a damaged field is an error that names it, never an exception", "[runtime]") {
  auto good = to_value(full_state());
  struct damage {
    const char* pointer;
    value bad;
    const char* named;
  };
  std::vector<damage> cases = {
    {"/steps", "many", "state.steps should be an integer"},
    {"/messages_count", -1, "state.messages_count should be an unsigned integer"},
    {"/pending", 7, "state.pending should be a map"},
    {"/pending/step", "x", "state.pending.step should be an unsigned integer"},
    {"/pending/attempt", 0, "state.pending.attempt should be an attempt number"},
    {"/pending/kind", "dream", "state.pending.kind should be llm or tool"},
    {"/pending/retry", "soon", "state.pending.retry should be a map"},
    {"/calls", "none", "state.calls should be a list"},
    {"/calls/0", 3, "state.calls[0] should be a map"},
    {"/calls/0/name", false, "state.calls[0].name should be a string"},
    {"/call_index", 9, "state.call_index should be at most the number of calls"},
    {"/suspended/call_index", 5, "state.suspended.call_index should be the index of one of the calls"},
    {"/answers", value::array(), "state.answers should be a map"},
    {"/answers/approve-4/approved", "yes", "state.answers.approve-4.approved should be true or false"},
    {"/allow_rules/0/kind", "anything", "should be exact or prefix"},
    {"/usage/input_tokens", "lots", "state.usage.input_tokens should be an integer"},
    {"/output", 1, "state.output should be a string"},
    {"/failed_pending/step", value::array(), "state.failed_pending.step should be an unsigned integer"},
  };
  for (const auto& d : cases) {
    INFO(d.pointer);
    auto v = good;
    v[value::json_pointer(d.pointer)] = d.bad;
    auto s = run_state_from_value(v);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == errc::malformed);
    CHECK(s.error().message.find(d.named) != std::string::npos);
  }
  CHECK_FALSE(run_state_from_value(value("state")).ok());
  // Random changes to random fields: always a value or an error.
  std::mt19937 random(7);
  std::vector<value> junk = {nullptr, -5, "x", value::array({1}), value::object(), 3.5, true, value::binary({1, 2})};
  std::vector<std::string> keys;
  for (auto it = good.begin(); it != good.end(); ++it) keys.push_back(it.key());
  for (int i = 0; i < 2000; ++i) {
    auto v = good;
    for (int k = 0; k < 3; ++k) v[keys[random() % keys.size()]] = junk[random() % junk.size()];
    CHECK_NOTHROW((void)run_state_from_value(v));
  }
}
