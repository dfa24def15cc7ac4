// Runs under load and faults, end to end: each tool call executed once, back-pressure on a worker
// with few slots, a worker killed or paused during calls, the broker restarted, conversations
// larger than a NATS message. Built binaries and real nats-servers only; calls are counted where
// they happen (a file each command appends to, the scripted model's call log).
#include "tests/e2e/cluster.hpp"
#include "tests/e2e/http_client.hpp"

#include "broker/work_queue.hpp"
#include "runtime/wire.hpp"

#include <csignal>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

std::string agent(const std::string& name, const std::string& extra_sandbox = "") {
  return "\n[agents." + name + "]\nscript = \"{dir}/" + name + ".json\"\nscript_log = \"{dir}/" + name +
         "-calls.log\"\nmax_steps = 1000\n[agents." + name + ".sandbox]\nworkspace = \"{dir}/ws\"\nscope = \"agent\"\n"
         "exec_security = \"allow-always\"\nfile_approval = false\n" + extra_sandbox;
}

// Calls per "run/step" in the scripted model's log (each line: "run/step turn").
std::map<std::string, int> model_calls(const std::string& log) {
  std::map<std::string, int> out;
  for (const auto& line : lines_of(log)) out[line.substr(0, line.find(' '))] += 1;
  return out;
}

std::size_t count_events(cluster& c, const std::string& run, const std::string& type) {
  auto events = c.events(run);
  return static_cast<std::size_t>(
    std::count_if(events.begin(), events.end(), [&](const json& e) { return e["event_type"] == type; }));
}

} // namespace

TEST_CASE("tasks: a burst of runs on a worker with 4 slots runs every call once and loses none",
          "[e2e][integration]") {
  // Each call takes 300 ms; 60 calls on 4 slots wait up to 4.5 s in the queue, far past the
  // 1 s after which a worker asks whether a task is still wanted.
  cluster c(agent("burst"), {{"burst.json", R"({"turns": [
      {"text": "working", "tool_calls": [{"name": "exec", "arguments": {"command": "sleep 0.3; echo $KEEL_TASK_ID >> calls.txt"}}]},
      {"text": "done"}
    ]})"}}, cluster_options{false, {"worker.slots = 4"}, {}});
  constexpr int runs = 60;
  std::vector<std::string> ids;
  for (int i = 0; i < runs; ++i) ids.push_back(c.invoke("burst", "go " + std::to_string(i)));
  // The worker announces its slots, and never holds more.
  // (keel nodes collects answers for a while: on a loaded machine, ask again.)
  REQUIRE_EVENTUALLY(10'000, c.keel({"nodes", "--json", "--wait-ms", "300"}).out.find("\"slots\": 4") != std::string::npos);
  for (const auto& id : ids) c.await_status(id, "completed", 60'000);
  auto calls = lines_of(read_file(c.dir().file("ws/calls.txt")));
  CHECK(calls.size() == runs);
  CHECK(std::set<std::string>(calls.begin(), calls.end()).size() == runs);  // one id per call, each once
  for (const auto& id : ids) CHECK(count_events(c, id, "task_retried") == 0);
  // Two model steps per run, each called once.
  for (const auto& [step, n] : model_calls(read_file(c.dir().file("burst-calls.log")))) {
    INFO(step);
    CHECK(n == 1);
  }
}

TEST_CASE("tasks: a worker killed during a call is replaced and the call runs again, one paused for 10 s fails nothing, one stopped past its bound exits cleanly",
          "[e2e][integration][threads]") {
  cluster c(agent("slow") + agent("thinker"),
            {{"slow.json", R"({"turns": [
                {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "(sleep 6; echo late >> late.txt) & echo $KEEL_TASK_ID >> starts.txt; sleep 8"}}]},
                {"text": "done"}
              ]})"},
             {"thinker.json", R"({"turns": [
                {"delay_ms": 3000, "text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "echo $KEEL_TASK_ID >> thought.txt"}}]},
                {"delay_ms": 3000, "text": "done"}
              ]})"}},
            cluster_options{true, {}, {"limits.shutdown_timeout_ms = 3000"}});
  SECTION("stopped while a call outlasts its stop") {
    // SIGTERM gives a call half the stop's bound (1.5 s) to end; this one sleeps 8 s. The worker
    // exits cleanly without it (its thread still running: no static destructors under it), and
    // the call runs again on the next worker.
    auto run = c.invoke("slow", "go");
    REQUIRE_EVENTUALLY(20'000, read_file(c.dir().file("ws/starts.txt")).size() > 0);
    c.signal_worker(SIGTERM);
    auto status = c.wait_worker(10'000);
    REQUIRE(status.ok());
    CHECK(*status == 0);
    CHECK(c.worker_log().find("task threads still running") != std::string::npos);
    c.start_worker();
    c.await_status(run, "completed", 30'000);
    auto starts = lines_of(read_file(c.dir().file("ws/starts.txt")));
    CHECK(starts.size() == 2);
    CHECK(starts.front() == starts.back());
  }
  SECTION("killed") {
    auto run = c.invoke("slow", "go");
    REQUIRE_EVENTUALLY(20'000, read_file(c.dir().file("ws/starts.txt")).size() > 0);
    c.kill_worker();
    c.start_worker();
    // Noticed by its silence (liveness, 4 s by default) and handed to the new worker.
    c.await_status(run, "completed", 30'000);
    auto starts = lines_of(read_file(c.dir().file("ws/starts.txt")));
    CHECK(starts.size() == 2);  // its worker died during the call: run again, with the same id
    CHECK(starts.front() == starts.back());
    // What the dead worker's call left running in the background was killed when the new worker
    // started (where calls have cgroups): only the second call's background job wrote.
    if (std::filesystem::exists("/sys/fs/cgroup/pids/keel") || std::filesystem::exists("/sys/fs/cgroup/keel")) {
      INFO(c.worker_log());
      CHECK(lines_of(read_file(c.dir().file("ws/late.txt"))).size() == 1);
    }
  }
  SECTION("paused") {
    std::vector<std::string> runs;
    for (int i = 0; i < 5; ++i) runs.push_back(c.invoke("thinker", "go"));
    REQUIRE_EVENTUALLY(20'000, lines_of(read_file(c.dir().file("thinker-calls.log"))).size() >= 5);
    c.signal_worker(SIGSTOP);  // a long GC, a VM stall: silent, yet alive
    std::this_thread::sleep_for(std::chrono::seconds(10));  // the fault itself lasts 10 s
    c.signal_worker(SIGCONT);
    for (const auto& run : runs) {
      c.await_status(run, "completed", 60'000);
      CHECK(count_events(c, run, "run_failed") == 0);
    }
    // The paused worker took back what it held; nothing ran twice.
    for (const auto& [step, n] : model_calls(read_file(c.dir().file("thinker-calls.log")))) {
      INFO(step);
      CHECK(n == 1);
    }
    CHECK(lines_of(read_file(c.dir().file("ws/thought.txt"))).size() == 5);
  }
}

TEST_CASE("tasks: results of calls that end while the broker restarts are not lost", "[e2e][integration][threads]") {
  cluster c(agent("steady"), {{"steady.json", R"({"turns": [
      {"delay_ms": 1500, "text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "echo $KEEL_TASK_ID >> ran.txt"}}]},
      {"delay_ms": 500, "text": "done"}
    ]})"}});
  std::vector<std::string> runs;
  for (int i = 0; i < 5; ++i) runs.push_back(c.invoke("steady", "go"));
  REQUIRE_EVENTUALLY(20'000, lines_of(read_file(c.dir().file("steady-calls.log"))).size() >= 5);
  c.nats().kill();  // the model calls end while it is down: their results wait with the workers
  std::this_thread::sleep_for(std::chrono::seconds(2));
  c.nats().restart();
  for (const auto& run : runs) c.await_status(run, "completed", 60'000);
  CHECK(lines_of(read_file(c.dir().file("ws/ran.txt"))).size() == 5);
}

TEST_CASE("conversations: a run whose conversation grows far past one NATS message completes", "[e2e][integration][threads]") {
  // 120 steps that each read a 100 KB file: 12 MB of conversation, on a node whose messages are
  // limited to 128 KB and whose model tasks carry at most 1 KB of new messages: each step's tool
  // result is fetched by the worker from the run's owner, in two pieces.
  std::string turns;
  for (int i = 0; i < 120; ++i)
    turns += R"({"text": "reading", "tool_calls": [{"name": "read", "arguments": {"path": "big.txt"}}]},)";
  turns += R"({"text": "read it all"})";
  cluster c(agent("reader", "output_chars_max = 200000\n"), {{"reader.json", "{\"turns\": [" + turns + "]}"}},
            cluster_options{false, {"limits.message_bytes_max = 131072", "limits.task_inline_bytes_max = 1024"}, {}});
  std::string big;
  while (big.size() < 100'000) big += "line " + std::to_string(big.size()) + " of a large file\n";
  write_file(c.dir().file("ws/big.txt"), big);
  auto run = c.invoke("reader", "read it 120 times");
  // About 20 s here; several times that against the ThreadSanitizer build's node.
  c.await_status(run, "completed", 300'000);
  auto shown = c.show(run);
  INFO(c.node_log());
  CHECK(shown["output"] == "read it all");
  CHECK(shown["steps"] == 121);
  auto events = c.events(run);
  auto reads = std::count_if(events.begin(), events.end(), [](const json& e) {
    return e["event_type"] == "tool_call_completed" && e["data"]["is_error"] == false &&
           e["data"].value("text_preview", std::string{}).find("line 0 of a large file") != std::string::npos &&
           e["data"]["result"].value("truncated", false);
  });
  CHECK(reads == 120);
  CHECK(c.node_log().find("Maximum Payload") == std::string::npos);
  // Every model step called once.
  for (const auto& [step, n] : model_calls(read_file(c.dir().file("reader-calls.log")))) {
    INFO(step);
    CHECK(n == 1);
  }
}

TEST_CASE("tasks: a copy of a task that comes while it runs, or after it finished, gets the first result and never runs it again",
          "[e2e][integration][threads]") {
  cluster c(agent("copied"), {{"copied.json", R"({"turns": [
      {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "sleep 2; echo $KEEL_TASK_ID >> ran.txt"}}]},
      {"text": "done"}
    ]})"}});
  auto run = c.invoke("copied", "go");
  // The tool task as the owner sent it: the same run, step and attempt.
  std::uint64_t step = 0;
  REQUIRE_EVENTUALLY(20'000, [&] {
    for (const auto& e : c.events(run))
      if (e["event_type"] == "tool_call_started") step = e["data"]["task_step"].get<std::uint64_t>();
    return step > 0;
  }());
  wire::task copy;
  copy.run_id = run;
  copy.step = step;
  copy.attempt = 1;
  copy.kind = wire::task_kind::tool;
  copy.agent = "copied";
  copy.reply_to = "keel.default.nodes.n1.results";
  copy.payload = wire::value{{"tool", "exec"}, {"arguments", {{"command", "sleep 2; echo $KEEL_TASK_ID >> ran.txt"}}},
                             {"call_id", "x"}, {"approved", false}, {"allow_rules", wire::value::array()}};
  auto js = broker::jetstream::open(c.connect_client());
  REQUIRE(js.ok());
  broker::subjects names;
  auto subject = names.task("copied", run, step);
  // While the first runs: a second delivery of the same task (another message id, as a store
  // repeated after the broker's duplicate window would be).
  REQUIRE((*js)->publish(subject, wire::encode(copy), "copy-while-running").ok());
  c.await_status(run, "completed", 30'000);
  // After it finished: the worker hands over the result it kept.
  REQUIRE((*js)->publish(subject, wire::encode(copy), "copy-after").ok());
  REQUIRE_EVENTUALLY(20'000, *(*js)->stored_messages(names.tasks_stream()) == 0);  // taken and acknowledged
  auto ran = lines_of(read_file(c.dir().file("ws/ran.txt")));
  CHECK(ran.size() == 1);
  CHECK(c.show(run)["output"] == "done");
}

TEST_CASE("tasks: a burst of runs through three crashes of the node completes, only calls in flight at a crash run twice",
          "[e2e][integration]") {
  cluster c(agent("crashy"), {{"crashy.json", R"({"turns": [
      {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "sleep 0.5; echo $KEEL_TASK_ID >> calls.txt"}}]},
      {"text": "done"}
    ]})"}}, cluster_options{false, {"worker.slots = 8"}, {}});
  constexpr int runs = 100;
  std::vector<std::string> ids;
  for (int i = 0; i < runs; ++i) ids.push_back(c.invoke("crashy", "go"));
  for (int crash = 0; crash < 3; ++crash) {
    auto before = lines_of(read_file(c.dir().file("ws/calls.txt"))).size();
    // Ten more calls, or all of them when the runs went faster than they were invoked (a slow
    // machine, a sanitizer build): the crash then comes with nothing in flight.
    auto progressed = [&] {
      return lines_of(read_file(c.dir().file("ws/calls.txt"))).size() >= std::min<std::size_t>(before + 10, runs);
    };
    auto deadline = steady_ms() + 60'000;
    while (!progressed() && steady_ms() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!progressed()) {
      auto log = c.node_log();
      FAIL("after crash " << crash << " no command ran for 60 s; the node's log ends:\n"
                          << log.substr(log.size() > 6000 ? log.size() - 6000 : 0));
    }
    c.kill_node();
    c.start_node();
  }
  for (const auto& id : ids) c.await_status(id, "completed", 120'000);
  auto calls = lines_of(read_file(c.dir().file("ws/calls.txt")));
  std::map<std::string, int> per_call;
  for (const auto& call : calls) per_call[call] += 1;
  CHECK(per_call.size() == runs);
  int repeated = 0;
  for (const auto& [call, n] : per_call) repeated += n - 1;
  // At most the calls in flight (8 slots) at each of the three crashes.
  CHECK(repeated <= 3 * 8);
  WARN("calls run twice (their worker died during them): " << repeated);
}

// Lanes (node.lanes): a node's steps go over several connections and store writers at once. A run
// keeps to one lane, so its events still arrive in order; results are spread by the broker over
// every lane's connection. Counted at the broker (connz) and by a subscriber of every event.
TEST_CASE("lanes: 150 runs at once over 6 lanes per role keep each run's events in order, each call once, every lane used",
          "[e2e][integration]") {
  cluster c(agent("laned"), {{"laned.json", R"({"turns": [
      {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "echo $KEEL_TASK_ID >> calls.txt"}}]},
      {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "echo $KEEL_TASK_ID >> calls.txt"}}]},
      {"text": "done"}
    ]})"}}, cluster_options{true, {"node.lanes = 6"}, {"node.lanes = 6", "worker.slots = 64"}});
  auto watcher = c.connect_client();
  std::mutex mutex;
  std::map<std::string, std::vector<std::uint64_t>> seen;  // run -> seqs as they arrived
  auto sub = watcher->subscribe("keel.default.runs.*.events", "", [&](broker::message&& m) {
    auto e = wire::decode<wire::event>(m.data);
    std::lock_guard lock{mutex};
    seen[e ? e->run_id : "undecodable"].push_back(e ? e->seq : 0);
  });
  REQUIRE(sub.ok());
  REQUIRE(watcher->flush(2000).ok());
  constexpr int runs = 150;
  std::vector<command_output> made(runs);
  std::vector<std::thread> invokers;
  for (int t = 0; t < 3; ++t)
    invokers.emplace_back([&, t] {  // no assertion here: Catch's are for the test's thread
      for (int i = t; i < runs; i += 3) made[static_cast<std::size_t>(i)] = c.keel({"invoke", "laned", "go " + std::to_string(i)});
    });
  for (auto& t : invokers) t.join();
  std::vector<std::string> ids;
  for (const auto& m : made) {
    INFO(m.out << m.err);
    REQUIRE(m.exit_code == 0);
    ids.push_back(m.out.substr(0, m.out.find('\n')));
  }
  for (const auto& id : ids) c.await_status(id, "completed", 60'000);
  // Every event of every run, once, in the order of its seq, as it arrived live.
  for (const auto& id : ids) {
    auto last = c.show(id)["last_event_seq"].get<std::uint64_t>();
    REQUIRE_EVENTUALLY(5000, [&] { std::lock_guard lock{mutex}; return seen[id].size() >= last; }());
    std::lock_guard lock{mutex};
    INFO(id);
    const auto& seqs = seen[id];
    REQUIRE(seqs.size() == last);
    for (std::size_t i = 0; i < seqs.size(); ++i) CHECK(seqs[i] == i + 1);
  }
  CHECK(seen.count("undecodable") == 0);
  auto calls = lines_of(read_file(c.dir().file("ws/calls.txt")));
  CHECK(calls.size() == 2 * runs);
  CHECK(std::set<std::string>(calls.begin(), calls.end()).size() == 2 * runs);
  for (const auto& [step, n] : model_calls(read_file(c.dir().file("laned-calls.log")))) {
    INFO(step);
    CHECK(n == 1);
  }
  // At the broker: the orchestrator's 6 lanes each took results (messages in) and published
  // (messages out); so did the worker's 6.
  auto connz = call("GET", c.nats().monitor_url() + "/connz?limit=1000").parsed();
  REQUIRE(connz.is_object());
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> by_name;  // name -> (in, out) at the server
  for (const auto& conn : connz["connections"])
    by_name[conn.value("name", "")] = {conn.value("in_msgs", std::int64_t{0}), conn.value("out_msgs", std::int64_t{0})};
  // (A node with one role opens its first lane as its own connection, "keel-node <id>".)
  for (const std::string& role : {std::string("keel-node n1"), std::string("keel-node w1 worker")}) {
    for (int lane = 0; lane < 6; ++lane) {
      auto name = lane > 0 ? role + " lane " + std::to_string(lane) : role == "keel-node n1" ? role : "keel-node w1";
      INFO(name);
      REQUIRE(by_name.count(name) == 1);
      // The server's in_msgs are what the client published; out_msgs what it delivered to it.
      CHECK(by_name[name].first >= 10);
      CHECK(by_name[name].second >= 10);
    }
  }
}

// A task the broker confirmed and then lost (a stream replica that becomes leader without it, as
// nats-server does after kills): nothing would ever bring its result, and its run would wait for
// good. The run checks a task in flight for a while is still in the work queue (or on a worker),
// and sends the next attempt when it is not. Here the task is purged from the stream before any
// worker could take it; the worker started afterwards gets the next attempt, and every step runs
// once.
TEST_CASE("tasks: a task the broker confirmed and then lost is sent again, and its run completes",
          "[e2e][integration]") {
  cluster c(agent("lost"), {{"lost.json", R"({"turns": [
      {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "echo $KEEL_TASK_ID >> ran.txt"}}]},
      {"text": "done"}
    ]})"}},
            [] {
              cluster_options o;
              o.separate_worker = true;
              return o;
            }());
  c.kill_worker();
  REQUIRE(c.wait_worker(10'000).ok());
  auto run = c.invoke("lost", "go");
  auto client = c.connect_client();
  auto js = broker::jetstream::open(client);
  REQUIRE(js.ok());
  broker::subjects names;
  auto subject = names.task("lost", run, 1);
  REQUIRE_EVENTUALLY(20'000, [&] {
    auto held = (*js)->last_message(names.tasks_stream(), subject);
    return held && *held;
  }());
  auto purged = client->request("$JS.API.STREAM.PURGE." + names.tasks_stream(), json{{"filter", subject}}.dump(), 5000);
  REQUIRE(purged.ok());
  INFO(std::string(purged->data));
  REQUIRE(json::parse(purged->data).value("purged", 0) == 1);
  c.start_worker();
  // Within three worker liveness periods (10 s at least) of its sending, the run sees its task
  // gone and no result, and sends attempt 2.
  c.await_status(run, "completed", 60'000);
  CHECK(c.node_log().find("the broker lost its task; sent again") != std::string::npos);
  CHECK(count_events(c, run, "task_retried") == 1);
  CHECK(lines_of(read_file(c.dir().file("ws/ran.txt"))).size() == 1);
  for (const auto& [step, n] : model_calls(read_file(c.dir().file("lost-calls.log")))) {
    INFO(step);
    CHECK(n == 1);
  }
  CHECK(c.show(run)["output"] == "done");
}
