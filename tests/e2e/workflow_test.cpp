// Workflows end to end (docs/WORKFLOWS.md): waiting tools, events sent to runs over NATS, HTTP and
// `keel signal`, approvals and runs with time limits; through kill -9 of the node and the loss of
// an orchestrator of a cluster. Built binaries, real nats-servers, the scripted model.
#include "tests/e2e/cluster.hpp"
#include "tests/e2e/failover_cluster.hpp"
#include "tests/e2e/http_client.hpp"
#include "gateway/webhooks.hpp"

#include <map>
#include <set>
#include <sstream>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

// An agent of the scripted model (script {dir}/<name>.json, calls logged to {dir}/calls.log) with
// the waiting tools and whatever `extra` adds to its table.
std::string agent_toml(const std::string& name, const std::string& extra = "") {
  return "\n[agents." + name + "]\nscript = \"{dir}/" + name + ".json\"\nscript_log = \"{dir}/calls.log\"\n" +
         "workflow_tools = [\"sleep\", \"wait_until\", \"wait_for_event\"]\n" + extra + "[agents." + name +
         ".sandbox]\nworkspace = \"{dir}/ws\"\n";
}

// Model calls by "<run> turn <n>" (the scripted model logs "<task id> <turn> <model>" per call).
std::map<std::string, int> calls_by_run(const std::string& log) {
  std::map<std::string, int> out;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream in(line);
    std::string task, turn;
    if (in >> task >> turn) out[task.substr(0, task.find('/')) + " turn " + turn] += 1;
  }
  return out;
}

std::size_t count_type(const std::vector<json>& events, const std::string& type) {
  return static_cast<std::size_t>(std::count_if(events.begin(), events.end(), [&](const json& e) { return e["event_type"] == type; }));
}

const json* first_of(const std::vector<json>& events, const std::string& type) {
  for (const auto& e : events)
    if (e["event_type"] == type) return &e;
  return nullptr;
}

} // namespace

TEST_CASE("workflows: a sleeping run is on disk only, survives kill -9 of its node, and wakes once when its time came",
          "[e2e][integration][workflows]") {
  cluster c(agent_toml("sleepy"), {{"sleepy.json", R"({"turns": [
      {"text": "", "tool_calls": [{"name": "sleep", "arguments": {"seconds": 4}}]},
      {"text": "Woke: {{last_tool_result}}"}
    ]})"}});
  auto run = c.invoke("sleepy", "sleep a little");
  c.await_status(run, "waiting");
  auto shown = c.show(run);
  CHECK(shown["waiting_for"]["kind"] == "sleep");
  auto until = shown["waiting_for"]["until_ms"].get<std::int64_t>();
  // `keel wait` returns for a run that waits for a time, with its own exit code.
  auto waited = c.keel({"wait", run});
  CHECK(waited.exit_code == 5);
  c.kill_node();
  c.start_node();
  c.await_status(run, "completed", 30'000);
  auto events = c.events(run);
  CHECK(count_type(events, "wait_started") == 1);
  CHECK(count_type(events, "wait_ended") == 1);
  const json* ended = first_of(events, "wait_ended");
  REQUIRE(ended);
  CHECK((*ended)["time_ms"].get<std::int64_t>() >= until);  // not before its time
  CHECK(c.show(run)["output"].get<std::string>().find("slept_until") != std::string::npos);
  auto calls = calls_by_run(read_file(c.dir().file("calls.log")));
  CHECK(calls == std::map<std::string, int>{{run + " turn 1", 1}, {run + " turn 2", 1}});
}

TEST_CASE("workflows: events reach their runs over NATS, HTTP and keel signal, one sent early is kept, a repeat is taken once",
          "[e2e][integration][workflows]") {
  cluster_options options;
  options.gateway = true;
  cluster c(agent_toml("waiter"), {{"waiter.json", R"({"turns": [
      {"text": "", "tool_calls": [{"name": "wait_for_event", "arguments": {"name": "first"}}]},
      {"delay_ms": 3000, "text": "", "tool_calls": [{"name": "wait_for_event", "arguments": {"name": "second", "timeout_seconds": 120}}]},
      {"text": "", "tool_calls": [{"name": "wait_for_event", "arguments": {"name": "third", "timeout_seconds": 120}}]},
      {"text": "", "tool_calls": [{"name": "wait_for_event", "arguments": {"name": "fourth", "timeout_seconds": 1}}]},
      {"text": "Done: {{last_tool_result}}"}
    ]})"}}, options);
  auto run = c.invoke("waiter", "wait for things");
  // Sent at once: "first" is kept or taken (the run may wait for it already); "second" is kept,
  // as the run waits for "first" before it and then asks the model (3 s) before it waits for it.
  auto first = c.keel({"signal", run, "first", "--payload", R"({"n": 1})", "--id", "f1"});
  INFO(first.out << first.err);
  CHECK(first.exit_code == 0);
  auto second = c.keel({"signal", run, "second", "--payload", "plain text", "--id", "s1"});
  INFO(second.out << second.err);
  CHECK(second.exit_code == 0);
  REQUIRE_EVENTUALLY(20'000, c.show(run).value("waiting_for", json::object()).value("event", "") == "third");
  auto events = c.events(run);
  std::map<std::string, json> received;
  for (const auto& e : events)
    if (e["event_type"] == "event_received") received[e["data"]["id"].get<std::string>()] = e["data"];
  REQUIRE(received.count("s1") == 1);
  CHECK(received["s1"]["delivered"] == false);  // kept, then taken by the wait for it
  CHECK(!received["f1"]["by"].get<std::string>().empty());
  CHECK(count_type(events, "wait_ended") == 2);

  auto url = c.gateway_url() + "/api/v1/runs/" + run + "/signals";
  auto sent = call("POST", url, R"({"name": "third", "payload": {"n": 3}})", {"Idempotency-Key: t3", "Content-Type: application/json"});
  INFO(sent.body);
  REQUIRE(sent.status == 200);
  CHECK(sent.parsed()["delivered"] == true);
  CHECK(sent.parsed()["duplicate"] == false);
  auto again = call("POST", url, R"({"name": "third", "payload": {"n": 3}})", {"Idempotency-Key: t3", "Content-Type: application/json"});
  CHECK(again.status == 200);
  CHECK(again.parsed()["duplicate"] == true);
  // Bad requests: a name that is not one, a body that names someone, no name.
  CHECK(call("POST", url, R"({"name": "a b"})", {"Content-Type: application/json"}).status == 400);
  CHECK(call("POST", url, R"({"name": "x", "by": "boss"})", {"Content-Type: application/json"}).status == 400);
  CHECK(call("POST", url, R"({"payload": 1})", {"Content-Type: application/json"}).status == 400);

  // "fourth" gives up after 1 s: the model is told, and the run ends.
  c.await_status(run, "completed", 20'000);
  CHECK(c.show(run)["output"].get<std::string>().find("timed_out") != std::string::npos);
  events = c.events(run);
  CHECK(count_type(events, "wait_ended") == 4);
  CHECK(count_type(events, "event_received") == 3);  // the repeat changed nothing
  auto calls = calls_by_run(read_file(c.dir().file("calls.log")));
  for (int turn = 1; turn <= 5; ++turn) CHECK(calls[run + " turn " + std::to_string(turn)] == 1);

  auto late = c.keel({"signal", run, "first"});
  CHECK(late.exit_code == 1);
  CHECK(late.err.find("has completed") != std::string::npos);
  auto bad = c.keel({"signal", run, "no good"});
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.find("name") != std::string::npos);
  auto nobody = c.keel({"signal", "n1-00000000000000000000", "x"});
  CHECK(nobody.exit_code == 1);
}

TEST_CASE("workflows: an approval nobody answers is escalated, then gets the agent's default answer, through a restart",
          "[e2e][integration][workflows]") {
  cluster c(R"(
[agents.ops]
script = "{dir}/ops.json"
script_log = "{dir}/calls.log"
approval_timeout_ms = 4000
approval_timeout_answer = "reject"
approval_timeout_feedback = "Nobody was around; try a read-only command."
approval_escalate_after_ms = 1500
approval_escalate_to = "#ops-oncall"
[agents.ops.sandbox]
workspace = "{dir}/ws"
)", {{"ops.json", R"({"turns": [
      {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "echo deploying > deployed.txt"}}]},
      {"text": "Told: {{last_tool_result}}"}
    ]})"}});
  auto run = c.invoke("ops", "deploy");
  c.await_suspend(run);
  CHECK(c.show(run)["waiting"].contains("expires_ms"));
  c.kill_node();
  c.start_node();
  c.await_status(run, "completed", 30'000);
  auto events = c.events(run);
  CHECK(count_type(events, "approval_escalated") == 1);
  CHECK(count_type(events, "approval_expired") == 1);
  const json* escalated = first_of(events, "approval_escalated");
  REQUIRE(escalated);
  CHECK((*escalated)["data"]["to"] == "#ops-oncall");
  const json* resumed = first_of(events, "resumed");
  REQUIRE(resumed);
  CHECK((*resumed)["data"]["approved"] == false);
  CHECK((*resumed)["data"]["by"] == "keel (approval_timeout_ms)");
  CHECK(c.show(run)["output"].get<std::string>().find("Nobody was around") != std::string::npos);
  CHECK(read_file(c.dir().file("ws/runs/" + run + "/deployed.txt")).empty());  // never ran
}

TEST_CASE("workflows: a run past its time limit fails with the reason, and a retry gives it the limit again",
          "[e2e][integration][workflows]") {
  cluster c(agent_toml("slow", "run_timeout_ms = 2500\n"), {{"slow.json", R"({"turns": [
      {"text": "", "tool_calls": [{"name": "sleep", "arguments": {"seconds": 600}}]},
      {"text": "never"}
    ]})"}});
  auto run = c.invoke("slow", "take long");
  c.await_status(run, "failed", 20'000);
  auto shown = c.show(run);
  CHECK(shown["error"].get<std::string>().find("run_timeout_ms") != std::string::npos);
  CHECK(c.has_event(run, "run_timed_out"));
  auto retried = c.keel({"retry", run});
  INFO(retried.err);
  CHECK(retried.exit_code == 0);
  c.await_status(run, "waiting");
  c.await_status(run, "failed", 20'000);
  CHECK(count_type(c.events(run), "run_timed_out") == 2);
}

TEST_CASE("workflows: an orchestrator killed while its runs sleep and wait for events: another wakes each once and hands it its event",
          "[e2e][integration][cluster][failover][workflows][threads]") {
  using namespace keel::testing::e2e;
  failover_cluster c;
  std::string extra = "[agents.sleepy]\nscript = \"" + c.dir.file("sleepy.json") + "\"\nscript_log = \"" +
                      c.dir.file("sleepy-calls.log") + "\"\nworkflow_tools = [\"sleep\", \"wait_for_event\"]\n" +
                      "[agents.sleepy.sandbox]\nworkspace = \"" + c.dir.file("ws") + "\"\n" +
                      "[agents.waiter]\nscript = \"" + c.dir.file("waiter.json") + "\"\nscript_log = \"" +
                      c.dir.file("sleepy-calls.log") + "\"\nworkflow_tools = [\"wait_for_event\"]\n" +
                      "[agents.waiter.sandbox]\nworkspace = \"" + c.dir.file("ws") + "\"\n";
  write_file(c.dir.file("sleepy.json"), R"({"turns": [
      {"text": "", "tool_calls": [{"name": "sleep", "arguments": {"seconds": 8}}]},
      {"text": "woke"}
    ]})");
  write_file(c.dir.file("waiter.json"), R"({"turns": [
      {"text": "", "tool_calls": [{"name": "wait_for_event", "arguments": {"name": "go"}}]},
      {"text": "got {{last_tool_result}}"}
    ]})");
  c.start_all(extra);
  std::vector<std::string> sleeping, waiting;
  for (int i = 0; i < 10; ++i) sleeping.push_back(c.invoke_on("o1", "sleepy", "sleep " + std::to_string(i), static_cast<std::size_t>(i % 3)));
  for (int i = 0; i < 5; ++i) waiting.push_back(c.invoke_on("o1", "waiter", "wait " + std::to_string(i), static_cast<std::size_t>(i % 3)));
  for (const auto& run : sleeping) REQUIRE_EVENTUALLY(20'000, status_of(c.show(run, 1)) == "waiting");
  for (const auto& run : waiting) REQUIRE_EVENTUALLY(20'000, status_of(c.show(run, 1)) == "waiting");
  c.nodes["o1"].signal(SIGKILL);
  REQUIRE(c.nodes["o1"].wait(5000).ok());
  on_failure report{[&] { return c.logs(); }};
  // Events sent to the waiting runs go to whoever serves them now (asked again while nobody does).
  for (const auto& run : waiting) {
    bool taken = false;
    for (auto deadline = steady_ms() + 30'000; !taken && steady_ms() < deadline;) {
      auto reply = c.clients.at(2)->request("keel.default.runs." + run + ".signal.tester",
                                            wire::pack(wire::value{{"v", 1}, {"type", "signal"}, {"name", "go"}, {"id", "go-1"},
                                                                   {"payload", {{"for", run}}}}), 3000);
      auto v = reply ? wire::unpack(reply->data) : result<wire::value>(reply.error());
      taken = v && v->value("type", std::string{}) == "signal_reply";
      if (!taken) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    CHECK(taken);
  }
  std::vector<std::string> all = sleeping;
  all.insert(all.end(), waiting.begin(), waiting.end());
  for (const auto& run : all) c.await_completed(run);
  // Each woke once: one model call per turn, one wait ended, events gapless.
  auto calls = calls_by_run(read_file(c.dir.file("sleepy-calls.log")));
  for (const auto& run : all) {
    INFO(run);
    CHECK(calls[run + " turn 1"] == 1);
    CHECK(calls[run + " turn 2"] == 1);
    auto seqs = c.event_seqs(run, 0);
    for (std::size_t i = 0; i < seqs.size(); ++i) CHECK(seqs[i] == i + 1);
  }
  CHECK(calls.size() == 2 * all.size());
}

TEST_CASE("workflows: a schedule starts one run per tick in the schedule's name, is listed with its next tick, pauses and resumes",
          "[e2e][integration][workflows]") {
  cluster_options options;
  options.gateway = true;
  cluster c(R"(
[agents.sched]
script = "{dir}/sched.json"
script_log = "{dir}/calls.log"
tools = []
[agents.sched.sandbox]
workspace = "{dir}/ws"
[schedules.minutely]
agent = "sched"
cron = "* * * * *"
timezone = "Europe/Berlin"
input = "tick {{tick}}"
missed = "catch_up"
)", {{"sched.json", R"({"turns": [{"text": "ran for {{input}}"}]})"}}, options);
  auto listed = c.keel({"schedules", "--json"});
  INFO(listed.out << listed.err);
  REQUIRE(listed.exit_code == 0);
  auto schedules = json::parse(listed.out);
  REQUIRE(schedules.size() == 1);
  CHECK(schedules[0]["name"] == "minutely");
  CHECK(schedules[0]["paused"] == false);
  auto next = schedules[0]["next_ms"].get<std::int64_t>();
  CHECK(next > wall_ms());
  CHECK(next <= wall_ms() + 61'000);
  // The tick comes: one run, started in the schedule's name, with the tick's time in its input.
  auto runs_of_sched = [&] {
    auto out = c.keel({"runs", "--json", "--agent", "sched"});
    return out.exit_code == 0 ? json::parse(out.out, nullptr, false) : json::array();
  };
  REQUIRE_EVENTUALLY(90'000, runs_of_sched().size() >= 1);
  auto runs = runs_of_sched();
  REQUIRE(runs.size() == 1);
  std::string run = runs[0]["run_id"];
  c.await_status(run, "completed");
  auto run_events = c.events(run);
  const json* started = first_of(run_events, "run_started");
  REQUIRE(started);
  CHECK((*started)["data"]["by"] == "schedule:minutely");
  CHECK((*started)["data"]["input"].get<std::string>().rfind("tick 20", 0) == 0);
  auto after = json::parse(c.keel({"schedules", "--json"}).out);
  CHECK(after[0]["last_tick_ms"].get<std::int64_t>() == next);

  // Paused over HTTP (by the token's name), shown so by the CLI, resumed by the CLI.
  auto paused = call("POST", c.gateway_url() + "/api/v1/schedules/minutely/pause", "{}", {"Content-Type: application/json"});
  INFO(paused.body);
  REQUIRE(paused.status == 200);
  CHECK(paused.parsed()["paused"] == true);
  CHECK(!paused.parsed()["paused_by"].get<std::string>().empty());
  auto shown = c.keel({"schedules"});
  CHECK(shown.out.find("paused by") != std::string::npos);
  CHECK(call("POST", c.gateway_url() + "/api/v1/schedules/nope/pause", "{}", {"Content-Type: application/json"}).status == 404);
  auto resumed = c.keel({"schedules", "resume", "minutely"});
  INFO(resumed.err);
  CHECK(resumed.exit_code == 0);
  CHECK(resumed.out.find("is active") != std::string::npos);
  // What the schedule holds is the cluster's: a node killed and started again lists the same.
  c.kill_node();
  c.start_node();
  auto again = json::parse(c.keel({"schedules", "--json"}).out);
  CHECK(again[0]["last_tick_ms"].get<std::int64_t>() >= next);
  CHECK(again[0]["paused"] == false);
  // A client may not start a schedule's tick itself.
  auto forged = c.keel({"invoke", "sched", "x", "--idempotency-key", "keel-schedule/minutely/1"});
  CHECK(forged.exit_code != 0);
}

TEST_CASE("workflows: a webhook starts one run per delivery, only for a request that proves the hook's secret or token",
          "[e2e][integration][workflows]") {
  cluster_options options;
  options.gateway = true;
  cluster c(R"(
[agents.hooked]
script = "{dir}/hooked.json"
script_log = "{dir}/calls.log"
tools = []
[agents.hooked.sandbox]
workspace = "{dir}/ws"
[webhooks.github]
agent = "hooked"
secret_file = "{dir}/github.secret"
signature_header = "X-Hub-Signature-256"
idempotency_header = "X-GitHub-Delivery"
input = "A push came: {{body}}"
[webhooks.ci]
agent = "hooked"
token_file = "{dir}/ci.token"
)", {{"hooked.json", R"({"turns": [{"text": "seen: {{input}}"}]})"}, {"github.secret", "s3cret\n"}, {"ci.token", "ci-token-1\n"}},
            options);
  auto url = c.gateway_url() + "/hooks/github";
  const std::string body = R"({"ref": "refs/heads/main", "commits": 3})";
  auto signature = "X-Hub-Signature-256: " + gateway::webhook_signature("s3cret", body);
  // No gateway token: the hook's own secret is what authenticates.
  auto first = call("POST", url, body, {signature, "X-GitHub-Delivery: d-1", "Content-Type: application/json", "Authorization:"});
  INFO(first.body);
  REQUIRE(first.status == 202);
  std::string run = first.parsed()["run_id"];
  auto again = call("POST", url, body, {signature, "X-GitHub-Delivery: d-1", "Authorization:"});
  CHECK(again.status == 200);  // the sender's retry: the same run
  CHECK(again.parsed()["run_id"] == run);
  CHECK(again.parsed()["created"] == false);
  c.await_status(run, "completed");
  auto shown = c.show(run);
  CHECK(shown["output"].get<std::string>().find("A push came: {\"ref\"") != std::string::npos);
  auto events = c.events(run);
  CHECK(events.front()["data"]["by"] == "webhook-github");
  // Refused: a wrong or missing signature, a body changed under a good one, no delivery id, an
  // unknown hook, a GET; nothing is started by any.
  CHECK(call("POST", url, body, {"X-Hub-Signature-256: sha256=00", "X-GitHub-Delivery: d-2", "Authorization:"}).status == 401);
  CHECK(call("POST", url, body, {"X-GitHub-Delivery: d-2", "Authorization:"}).status == 401);
  CHECK(call("POST", url, body + " ", {signature, "X-GitHub-Delivery: d-2", "Authorization:"}).status == 401);
  CHECK(call("POST", url, body, {signature, "Authorization:"}).status == 400);
  CHECK(call("POST", c.gateway_url() + "/hooks/nope", body, {signature, "X-GitHub-Delivery: d-3", "Authorization:"}).status == 404);
  CHECK(call("GET", url, "", {"Authorization:"}).status == 404);
  // A page of another site cannot post to it.
  CHECK(call("POST", url, body, {signature, "X-GitHub-Delivery: d-4", "Sec-Fetch-Site: cross-site", "Authorization:"}).status == 403);
  // The token hook: a bearer token of its own (not the gateway's).
  auto ci = c.gateway_url() + "/hooks/ci";
  CHECK(call("POST", ci, "build 7 failed", {"Authorization: Bearer ci-token-1", "Idempotency-Key: b7"}).status == 202);
  CHECK(call("POST", ci, "build 7 failed", {"Idempotency-Key: b8"}).status == 401);  // the gateway's token is not the hook's
  CHECK(call("POST", ci, "build 7 failed", {"Authorization: Bearer ci-token-2", "Idempotency-Key: b9"}).status == 401);
  CHECK(call("POST", ci, "build 7 failed", {"Authorization: bearer ci-token-1", "Idempotency-Key: b10"}).status == 202);  // scheme in any case
  CHECK(call("POST", ci, "build 7 failed", {"Authorization: Bearer ci-token-1x", "Idempotency-Key: b11"}).status == 401);
  // Other spellings of the signed request: header names in any case are one header; the same
  // header twice is a list, which matches no signature; a body past the gateway's bound is 413.
  CHECK(call("POST", url, body, {"x-hub-signature-256: " + gateway::webhook_signature("s3cret", body), "x-github-delivery: d-5", "Authorization:"}).status == 202);
  CHECK(call("POST", url, body, {signature, signature, "X-GitHub-Delivery: d-6", "Authorization:"}).status == 401);
  const std::string big(2 << 20, 'x');
  CHECK(call("POST", url, big, {"X-Hub-Signature-256: " + gateway::webhook_signature("s3cret", big), "X-GitHub-Delivery: d-7", "Authorization:"}).status == 413);
  auto runs = json::parse(c.keel({"runs", "--json", "--agent", "hooked"}).out);
  CHECK(runs.size() == 4);  // d-1, b7, b10, d-5
  // No client can claim a delivery's run before the hook does.
  auto squat = c.keel({"invoke", "hooked", "x", "--idempotency-key", "keel-webhook/github/d-9"});
  CHECK(squat.exit_code != 0);
  CHECK(squat.err.find("webhook") != std::string::npos);
}

TEST_CASE("workflows: steps past step_timeout_ms are given up: a hung command gets an error result, a slow sub-agent is cancelled",
          "[e2e][integration][workflows]") {
  cluster c("\n[agents.hasty]\nscript = \"{dir}/hasty.json\"\nscript_log = \"{dir}/calls.log\"\nstep_timeout_ms = 2000\n"
            "sub_agents = [\"slowpoke\"]\n[agents.hasty.sandbox]\nworkspace = \"{dir}/ws\"\nexec_security = \"allow-always\"\n"
            "[agents.slowpoke]\nscript = \"{dir}/slowpoke.json\"\n[agents.slowpoke.sandbox]\nworkspace = \"{dir}/ws\"\n",
            {{"hasty.json", R"({"turns": [
                {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "sleep 8; echo late"}}]},
                {"text": "", "tool_calls": [{"name": "agent__slowpoke", "arguments": {"task": "take your time"}}]},
                {"text": "after: {{last_tool_result}}"}
              ]})"},
             {"slowpoke.json", R"({"turns": [{"delay_ms": 15000, "text": "too late"}]})"}});
  auto run = c.invoke("hasty", "be quick");
  c.await_status(run, "completed", 30'000);
  auto events = c.events(run);
  std::vector<json> timed_out;
  for (const auto& e : events)
    if (e["event_type"] == "step_timed_out") timed_out.push_back(e);
  REQUIRE(timed_out.size() == 2);
  CHECK(timed_out[0]["data"]["kind"] == "tool");
  CHECK(timed_out[0]["data"]["timeout_ms"] == 2000);
  CHECK(timed_out[1]["data"]["kind"] == "sub_agent");
  CHECK(timed_out[1]["data"]["outcome"] == "child run cancelled");
  auto shown = c.show(run);
  CHECK(shown["output"].get<std::string>().find("step_timeout_ms") != std::string::npos);
  REQUIRE(shown["children"].size() == 1);
  auto child = shown["children"][0]["run_id"].get<std::string>();
  c.await_status(child, "cancelled", 20'000);
  bool told = false;
  for (const auto& e : c.events(child))
    told = told || (e["event_type"] == "run_cancelled" && e["data"]["reason"].get<std::string>().find("step_timeout_ms") != std::string::npos);
  CHECK(told);
}

TEST_CASE("workflows: a schedule made through the API is driven like the config's, survives a restart, and is removed",
          "[e2e][integration][workflows]") {
  cluster_options options;
  options.gateway = true;
  cluster c(R"(
[agents.sched]
script = "{dir}/sched.json"
tools = []
[agents.sched.sandbox]
workspace = "{dir}/ws"
[schedules.yearly]
agent = "sched"
cron = "@yearly"
)", {{"sched.json", R"({"turns": [{"text": "ran for {{input}}"}]})"}}, options);
  const auto url = c.gateway_url() + "/api/v1/schedules";
  const std::string body = R"({"name": "api-minutely", "agent": "sched", "cron": "* * * * *", "input": "api {{tick}}", "missed": "catch_up"})";
  auto made = call("POST", url, body);
  INFO(made.body);
  REQUIRE(made.status == 201);
  CHECK(made.parsed()["source"] == "api");
  auto next = made.parsed()["next_ms"].get<std::int64_t>();
  CHECK(next > wall_ms());
  // The same again is the same schedule; another definition under the name, or the config's name, is refused.
  CHECK(call("POST", url, body).status == 200);
  CHECK(call("POST", url, R"({"name": "api-minutely", "agent": "sched", "cron": "0 * * * *"})").status == 409);
  CHECK(call("POST", url, R"({"name": "yearly", "agent": "sched", "cron": "0 * * * *"})").status == 409);
  struct bad {
    std::string body, says;
  };
  for (const auto& b : std::vector<bad>{{R"({"name": "x", "agent": "sched", "cron": "61 * * * *"})", "cron"},
                                        {R"({"name": "x", "agent": "nobody", "cron": "@daily"})", "agent"},
                                        {R"({"name": "x", "agent": "sched", "cron": "@daily", "timezone": "Mars/Base"})", "timezone"},
                                        {R"({"name": "x", "agent": "sched", "cron": "@daily", "color": 1})", "color"},
                                        {R"({"name": "a b", "agent": "sched", "cron": "@daily"})", "name"},
                                        {R"({"agent": "sched", "cron": "@daily"})", "name"},
                                        {R"({"name": "x", "agent": "sched", "cron": 5})", "cron"}}) {
    auto refused = call("POST", url, b.body);
    INFO(b.body << " -> " << refused.body);
    CHECK(refused.status == 400);
    CHECK(refused.body.find(b.says) != std::string::npos);
  }
  // The CLI makes one too; both are listed with their source.
  auto added = c.keel({"schedules", "add", "cli-daily", "--agent", "sched", "--cron", "0 3 * * *", "--timezone", "Asia/Tokyo"});
  INFO(added.err);
  CHECK(added.exit_code == 0);
  auto listed = json::parse(c.keel({"schedules", "--json"}).out);
  std::map<std::string, std::string> sources;
  for (const auto& s : listed) sources[s["name"]] = s["source"];
  CHECK(sources == std::map<std::string, std::string>{{"api-minutely", "api"}, {"cli-daily", "api"}, {"yearly", "config"}});
  // Kept by the cluster: a node killed and started again drives them.
  c.kill_node();
  c.start_node();
  REQUIRE_EVENTUALLY(20'000, json::parse(c.keel({"schedules", "--json"}).out).size() == 3);
  // Its tick comes: one run in its name.
  auto runs_of_sched = [&] {
    auto out = c.keel({"runs", "--json", "--agent", "sched"});
    return out.exit_code == 0 ? json::parse(out.out, nullptr, false) : json::array();
  };
  REQUIRE_EVENTUALLY(90'000, runs_of_sched().size() >= 1);
  auto run = runs_of_sched()[0]["run_id"].get<std::string>();
  c.await_status(run, "completed");
  auto run_events = c.events(run);
  const json* started = first_of(run_events, "run_started");
  REQUIRE(started);
  CHECK((*started)["data"]["by"] == "schedule:api-minutely");
  CHECK((*started)["data"]["input"].get<std::string>().rfind("api 20", 0) == 0);
  // Removed: by the API and the CLI; the config's cannot be; a name never made is not found.
  CHECK(call("DELETE", url + "/api-minutely", "{}").status == 200);
  CHECK(c.keel({"schedules", "remove", "cli-daily"}).exit_code == 0);
  CHECK(call("DELETE", url + "/yearly", "{}").status == 409);
  CHECK(call("DELETE", url + "/never", "{}").status == 404);
  auto after = json::parse(c.keel({"schedules", "--json"}).out);
  REQUIRE(after.size() == 1);
  CHECK(after[0]["name"] == "yearly");
}
