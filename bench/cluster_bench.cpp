// What adding nodes buys: one nats-server (JetStream), K orchestrator processes and M worker
// processes, N runs at once of an agent that makes T model turns (each `--model-ms` long) with
// one trivial tool call each. Prints steps per second and each run's time beyond its model calls,
// per step (p50, p99), as JSON lines. bench/cluster.sh runs it over a grid of K and M. Counts
// come from the arguments: nothing here is tied to this machine.
#include "bench/bench_support.hpp"
#include "runtime/child_process.hpp"
#include "runtime/clock.hpp"

#include <CLI/CLI.hpp>

#include <filesystem>
#include <thread>
#include <unistd.h>

using namespace keel;
using namespace keel::bench;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{"keel_cluster_bench: throughput and overhead with K orchestrators and M workers"};
  std::string node_binary = "build/apps/keel-node";
  std::size_t orchestrators = 1, workers = 1, runs = 400, turns = 5, slots = 64;
  std::int64_t model_ms = 0;
  app.add_option("--node", node_binary, "keel-node binary");
  app.add_option("--orchestrators", orchestrators, "Orchestrator processes");
  app.add_option("--workers", workers, "Worker processes");
  app.add_option("--runs", runs, "Runs at once");
  app.add_option("--turns", turns, "Model turns per run (each with one trivial tool call)");
  app.add_option("--model-ms", model_ms, "How long each model call takes");
  app.add_option("--slots", slots, "worker.slots of each worker");
  CLI11_PARSE(app, argc, argv);

  char pattern[] = "/tmp/keel-cluster-bench-XXXXXX";
  std::string dir = ::mkdtemp(pattern);
  auto port = must(free_loopback_port(), "port");
  std::string url = "nats://127.0.0.1:" + std::to_string(port);
  auto nats_server = must(child_process::start({{"/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", std::to_string(port), "-js",
                                                 "-sd", dir + "/jetstream"}, dir + "/nats.log", dir + "/nats.log"}),
                          "nats-server");
  while (!port_accepts(port)) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  fs::create_directories(dir + "/ws");
  std::ofstream(dir + "/ws/tiny.txt") << "tiny\n";
  value turns_json = value::array();
  for (std::size_t i = 0; i < turns; ++i)
    turns_json.push_back({{"text", ""}, {"delay_ms", model_ms}, {"tool_calls", {{{"name", "read"}, {"arguments", {{"path", "tiny.txt"}}}}}}});
  turns_json.push_back({{"text", "done"}, {"delay_ms", model_ms}});
  std::ofstream(dir + "/steps.json") << value{{"turns", turns_json}}.dump();
  auto start = [&](const std::string& name, const std::string& roles) {
    std::ofstream(dir + "/" + name + ".toml")
      << "[node]\nname = \"" << name << "\"\nroles = [" << roles << "]\ndata_dir = \"" << dir << "/data-" << name << "\"\n"
      << "[nats]\nservers = [\"" << url << "\"]\n[durability]\nfsync = true\n[log]\nlevel = \"warn\"\n"
      << "[worker]\nslots = " << slots << "\n"
      << "[agents.steps]\nscript = \"" << dir << "/steps.json\"\nmax_steps = 1000\n"
      << "[agents.steps.sandbox]\nworkspace = \"" << dir << "/ws\"\nscope = \"agent\"\n";
    return must(child_process::start({{node_binary, "--config", dir + "/" + name + ".toml"}, dir + "/" + name + ".log",
                                      dir + "/" + name + ".log"}), "keel-node " + name);
  };
  std::vector<child_process> nodes;
  for (std::size_t i = 0; i < orchestrators; ++i) nodes.push_back(start("o" + std::to_string(i + 1), "\"orchestrator\""));
  for (std::size_t i = 0; i < workers; ++i) nodes.push_back(start("w" + std::to_string(i + 1), "\"worker\""));
  auto nats = connect(url);
  watcher events(*nats);
  // Ready when a run goes through; then wait until every orchestrator answers a ping.
  for (int i = 0; i < 400; ++i) {
    auto r = nats->request("keel.default.invoke.tester", wire::encode(wire::invoke_request{"steps", "warm", "", ""}), 1000);
    if (r) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the other nodes' subscriptions settle
  std::size_t done_before = 0;
  {
    std::lock_guard lock{events.mutex};
    done_before = events.completed_at.size();
  }
  // CPU over the run, per process and thread: what each kind of process costs, and whether one
  // thread carries so much of it that more cores would not help.
  // A process's own count includes its threads that ended during the run; the threads' counts
  // only name the busiest.
  auto cpu_of = [&] {
    std::vector<std::map<std::string, std::pair<std::string, long long>>> threads;
    for (auto& n : nodes) threads.push_back(thread_ticks(n.pid()));
    return threads;
  };
  auto process_cpu = [&] {
    std::vector<long long> ticks;
    for (auto& n : nodes) ticks.push_back(process_ticks(n.pid()));
    return ticks;
  };
  auto processes_before = process_cpu();
  auto t0 = now_us();
  auto threads_before = cpu_of();
  auto nats_before = process_ticks(nats_server.pid());
  auto started = invoke_many(*nats, "steps", runs, 1000);
  if (!events.wait([&](watcher& w) { return w.completed_at.size() >= done_before + started.size(); }, 900'000))
    die("runs did not finish");
  double seconds = (now_us() - t0) / 1e6;
  auto threads_after = cpu_of();
  auto processes_after = process_cpu();
  auto nats_after = process_ticks(nats_server.pid());
  double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  double orchestrator_ticks = 0, worker_ticks = 0, busiest = 0;
  std::string busiest_name;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    (i < orchestrators ? orchestrator_ticks : worker_ticks) += static_cast<double>(processes_after[i] - processes_before[i]);
    for (const auto& [tid, after] : threads_after[i]) {
      auto it = threads_before[i].find(tid);
      double used = static_cast<double>(after.second - (it == threads_before[i].end() ? 0 : it->second.second));
      if (used > busiest) busiest = used, busiest_name = (i < orchestrators ? "o" : "w") + std::string(": ") + after.first;
    }
  }
  std::size_t steps_per_run = 2 * turns + 1;
  std::vector<double> overhead;  // ms per step beyond the model's own time
  {
    std::lock_guard lock{events.mutex};
    for (const auto& [id, at] : started)
      if (auto it = events.completed_at.find(id); it != events.completed_at.end())
        overhead.push_back(((it->second - at) / 1000.0 - static_cast<double>(model_ms * static_cast<std::int64_t>(turns + 1))) /
                           static_cast<double>(steps_per_run));
  }
  std::sort(overhead.begin(), overhead.end());
  auto at = [&](double p) { return overhead.empty() ? 0.0 : overhead[std::min(overhead.size() - 1, static_cast<std::size_t>(p * static_cast<double>(overhead.size())))]; };
  report("cluster.orchestrators", static_cast<double>(orchestrators), "processes");
  report("cluster.workers", static_cast<double>(workers), "processes");
  report("cluster.model_ms", static_cast<double>(model_ms), "ms");
  report("cluster.runs", static_cast<double>(started.size()), "runs");
  report("cluster.steps_per_second", static_cast<double>(started.size() * steps_per_run) / seconds, "steps/s");
  report("cluster.overhead_p50_ms", at(0.5), "ms per step");
  report("cluster.overhead_p99_ms", at(0.99), "ms per step");
  report("cluster.orchestrators_cpu_cores", orchestrator_ticks / tick / seconds, "cores");
  report("cluster.workers_cpu_cores", worker_ticks / tick / seconds, "cores");
  report("cluster.nats_cpu_cores", static_cast<double>(nats_after - nats_before) / tick / seconds, "cores");
  report("cluster.busiest_thread_share", orchestrator_ticks + worker_ticks > 0 ? busiest / (orchestrator_ticks + worker_ticks) : 0,
         "of keel's CPU");
  std::cerr << "busiest thread: " << busiest_name << "\n";
  for (auto& n : nodes) n.stop(5000);
  nats_server.stop(2000);
  fs::remove_all(dir);
  return 0;
}
