// Forks, reruns, replays and bulk actions end to end (docs/FORKS.md): built keel-node and keel
// binaries, a real nats-server, the scripted model whose call log says which steps called it and
// with which model.
#include "tests/e2e/cluster.hpp"
#include "tests/e2e/failover_cluster.hpp"
#include "tests/e2e/http_client.hpp"
#include "tests/support/fake_service.hpp"

#include <filesystem>
#include <map>
#include <sstream>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

// The guide's coding task: write a file, run a command, report; each call of the model logged as
// "run/step turn model".
const char* unattended = R"(
[agents.coder]
script = "{dir}/coder.json"
script_log = "{dir}/calls.log"
[agents.coder.sandbox]
workspace = "{dir}/ws"
exec_security = "allow-always"
file_approval = false
[agents.asker]
script = "{dir}/asker.json"
script_log = "{dir}/asker-calls.log"
[agents.asker.sandbox]
workspace = "{dir}/ws"
[agents.slow]
script = "{dir}/slow.json"
[agents.slow.sandbox]
workspace = "{dir}/ws"
)";

const std::vector<std::pair<std::string, std::string>> scripts = {
  {"coder.json", R"({"turns": [
    {"text": "Writing hello.txt.", "tool_calls": [{"name": "write", "arguments": {"path": "hello.txt", "content": "Hello\n"}}]},
    {"text": "Running it.", "tool_calls": [{"name": "exec", "arguments": {"command": "echo ran"}}]},
    {"text": "Done. Result: {{last_tool_result}}"}
  ]})"},
  {"asker.json", R"({"turns": [
    {"text": "Cleaning.", "tool_calls": [{"name": "exec", "arguments": {"command": "echo cleaned"}}]},
    {"text": "Done: {{last_tool_result}}"}
  ]})"},
  {"slow.json", R"({"turns": [{"wait_for_file": "never", "text": "done"}]})"}};

// The model's calls for one run: (turn, model) in order.
std::vector<std::pair<int, std::string>> calls_of(const std::string& log, const std::string& run) {
  std::vector<std::pair<int, std::string>> out;
  std::istringstream in(log);
  for (std::string task, turn, model; in >> task >> turn >> model;)
    if (task.rfind(run + "/", 0) == 0) out.emplace_back(std::stoi(turn), model);
  return out;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::size_t replayed_count(const std::vector<json>& events) {
  std::size_t n = 0;
  for (const auto& e : events) n += e["data"].value("replayed", false) ? 1 : 0;
  return n;
}

} // namespace

TEST_CASE("fork: forks at steps 0, 1 and 2 of a coding run call the model only after the step, with the model given",
          "[e2e][integration][fork]") {
  cluster_options options;
  options.gateway = true;
  cluster c(unattended, scripts, options);
  auto original = c.invoke("coder", "make hello");
  c.await_status(original, "completed");
  auto log = [&] { return read_file(c.dir().file("calls.log")); };
  REQUIRE(calls_of(log(), original).size() == 3);
  std::map<int, std::string> forks;
  for (int step : {0, 1, 2}) {
    auto made = c.keel({"fork", original, "--at-step", std::to_string(step), "--model", "model-after-" + std::to_string(step)});
    INFO(made.err);
    REQUIRE(made.exit_code == 0);
    forks[step] = trimmed(made.out);
    CHECK(made.err.find("Forked " + original + " at step " + std::to_string(step)) != std::string::npos);
  }
  for (const auto& [step, run] : forks) {
    c.await_status(run, "completed");
    INFO("fork at step " << step << ": " << run);
    // The model was asked only for the steps after the fork's, each with the model given, and
    // each turn is the one a conversation with `step` recorded answers gets.
    std::vector<std::pair<int, std::string>> expected;
    for (int turn = step + 1; turn <= 3; ++turn) expected.emplace_back(turn, "model-after-" + std::to_string(step));
    CHECK(calls_of(log(), run) == expected);
    auto shown = c.show(run);
    CHECK(shown["fork"]["run_id"] == original);
    CHECK(shown["fork"]["at_step"] == step);
    CHECK(shown["steps"] == 3);
    CHECK(shown["model"] == "model-after-" + std::to_string(step));
    // Its events: the recorded steps marked replayed (none for step 0), then its own.
    auto events = c.events(run);
    CHECK(events.front()["event_type"] == "run_started");
    CHECK(events.front()["data"]["fork"]["run_id"] == original);
    std::size_t replayed_steps = 0;
    for (const auto& e : events)
      if (e["event_type"] == "llm_step_completed" && e["data"].value("replayed", false)) ++replayed_steps;
    CHECK(replayed_steps == static_cast<std::size_t>(step));
    CHECK((replayed_count(events) > 0) == (step > 0));
    // Replayed tokens are not the fork's: only its live steps count.
    auto used = shown["usage"]["output_tokens"].get<std::int64_t>();
    auto used_before = c.show(original)["usage"]["output_tokens"].get<std::int64_t>();
    if (step == 0) CHECK(used == used_before);
    else CHECK(used < used_before);
  }
  // The original's calls are as they were: a fork never calls the model for it.
  CHECK(calls_of(log(), original).size() == 3);
  // The workspace is not restored: the fork at step 1 replayed the write, and its own command
  // runs in a new, empty directory.
  CHECK(std::filesystem::exists(c.dir().file("ws/runs/" + original + "/hello.txt")));
  CHECK_FALSE(std::filesystem::exists(c.dir().file("ws/runs/" + forks[1] + "/hello.txt")));
  // Over HTTP: a fork and a rerun, the same way.
  auto base = c.gateway_url();
  auto posted = call("POST", base + "/api/v1/runs/" + original + "/fork", R"({"at_step": 2, "provider": "scripted", "model": "http-model"})");
  INFO(posted.body);
  REQUIRE(posted.status == 201);
  CHECK(posted.parsed()["forked_from"] == original);
  auto http_fork = posted.parsed()["run_id"].get<std::string>();
  auto rerun = call("POST", base + "/api/v1/runs/" + original + "/rerun", R"({"from_step": 1, "idempotency_key": "again"})");
  REQUIRE(rerun.status == 201);
  auto rerun_id = rerun.parsed()["run_id"].get<std::string>();
  auto repeated = call("POST", base + "/api/v1/runs/" + original + "/rerun", R"({"from_step": 1, "idempotency_key": "again"})");
  CHECK(repeated.status == 200);
  CHECK(repeated.parsed()["run_id"] == rerun_id);
  c.await_status(http_fork, "completed");
  c.await_status(rerun_id, "completed");
  CHECK(calls_of(log(), http_fork) == std::vector<std::pair<int, std::string>>{{3, "http-model"}});
  CHECK(calls_of(log(), rerun_id) == std::vector<std::pair<int, std::string>>{{2, "-"}, {3, "-"}});
  // A fork of a fork.
  auto again = c.keel({"fork", forks[1], "--at-step", "2"});
  REQUIRE(again.exit_code == 0);
  c.await_status(trimmed(again.out), "completed");
  CHECK(calls_of(log(), trimmed(again.out)).size() == 1);
  // Replays: each run gives the same decisions, the original and the forks alike.
  for (const auto& run : {original, forks[1], rerun_id}) {
    auto replayed = c.keel({"replay", run});
    INFO(replayed.out << replayed.err);
    CHECK(replayed.exit_code == 0);
    CHECK(replayed.out.find("the same decisions (3 model steps, 2 tool calls") != std::string::npos);
  }
  auto http_replay = call("POST", base + "/api/v1/runs/" + original + "/replay", "{}");
  REQUIRE(http_replay.status == 200);
  CHECK(http_replay.parsed()["same"] == true);
  CHECK(http_replay.parsed()["model_steps"] == 3);
  // Replaying calls nothing.
  CHECK(calls_of(log(), original).size() == 3);
  // Bad input: each gets a clear error and changes nothing.
  auto past = c.keel({"fork", original, "--at-step", "9"});
  CHECK(past.exit_code == 1);
  CHECK(past.err.find("has 3 model steps recorded: at_step is at most 3") != std::string::npos);
  auto final_step = c.keel({"fork", original, "--at-step", "3"});
  CHECK(final_step.err.find("final answer") != std::string::npos);
  auto unknown_answer = c.keel({"fork", original, "--at-step", "1", "--answer", "approve-9=approve"});
  CHECK(unknown_answer.err.find("asked no approval 'approve-9'; it asked: none") != std::string::npos);
  auto bad_answer = c.keel({"fork", original, "--at-step", "1", "--answer", "approve-9=maybe"});
  CHECK(bad_answer.err.find("neither approve nor reject") != std::string::npos);
  CHECK(c.keel({"fork", "nosuchrun00000000-n1", "--at-step", "1"}).exit_code == 1);
  CHECK(call("POST", base + "/api/v1/runs/" + original + "/fork", R"({"at_step": -1})").status == 400);
  CHECK(call("POST", base + "/api/v1/runs/" + original + "/fork", R"({"at_step": 1, "colour": "red"})").body.find("colour") != std::string::npos);
  CHECK(call("POST", base + "/api/v1/runs/" + original + "/fork", R"({"at_step": 1, "by": "someone"})").status == 400);
  CHECK(call("POST", base + "/api/v1/runs/" + original + "/rerun", R"({"from_step": 1, "model": "m"})").status == 400);
  CHECK(call("POST", base + "/api/v1/runs/" + original + "/fork", "[1]").status == 400);
  auto runs = json::parse(c.keel({"runs", "--json", "--limit", "100"}).out);
  CHECK(runs.size() == 7);  // the original, 3 forks, one over HTTP, one rerun, one fork of a fork
}

TEST_CASE("fork: another answer at an approval: the fork runs from that call with it, the model sees it",
          "[e2e][integration][fork]") {
  cluster c(unattended, scripts);
  auto original = c.invoke("asker", "clean up");
  auto key = c.await_suspend(original);
  REQUIRE(c.keel({"approve", original, key}).exit_code == 0);
  c.await_status(original, "completed");
  CHECK(c.show(original)["output"].get<std::string>().find("cleaned") != std::string::npos);
  auto made = c.keel({"fork", original, "--at-step", "1", "--answer", key + "=reject:use make clean instead"});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  auto fork = trimmed(made.out);
  c.await_status(fork, "completed");
  auto shown = c.show(fork);
  CHECK(shown["output"].get<std::string>().find("use make clean instead") != std::string::npos);
  // The model was asked once (its second turn), the first step replayed; the approval asked
  // again and answered at once with the answer given, by whoever forked.
  CHECK(calls_of(read_file(c.dir().file("asker-calls.log")), fork) == std::vector<std::pair<int, std::string>>{{2, "-"}});
  auto events = c.events(fork);
  bool rejected = false;
  for (const auto& e : events)
    if (e["event_type"] == "resumed" && !e["data"].value("replayed", false)) {
      rejected = e["data"]["approved"] == false && e["data"]["feedback"] == "use make clean instead";
      CHECK_FALSE(e["data"]["by"].get<std::string>().empty());
    }
  CHECK(rejected);
  // The other way round: a fork that approves where the original's person rejected runs the call.
  auto second = c.invoke("asker", "clean up again");
  auto second_key = c.await_suspend(second);
  REQUIRE(c.keel({"reject", second, second_key, "--feedback", "no"}).exit_code == 0);
  c.await_status(second, "completed");
  auto approving = c.keel({"fork", second, "--at-step", "1", "--answer", second_key + "=approve"});
  REQUIRE(approving.exit_code == 0);
  c.await_status(trimmed(approving.out), "completed");
  CHECK(c.show(trimmed(approving.out))["output"].get<std::string>().find("cleaned") != std::string::npos);
  // An answer for a step after the fork's is refused, naming both.
  auto late = c.keel({"fork", original, "--at-step", "0", "--answer", key + "=approve"});
  CHECK(late.exit_code == 1);
  CHECK(late.err.find("was asked at step 1, after step 0") != std::string::npos);
}

TEST_CASE("fork: another provider after step N gets the recorded conversation and is the only model called",
          "[e2e][integration][fork]") {
  fake_service openai([](const fake_request&) {  // on the server's thread: checked below
    return fake_reply{200, json{{"choices", {{{"index", 0}, {"message", {{"role", "assistant"}, {"content", "from the local server"}}},
                                              {"finish_reason", "stop"}}}},
                                {"usage", {{"prompt_tokens", 50}, {"completion_tokens", 3}}}}.dump()};
  });
  cluster c(R"(
[agents.coder]
script = "{dir}/s.json"
script_log = "{dir}/calls.log"
base_url = ")" + openai.url() + R"("
stream = false
[agents.coder.sandbox]
workspace = "{dir}/ws"
exec_security = "allow-always"
)", {{"s.json", R"({"turns": [{"text": "Looking.", "tool_calls": [{"name": "exec", "arguments": {"command": "echo recorded-output"}}]},
                                {"text": "done by the script"}]})"}});
  auto original = c.invoke("coder", "look around");
  c.await_status(original, "completed");
  auto made = c.keel({"fork", original, "--at-step", "1", "--provider", "openai", "--model", "local-llama"});
  INFO(made.err << c.node_log());
  REQUIRE(made.exit_code == 0);
  auto fork = trimmed(made.out);
  c.await_status(fork, "completed");
  CHECK(c.show(fork)["output"] == "from the local server");
  CHECK(c.show(fork)["provider"] == "openai");
  // One call, to the other provider, with the recorded step and its tool's result in it; the
  // scripted model was not asked for the fork at all.
  auto asked = openai.requests();
  REQUIRE(asked.size() == 1);
  CHECK(asked[0].body["model"] == "local-llama");
  std::string roles;
  for (const auto& m : asked[0].body["messages"]) roles += m.value("role", std::string()) + " ";
  CHECK(roles.find("user assistant tool") != std::string::npos);
  CHECK(asked[0].body.dump().find("recorded-output") != std::string::npos);
  CHECK(calls_of(read_file(c.dir().file("calls.log")), fork).empty());
  CHECK(calls_of(read_file(c.dir().file("calls.log")), original).size() == 2);
}

TEST_CASE("bulk actions: a preview touches nothing, the confirmed runs are acted on, a changed run is left alone",
          "[e2e][integration][fork]") {
  cluster_options options;
  options.gateway = true;
  cluster c(unattended, scripts, options);
  std::vector<std::string> slow;
  for (int i = 0; i < 3; ++i) slow.push_back(c.invoke("slow", "wait " + std::to_string(i)));
  std::vector<std::string> asking;
  for (int i = 0; i < 2; ++i) {
    asking.push_back(c.invoke("asker", "clean " + std::to_string(i)));
    c.await_suspend(asking.back());
  }
  // The CLI: a preview, then nothing done without a yes.
  auto preview = c.keel({"bulk", "cancel", "--agent", "slow", "--preview"});
  INFO(preview.out << preview.err);
  CHECK(preview.exit_code == 0);
  CHECK(preview.out.find("These 3 runs would be cancelled") != std::string::npos);
  for (const auto& run : slow) CHECK(preview.out.find(run) != std::string::npos);
  auto unconfirmed = c.keel({"bulk", "cancel", "--agent", "slow"});  // standard input is empty
  CHECK(unconfirmed.out.find("Nothing done.") != std::string::npos);
  for (const auto& run : slow) CHECK(c.status(run) != "cancelled");
  // Over HTTP: the preview, then the confirmed ids only (one of them changed meanwhile).
  auto base = c.gateway_url();
  auto listed = call("POST", base + "/api/v1/runs/bulk", R"({"action": "approve", "filter": {"agent": "asker"}})");
  REQUIRE(listed.status == 200);
  REQUIRE(listed.parsed()["count"] == 2);
  const auto previewed = listed.parsed();
  for (const auto& r : previewed["runs"]) CHECK(r["step_key"].get<std::string>().rfind("approve-", 0) == 0);
  REQUIRE(c.keel({"reject", asking[0], c.show(asking[0])["waiting"]["step_key"].get<std::string>()}).exit_code == 0);
  // An answer takes each run with the step its preview showed (a run moved on since is left alone).
  json plain{{"action", "approve"}, {"filter", {{"agent", "asker"}}}, {"run_ids", json::array({asking[0], asking[1]})}};
  auto unkeyed = call("POST", base + "/api/v1/runs/bulk", plain.dump());
  CHECK(unkeyed.status == 400);
  CHECK(unkeyed.body.find("step key its preview showed") != std::string::npos);
  json keyed = json::array();
  for (const auto& r : previewed["runs"]) keyed.push_back({{"run_id", r["run_id"]}, {"step_key", r["step_key"]}});
  std::sort(keyed.begin(), keyed.end(), [&](const json& a, const json& b) { return a["run_id"] == asking[0] && b["run_id"] != asking[0]; });
  json confirm{{"action", "approve"}, {"filter", {{"agent", "asker"}}}, {"run_ids", keyed}};
  auto acted = call("POST", base + "/api/v1/runs/bulk", confirm.dump());
  INFO(acted.body);
  REQUIRE(acted.status == 200);
  CHECK(acted.parsed()["done"] == 1);
  CHECK(acted.parsed()["failed"] == 1);
  CHECK(acted.parsed()["results"][0]["error"].get<std::string>().find("no longer one the filter chooses") != std::string::npos);
  c.await_status(asking[1], "completed");
  CHECK(c.show(asking[1])["output"].get<std::string>().find("cleaned") != std::string::npos);
  // The CLI with --yes: every slow run cancelled, each reported.
  auto done = c.keel({"bulk", "cancel", "--agent", "slow", "--yes"});
  CHECK(done.exit_code == 0);
  CHECK(done.out.find("3 done, 0 not done") != std::string::npos);
  for (const auto& run : slow) c.await_status(run, "cancelled");
  // Bad input.
  CHECK(c.keel({"bulk", "delete"}).err.find("is not an action") != std::string::npos);
  CHECK(c.keel({"bulk", "retry", "--status", "running"}).err.find("retry does not apply to running runs") != std::string::npos);
  CHECK(call("POST", base + "/api/v1/runs/bulk", R"({"action": "explode"})").status == 400);
  CHECK(call("POST", base + "/api/v1/runs/bulk", R"({"action": "cancel", "filter": {"colour": "red"}})").status == 400);
  CHECK(call("POST", base + "/api/v1/runs/bulk", R"({"action": "cancel", "run_ids": ["../etc"]})").status == 400);
  CHECK(call("POST", base + "/api/v1/runs/bulk", R"({"action": "cancel", "by": "x"})").status == 400);
  CHECK(call("GET", base + "/api/v1/runs/bulk").status == 404);
  auto none = call("POST", base + "/api/v1/runs/bulk", R"({"action": "retry"})");
  CHECK(none.parsed()["count"] == 0);
}

TEST_CASE("fork: a run of another orchestrator, and a run that was taken over, are forked and replayed by whoever serves them",
          "[e2e][integration][cluster][failover][fork]") {
  using namespace keel::testing::e2e;
  failover_cluster c;
  c.start_all();
  auto first = c.invoke_on("o1", "auto", "first", 0);
  c.await_completed(first);
  // Asked through another server than o1's: the request reaches o1, which owns the run; the fork
  // is o1's.
  auto fork_of = [&](const std::string& run, std::size_t server, const std::string& model) {
    wire::value body{{"v", 1}, {"type", "fork"}, {"at_step", 1}, {"model", model}};
    for (auto deadline = steady_ms() + 30'000;;) {
      auto reply = c.clients.at(server)->request("keel.default.runs." + run + ".fork.tester", wire::pack(body), 10'000);
      if (reply)
        if (auto made = wire::decode<wire::invoke_reply>(reply->data)) return made->run_id;
      auto answer = reply ? wire::unpack(reply->data) : result<wire::value>(reply.error());
      INFO("the fork's answer: " << (answer ? answer->dump() : answer.error().message));
      REQUIRE(steady_ms() < deadline);  // asked again while a takeover is under way
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  };
  auto model_calls = [&](const std::string& run) {
    std::vector<std::string> out;
    for (const auto& line : lines_of(read_file(c.dir.file("model-calls.log"))))
      if (line.rfind(run + "/", 0) == 0) out.push_back(line.substr(line.find(' ') + 1));
    return out;
  };
  auto there = fork_of(first, 2, "m-o1");
  CHECK(run_id{there}.owner() == "o1");
  c.await_completed(there);
  CHECK(model_calls(there) == std::vector<std::string>{"2 m-o1"});
  // o1 killed for good: its runs are served by another, from the replicated log; a fork of the
  // completed run is made by that one, from the conversation the log kept.
  c.nodes["o1"].signal(SIGKILL);
  REQUIRE(c.nodes["o1"].wait(5000).ok());
  REQUIRE_EVENTUALLY(60'000, !c.show(first, 1).is_null());
  auto taken = fork_of(first, 1, "m-taken");
  CHECK(run_id{taken}.owner() != "o1");
  c.await_completed(taken);
  CHECK(model_calls(taken) == std::vector<std::string>{"2 m-taken"});
  // The recorded run replays to the same decisions on its new owner.
  auto replayed = c.clients.at(1)->request("keel.default.runs." + first + ".replay", wire::pack(wire::value{{"v", 1}, {"type", "replay"}}), 10'000);
  REQUIRE(replayed.ok());
  auto report = wire::unpack(replayed->data);
  REQUIRE(report.ok());
  INFO(report->dump());
  CHECK(report->value("same", false));
  CHECK(report->value("model_steps", 0) == 2);
  // The fork that o1 made, taken over with the rest, is forked again.
  REQUIRE_EVENTUALLY(30'000, !c.show(there, 2).is_null());
  auto again = fork_of(there, 2, "m-again");
  c.await_completed(again);
  CHECK(model_calls(again) == std::vector<std::string>{"2 m-again"});
}
