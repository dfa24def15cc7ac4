// Fan-out and join end to end (the run_agents tool, docs/WORKFLOWS.md): a run hands tasks to
// several agents at once and waits for all of them or for the first; a failure ends it when asked;
// a cancel reaches every child; kill -9 of the node while it waits. Built binaries, a real
// nats-server, the scripted model.
#include "tests/e2e/cluster.hpp"

#include <map>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

std::string lead(const std::string& name) {
  return "\n[agents." + name + "]\nscript = \"{dir}/" + name + ".json\"\nscript_log = \"{dir}/calls.log\"\n"
         "workflow_tools = [\"run_agents\"]\nsub_agents = [\"fast\", \"slow\", \"failing\", \"wordy\"]\n[agents." + name +
         ".sandbox]\nworkspace = \"{dir}/ws\"\n";
}

std::string lead_script(const std::string& runs, const std::string& wait, const std::string& on_failure = "continue") {
  return R"({"turns": [
      {"text": "", "tool_calls": [{"name": "run_agents", "arguments": {"runs": )" + runs + R"(, "wait": ")" + wait +
         R"(", "on_failure": ")" + on_failure + R"("}}]},
      {"text": "joined: {{last_tool_result}}"}
    ]})";
}

const std::string children =
  "\n[agents.fast]\nscript = \"{dir}/fast.json\"\nscript_log = \"{dir}/calls.log\"\n[agents.fast.sandbox]\nworkspace = \"{dir}/ws\"\n"
  "[agents.slow]\nscript = \"{dir}/slow.json\"\nscript_log = \"{dir}/calls.log\"\n[agents.slow.sandbox]\nworkspace = \"{dir}/ws\"\n"
  "[agents.failing]\nscript = \"{dir}/slow.json\"\nrun_timeout_ms = 1500\n[agents.failing.sandbox]\nworkspace = \"{dir}/ws\"\n"
  "[agents.wordy]\nscript = \"{dir}/wordy.json\"\n[agents.wordy.sandbox]\nworkspace = \"{dir}/ws\"\n";

std::size_t count_type(const std::vector<json>& events, const std::string& type) {
  return static_cast<std::size_t>(std::count_if(events.begin(), events.end(), [&](const json& e) { return e["event_type"] == type; }));
}

std::vector<std::string> children_of(cluster& c, const std::string& run) {
  std::vector<std::string> out;
  auto shown = c.show(run);
  if (shown.contains("children"))
    for (const auto& child : shown["children"]) out.push_back(child["run_id"]);
  return out;
}

std::string status_of(cluster& c, const std::string& run) { return c.show(run).value("status", std::string()); }

} // namespace

TEST_CASE("workflows: a fan-out waits for all its child runs, or for the first, and says how each went",
          "[e2e][integration][workflows]") {
  const std::string three = R"([{"agent": "fast", "task": "one"}, {"agent": "fast", "task": "two"}, {"agent": "fast", "task": "three"}])";
  const std::string race = R"([{"agent": "slow", "task": "slow one"}, {"agent": "fast", "task": "quick"}, {"agent": "slow", "task": "slow two"}])";
  const std::string doomed = R"([{"agent": "failing", "task": "fail"}, {"agent": "slow", "task": "long"}])";
  const std::string wordy = R"([{"agent": "fast", "task": "short"}, {"agent": "wordy", "task": "long"}])";
  std::string euros;
  for (int i = 0; i < 3000; ++i) euros += "\u20ac";  // 9,000 bytes: 8 KiB falls inside a character
  cluster c(lead("all") + lead("first") + lead("failfast") + lead("long") + children,
            {{"all.json", lead_script(three, "all")}, {"first.json", lead_script(race, "first")}, {"long.json", lead_script(wordy, "all")},
             {"wordy.json", R"({"turns": [{"text": ")" + euros + R"("}]})"},
             {"failfast.json", lead_script(doomed, "all", "cancel_rest")},
             {"fast.json", R"({"turns": [{"delay_ms": 300, "text": "done: {{input}}"}]})"},
             {"slow.json", R"({"turns": [{"delay_ms": 20000, "text": "too slow"}]})"}});
  SECTION("all: every child ends, the call has each outcome") {
    auto run = c.invoke("all", "fan out");
    c.await_status(run, "completed", 30'000);
    auto events = c.events(run);
    CHECK(count_type(events, "fan_out_started") == 1);
    CHECK(count_type(events, "fan_out_child_ended") == 3);
    CHECK(count_type(events, "sub_agent_started") == 3);
    auto kids = children_of(c, run);
    REQUIRE(kids.size() == 3);
    for (const auto& kid : kids) {
      CHECK(status_of(c, kid) == "completed");
      CHECK(c.show(kid)["parent"]["run_id"] == run);
    }
    auto output = c.show(run)["output"].get<std::string>();
    for (const char* task : {"done: one", "done: two", "done: three"}) CHECK(output.find(task) != std::string::npos);
    CHECK(c.show(run)["total_usage"]["input_tokens"].get<int>() > c.show(run)["usage"]["input_tokens"].get<int>());
  }
  SECTION("a child's long output is cut as text, and the join ends") {
    auto run = c.invoke("long", "long");
    c.await_status(run, "completed", 30'000);
    auto output = c.show(run)["output"].get<std::string>();
    CHECK(output.find("more bytes: keel show") != std::string::npos);
    CHECK(output.find("done: short") != std::string::npos);
  }
  SECTION("first: the quick child wins, the slow ones are cancelled with the reason") {
    auto run = c.invoke("first", "race");
    c.await_status(run, "completed", 15'000);  // long before the slow ones would end
    auto output = c.show(run)["output"].get<std::string>();
    CHECK(output.find("done: quick") != std::string::npos);
    CHECK(output.find("\"first\":1") != std::string::npos);
    auto kids = children_of(c, run);
    REQUIRE(kids.size() == 3);
    for (const auto& kid : kids) {
      if (c.show(kid)["agent"] == "fast") continue;
      c.await_status(kid, "cancelled", 15'000);
      bool told = false;
      for (const auto& e : c.events(kid))
        told = told || (e["event_type"] == "run_cancelled" && e["data"]["reason"].get<std::string>().find("finished first") != std::string::npos);
      CHECK(told);
    }
  }
  SECTION("cancel_rest: the first failure ends the wait with an error, the others are cancelled") {
    auto run = c.invoke("failfast", "doomed");
    c.await_status(run, "completed", 15'000);
    auto output = c.show(run)["output"].get<std::string>();
    CHECK(output.find("not every run of the fan-out completed") != std::string::npos);
    auto kids = children_of(c, run);
    REQUIRE(kids.size() == 2);
    for (const auto& kid : kids) {
      if (c.show(kid)["agent"] == "failing") CHECK(status_of(c, kid) == "failed");
      else c.await_status(kid, "cancelled", 15'000);
    }
  }
  SECTION("a cancel of the waiting run cancels every child still going") {
    auto run = c.invoke("failfast", "to cancel");
    REQUIRE_EVENTUALLY(15'000, children_of(c, run).size() == 2);
    REQUIRE(c.keel({"cancel", run}).exit_code == 0);
    for (const auto& kid : children_of(c, run)) c.await_status(kid, "cancelled", 15'000);
  }
  SECTION("kill -9 while it waits: after the restart it takes each outcome once and goes on") {
    auto run = c.invoke("all", "through a crash");
    c.await_status(run, "waiting", 15'000);
    c.kill_node();
    c.start_node();
    c.await_status(run, "completed", 60'000);
    auto events = c.events(run);
    CHECK(count_type(events, "fan_out_child_ended") == 3);
    CHECK(count_type(events, "wait_ended") == 1);
    auto kids = children_of(c, run);
    CHECK(kids.size() == 3);
    // Each child made once (its key names the fan-out and its place), and each completed. The lead
    // waited through the crash: its own model calls were made once each (a child's model call in
    // flight at the kill had no answer recorded, and is made again).
    for (const auto& kid : kids) CHECK(status_of(c, kid) == "completed");
    std::map<std::string, int> calls;
    for (const auto& line : lines_of(read_file(c.dir().file("calls.log")))) calls[line.substr(0, line.find('/'))] += 1;
    CHECK(calls[run] == 2);
  }
}

TEST_CASE("workflows: a fan-out's bad arguments are told to the model, and nobody else can send a child's outcome",
          "[e2e][integration][workflows]") {
  cluster c(lead("bad") + children + "\n[agents.waiter]\nscript = \"{dir}/waiter.json\"\nworkflow_tools = [\"wait_for_event\"]\n"
              "[agents.waiter.sandbox]\nworkspace = \"{dir}/ws\"\n",
            {{"bad.json", R"({"turns": [
                {"text": "", "tool_calls": [{"name": "run_agents", "arguments": {"runs": [{"agent": "nobody", "task": "x"}]}}]},
                {"text": "", "tool_calls": [{"name": "run_agents", "arguments": {"runs": []}}]},
                {"text": "", "tool_calls": [{"name": "run_agents", "arguments": {"runs": [{"agent": "fast", "task": "x"}], "wait": "most"}}]},
                {"text": "told: {{last_tool_result}}"}
              ]})"},
             {"fast.json", R"({"turns": [{"text": "done"}]})"},
             {"slow.json", R"({"turns": [{"text": "done"}]})"},
             {"wordy.json", R"({"turns": [{"text": "done"}]})"},
             {"waiter.json", R"({"turns": [{"text": "", "tool_calls": [{"name": "wait_for_event", "arguments": {"name": "go"}}]}, {"text": "ok"}]})"}});
  auto run = c.invoke("bad", "try");
  c.await_status(run, "completed", 20'000);
  auto events = c.events(run);
  CHECK(count_type(events, "fan_out_started") == 0);
  CHECK(c.show(run)["output"].get<std::string>().find("wait is") != std::string::npos);
  std::size_t refusals = 0;
  for (const auto& e : events)
    if (e["event_type"] == "tool_call_completed" && e["data"].value("is_error", false)) ++refusals;
  CHECK(refusals == 3);
  // An event named as a child's outcome, from a person: refused.
  auto waiting = c.invoke("waiter", "wait");
  c.await_status(waiting, "waiting", 15'000);
  auto forged = c.keel({"signal", waiting, "keel.join/1/0", "--payload", R"({"status": "done"})"});
  CHECK(forged.exit_code != 0);
  CHECK(forged.err.find("keel's own") != std::string::npos);
  // A config whose run_agents has no sub-agents to hand tasks to is refused at load.
  write_file(c.dir().file("bad.toml"), "[agents.x]\nworkflow_tools = [\"run_agents\"]\n");
  auto checked = run_command({KEEL_NODE_BINARY, "--config", c.dir().file("bad.toml"), "--check"}, 10'000);
  CHECK(checked.exit_code != 0);
  CHECK(checked.err.find("run_agents") != std::string::npos);
}
