// Agent runs end to end: built keel-node and keel binaries and a real nats-server only.
#include "tests/e2e/cluster.hpp"

#include "broker/connection.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <rocksdb/db.h>

#include <map>
#include <random>
#include <thread>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

// The guide's task on a scripted model: write a file, run a command, report what came out.
const char* coder_agent = R"(
[agents.coder]
script = "{dir}/coder.json"
script_log = "{dir}/calls.log"
[agents.coder.sandbox]
workspace = "{dir}/ws"
)";

const std::pair<std::string, std::string> coder_script = {"coder.json", R"({"turns": [
    {"text": "Writing hello.txt.", "tool_calls": [{"name": "write", "arguments": {"path": "hello.txt", "content": "Hello, world!\n"}}]},
    {"text": "Running it.", "tool_calls": [{"name": "exec", "arguments": {"command": "cat hello.txt"}}]},
    {"text": "Done. Result: {{last_tool_result}}"}
  ]})"};

// An agent on the scripted model (script {dir}/<name>.json, calls logged to
// {dir}/<name>-calls.log) whose commands run without asking, in {dir}/ws; `extra` adds keys to
// its sandbox table.
std::string unattended_agent(const std::string& name, const std::string& scope = "agent",
                             const std::string& extra = "") {
  std::string toml = "\n[agents." + name + "]\n";
  toml += "script = \"{dir}/" + name + ".json\"\n";
  toml += "script_log = \"{dir}/" + name + "-calls.log\"\n";
  toml += "[agents." + name + ".sandbox]\n";
  toml += "workspace = \"{dir}/ws\"\n";
  toml += "scope = \"" + scope + "\"\n";
  toml += "exec_security = \"allow-always\"\n";
  return toml + extra;
}

std::map<std::string, int> count_calls(const std::string& log) {
  std::map<std::string, int> turns;  // "turn N" -> calls (each line: "run/step turn model")
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream in(line);
    std::string task, turn;
    if (in >> task >> turn) turns["turn " + turn] += 1;
  }
  return turns;
}

} // namespace

TEST_CASE("runs: approve and reject over NATS, and the model sees the rejection feedback",
          "[e2e][integration][threads]") {
  cluster c(coder_agent, {coder_script});
  auto run = c.invoke("coder", "Create hello.txt and show it.");

  auto write_step = c.await_suspend(run);
  auto waiting = c.show(run)["waiting"]["form"];
  CHECK(waiting["tool"] == "write");
  CHECK(waiting["context"]["content"] == "Hello, world!\n");
  CHECK(waiting["context"]["path"].get<std::string>().find("/ws/runs/" + run + "/hello.txt") != std::string::npos);
  auto approved = c.keel({"approve", run, write_step});
  INFO(approved.err);
  CHECK(approved.exit_code == 0);

  auto exec_step = c.await_suspend(run);
  CHECK(exec_step != write_step);
  auto form = c.show(run)["waiting"]["form"];
  CHECK(form["tool"] == "exec");
  CHECK(form["context"]["command"] == "cat hello.txt");
  auto rejected = c.keel({"reject", run, exec_step, "--feedback", "show it with head instead"});
  CHECK(rejected.exit_code == 0);

  c.await_status(run, "completed");
  auto summary = c.show(run);
  CHECK(summary["output"].get<std::string>().find("Their feedback: show it with head instead") != std::string::npos);
  CHECK(summary["steps"] == 3);
  CHECK(read_file(c.dir().file("ws/runs/" + run + "/hello.txt")) == "Hello, world!\n");
  auto calls = count_calls(read_file(c.dir().file("calls.log")));
  CHECK(calls == std::map<std::string, int>{{"turn 1", 1}, {"turn 2", 1}, {"turn 3", 1}});
}

TEST_CASE("runs: keel run answers prompts from standard input and --yes approves all",
          "[e2e][integration]") {
  cluster c(coder_agent, {coder_script});
  auto with_yes = c.keel({"run", "coder", "Create hello.txt", "--yes"});
  INFO(with_yes.out << with_yes.err);
  CHECK(with_yes.exit_code == 0);
  CHECK(with_yes.out.find("WRITE APPROVAL REQUIRED") != std::string::npos);
  CHECK(with_yes.out.find("COMMAND APPROVAL REQUIRED") != std::string::npos);
  CHECK(with_yes.out.find("Command:   cat hello.txt") != std::string::npos);
  CHECK(with_yes.out.find("Run completed") != std::string::npos);
  CHECK(with_yes.out.find("Hello, world!") != std::string::npos);

  // No answer on standard input: the run waits and the command says how to answer it later.
  auto unanswered = c.keel({"run", "coder", "Create hello.txt"});
  CHECK(unanswered.exit_code == 3);
  CHECK(unanswered.out.find("keel approve ") != std::string::npos);
}

TEST_CASE("runs: a client that comes after the end reads the whole history in order",
          "[e2e][integration]") {
  cluster c(coder_agent, {coder_script});
  auto done = c.keel({"run", "coder", "go", "--yes"});
  REQUIRE(done.exit_code == 0);
  auto runs = c.keel({"runs", "--json"});
  auto list = json::parse(runs.out);
  REQUIRE(list.size() == 1);
  std::string run = list[0]["run_id"];
  auto events = c.events(run);
  REQUIRE(events.size() == list[0]["last_event_seq"].get<std::size_t>());
  for (std::size_t i = 0; i < events.size(); ++i) CHECK(events[i]["seq"] == i + 1);
  CHECK(events.front()["event_type"] == "run_started");
  CHECK(events.back()["event_type"] == "run_completed");
  std::vector<std::string> types;
  for (const auto& e : events) types.push_back(e["event_type"]);
  CHECK(std::count(types.begin(), types.end(), "suspend") == 2);
  CHECK(std::count(types.begin(), types.end(), "resumed") == 2);
  CHECK(std::count(types.begin(), types.end(), "llm_step_completed") == 3);
  // And `keel events --follow` on a finished run prints it all and ends.
  auto followed = c.keel({"events", run, "--follow"}, 10000);
  CHECK(followed.exit_code == 0);
  CHECK(followed.out.find("Run completed") != std::string::npos);
}

TEST_CASE("runs: bad resumes get clear errors and a repeated answer changes nothing",
          "[e2e][integration]") {
  cluster c(coder_agent, {coder_script});
  auto run = c.invoke("coder", "go");
  auto step = c.await_suspend(run);

  auto not_waiting = c.keel({"approve", run, "approve-99"});
  CHECK(not_waiting.exit_code == 1);
  CHECK(not_waiting.err == "keel approve: run " + run + " waits on step " + step + ", not approve-99\n");
  auto unknown = c.keel({"approve", "0000000000000000-n1", step});
  CHECK(unknown.err == "keel approve: no run 0000000000000000-n1 on node n1\n");
  auto not_an_id = c.keel({"approve", "nonsense", step});
  CHECK(not_an_id.err == "keel approve: 'nonsense' is not a keel run id\n");
  auto other_node = c.keel({"approve", "0000000000000000-elsewhere", step, "--timeout-ms", "300"});
  CHECK(other_node.err.find("no answer from node elsewhere") != std::string::npos);

  CHECK(c.keel({"approve", run, step}).exit_code == 0);
  auto again = c.keel({"approve", run, step});
  CHECK(again.exit_code == 0);
  CHECK(again.out.find("had been answered already") != std::string::npos);
  auto contrary = c.keel({"reject", run, step});
  CHECK(contrary.exit_code == 1);
  CHECK(contrary.err.find("was already approved") != std::string::npos);

  // Malformed bytes on the resume subject get an error reply, and the node carries on.
  auto raw = c.connect_client();
  auto reply = raw->request("keel.default.runs." + run + ".resume.tester", "\x93garbage", 2000);
  REQUIRE(reply.ok());
  auto decoded = wire::decode<wire::resume_reply>(reply->data);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.error().code == errc::malformed);
  auto no_data = raw->request("keel.default.runs." + run + ".resume.tester",
                                 wire::pack(wire::value{{"v", 1}, {"type", "resume"}, {"step_key", "x"}}), 2000);
  REQUIRE(no_data.ok());
  CHECK(wire::decode<wire::resume_reply>(no_data->data).error().message == "missing field 'data'");
  auto bad_invoke = raw->request("keel.default.invoke.tester", wire::pack(wire::value{{"v", 1}, {"type", "invoke"}}), 2000);
  REQUIRE(bad_invoke.ok());
  CHECK(wire::decode<wire::invoke_reply>(bad_invoke->data).error().message == "missing field 'agent'");
  auto no_agent = c.keel({"invoke", "nobody", "x"});
  CHECK(no_agent.err == "keel invoke: unknown agent 'nobody'; this node has: coder\n");

  c.await_suspend(run);
  CHECK(c.keel({"cancel", run}).exit_code == 0);
  CHECK(c.status(run) == "cancelled");
  CHECK(c.keel({"cancel", run}).err.find("has already cancelled") != std::string::npos);
}

TEST_CASE("runs: an invoke with an idempotency key repeated gives the same run", "[e2e][integration]") {
  cluster c(coder_agent, {coder_script});
  auto first = c.keel({"invoke", "coder", "go", "--idempotency-key", "order-7"});
  auto second = c.keel({"invoke", "coder", "go", "--idempotency-key", "order-7"});
  REQUIRE(first.exit_code == 0);
  CHECK(first.out == second.out);
  auto other = c.keel({"invoke", "coder", "go", "--idempotency-key", "order-8"});
  CHECK(other.out != first.out);
}

// The crash test: SIGKILL the node at each point, start it again, and every run completes;
// the scripted model's call log shows that no model step whose result was recorded ran again.
// Each step killed in flight is held there (the model waits for a file, the command for
// another) until the node is started again, so the points are the same on any machine.
TEST_CASE("runs: SIGKILL at any point loses nothing and repeats no recorded model step",
          "[e2e][integration]") {
  cluster c(unattended_agent("auto", "agent", "file_approval = false\n") + R"(
[agents.asker]
script = "{dir}/asker.json"
script_log = "{dir}/asker-calls.log"
[agents.asker.sandbox]
workspace = "{dir}/ws"
scope = "agent"
)", {{"auto.json", R"({"turns": [
    {"wait_for_file": "go-1", "text": "one", "tool_calls": [{"name": "exec", "arguments": {"command": "echo one >> marks.txt"}}]},
    {"wait_for_file": "go-2", "text": "two", "tool_calls": [{"name": "exec", "arguments": {"command": "echo started >> started.txt; until [ -e go-3 ]; do sleep 0.05; done; echo two >> marks.txt"}}]},
    {"text": "finished"}
  ]})"}, {"asker.json", R"({"turns": [
    {"text": "asking", "tool_calls": [{"name": "exec", "arguments": {"command": "echo asked >> asked.txt"}}]},
    {"text": "answered"}
  ]})"}});
  auto called = [&](const std::string& turn) {
    REQUIRE_EVENTUALLY(30000, count_calls(read_file(c.dir().file("auto-calls.log")))[turn] >= 1);
  };

  auto run = c.invoke("auto", "count");
  auto asker = c.invoke("asker", "ask");
  // `asker` is to be killed only while it waits for a person: its first model step is done first
  // (on a loaded machine it could still be in flight at the first kill, and run twice).
  c.await_suspend(asker);

  // 1. A model step in flight.
  called("turn 1");
  c.kill_node();
  c.start_node();
  write_file(c.dir().file("go-1"), "");
  // 2. Right after a tool result is recorded (the next model step is in flight).
  called("turn 2");
  c.kill_node();
  c.start_node();
  write_file(c.dir().file("go-2"), "");
  // 3. A tool step in flight.
  REQUIRE_EVENTUALLY(30000, !read_file(c.dir().file("ws/started.txt")).empty());
  c.kill_node();
  c.start_node();
  write_file(c.dir().file("ws/go-3"), "");
  c.await_status(run, "completed");
  // 4. While suspended.
  auto step = c.await_suspend(asker);
  c.kill_node();
  c.start_node();
  CHECK(c.status(asker) == "suspended");
  CHECK(c.keel({"approve", asker, step}).exit_code == 0);

  c.await_status(asker, "completed");
  CHECK(c.show(run)["output"] == "finished");
  CHECK(c.show(asker)["output"] == "answered");

  // Turns 1 and 2 of `auto` were in flight when the node died, so each ran twice; turn 3 once.
  INFO("calls of auto:\n" << read_file(c.dir().file("auto-calls.log")));
  CHECK(count_calls(read_file(c.dir().file("auto-calls.log"))) ==
        std::map<std::string, int>{{"turn 1", 2}, {"turn 2", 2}, {"turn 3", 1}});
  // `asker` was killed only while suspended: nothing ran twice.
  CHECK(count_calls(read_file(c.dir().file("asker-calls.log"))) ==
        std::map<std::string, int>{{"turn 1", 1}, {"turn 2", 1}});
  // The recorded tool result was not run again; the one in flight ran again.
  // (A step in flight runs at least once: "two" may appear twice, "one" was recorded once.)
  auto marks = read_file(c.dir().file("ws/marks.txt"));
  INFO(marks);
  CHECK(marks.rfind("one\n", 0) == 0);
  CHECK(marks.find("one", 1) == std::string::npos);
  CHECK(marks.find("two\n") != std::string::npos);
  CHECK(read_file(c.dir().file("ws/asked.txt")) == "asked\n");
  // Every event is there once, in order, across four crashes.
  auto events = c.events(run);
  for (std::size_t i = 0; i < events.size(); ++i) CHECK(events[i]["seq"] == i + 1);
  // A step in flight stays in the broker's work queue across the crash and is handed out again
  // there (its worker died); the owner sends it again only if the broker does not hold it (the
  // node died between writing the step and storing its task): at most once per kill.
  auto retries = std::count_if(events.begin(), events.end(),
                               [](const json& e) { return e["event_type"] == "task_retried"; });
  CHECK(retries <= 4);
}

TEST_CASE("runs: runs of one session share a workspace, other runs do not", "[e2e][integration]") {
  cluster c(unattended_agent("shared", "session"), {{"shared.json", R"({"turns": [
    {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "cat notes.txt 2>/dev/null; echo seen >> notes.txt"}}]},
    {"text": "{{last_tool_result}}"}]})"}});
  auto first = c.keel({"invoke", "shared", "one", "--session", "s1"});
  auto first_id = first.out.substr(0, first.out.size() - 1);
  c.await_status(first_id, "completed");
  auto second = c.keel({"invoke", "shared", "two", "--session", "s1"});
  auto second_id = second.out.substr(0, second.out.size() - 1);
  c.await_status(second_id, "completed");
  CHECK(c.show(second_id)["output"].get<std::string>().find("stdout:\nseen\n") != std::string::npos);
  auto alone = c.invoke("shared", "three");
  c.await_status(alone, "completed");
  CHECK(c.show(alone)["output"].get<std::string>().find("stdout:\n\n") != std::string::npos);
  CHECK(read_file(c.dir().file("ws/sessions/s1/notes.txt")) == "seen\nseen\n");
}

// Tasks that arrive together run together: each of these commands ends only once all four have
// started, so the runs complete only if one worker runs the four tool calls at the same time.
TEST_CASE("runs: a worker runs tasks that arrive together at the same time", "[e2e][integration][threads]") {
  cluster c(unattended_agent("together", "agent", "exec_timeout_ms = 30000\n"), {{"together.json", R"({"turns": [
    {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "mktemp started.XXXXXX >/dev/null; while [ $(ls started.* | wc -l) -lt 4 ]; do sleep 0.02; done; echo all four"}}]},
    {"text": "{{last_tool_result}}"}]})"}});
  std::vector<std::string> runs;
  for (int i = 0; i < 4; ++i) runs.push_back(c.invoke("together", "go"));
  for (const auto& run : runs) {
    c.await_status(run, "completed", 25'000);
    CHECK(c.show(run)["output"].get<std::string>().find("all four") != std::string::npos);
  }
}

// A step is written twice: its result alone (after which the next task may go), then what follows
// from it. A crash between the two leaves the result on disk and nothing else; the restarted node
// must replay that result, not ask the model again. The test makes that state itself: it stops
// the node with a model step in flight and writes the step's result into the journal alone.
TEST_CASE("runs: a result on disk whose consequences were not written is replayed, not asked again",
          "[e2e][integration]") {
  cluster c(unattended_agent("auto"), {{"auto.json", R"({"turns": [
    {"delay_ms": 20000, "text": "from the model", "tool_calls": [{"name": "exec", "arguments": {"command": "echo model >> marks.txt"}}]},
    {"text": "finished"}
  ]})"}});
  bool as_received = GENERATE(true, false);
  CAPTURE(as_received);
  auto run = c.invoke("auto", "go");
  REQUIRE_EVENTUALLY(20000, c.has_event(run, "llm_step_started"));
  c.stop_node();  // the model step is in flight

  {
    auto store = store::run_store::open({c.dir().file("data/runs"), true});
    REQUIRE(store.ok());
    auto record = (*store)->get(run);
    REQUIRE(record.ok());
    REQUIRE(record->has_value());
    const auto& pending = (**record).state["pending"];
    REQUIRE(pending["kind"] == "llm");
    wire::task_result result;
    result.run_id = run;
    result.step = pending["step"].get<std::uint64_t>();
    result.attempt = pending["attempt"].get<std::uint32_t>();
    result.worker = "before-the-crash";
    result.payload = json{{"role", "assistant"}, {"text", "recorded"},
                          {"tool_calls", json::array({{{"id", "c1"}, {"name", "exec"},
                                                        {"arguments", {{"command", "echo recorded >> marks.txt"}}}}})},
                          {"usage", {{"input_tokens", 5}, {"output_tokens", 5}}}, {"stop_reason", "tool_use"}};
    auto bytes = wire::encode(result);
    store::run_transition alone;
    alone.entries_only = true;
    alone.record.run_id = run;
    if (as_received) {
      // As this version writes it: the message as it came off NATS, before the run saw it; and
      // a repeat of it, arrived later, which must not be applied twice.
      alone.received.push_back({(1ULL << 40) + 5, bytes});
      alone.received.push_back({(1ULL << 40) + 6, bytes});
    } else {
      // As earlier versions wrote it: a journal entry past the snapshot.
      alone.journal.push_back({(**record).last_journal_seq + 1, "result", 1,
                               json{{"step", result.step}, {"attempt", result.attempt}, {"ok", true},
                                    {"message", json::binary(std::vector<std::uint8_t>(bytes.begin(), bytes.end()))}}});
    }
    REQUIRE((*store)->apply(alone).ok());
  }

  c.start_node();
  c.await_status(run, "completed");
  CHECK(c.show(run)["output"] == "finished");
  // The model was asked turn 1 once (before the stop) and turn 2 once: the recorded answer was
  // used, and its tool call ran.
  CHECK(count_calls(read_file(c.dir().file("auto-calls.log"))) ==
        std::map<std::string, int>{{"turn 1", 1}, {"turn 2", 1}});
  CHECK(read_file(c.dir().file("ws/marks.txt")) == "recorded\n");
  auto events = c.events(run);
  for (std::size_t i = 0; i < events.size(); ++i) CHECK(events[i]["seq"] == i + 1);
  auto completed = std::find_if(events.begin(), events.end(),
                                [](const json& e) { return e["event_type"] == "llm_step_completed"; });
  REQUIRE(completed != events.end());
  CHECK((*completed)["data"]["text"] == "recorded");
  // Nothing received is left behind.
  c.stop_node();
  auto store = store::run_store::open({c.dir().file("data/runs"), true});
  REQUIRE(store.ok());
  CHECK((*store)->received(run)->empty());
}

// The live view: a subscriber gets every event once, in order, as the history has them, and a
// long step's start while the step runs.
TEST_CASE("runs: a live subscriber gets every event in order, and a long step's events before it ends",
          "[e2e][integration][threads]") {
  cluster c(unattended_agent("auto"), {{"auto.json", R"({"turns": [
    {"text": "quick", "tool_calls": [{"name": "exec", "arguments": {"command": "true"}}]},
    {"text": "slow", "tool_calls": [{"name": "exec", "arguments": {"command": "sleep 3"}}]},
    {"text": "finished"}
  ]})"}});
  auto watcher = c.connect_client();
  std::mutex mutex;
  std::vector<wire::event> live;
  int undecodable = 0;
  auto sub = watcher->subscribe("keel.default.runs.*.events", "", [&](broker::message&& m) {
    auto e = wire::decode<wire::event>(m.data);
    std::lock_guard lock{mutex};
    if (e) live.push_back(std::move(*e));
    else ++undecodable;  // counted here, checked on the test's thread
  });
  REQUIRE(sub.ok());
  REQUIRE(watcher->flush(2000).ok());
  auto live_has = [&](const std::string& type, const std::string& command) {
    std::lock_guard lock{mutex};
    return std::any_of(live.begin(), live.end(), [&](const wire::event& e) {
      return e.event_type == type && (command.empty() || e.data["arguments"].value("command", "") == command);
    });
  };

  auto run = c.invoke("auto", "go");
  // The slow command's start is seen live while the command still runs (it takes 3 s).
  REQUIRE_EVENTUALLY(2500, live_has("tool_call_started", "sleep 3"));
  auto history = c.events(run);
  auto slow_started = std::find_if(history.begin(), history.end(), [](const json& e) {
    return e["event_type"] == "tool_call_started" && e["data"]["arguments"]["command"] == "sleep 3";
  });
  REQUIRE(slow_started != history.end());
  CHECK(std::none_of(slow_started, history.end(), [](const json& e) { return e["event_type"] == "tool_call_completed"; }));
  c.await_status(run, "completed");
  REQUIRE_EVENTUALLY(2000, live_has("run_completed", ""));
  history = c.events(run);
  std::lock_guard lock{mutex};
  CHECK(undecodable == 0);
  REQUIRE(live.size() == history.size());
  for (std::size_t i = 0; i < live.size(); ++i) {
    CHECK(live[i].seq == i + 1);
    CHECK(live[i].event_type == history[i]["event_type"].get<std::string>());
  }
}

// A wait is answered once the run stops running: at its end, at a suspension, or at once when it
// stopped already (from memory or from disk); bad waits get clear errors.
TEST_CASE("runs: wait answers when the run stops running, and every waiter hears it",
          "[e2e][integration]") {
  cluster c(unattended_agent("slow") + coder_agent,
            {coder_script, {"slow.json", R"({"turns": [
    {"text": "", "delay_ms": 700, "tool_calls": [{"name": "exec", "arguments": {"command": "echo slept"}}]},
    {"text": "Done: {{last_tool_result}}"}]})"}});
  auto client = c.connect_client();
  auto wait_request = wire::pack(wire::value{{"v", 1}, {"type", "wait"}});
  auto status_of = [](const broker::message& m) -> std::string {  // on the waiters' threads: no assertion
    auto v = wire::unpack(m.data);
    if (!v.ok()) return "undecodable reply";
    if ((*v)["type"] != "run") return "a reply that is not a run";
    return (*v)["run"]["status"].get<std::string>();
  };

  // Three waiters on a running run: each is answered once, when it has completed.
  auto run = c.invoke("slow", "go");
  std::vector<std::thread> waiters;
  std::vector<std::string> seen(3);
  for (int i = 0; i < 3; ++i)
    waiters.emplace_back([&, i] {
      auto reply = client->request("keel.default.runs." + run + ".wait", wait_request, 20'000);
      seen[i] = reply ? status_of(*reply) : "error: " + reply.error().message;
    });
  for (auto& w : waiters) w.join();
  for (const auto& s : seen) CHECK(s == "completed");
  CHECK(c.status(run) == "completed");

  // The command line prints the run and says in its exit code how it stands.
  auto done = c.keel({"wait", run});
  CHECK(done.exit_code == 0);
  CHECK(done.out.find("Status:  completed") != std::string::npos);
  CHECK(done.out.find("Done: ") != std::string::npos);
  CHECK(done.out.find("slept") != std::string::npos);

  // A run that waits for approval: answered with what it waits for, exit code 3.
  auto asking = c.invoke("coder", "go");
  auto step = c.await_suspend(asking);
  auto suspended = c.keel({"wait", asking, "--json"});
  CHECK(suspended.exit_code == 3);
  auto shown = json::parse(suspended.out);
  CHECK(shown["status"] == "suspended");
  CHECK(shown["waiting"]["step_key"] == step);

  // Still running at the timeout: exit code 4, and the run goes on.
  auto slow = c.invoke("slow", "go");
  auto timed_out = c.keel({"wait", slow, "--timeout-ms", "100"});
  CHECK(timed_out.exit_code == 4);
  CHECK(timed_out.err == "keel wait: no answer in 100 ms: run " + slow + " is still running, or node n1, which owns it, is not\n");
  CHECK(c.keel({"wait", slow}).exit_code == 0);

  // A waiter on a run that is cancelled hears that.
  auto asking_again = c.invoke("coder", "go");
  c.await_suspend(asking_again);
  CHECK(c.keel({"cancel", asking_again}).exit_code == 0);
  auto cancelled = c.keel({"wait", asking_again});
  CHECK(cancelled.exit_code == 1);
  CHECK(cancelled.out.find("Status:  cancelled") != std::string::npos);

  // After a restart the runs are on disk only: answered from there.
  c.stop_node();
  c.start_node();
  auto after = c.keel({"wait", run, "--json"});
  CHECK(after.exit_code == 0);
  CHECK(json::parse(after.out)["status"] == "completed");
  CHECK(c.keel({"wait", asking, "--json"}).exit_code == 3);

  // Bad waits: an unknown run, something that is no run id, a run of a node that is not there.
  auto unknown = c.keel({"wait", "0000000000000000-n1"});
  CHECK(unknown.exit_code == 1);
  CHECK(unknown.err == "keel wait: no run 0000000000000000-n1 on node n1\n");
  CHECK(c.keel({"wait", "nonsense"}).err == "keel wait: 'nonsense' is not a keel run id\n");
  auto elsewhere = c.keel({"wait", "0000000000000000-elsewhere", "--timeout-ms", "300"});
  CHECK(elsewhere.exit_code == 4);
  CHECK(elsewhere.err.find("or node elsewhere, which owns it, is not") != std::string::npos);
}

TEST_CASE("runs: every request checks its body, random bytes and wrong fields get errors and change nothing",
          "[e2e][integration]") {
  cluster c(coder_agent, {coder_script});
  auto run = c.invoke("coder", "go");
  c.await_suspend(run);
  auto before = c.events(run).size();
  auto raw = c.connect_client();
  auto base = "keel.default.runs." + run + ".";
  auto error_of = [&](const std::string& subject, const std::string& body) -> std::pair<std::string, std::string> {
    auto reply = raw->request(subject, body, 3000);
    REQUIRE(reply.ok());
    auto v = wire::unpack(reply->data);
    REQUIRE(v.ok());
    INFO(subject << ": " << v->dump());
    REQUIRE(v->value("type", std::string{}) == "error");
    return {(*v)["error"]["code"].get<std::string>(), (*v)["error"]["message"].get<std::string>()};
  };
  std::vector<std::string> verbs = {"resume", "cancel", "get", "history", "wait", "retry", "task_wanted", "messages"};
  // Random bytes of many lengths (a seeded generator: the same bytes every time).
  std::mt19937 random(12345);
  for (int i = 0; i < 40; ++i) {
    std::string bytes(1 + random() % 200, '\0');
    for (auto& b : bytes) b = static_cast<char>(random());
    for (const auto& verb : verbs) {
      bool acting = verb == "resume" || verb == "cancel" || verb == "retry";  // subjects that end with the sender
      auto [code, message] = error_of(base + verb + (acting ? ".tester" : ""), bytes);
      CHECK((code == "malformed" || code == "too_large" || code == "unsupported_version"));
    }
    auto [code, message] = error_of("keel.default.runs.list", bytes);
    CHECK((code == "malformed" || code == "too_large" || code == "unsupported_version"));
    auto invoked = error_of("keel.default.invoke.tester", bytes);  // no run is created from noise
    CHECK((invoked.first == "malformed" || invoked.first == "too_large" || invoked.first == "unsupported_version"));
  }
  // Noise 100 times the size (20 KB of nested arrays, far past the depth limit): refused.
  std::string big(100 * 200, '\x93');
  for (const auto& verb : verbs) {
    bool acting = verb == "resume" || verb == "cancel" || verb == "retry";
    auto code = error_of(base + verb + (acting ? ".tester" : ""), big).first;
    CHECK((code == "too_large" || code == "malformed"));
  }
  // An extension type is malformed (not too large), and says so.
  CHECK(error_of(base + "cancel.tester", std::string("\xd4\x01\x02", 3)) == std::pair<std::string, std::string>{"malformed", "extension types are not used"});
  // Well-formed maps of the wrong type, version or field types.
  CHECK(error_of(base + "cancel.tester", wire::pack(wire::value{{"v", 1}, {"type", "get_run"}})).first == "malformed");
  CHECK(error_of(base + "get", wire::pack(wire::value{{"v", 2}, {"type", "get_run"}})).first == "unsupported_version");
  CHECK(error_of(base + "cancel.tester", wire::pack(wire::value{{"v", 1}, {"type", "cancel"}, {"reason", 7}})).first == "invalid_argument");
  CHECK(error_of(base + "history", wire::pack(wire::value{{"v", 1}, {"type", "get_history"}, {"limit", "all"}})) ==
        std::pair<std::string, std::string>{"invalid_argument", "limit must be an unsigned integer, got \"all\""});
  CHECK(error_of(base + "history", wire::pack(wire::value{{"v", 1}, {"type", "get_history"}, {"from_seq", -1}})).first == "invalid_argument");
  CHECK(error_of("keel.default.runs.list", wire::pack(wire::value{{"v", 1}, {"type", "list_runs"}, {"status", "sleeping"}})).first == "invalid_argument");
  CHECK(error_of("keel.default.runs.list", wire::pack(wire::value{{"v", 1}, {"type", "list_runs"}, {"agent", "a.b"}})).first == "invalid_argument");
  CHECK(error_of(base + "retry.tester", wire::pack(wire::value{{"v", 1}, {"type", "retry"}})) ==
        std::pair<std::string, std::string>{"conflict", "run " + run + " is suspended; only a failed run can be retried"});
  CHECK(error_of(base + "task_wanted", wire::pack(wire::value{{"v", 1}, {"type", "task_wanted"}, {"step", "x"}})).first == "malformed");
  CHECK(error_of(base + "messages", wire::pack(wire::value{{"v", 1}, {"type", "messages_request"}, {"from", 3}, {"to", 1}})).first == "invalid_argument");
  // Clamped, not refused: a history limit of 0 gives one event, one over the bound gives the bound.
  auto one = raw->request(base + "history", wire::pack(wire::value{{"v", 1}, {"type", "get_history"}, {"limit", 0}}), 3000);
  REQUIRE(one.ok());
  CHECK(wire::unpack(one->data)->at("events").size() == 1);
  // Nothing changed: the run still waits on its step, with the same events, and no other run exists.
  CHECK(c.status(run) == "suspended");
  CHECK(json::parse(c.keel({"runs", "--json"}).out).size() == 1);
  CHECK(c.events(run).size() == before);
  // A result for a task nobody sent is not applied.
  auto results = raw->request("keel.default.nodes.n1.results", "\x81\xa1v\x01", 3000);
  REQUIRE(results.ok());
  CHECK(wire::unpack(results->data)->at("type") == "error");
  CHECK(c.status(run) == "suspended");
}

TEST_CASE("runs: a record damaged on disk fails that run with the reason, the node and the other runs go on",
          "[e2e][integration]") {
  cluster c(coder_agent + unattended_agent("thinker"),
            {coder_script, {"thinker.json", R"({"turns": [{"delay_ms": 60000, "text": "thinking"}]})"}});
  auto fields_damaged = c.invoke("thinker", "a");
  auto bytes_damaged = c.invoke("thinker", "b");
  auto healthy = c.invoke("coder", "c");
  auto step = c.await_suspend(healthy);
  REQUIRE_EVENTUALLY(10'000, c.status(fields_damaged) == "running" && c.status(bytes_damaged) == "running");
  c.stop_node();
  {
    rocksdb::DB* raw = nullptr;
    rocksdb::Options options;
    REQUIRE(rocksdb::DB::Open(options, c.dir().file("data/runs"), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    std::string bytes;
    REQUIRE(db->Get(rocksdb::ReadOptions(), "r/" + fields_damaged, &bytes).ok());
    auto record = wire::unpack(bytes, store::disk_limits());
    REQUIRE(record.ok());
    (*record)["state"]["steps"] = "many";  // decodes, but is not what a run's state holds
    REQUIRE(db->Put(rocksdb::WriteOptions(), "r/" + fields_damaged, wire::pack(*record)).ok());
    REQUIRE(db->Put(rocksdb::WriteOptions(), "r/" + bytes_damaged, std::string("\xc1\xc1 not a record", 15)).ok());
  }
  c.start_node();
  c.await_status(fields_damaged, "failed");
  c.await_status(bytes_damaged, "failed");
  CHECK(c.show(fields_damaged)["error"].get<std::string>().find("the run's stored state is damaged: state.steps should be an integer") != std::string::npos);
  CHECK(c.show(bytes_damaged)["error"].get<std::string>().find("the run's stored record cannot be read") != std::string::npos);
  // A damaged run cannot be retried into running on what is left of it.
  CHECK(c.keel({"retry", fields_damaged}).exit_code != 0);
  // The node lives, and the healthy run goes on.
  CHECK(c.keel({"approve", healthy, step}).exit_code == 0);
  auto exec_step = c.await_suspend(healthy);
  CHECK(c.keel({"approve", healthy, exec_step}).exit_code == 0);
  c.await_status(healthy, "completed");
  CHECK(c.node_log().find("terminate") == std::string::npos);
}
