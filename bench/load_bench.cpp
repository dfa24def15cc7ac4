// keel under load and at length, in one run on one machine:
//  - approvals: 1,000 runs at once, each with one 1-second command that a client approves, on one
//    worker with 64 slots; every execution counted (each command appends its call id to a file).
//  - in flight: 10,000 runs at once, each waiting on a 2-second model call; the orchestrator's
//    resident memory per run in flight, model steps per second, and the p99 of each run's time
//    beyond its model call.
//  - length: one run of 1,000 steps reading a 20 KB file each (a 20 MB conversation), through a
//    real node; then the same run in-process against a real store, for the bytes written to disk
//    and sent to a worker at steps 10, 100 and 1,000.
//  - finished: the disk used by 10,000 finished runs.
// Prints a JSON line per figure; bench/load.sh turns them into a section of docs/BENCHMARKS.md.
#include "actors/run_machine.hpp"
#include "bench/bench_support.hpp"
#include "llm/conversation.hpp"
#include "runtime/child_process.hpp"
#include "runtime/clock.hpp"
#include "runtime/run_store.hpp"

#include <CLI/CLI.hpp>

#include <csignal>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

using namespace keel;
using namespace keel::bench;
namespace fs = std::filesystem;

namespace {

struct cluster {
  std::string dir;
  std::string url;
  child_process nats_server, orchestrator, worker;
  std::shared_ptr<broker::connection> client;

  void start_nats() {
    auto port = must(free_loopback_port(), "port");
    url = "nats://127.0.0.1:" + std::to_string(port);
    nats_server = must(child_process::start({{"/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", std::to_string(port), "-js",
                                              "-sd", dir + "/jetstream"}, dir + "/nats.log", dir + "/nats.log"}),
                       "nats-server");
    for (int i = 0; i < 500; ++i) {
      broker::connection_options o;
      o.servers = {url};
      o.connect_timeout_ms = 100;
      if (auto c = broker::connection::connect(o)) {
        client = *c;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    die("nats-server did not start");
  }
  child_process start_node(const std::string& node_binary, const std::string& name, const std::string& roles,
                           const std::string& extra, const std::string& agents) {
    auto path = dir + "/" + name + ".toml";
    std::ofstream(path) << "[node]\nname = \"" << name << "\"\nroles = [" << roles << "]\ndata_dir = \"" << dir
                        << "/data\"\n[nats]\nservers = [\"" << url << "\"]\n[durability]\nfsync = true\n"
                        << "[log]\nlevel = \"warn\"\n" << extra << agents;
    return must(child_process::start({{node_binary, "--config", path}, dir + "/" + name + ".log", dir + "/" + name + ".log"}),
                "keel-node " + name);
  }
  void await_invokable(const std::string& agent) {
    for (int i = 0; i < 400; ++i) {
      if (worker.pid() > 0 && !worker.running()) die("the worker stopped: see " + dir + "/work.log");
      auto r = client->request("keel.default.invoke.tester", wire::encode(wire::invoke_request{agent, "warm", "", ""}), 1000);
      if (r) {
        // The warm-up run ends once a worker took it: then both roles are up.
        auto id = wire::decode<wire::invoke_reply>(r->data);
        if (!id) die("invoke: " + id.error().message);
        auto wait = wire::pack(value{{"v", 1}, {"type", "wait"}});
        if (!client->request("keel.default.runs." + id->run_id + ".wait", wait, 60'000)) die("the warm-up run did not end");
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    die("the node does not take invokes");
  }
  ~cluster() {
    worker.stop(3000);
    orchestrator.stop(3000);
    nats_server.stop(2000);
  }
};

std::string agent_toml(const std::string& name, const std::string& dir, const std::string& sandbox_extra) {
  return "[agents." + name + "]\nscript = \"" + dir + "/" + name + ".json\"\nmax_steps = 2000\n[agents." + name +
         ".sandbox]\nworkspace = \"" + dir + "/ws\"\nscope = \"agent\"\n" + sandbox_extra;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

void approvals(const std::string& node_binary, std::size_t runs, std::size_t slots) {
  cluster c;
  c.dir = fs::temp_directory_path() / ("keel-load-" + std::to_string(::getpid()) + "-a");
  fs::create_directories(c.dir + "/ws");
  std::ofstream(c.dir + "/approver.json") << R"({"turns": [
    {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "sleep 1; echo $KEEL_TASK_ID >> calls.txt"}}]},
    {"text": "done"}]})";
  c.start_nats();
  auto agents = agent_toml("approver", c.dir, "tool_timeout_ms = 60000\n");
  c.orchestrator = c.start_node(node_binary, "orch", "\"orchestrator\"", "", agents);
  c.worker = c.start_node(node_binary, "work", "\"worker\"", "[worker]\nslots = " + std::to_string(slots) + "\n", agents);
  // Approving client: answers every suspension as it comes (the warm-up run's too).
  auto answering = connect(c.url);
  std::atomic<std::size_t> approved{0};
  auto sub = must(answering->subscribe("keel.default.runs.*.events", "", [&](broker::message&& m) {
    if (m.data.find("suspend") == std::string::npos) return;
    auto e = wire::decode<wire::event>(m.data);
    if (!e || e->event_type != "suspend") return;
    wire::resume_request r{e->run_id, e->data.value("step_key", std::string{}), true, "", false, "", "", ""};
    (void)answering->publish("keel.default.runs." + e->run_id + ".resume.tester", answering->new_inbox(), wire::encode(r));
    ++approved;
  }), "subscribe");
  (void)answering->flush(1000);
  c.await_invokable("approver");
  watcher w(*c.client);
  auto t0 = now_us();
  auto started = invoke_many(*c.client, "approver", runs, 200);
  auto all_done = [&](watcher& x) {
    for (const auto& [run, at] : started)
      if (!x.completed_at.count(run)) return false;
    return true;
  };
  if (!w.wait(all_done, 600'000)) die("runs did not complete");
  double wall_s = (now_us() - t0) / 1e6;
  auto calls = lines_of(c.dir + "/ws/calls.txt");
  std::set<std::string> unique(calls.begin(), calls.end());
  report("approvals.runs", static_cast<double>(runs), "runs");
  report("approvals.calls", static_cast<double>(runs + 1), "calls");  // with the run that showed the node ready
  report("approvals.slots", static_cast<double>(slots), "slots");
  report("approvals.executions", static_cast<double>(calls.size()), "commands");
  report("approvals.distinct_calls", static_cast<double>(unique.size()), "calls");
  report("approvals.approved", static_cast<double>(approved.load()), "answers");
  report("approvals.wall_s", wall_s, "s");
  report("approvals.lower_bound_s", static_cast<double>(runs) / static_cast<double>(slots) * 1.0, "s");
}

void in_flight(const std::string& node_binary, std::size_t runs, std::size_t slots) {
  cluster c;
  c.dir = fs::temp_directory_path() / ("keel-load-" + std::to_string(::getpid()) + "-b");
  fs::create_directories(c.dir + "/ws");
  std::ofstream(c.dir + "/waiter.json") << R"({"turns": [{"delay_ms": 2000, "text": "done"}]})";
  c.start_nats();
  auto agents = agent_toml("waiter", c.dir, "");
  c.orchestrator = c.start_node(node_binary, "orch", "\"orchestrator\"", "", agents);
  c.worker = c.start_node(node_binary, "work", "\"worker\"", "[worker]\nslots = " + std::to_string(slots) + "\n", agents);
  c.await_invokable("waiter");
  std::this_thread::sleep_for(std::chrono::seconds(3));  // the warm-up run ends
  auto rss_before = rss_kb(c.orchestrator.pid());
  std::atomic<bool> sampling{true};
  std::atomic<std::int64_t> rss_peak{rss_before};
  std::thread sampler([&] {
    while (sampling) {
      rss_peak = std::max<std::int64_t>(rss_peak, rss_kb(c.orchestrator.pid()));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  watcher w(*c.client);
  std::map<std::string, double> answered_at;
  auto t0 = now_us();
  // Invokes answered: each run is on disk and its model task queued.
  std::mutex mutex;
  auto started = invoke_many(*c.client, "waiter", runs, 1000);
  auto all_invoked = now_us();
  auto all_done = [&](watcher& x) {
    for (const auto& [run, at] : started)
      if (!x.completed_at.count(run)) return false;
    return true;
  };
  if (!w.wait(all_done, 900'000)) die("runs did not complete");
  auto t1 = now_us();
  sampling = false;
  sampler.join();
  std::vector<double> overhead_ms;
  for (const auto& [run, at] : started) {
    auto done = w.completed_at.find(run);
    if (done == w.completed_at.end() || at <= 0) continue;
    overhead_ms.push_back((done->second - at) / 1000.0 - 2000.0);
  }
  report("in_flight.runs", static_cast<double>(runs), "runs");
  report("in_flight.worker_slots", static_cast<double>(slots), "slots");
  report("in_flight.invoke_s", (all_invoked - t0) / 1e6, "s");
  report("in_flight.wall_s", (t1 - t0) / 1e6, "s");
  report("in_flight.model_steps_per_second", static_cast<double>(runs) / ((t1 - t0) / 1e6), "steps/s");
  report("in_flight.rss_before_mb", static_cast<double>(rss_before) / 1024.0, "MB");
  report("in_flight.rss_peak_mb", static_cast<double>(rss_peak.load()) / 1024.0, "MB");
  report("in_flight.rss_per_run_kb", static_cast<double>(rss_peak.load() - rss_before) / static_cast<double>(runs), "KB");
  report("in_flight.worker_rss_mb", static_cast<double>(rss_kb(c.worker.pid())) / 1024.0, "MB");
  report("in_flight.overhead_p50_ms", percentile(overhead_ms, 0.50), "ms");
  report("in_flight.overhead_p99_ms", percentile(overhead_ms, 0.99), "ms");
}

// A worker killed during a 30-second command, a new one started at once: how long until the
// command starts again on it (the broker notices the silence after worker.liveness_ms).
void liveness(const std::string& node_binary) {
  cluster c;
  c.dir = fs::temp_directory_path() / ("keel-load-" + std::to_string(::getpid()) + "-f");
  fs::create_directories(c.dir + "/ws");
  std::ofstream(c.dir + "/sleeper.json") << R"({"turns": [
    {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "echo $KEEL_TASK_ID >> starts.txt; sleep 30"}}]},
    {"text": "done"}]})";
  c.start_nats();
  auto agents = agent_toml("sleeper", c.dir, "exec_security = \"allow-always\"\ntool_timeout_ms = 60000\n");
  c.orchestrator = c.start_node(node_binary, "orch", "\"orchestrator\"", "", agents);
  c.worker = c.start_node(node_binary, "work", "\"worker\"", "", agents);
  // Ready: the orchestrator takes invokes and the worker has announced itself.
  for (int i = 0; i < 400 && !c.client->request("keel.default.runs.list", wire::pack(value{{"v", 1}, {"type", "list_runs"}}), 200); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  must(c.client->request("keel.default.invoke.tester", wire::encode(wire::invoke_request{"sleeper", "go", "", ""}), 5000), "invoke");
  auto starts = [&] { return lines_of(c.dir + "/ws/starts.txt").size(); };
  for (int i = 0; i < 600 && starts() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (starts() < 1) die("the command did not start");
  c.worker.signal(SIGKILL);
  (void)c.worker.wait(5000);
  auto killed = now_us();
  c.worker = c.start_node(node_binary, "work2", "\"worker\"", "", agents);
  for (int i = 0; i < 6000 && starts() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (starts() < 2) die("the command did not start again");
  report("liveness.restarted_after_s", (now_us() - killed) / 1e6, "s");
}

std::string file_of(std::size_t bytes) {
  std::string out;
  while (out.size() < bytes) out += "line " + std::to_string(out.size()) + " of the file being read again\n";
  out.resize(bytes);
  return out;
}

void long_run(const std::string& node_binary, std::size_t steps, std::size_t file_bytes) {
  cluster c;
  c.dir = fs::temp_directory_path() / ("keel-load-" + std::to_string(::getpid()) + "-c");
  fs::create_directories(c.dir + "/ws");
  std::ofstream(c.dir + "/ws/file.txt") << file_of(file_bytes);
  value turns = value::array();
  for (std::size_t i = 0; i < steps; ++i)
    turns.push_back({{"text", ""}, {"tool_calls", {{{"name", "read"}, {"arguments", {{"path", "file.txt"}}}}}}});
  turns.push_back({{"text", "read"}});
  std::ofstream(c.dir + "/reader.json") << value{{"turns", turns}}.dump();
  c.start_nats();
  auto agents = agent_toml("reader", c.dir, "file_approval = false\n");
  c.orchestrator = c.start_node(node_binary, "node", "\"orchestrator\", \"worker\"", "", agents);
  c.await_invokable("reader");
  watcher w(*c.client);
  auto t0 = now_us();
  auto reply = must(c.client->request("keel.default.invoke.tester", wire::encode(wire::invoke_request{"reader", "go", "", ""}), 5000), "invoke");
  auto run = must(wire::decode<wire::invoke_reply>(reply.data), "invoke reply").run_id;
  if (!w.wait([&](watcher& x) { return x.completed_at.count(run) > 0; }, 1'800'000)) die("the long run did not end");
  auto shown = must(c.client->request("keel.default.runs." + run + ".get", wire::pack(value{{"v", 1}, {"type", "get_run"}}), 5000), "get");
  auto summary = must(wire::unpack(shown.data), "get reply");
  report("long.steps", static_cast<double>(summary["run"].value("steps", 0)), "model steps");
  report("long.completed", summary["run"].value("status", std::string{}) == "completed" ? 1.0 : 0.0, "bool");
  report("long.conversation_mb", static_cast<double>(steps * file_bytes) / 1e6, "MB");
  report("long.wall_s", (now_us() - t0) / 1e6, "s");
  std::ifstream log(c.dir + "/node.log");
  std::string text((std::istreambuf_iterator<char>(log)), {});
  report("long.payload_errors", text.find("Maximum Payload") == std::string::npos ? 0.0 : 1.0, "count");
}

// One run driven in-process against a real store (fsync on): what each step writes and what its
// tasks weigh, as the conversation grows.
void storage(std::size_t steps, std::size_t file_bytes) {
  auto dir = fs::temp_directory_path() / ("keel-load-" + std::to_string(::getpid()) + "-d");
  auto store = must(store::run_store::open({dir.string(), true}), "open store");
  config::agent_config agent;
  agent.id = "reader";
  agent.tools = {"read"};
  agent.max_steps = static_cast<std::int64_t>(steps) + 10;
  actors::run_context context;
  context.results_subject = "results";
  actors::run_machine machine(actors::run_machine::create("r-storage", wire::invoke_request{"reader", "read", "", ""}, 1),
                              agent, context);
  auto apply = [&](actors::effects e) {
    if (e.changed && !store->apply(e.transition)) die("write");
    return e;
  };
  auto e = apply(machine.start());
  auto content = file_of(file_bytes);
  std::map<std::size_t, std::pair<double, double>> at;  // step -> (bytes written, bytes of its tasks)
  for (std::size_t step = 1; step <= steps; ++step) {
    auto before = store->bytes_written();
    std::size_t sent = 0;
    for (const auto& t : e.tasks) sent += wire::encode(t).size();
    value answer{{"role", "assistant"}, {"text", ""}, {"tool_calls", value::array({{{"id", "c" + std::to_string(step)}, {"name", "read"}, {"arguments", {{"path", "file.txt"}}}}})},
                 {"usage", {{"input_tokens", 10}, {"output_tokens", 5}}}, {"stop_reason", "tool_use"}};
    auto llm_task = e.tasks.at(0);
    wire::task_result llm{"r-storage", llm_task.step, llm_task.attempt, "w", true, answer, {}};
    sent += wire::encode(llm).size();
    e = apply(machine.on_task_result(llm));
    auto tool_task = e.tasks.at(0);
    sent += wire::encode(tool_task).size();
    wire::task_result tool{"r-storage", tool_task.step, tool_task.attempt, "w", true,
                           value{{"status", "done"}, {"result", {{"content", content}}}}, {}};
    sent += wire::encode(tool).size();
    e = apply(machine.on_task_result(tool));
    if (step == 10 || step == 100 || step == steps)
      at[step] = {static_cast<double>(store->bytes_written() - before), static_cast<double>(sent)};
  }
  for (const auto& [step, figures] : at) {
    report("storage.step_" + std::to_string(step) + ".bytes_written", figures.first, "bytes");
    report("storage.step_" + std::to_string(step) + ".bytes_sent", figures.second, "bytes");
  }
  report("storage.conversation_mb", static_cast<double>(machine.state().messages_count / 2 * file_bytes) / 1e6, "MB");
  fs::remove_all(dir);
}

std::uintmax_t disk_bytes(const fs::path& dir) {
  std::uintmax_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) total += entry.file_size();
  return total;
}

// 10,000 runs of three model steps and two tool calls (2 KB results), to their end; the store
// is then compacted and measured.
void finished(std::size_t runs) {
  auto dir = fs::temp_directory_path() / ("keel-load-" + std::to_string(::getpid()) + "-e");
  auto store = must(store::run_store::open({dir.string(), false}), "open store");
  config::agent_config agent;
  agent.id = "coder";
  agent.tools = {"exec"};
  agent.max_steps = 10;
  actors::run_context context;
  context.results_subject = "results";
  auto content = file_of(2048);
  for (std::size_t i = 0; i < runs; ++i) {
    auto id = "r" + std::to_string(i);
    actors::run_machine m(actors::run_machine::create(id, wire::invoke_request{"coder", "build it", "", ""}, 1), agent, context);
    auto e = m.start();
    if (!store->apply(e.transition)) die("write");
    for (int step = 0; step < 3; ++step) {
      value calls = step < 2 ? value::array({{{"id", "c"}, {"name", "exec"}, {"arguments", {{"command", "make"}}}}}) : value::array();
      value answer{{"role", "assistant"}, {"text", step < 2 ? "building" : "built"}, {"tool_calls", calls},
                   {"usage", {{"input_tokens", 10}, {"output_tokens", 5}}}, {"stop_reason", "x"}};
      auto t = e.tasks.at(0);
      e = m.on_task_result(wire::task_result{id, t.step, t.attempt, "w", true, answer, {}});
      if (!store->apply(e.transition)) die("write");
      if (step == 2) break;
      t = e.tasks.at(0);
      e = m.on_task_result(wire::task_result{id, t.step, t.attempt, "w", true,
                                             value{{"status", "done"}, {"result", {{"stdout", content}, {"exit_code", 0}}}}, {}});
      if (!store->apply(e.transition)) die("write");
    }
  }
  if (!store->flush() || !store->compact()) die("compact");
  auto bytes = disk_bytes(dir);
  report("finished.runs", static_cast<double>(runs), "runs");
  report("finished.disk_mb", static_cast<double>(bytes) / 1e6, "MB");
  report("finished.bytes_per_run", static_cast<double>(bytes) / static_cast<double>(runs), "bytes");
  fs::remove_all(dir);
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel load benchmark"};
  std::string node_binary = "build/apps/keel-node";
  std::size_t approval_runs = 1000, slots = 64, flight_runs = 10'000, flight_slots = 10'000, steps = 1000,
              file_bytes = 20'000, finished_runs = 10'000;
  std::string only;
  app.add_option("--node", node_binary, "keel-node binary");
  app.add_option("--approval-runs", approval_runs, "Runs with one approved 1-second command");
  app.add_option("--slots", slots, "Worker slots for the approvals");
  app.add_option("--in-flight-runs", flight_runs, "Runs at once, each waiting on a 2-second model call");
  app.add_option("--in-flight-slots", flight_slots, "Worker slots for them");
  app.add_option("--steps", steps, "Steps of the long run");
  app.add_option("--file-bytes", file_bytes, "Bytes read at each step of the long run");
  app.add_option("--finished-runs", finished_runs, "Finished runs for the disk figure");
  app.add_option("--only", only, "One part: approvals, in_flight, long, storage, finished, liveness");
  CLI11_PARSE(app, argc, argv);
  std::signal(SIGPIPE, SIG_IGN);
  if (only.empty() || only == "storage") storage(steps, file_bytes);
  if (only.empty() || only == "finished") finished(finished_runs);
  if (only.empty() || only == "approvals") approvals(node_binary, approval_runs, slots);
  if (only.empty() || only == "in_flight") in_flight(node_binary, flight_runs, flight_slots);
  if (only.empty() || only == "long") long_run(node_binary, steps, file_bytes);
  if (only.empty() || only == "liveness") liveness(node_binary);
  return 0;
}
