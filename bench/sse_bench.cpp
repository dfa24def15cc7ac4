// Live streams at scale: N clients (1,000 by default) follow one run over Server-Sent Events on
// one gateway. Measures what they cost the node (resident memory and threads per client, CPU
// while idle and while events flow), how long N clients connecting at once take to catch up on
// the run's history, and how long a new event takes to reach every client (p50, p99, the last).
// The clients are plain sockets on one Asio thread of this process; the node runs every role.
// Prints a JSON line per figure (bench/run.sh puts them in docs/BENCHMARKS.md).
#include "bench/bench_support.hpp"
#include "gateway/tokens.hpp"
#include "runtime/child_process.hpp"
#include "runtime/clock.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>

#include <filesystem>
#include <sys/resource.h>
#include <thread>

using namespace keel;
using namespace keel::bench;
namespace fs = std::filesystem;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// One streaming client: sends the request, then notes when each event id first arrives.
struct client : std::enable_shared_from_this<client> {
  tcp::socket socket;
  std::string request;
  std::array<char, 16384> buffer{};
  std::string carry;
  std::mutex* mutex;
  std::map<std::uint64_t, double>* arrivals;  // seq -> time (us), this client's
  std::uint64_t last = 0;
  bool failed = false;
  client(asio::io_context& io, std::string r, std::mutex* m, std::map<std::uint64_t, double>* a)
    : socket(io), request(std::move(r)), mutex(m), arrivals(a) {}

  void start(const tcp::endpoint& at) {
    socket.async_connect(at, [self = shared_from_this()](boost::system::error_code ec) {
      if (ec) return void(self->failed = true);
      asio::async_write(self->socket, asio::buffer(self->request), [self](boost::system::error_code ec, std::size_t) {
        if (ec) return void(self->failed = true);
        self->read();
      });
    });
  }
  void read() {
    socket.async_read_some(asio::buffer(buffer), [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
      if (ec) return;
      double at = now_us();
      self->carry.append(self->buffer.data(), n);
      auto end = self->carry.rfind('\n');
      if (end != std::string::npos) {
        std::size_t start = 0;
        while (start <= end) {
          auto nl = self->carry.find('\n', start);
          if (self->carry.compare(start, 4, "id: ") == 0) {
            auto seq = std::stoull(self->carry.substr(start + 4, nl - start - 4));
            if (seq > self->last) {
              self->last = seq;
              std::lock_guard lock{*self->mutex};
              self->arrivals->emplace(seq, at);
            }
          }
          start = nl + 1;
        }
        self->carry.erase(0, end + 1);
      }
      self->read();
    });
  }
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// utime + stime of a process, in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  auto close = text.rfind(')');
  std::istringstream fields(text.substr(close + 2));
  std::string skip;
  for (int i = 0; i < 11; ++i) fields >> skip;  // fields 3..13
  double utime = 0, stime = 0;
  fields >> utime >> stime;
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::int64_t threads_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("Threads:", 0) == 0) return std::stoll(line.substr(8));
  return -1;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel_sse_bench: many clients following one run over SSE"};
  std::string node_binary = "build/apps/keel-node";
  std::size_t clients_count = 1000;
  std::size_t answers = 10;
  app.add_option("--node", node_binary, "keel-node binary");
  app.add_option("--clients", clients_count, "Streaming clients");
  app.add_option("--answers", answers, "Approvals given while they follow (each makes new events)");
  CLI11_PARSE(app, argc, argv);
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  auto dir = fs::temp_directory_path() / ("keel-sse-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir / "ws");
  auto nats_port = must(free_loopback_port(), "port");
  auto http_port = must(free_loopback_port(), "port");
  auto url = "nats://127.0.0.1:" + std::to_string(nats_port);
  auto nats_server = must(child_process::start({{"/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", std::to_string(nats_port), "-js",
                                                 "-sd", (dir / "js").string()}, (dir / "nats.log").string(), (dir / "nats.log").string()}),
                          "nats-server");
  // A run that asks for approval again and again: each answer makes a handful of new events.
  value turns = value::array();
  for (std::size_t i = 0; i < answers + 40; ++i)
    turns.push_back(value{{"text", "step " + std::to_string(i)}, {"tool_calls", value::array({value{{"name", "exec"}, {"arguments", {{"command", "true"}}}}})}});
  turns.push_back(value{{"text", "done"}});
  std::ofstream(dir / "agent.json") << value{{"turns", turns}}.dump();
  // The gateway takes only requests with a token of its tokens file (docs/HTTP.md), and bounds the
  // requests of one token at once: each client is a person of its own, with its own token.
  std::vector<std::string> tokens;
  std::vector<gateway::named_hash> hashes;
  for (std::size_t i = 0; i < clients_count; ++i) {
    tokens.push_back(gateway::random_token());
    hashes.push_back({"client-" + std::to_string(i), gateway::token_hash(tokens.back())});
  }
  if (!gateway::write_tokens_file((dir / "tokens").string(), hashes)) die("tokens file");
  std::ofstream(dir / "node.toml") << "[node]\nname = \"n1\"\nroles = [\"orchestrator\", \"worker\", \"gateway\"]\ndata_dir = \""
                                   << (dir / "data").string() << "\"\n[nats]\nservers = [\"" << url
                                   << "\"]\n[gateway]\nlisten = \"127.0.0.1:" << http_port << "\"\ntokens_file = \"" << (dir / "tokens").string()
                                   << "\"\n[log]\nlevel = \"warn\"\n"
                                   << "[agents.a]\nscript = \"" << (dir / "agent.json").string() << "\"\nmax_steps = 1000\n"
                                   << "[agents.a.sandbox]\nworkspace = \"" << (dir / "ws").string() << "\"\n";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto node = must(child_process::start({{node_binary, "--config", (dir / "node.toml").string()}, (dir / "node.log").string(),
                                         (dir / "node.log").string()}), "keel-node");
  std::shared_ptr<broker::connection> nats;
  for (int i = 0; i < 200 && !nats; ++i) {
    broker::connection_options o;
    o.servers = {url};
    if (auto c = broker::connection::connect(o)) nats = *c;
    else std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!nats) die("nats-server did not start");
  std::string run;
  for (int i = 0; i < 200 && run.empty(); ++i) {
    if (auto r = nats->request("keel.default.invoke.tester", wire::encode(wire::invoke_request{"a", "follow me", "", ""}), 1000)) {
      run = must(wire::decode<wire::invoke_reply>(r->data), "invoke").run_id;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  if (run.empty()) die("the node takes no invokes: see " + (dir / "node.log").string());
  auto get = [&] {
    auto r = must(nats->request("keel.default.runs." + run + ".get", wire::pack(value{{"v", 1}, {"type", "get_run"}}), 5000), "get");
    return (*wire::unpack(r.data))["run"];
  };
  auto resume = [&](const std::string& step) {
    must(nats->request("keel.default.runs." + run + ".resume.tester",
                       wire::pack(value{{"v", 1}, {"type", "resume"}, {"step_key", step}, {"data", {{"approved", true}}}}), 5000),
         "resume");
  };
  auto await_waiting = [&](const std::string& not_this) {
    for (int i = 0; i < 2000; ++i) {
      auto r = get();
      if (r.value("status", "") == "suspended" && r["waiting"]["step_key"] != not_this) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    die("the run does not wait");
  };
  // A history to catch up on: 30 answered steps first.
  std::string waiting = await_waiting("")["waiting"]["step_key"];
  for (int i = 0; i < 30; ++i) {
    resume(waiting);
    waiting = await_waiting(waiting)["waiting"]["step_key"];
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto history = get()["last_event_seq"].get<std::uint64_t>();
  // The same events as a NATS subscriber gets them: the gateway's own cost is the difference.
  std::mutex direct_mutex;
  std::map<std::uint64_t, double> direct;
  auto direct_sub = must(nats->subscribe("keel.default.runs." + run + ".events", "", [&](broker::message&& m) {
    double at = now_us();
    if (auto e = wire::decode<wire::event>(m.data)) {
      std::lock_guard lock{direct_mutex};
      direct.emplace(e->seq, at);
    }
  }), "subscribe");
  auto rss_before = rss_kb(node.pid());
  auto threads_before = threads_of(node.pid());

  // N clients connect at once and catch up.
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });
  std::mutex mutex;
  std::vector<std::map<std::uint64_t, double>> arrivals(clients_count);
  std::vector<std::shared_ptr<client>> clients;
  tcp::endpoint at(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(http_port));
  auto request = [&](std::size_t i) {
    return "GET /api/v1/runs/" + run + "/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nAuthorization: Bearer " +
           tokens[i] + "\r\n\r\n";
  };
  double connect_start = now_us();
  asio::post(io, [&] {
    for (std::size_t i = 0; i < clients_count; ++i) {
      clients.push_back(std::make_shared<client>(io, request(i), &mutex, &arrivals[i]));
      clients.back()->start(at);
    }
  });
  auto all_have = [&](std::uint64_t seq) {
    std::lock_guard lock{mutex};
    for (auto& a : arrivals)
      if (!a.count(seq)) return false;
    return true;
  };
  auto deadline = steady_ms() + 120'000;
  while (!all_have(history) && steady_ms() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  if (!all_have(history)) die("not every client caught up within 2 minutes");
  double caught_up_ms = 0;
  {
    std::lock_guard lock{mutex};
    for (auto& a : arrivals) caught_up_ms = std::max(caught_up_ms, (a[history] - connect_start) / 1000.0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  auto rss_connected = rss_kb(node.pid());
  auto threads_connected = threads_of(node.pid());
  auto idle_cpu_start = cpu_seconds(node.pid());
  double idle_start = now_us();
  std::this_thread::sleep_for(std::chrono::seconds(5));
  double idle_cpu = (cpu_seconds(node.pid()) - idle_cpu_start) / ((now_us() - idle_start) / 1e6);

  // Answers while they follow: how long each new event takes to reach every client.
  std::vector<double> delays;  // ms, per client per answer: from the answer sent to its `resumed` event
  std::vector<double> last_delays;
  std::vector<double> added;  // ms, per client per event: after a NATS subscriber had it
  auto busy_cpu_start = cpu_seconds(node.pid());
  double busy_start = now_us();
  std::uint64_t last_seq = history;
  for (std::size_t i = 0; i < answers; ++i) {
    double sent = now_us();
    resume(waiting);
    auto next = await_waiting(waiting);
    waiting = next["waiting"]["step_key"];
    auto seq = next["last_event_seq"].get<std::uint64_t>();
    while (!all_have(seq) && steady_ms() < deadline + 60'000) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::lock_guard lock{mutex};
    double slowest = 0;
    for (auto& a : arrivals) {
      auto it = a.upper_bound(last_seq);  // the first event after the answer: `resumed`
      if (it == a.end()) die("a client missed an event");
      double d = (it->second - sent) / 1000.0;
      delays.push_back(d);
      slowest = std::max(slowest, d);
      std::lock_guard direct_lock{direct_mutex};
      for (auto e = it; e != a.end() && e->first <= seq; ++e)
        if (auto nats_at = direct.find(e->first); nats_at != direct.end()) added.push_back((e->second - nats_at->second) / 1000.0);
    }
    last_delays.push_back(slowest);
    last_seq = seq;
  }
  double busy_cpu = (cpu_seconds(node.pid()) - busy_cpu_start) / ((now_us() - busy_start) / 1e6);
  std::size_t failed = 0;
  for (auto& c : clients) failed += c->failed ? 1 : 0;
  // Every client saw every event once, in order (ids only grow; the map holds each once).
  std::size_t complete = 0;
  {
    std::lock_guard lock{mutex};
    for (auto& a : arrivals) complete += (a.size() == last_seq && a.begin()->first == 1) ? 1 : 0;
  }

  report("sse.clients", static_cast<double>(clients_count), "clients");
  report("sse.failed_connections", static_cast<double>(failed), "clients");
  report("sse.complete_streams", static_cast<double>(complete), "clients");
  report("sse.history_events", static_cast<double>(history), "events");
  report("sse.catch_up_all_ms", caught_up_ms, "ms");
  report("sse.rss_per_client_kb", static_cast<double>(rss_connected - rss_before) / static_cast<double>(clients_count), "KB");
  report("sse.rss_before_mb", static_cast<double>(rss_before) / 1024.0, "MB");
  report("sse.rss_connected_mb", static_cast<double>(rss_connected) / 1024.0, "MB");
  report("sse.threads_before", static_cast<double>(threads_before), "threads");
  report("sse.threads_connected", static_cast<double>(threads_connected), "threads");
  report("sse.idle_cpu_cores", idle_cpu, "cores");
  report("sse.busy_cpu_cores", busy_cpu, "cores");
  report("sse.answers", static_cast<double>(answers), "answers");
  report("sse.event_delay_p50_ms", percentile(delays, 0.5), "ms");
  report("sse.event_delay_p99_ms", percentile(delays, 0.99), "ms");
  report("sse.event_delay_last_client_ms", percentile(last_delays, 0.5), "ms");
  report("sse.added_p50_ms", percentile(added, 0.5), "ms");
  report("sse.added_p99_ms", percentile(added, 0.99), "ms");

  for (auto& c : clients) asio::post(io, [c] { boost::system::error_code ec; c->socket.close(ec); });
  guard.reset();
  io.stop();
  io_thread.join();
  node.stop(5000);
  nats_server.stop(2000);
  fs::remove_all(dir);
  return 0;
}
