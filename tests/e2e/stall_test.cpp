// A broker that does not answer one kind of question holds only what needs that answer. The
// broker's own permissions make one question go unanswered (nats-server drops a publish its
// user may not make, and the request waits its whole timeout), as a paused stream leader or a
// contended bucket would: the idempotency keys' bucket, or the work queue's answer to whether it
// still holds a task. An actor's thread never waits on the broker, so the node's other runs and
// invokes go on meanwhile; each held invoke or run goes on once the answer (or its timeout) comes.
#include "tests/e2e/authorized_broker.hpp"
#include "runtime/error_reply.hpp"
#include "runtime/wire.hpp"
#include "tests/support/test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace keel;
using namespace keel::testing;

namespace {

// The orchestrator's user may not publish on these: its requests there go unanswered.
void deny_orchestrator(authorized_broker& b, const std::vector<std::string>& subjects) {
  auto conf = read_file(b.dir.file("creds/nats-auth.conf"));
  auto user = conf.find("user: \"orchestrator\"");
  REQUIRE(user != std::string::npos);
  auto end_of_allow = conf.find("] }, subscribe", user);
  REQUIRE(end_of_allow != std::string::npos);
  std::string deny = "], deny: [";
  for (std::size_t i = 0; i < subjects.size(); ++i) deny += (i ? ", \"" : "\"") + subjects[i] + "\"";
  conf.replace(end_of_allow, 1, deny + "]");
  write_file(b.dir.file("creds/nats-auth.conf"), conf);
  b.restart();
}

// One node with every role but the gateway, on the orchestrator's user. `quick` answers at once;
// `held` waits for the file `go` before its first answer.
child_process start_node(authorized_broker& b, std::int64_t request_timeout_ms) {
  write_file(b.dir.file("quick.json"), R"({"turns": [{"text": "Done."}]})");
  write_file(b.dir.file("held.json"), R"({"turns": [{"wait_for_file": "go", "text": "Done."}]})");
  std::string agents;
  for (const std::string name : {"quick", "held"})
    agents += "[agents." + name + "]\nscript = \"" + b.dir.file(name + ".json") + "\"\nscript_log = \"" +
              b.dir.file(name + "-calls.log") + "\"\n[agents." + name + ".sandbox]\nworkspace = \"" + b.dir.file("ws") + "\"\n";
  write_file(b.dir.file("node.toml"), "[node]\nname = \"n1\"\nroles = [\"orchestrator\", \"worker\"]\ndata_dir = \"" +
                                        b.dir.file("data") + "\"\n[nats]\nservers = [\"" + b.url + "\"]\ncredentials_file = \"" +
                                        b.creds("orchestrator") + "\"\nrequest_timeout_ms = " +
                                        std::to_string(request_timeout_ms) + "\n" + agents);
  return start_command({KEEL_NODE_BINARY, "--config", b.dir.file("node.toml")}, b.dir, "node");
}

std::string run_of(const wire::value& answer) {
  return answer.is_object() && answer.contains("run_id") && answer["run_id"].is_string() ? answer["run_id"].get<std::string>() : "";
}

// Invokes sent as ana, their answers collected in the order they come.
struct invoker {
  std::shared_ptr<broker::connection> ana;
  std::unique_ptr<broker::subscription> answers;
  std::mutex mutex;
  std::vector<std::pair<std::string, wire::value>> got;  // (name, answer)

  explicit invoker(authorized_broker& b) {
    auto connected = b.as("ana");
    REQUIRE(connected.ok());
    ana = *connected;
    auto sub = ana->subscribe("_INBOX.ana.stall.>", "", [this](broker::message&& m) {
      auto v = wire::unpack(m.data);
      std::lock_guard lock{mutex};
      got.emplace_back(m.subject.substr(std::string("_INBOX.ana.stall.").size()), v ? *v : wire::value{});
    });
    REQUIRE(sub.ok());
    answers = std::move(*sub);
    REQUIRE(ana->flush(2000).ok());
  }
  void invoke(const std::string& name, const std::string& agent, const std::string& key = {}) {
    REQUIRE(ana->publish("keel.default.invoke.ana", "_INBOX.ana.stall." + name,
                         wire::encode(wire::invoke_request{agent, "go", key}))
              .ok());
  }
  std::size_t count() {
    std::lock_guard lock{mutex};
    return got.size();
  }
  std::vector<std::pair<std::string, wire::value>> all() {
    std::lock_guard lock{mutex};
    return got;
  }
  // The run the first answer naming one named; empty: none yet.
  std::string first_run() {
    for (const auto& [name, answer] : all())
      if (auto run = run_of(answer); !run.empty()) return run;
    return "";
  }
  // Invokes again, as a client told "ask again" does, until an answer names a run: that run.
  std::string invoke_until_made(const std::string& name, const std::string& agent, const std::string& key,
                                std::int64_t pause_ms) {
    std::string made;
    REQUIRE_EVENTUALLY(30'000, [&] {
      invoke(name + "-" + std::to_string(count()), agent, key);
      REQUIRE(ana->flush(2000).ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
      return !(made = first_run()).empty();
    }());
    return made;
  }
};

std::string status_of(authorized_broker& b, const std::string& run) {
  auto ana = b.as("ana");
  if (!ana.ok()) return "";
  auto reply = (*ana)->request("keel.default.runs." + run + ".get", wire::pack(wire::value{{"v", 1}, {"type", "get_run"}}), 5000);
  if (!reply.ok()) return "";
  auto v = wire::unpack(reply->data);
  if (!v || !v->is_object() || !v->contains("run") || !(*v)["run"].is_object()) return "";
  return (*v)["run"].value("status", std::string{});
}

} // namespace

TEST_CASE("stalls: invokes whose idempotency keys the cluster's bucket does not answer hold no other invoke, and are "
          "answered once it does",
          "[e2e][integration]") {
  authorized_broker b;
  deny_orchestrator(b, {"$KV.KEEL_KEYS_keel_default.>"});
  auto node = start_node(b, 3000);
  invoker client(b);
  REQUIRE_EVENTUALLY(20'000, run_command({KEEL_BINARY, "agents"}, 10'000,
                                         {"KEEL_HOME=" + b.dir.file("home"), "KEEL_NATS_URL=" + b.url,
                                          "KEEL_NATS_CREDENTIALS=" + b.creds("ana")})
                                 .out.find("quick") != std::string::npos);
  // Four keys (two invokes of one of them), then an invoke without a key, in this order on one
  // connection: the node takes them in this order.
  for (const std::string k : {"k1", "k2", "k3", "k4"}) client.invoke(k, "quick", "order-" + k);
  client.invoke("k1-again", "quick", "order-k1");
  client.invoke("plain", "quick");
  REQUIRE(client.ana->flush(2000).ok());
  REQUIRE_EVENTUALLY(30'000, client.count() == 6);
  auto answers = client.all();
  INFO(read_file(b.dir.file("node.err")));
  // The invoke without a key was answered first, with its run; every keyed one after its bucket
  // request's timeout, with a clear "ask again" and no run made.
  REQUIRE(answers[0].first == "plain");
  auto plain = run_of(answers[0].second);
  CHECK_FALSE(plain.empty());
  for (std::size_t i = 1; i < answers.size(); ++i) {
    INFO(answers[i].first << ": " << answers[i].second.dump());
    CHECK(run_of(answers[i].second).empty());
    CHECK(error_code_of(answers[i].second) == "unavailable");
    CHECK(error_message_of(answers[i].second, "").find("the idempotency key cannot be checked across the cluster") !=
          std::string::npos);
  }
  REQUIRE_EVENTUALLY(30'000, status_of(b, plain) == "completed");

  // The bucket answers again: the same keys make their runs, a repeat names the same run.
  auto conf = read_file(b.dir.file("creds/nats-auth.conf"));
  auto deny = conf.find(", deny: [");
  REQUIRE(deny != std::string::npos);
  conf.erase(deny, conf.find(']', deny) - deny + 1);
  write_file(b.dir.file("creds/nats-auth.conf"), conf);
  b.restart();
  invoker again(b);
  auto made = again.invoke_until_made("k1", "quick", "order-k1", 500);
  again.invoke("k1-last", "quick", "order-k1");
  REQUIRE(again.ana->flush(2000).ok());
  REQUIRE_EVENTUALLY(10'000, run_of(again.all().back().second) == made);
  REQUIRE_EVENTUALLY(30'000, status_of(b, made) == "completed");
}

TEST_CASE("stalls: runs loaded with a step in flight while the work queue does not say whether it holds the task hold "
          "no other run, and go on",
          "[e2e][integration]") {
  authorized_broker b;
  deny_orchestrator(b, {"$JS.API.STREAM.MSG.GET.KEEL_TASKS_keel_default", "$JS.API.DIRECT.GET.KEEL_TASKS_keel_default",
                        "$JS.API.DIRECT.GET.KEEL_TASKS_keel_default.>"});
  auto node = start_node(b, 2000);
  std::vector<std::string> env{"KEEL_HOME=" + b.dir.file("home"), "KEEL_NATS_URL=" + b.url,
                               "KEEL_NATS_CREDENTIALS=" + b.creds("ana")};
  REQUIRE_EVENTUALLY(20'000, run_command({KEEL_BINARY, "agents"}, 10'000, env).out.find("held") != std::string::npos);
  // Runs whose model steps are in flight (the model waits for `go`) when the node is killed: more
  // than the node has actor threads (one per CPU it may use, at least two), so that questions
  // waiting on those threads would hold every one.
  const std::size_t count = std::max<std::size_t>(4, std::thread::hardware_concurrency() + 2);
  std::vector<std::string> held;
  for (std::size_t i = 0; i < count; ++i) {
    auto made = run_command({KEEL_BINARY, "invoke", "held", "go"}, 20'000, env);
    INFO(made.out << made.err);
    REQUIRE(made.exit_code == 0);
    held.push_back(made.out.substr(0, made.out.find_last_not_of(" \n") + 1));
  }
  auto lines = [](const std::string& text) { return std::count(text.begin(), text.end(), '\n'); };
  REQUIRE_EVENTUALLY(30'000, lines(read_file(b.dir.file("held-calls.log"))) >= static_cast<std::ptrdiff_t>(count));
  node.signal(SIGKILL);
  REQUIRE(node.wait(10'000).ok());
  // The node's log is appended to: what the second start says comes after this.
  const auto before = read_file(b.dir.file("node.err")).size();
  node = start_node(b, 2000);
  const std::string unanswered = "unless its result is here, it is sent again";  // a loaded run's, not an audit's
  auto since_start = [&] { return read_file(b.dir.file("node.err")).substr(before); };
  // Loaded again, each asks the work queue whether it holds its step's task, and
  // waits for the answer (here: the request's timeout). Meanwhile a new run is made and answered.
  invoker client(b);
  auto plain = client.invoke_until_made("plain", "quick", "", 200);
  auto log = since_start();
  INFO(log);
  // None of the loaded runs had its answer yet when the new run was answered.
  CHECK(log.find(unanswered) == std::string::npos);
  // Each then goes on: its step sent again (the same attempt: a copy the queue still holds is
  // the same message), and once the model answers, every run completes.
  REQUIRE_EVENTUALLY(30'000, [&] {
    auto now = since_start();
    std::size_t told = 0;
    for (auto at = now.find(unanswered); at != std::string::npos; at = now.find(unanswered, at + 1)) ++told;
    return told >= held.size();
  }());
  write_file(b.dir.file("go"), "");
  REQUIRE_EVENTUALLY(60'000, status_of(b, plain) == "completed");
  for (const auto& run : held) REQUIRE_EVENTUALLY(60'000, status_of(b, run) == "completed");
}
