// keel's benchmark: in one run on one machine, the floor (one NATS round trip plus one synced
// RocksDB write), then a real keel-node: per-step latency at low load, steps per second with
// many concurrent runs (fsync on), and the resident memory that suspended runs add.
// Prints a JSON line per figure; bench/run.sh turns them into docs/BENCHMARKS.md.
#include "bench/bench_support.hpp"
#include "broker/connection.hpp"
#include "runtime/child_process.hpp"
#include "runtime/clock.hpp"
#include "runtime/cpus.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <numeric>
#include <sstream>
#include <thread>
#include <sched.h>
#include <unistd.h>

using namespace keel;
using namespace keel::bench;
using wire::value;
namespace fs = std::filesystem;

namespace {

struct floor_figures {
  double round_trip_us = 0;  // median of back-to-back round trips
  double write_us = 0;       // median of back-to-back synced writes
  double loop_us = 0;        // median of one round trip then one synced write, as a step does them
};

// The floor: what one durable step cannot avoid. Measured three ways: each part back to back
// (the best case of each), and the two in turn, which is the order a step has them in; a
// synced write that follows other work costs more than one that follows another write. The
// meter stays open so that the floor can be measured again between runs of the node: this
// machine's speed drifts from one minute to the next, and a ratio should compare measurements
// taken together.
class floor_meter {
public:
  floor_meter(const std::string& url, const std::string& dir)
    : responder_(connect(url)), requester_(connect(url)),
      store_(must(store::run_store::open({dir + "/floor", true}), "open store")) {
    sub_ = must(responder_->subscribe("bench.echo", "", [this](broker::message&& m) {
      (void)responder_->publish(m.reply, m.data);
    }), "subscribe");
    (void)responder_->flush(1000);
  }

  floor_figures measure(int round_trips, int writes_count) {
    std::vector<double> rtt;
    for (int i = 0; i < round_trips + 100; ++i) {
      auto t0 = now_us();
      must(requester_->request("bench.echo", payload_, 2000), "request");
      if (i >= 100) rtt.push_back(now_us() - t0);
    }
    std::vector<double> writes;
    for (int i = 0; i < writes_count + 50; ++i) {
      auto t = transition("floor-" + std::to_string(i % 50));
      auto t0 = now_us();
      if (!store_->apply(t)) die("write");
      if (i >= 50) writes.push_back(now_us() - t0);
    }
    std::vector<double> loop;
    for (int i = 0; i < writes_count + 50; ++i) {
      auto t = transition("loop-" + std::to_string(i % 50));
      auto t0 = now_us();
      must(requester_->request("bench.echo", payload_, 2000), "request");
      if (!store_->apply(t)) die("write");
      if (i >= 50) loop.push_back(now_us() - t0);
    }
    return {median(rtt), median(writes), median(loop)};
  }

private:
  // A 1 KB run transition with one event, as the floor writes it.
  store::run_transition transition(const std::string& run) {
    store::run_transition t;
    t.record.run_id = run;
    t.record.agent = "bench";
    t.record.state = value{{"blob", std::string(1024, 'y')}};
    t.events.push_back(wire::event{run, ++seq_, "x", 0, value{{"k", 1}}});
    return t;
  }

  std::shared_ptr<broker::connection> responder_, requester_;
  std::unique_ptr<store::run_store> store_;
  std::unique_ptr<broker::subscription> sub_;
  std::string payload_ = std::string(512, 'x');
  std::uint64_t seq_ = 0;
};

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel benchmark"};
  std::string node_binary = "build/apps/keel-node";
  std::size_t turns = 10, concurrent_runs = 400, suspended_runs = 100'000, latency_runs = 320, rounds = 8;
  std::size_t lanes = 0, log_replicas = 0, task_replicas = 1, cores = 0;
  std::string external_nats;
  app.add_option("--node", node_binary, "keel-node binary");
  app.add_option("--turns", turns, "Model turns per run (each calls one trivial tool)");
  app.add_option("--concurrent-runs", concurrent_runs, "Runs at once for throughput");
  app.add_option("--suspended-runs", suspended_runs, "Runs left suspended for the memory figure (0: none)");
  app.add_option("--latency-runs", latency_runs, "Runs, one at a time, for per-step latency (0: none)");
  app.add_option("--rounds", rounds, "Rounds of the latency runs, each with the floor measured again");
  app.add_option("--lanes", lanes, "node.lanes of the node (0: its default, one per CPU it may use)");
  app.add_option("--cores", cores, "Run the node on the first N cores only (taskset; 0: on all). nats-server and this "
                                   "program run on every core");
  app.add_option("--log-replicas", log_replicas, "durability.log_replicas of the node (0: no replicated run log)");
  app.add_option("--task-replicas", task_replicas, "limits.task_replicas of the node");
  app.add_option("--nats", external_nats, "Use this nats-server (e.g. one of a cluster) instead of starting one");
  CLI11_PARSE(app, argc, argv);

  char pattern[] = "/tmp/keel-bench-XXXXXX";
  std::string dir = ::mkdtemp(pattern);
  auto port = must(free_loopback_port(), "port");
  std::string url = external_nats.empty() ? "nats://127.0.0.1:" + std::to_string(port) : external_nats;
  child_process nats_server;
  if (external_nats.empty()) {
    nats_server = must(child_process::start({{"/usr/sbin/nats-server", "-a", "127.0.0.1", "-p",
                                              std::to_string(port), "-js", "-sd", dir + "/jetstream"},
                                             dir + "/nats.log", dir + "/nats.log"}),
                       "nats-server");
    while (!port_accepts(port)) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  floor_meter meter(url, dir);

  // The agents: `steps` calls the trivial tool (read of a small file) once per turn.
  fs::create_directories(dir + "/ws");
  std::ofstream(dir + "/ws/tiny.txt") << "tiny\n";
  value turns_json = value::array();
  for (std::size_t i = 0; i < turns; ++i)
    turns_json.push_back({{"text", ""}, {"tool_calls", {{{"name", "read"}, {"arguments", {{"path", "tiny.txt"}}}}}}});
  turns_json.push_back({{"text", "done"}});
  std::ofstream(dir + "/steps.json") << value{{"turns", turns_json}}.dump();
  std::ofstream(dir + "/suspend.json")
    << R"({"turns": [{"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "true"}}]}]})";
  std::ofstream(dir + "/node.toml")
    << "[node]\nname = \"bench\"\nroles = [\"orchestrator\", \"worker\"]\ndata_dir = \"" << dir << "/data\"\n"
    << "lanes = " << lanes << "\n"
    << "[limits]\ntask_replicas = " << task_replicas << "\n"
    << "[nats]\nservers = [\"" << url << "\"]\n[durability]\nfsync = true\nlog_replicas = " << log_replicas
    << "\n[log]\nlevel = \"warn\"\n"
    << "[worker]\nslots = 64\n"
    << "[agents.steps]\nscript = \"" << dir << "/steps.json\"\nmax_steps = 1000\n"
    << "[agents.steps.sandbox]\nworkspace = \"" << dir << "/ws\"\nscope = \"agent\"\n"
    << "[agents.suspend]\nscript = \"" << dir << "/suspend.json\"\n"
    << "[agents.suspend.sandbox]\nworkspace = \"" << dir << "/ws\"\nscope = \"agent\"\n";
  std::vector<std::string> node_command{node_binary, "--config", dir + "/node.toml"};
  if (cores > 0) {
    // The first N of the CPUs this program may use (a cpuset need not start at 0).
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof(allowed), &allowed) != 0) die("--cores: cannot read this program's CPUs");
    std::string list;
    std::size_t taken = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && taken < cores; ++cpu)
      if (CPU_ISSET(cpu, &allowed)) list += (taken++ ? "," : "") + std::to_string(cpu);
    if (taken < cores) die("--cores: this program may use " + std::to_string(taken) + " CPUs");
    node_command.insert(node_command.begin(), {"/usr/bin/taskset", "-c", list});
  }
  auto node = must(child_process::start({node_command, dir + "/node.log", dir + "/node.log"}), "keel-node");
  auto nats = connect(url);
  // Ready when it takes an invoke (a node started under a name whose lease is in the bucket from
  // an earlier run answers "ask again" for a lease first).
  for (int i = 0; i < 600; ++i) {
    auto r = nats->request("keel.default.invoke.tester", wire::encode(wire::invoke_request{"steps", "warm", "", ""}), 1000);
    if (r && wire::decode<wire::invoke_reply>(r->data)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::size_t tasks_per_run = 2 * turns + 1;

  // Per-step latency: one run at a time, in rounds; each round measures the floor again just
  // before its runs, and its ratio compares the two. Each round runs half its runs with the
  // client waiting for the run's end (one wait request, as the floor's client waits for its
  // reply), and half with a watcher following every event of every run as well (a live view on
  // the same two cores). A step's time is the run's time from its creation (the invoke answered:
  // the run is on disk) to the answer that it completed, over its steps; the run's time from the
  // invoke sent, over the same steps, is reported too (it adds the invoke's round trip and write).
  auto wait_request = wire::pack(value{{"v", 1}, {"type", "wait"}});
  auto invoke_bytes = wire::encode(wire::invoke_request{"steps", "go", "", ""});
  auto start_run = [&] {
    auto reply = must(nats->request("keel.default.invoke.tester", invoke_bytes, 5000), "invoke");
    return must(wire::decode<wire::invoke_reply>(reply.data), "invoke reply").run_id;
  };
  std::vector<double> per_step, per_run_step, over_floor, over_loop, over_floor_whole, rtts, writes, floors, loops;
  std::vector<double> live_per_step, live_over_floor, live_whole_over_floor;
  rounds = std::max<std::size_t>(1, std::min(rounds, latency_runs));
  for (std::size_t round = 0; latency_runs > 0 && round < rounds; ++round) {
    auto floor = meter.measure(round == 0 ? 2000 : 600, round == 0 ? 600 : 200);
    rtts.push_back(floor.round_trip_us);
    writes.push_back(floor.write_us);
    floors.push_back(floor.round_trip_us + floor.write_us);
    loops.push_back(floor.loop_us);
    std::vector<double> round_steps, round_whole, live_steps, live_whole;
    std::size_t runs_this_round = std::max<std::size_t>(1, (latency_runs / rounds + (round < latency_runs % rounds ? 1 : 0)) / 2);
    for (std::size_t i = 0; i < runs_this_round; ++i) {
      auto t0 = now_us();
      auto run = start_run();
      auto created = now_us();
      auto done = must(nats->request("keel.default.runs." + run + ".wait", wait_request, 60'000), "wait");
      auto end = now_us();
      auto summary = must(wire::unpack(done.data), "wait reply");
      if (summary.value("type", std::string{}) != "run" || summary["run"].value("status", std::string{}) != "completed")
        die("a run did not complete: " + summary.dump());
      round_steps.push_back((end - created) / static_cast<double>(tasks_per_run));
      round_whole.push_back((end - t0) / static_cast<double>(tasks_per_run));
      per_step.push_back(round_steps.back());
      per_run_step.push_back(round_whole.back());
    }
    {
      watcher live(*nats);
      if (!nats->flush(2000)) die("the watcher's subscription was not confirmed");
      for (std::size_t i = 0; i < runs_this_round; ++i) {
        auto t0 = now_us();
        auto run = start_run();
        auto created = now_us();
        if (!live.wait([&](watcher& w) { return w.completed_at.count(run) > 0; }, 60'000)) die("a run did not finish");
        std::lock_guard lock{live.mutex};
        live_steps.push_back((live.completed_at[run] - created) / static_cast<double>(tasks_per_run));
        live_whole.push_back((live.completed_at[run] - t0) / static_cast<double>(tasks_per_run));
        live_per_step.push_back(live_steps.back());
      }
    }
    over_floor.push_back(median(round_steps) / floors.back());
    over_loop.push_back(median(round_steps) / loops.back());
    over_floor_whole.push_back(median(round_whole) / floors.back());
    live_over_floor.push_back(median(live_steps) / floors.back());
    live_whole_over_floor.push_back(median(live_whole) / floors.back());
  }
  if (latency_runs > 0) {
    report("floor.nats_round_trip_us", median(rtts), "us");
    report("floor.synced_write_us", median(writes), "us");
    report("floor.step_us", median(floors), "us");
    report("floor.loop_step_us", median(loops), "us");
    report("latency.step_us", median(per_step), "us");
    report("latency.rounds", static_cast<double>(rounds), "rounds");
    report("latency.step_over_floor", median(over_floor), "x");
    report("latency.step_over_loop_floor", median(over_loop), "x");
    report("latency.step_over_floor_min", *std::min_element(over_floor.begin(), over_floor.end()), "x");
    report("latency.step_over_floor_max", *std::max_element(over_floor.begin(), over_floor.end()), "x");
    report("latency.with_invoke.step_us", median(per_run_step), "us");
    report("latency.with_invoke.step_over_floor", median(over_floor_whole), "x");
    report("latency.live_view.step_us", median(live_per_step), "us");
    report("latency.live_view.step_over_floor", median(live_over_floor), "x");
    // A watcher on every event, and the run counted from the invoke sent.
    report("latency.live_view_with_invoke.step_over_floor", median(live_whole_over_floor), "x");
  }

  watcher events(*nats);
  // Throughput: many runs at once.
  std::size_t done_before = 0;
  {
    std::lock_guard lock{events.mutex};
    done_before = events.completed_at.size();
  }
  auto t0 = now_us();
  auto threads_before = thread_ticks(node.pid());
  auto node_before = process_ticks(node.pid());
  auto nats_before = process_ticks(nats_server.pid());
  auto runs = invoke_many(*nats, "steps", concurrent_runs, 1000);
  if (!events.wait([&](watcher& w) { return w.completed_at.size() >= done_before + runs.size(); }, 600'000))
    die("runs did not finish");
  double seconds = (now_us() - t0) / 1e6;
  auto threads_after = thread_ticks(node.pid());
  auto node_after = process_ticks(node.pid());
  auto nats_after = process_ticks(nats_server.pid());
  report("throughput.steps_per_second", static_cast<double>(runs.size() * tasks_per_run) / seconds, "steps/s");
  report("throughput.runs_per_second", static_cast<double>(runs.size()) / seconds, "runs/s");
  report("throughput.concurrent_runs", static_cast<double>(concurrent_runs), "runs");
  report("scale.cores", static_cast<double>(cores > 0 ? cores : usable_cpus()), "cores");
  // Where the node's CPU went at saturation, thread by thread: the hot path must not sit on one.
  // The total is the process's own count (it includes threads that ended during the run).
  std::vector<std::pair<double, std::string>> used;  // ticks, thread name
  double total = static_cast<double>(node_after - node_before);
  for (const auto& [tid, after] : threads_after) {
    auto before = threads_before.count(tid) ? threads_before[tid].second : 0;
    double d = static_cast<double>(after.second - before);
    used.emplace_back(d, after.first);
  }
  std::sort(used.rbegin(), used.rend());
  double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  report("scale.node_cpu_cores", total / tick / seconds, "cores");
  report("scale.nats_cpu_cores", static_cast<double>(nats_after - nats_before) / tick / seconds, "cores");
  report("scale.threads_busy", static_cast<double>(std::count_if(used.begin(), used.end(), [&](const auto& u) { return u.first > 0.02 * total; })), "threads");
  for (std::size_t i = 0; i < std::min<std::size_t>(3, used.size()); ++i) {
    report("scale.thread_" + std::to_string(i + 1) + "_share", total > 0 ? used[i].first / total : 0, "of the node's CPU");
    std::cerr << "thread " << i + 1 << ": " << used[i].second << " " << (total > 0 ? 100 * used[i].first / total : 0) << "%\n";
  }

  if (suspended_runs == 0) {
    node.stop(5000);
    nats_server.stop(2000);
    fs::remove_all(dir);
    return 0;
  }
  // Memory: runs that wait for a person cost only disk. Invoked in two halves: the first also
  // fills the store's buffers (two memtables and the block cache, bounded whatever the number of
  // runs), so the second half's growth is what a run itself keeps in memory.
  // Each figure the median of several samples (the allocator and the store move it a little).
  auto settled_rss = [&] {
    std::vector<double> samples;
    for (int i = 0; i < 7; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      samples.push_back(static_cast<double>(rss_kb(node.pid())));
    }
    return static_cast<long long>(median(samples));
  };
  auto rss_before = settled_rss();
  auto s0 = now_us();
  auto first_half = suspended_runs / 2;
  auto waiting = invoke_many(*nats, "suspend", first_half, 2000);
  if (!events.wait([&](watcher& w) { return w.suspended >= waiting.size(); }, 1'800'000)) die("runs did not suspend");
  auto rss_middle = settled_rss();
  auto second = invoke_many(*nats, "suspend", suspended_runs - first_half, 2000);
  waiting.insert(waiting.end(), second.begin(), second.end());
  if (!events.wait([&](watcher& w) { return w.suspended >= waiting.size(); }, 1'800'000)) die("runs did not suspend");
  auto rss_after = settled_rss();
  auto ping = must(nats->request("keel.default.nodes.ping", wire::pack(value{{"v", 1}, {"type", "ping"}}), 2000), "ping");
  auto beat = must(wire::decode<wire::heartbeat>(ping.data), "heartbeat");
  report("memory.runs_in_memory", static_cast<double>(beat.runs_in_memory), "runs");
  report("memory.suspended_runs", static_cast<double>(waiting.size()), "runs");
  report("memory.suspend_seconds", (now_us() - s0) / 1e6, "s");
  report("memory.rss_before_mb", static_cast<double>(rss_before) / 1024.0, "MB");
  report("memory.rss_after_mb", static_cast<double>(rss_after) / 1024.0, "MB");
  report("memory.rss_added_mb", static_cast<double>(rss_after - rss_before) / 1024.0, "MB");
  report("memory.rss_middle_mb", static_cast<double>(rss_middle) / 1024.0, "MB");
  if (second.size() > 0)
    report("memory.second_half_bytes_per_run",
           static_cast<double>(rss_after - rss_middle) * 1024.0 / static_cast<double>(second.size()), "bytes");

  node.stop(5000);
  nats_server.stop(2000);
  fs::remove_all(dir);
  return 0;
}
