// What keel's benchmarks share: figures printed as JSON lines, a NATS connection, the resident
// memory of a process, and a client that invokes many runs and follows their ends.
#pragma once

#include "broker/connection.hpp"
#include "runtime/result.hpp"
#include "runtime/wire.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <sys/types.h>

namespace keel::bench {

using wire::value;

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

inline double now_us() {
  using namespace std::chrono;
  return static_cast<double>(duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count());
}

inline void report(const std::string& name, double figure, const std::string& unit) {
  std::cout << value{{"name", name}, {"value", figure}, {"unit", unit}}.dump() << std::endl;
}

[[noreturn]] inline void die(const std::string& what) {
  std::cerr << "keel_bench: " << what << "\n";
  std::exit(1);
}

template <class T>
T must(result<T> r, const std::string& what) {
  if (!r) die(what + ": " + r.error().message);
  return std::move(*r);
}

inline std::shared_ptr<broker::connection> connect(const std::string& url) {
  broker::connection_options o;
  o.servers = {url};
  return must(broker::connection::connect(o), "connect");
}

// Collects run_completed and suspend events from every run.
struct watcher {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<std::string, double> completed_at;  // run -> time (us)
  std::size_t suspended = 0;
  std::unique_ptr<broker::subscription> sub;

  explicit watcher(broker::connection& nats) {
    sub = must(nats.subscribe("keel.default.runs.*.events", "", [this](broker::message&& m) {
      // Only the events it counts are decoded: the harness should take as little as it can of
      // the two cores it shares with the node.
      if (m.data.find("run_completed") == std::string::npos && m.data.find("run_failed") == std::string::npos &&
          m.data.find("suspend") == std::string::npos)
        return;
      auto e = wire::decode<wire::event>(m.data);
      if (!e) return;
      std::lock_guard lock{mutex};
      if (e->event_type == "run_completed" || e->event_type == "run_failed") completed_at[e->run_id] = now_us();
      if (e->event_type == "suspend") ++suspended;
      changed.notify_all();
    }), "subscribe events");
  }
  template <class Predicate>
  bool wait(Predicate p, std::int64_t timeout_ms) {
    std::unique_lock lock{mutex};
    return changed.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return p(*this); });
  }
};

// Sends `count` invokes with at most `window` unanswered; returns the run ids and start times.
inline std::vector<std::pair<std::string, double>> invoke_many(broker::connection& nats, const std::string& agent,
                                                        std::size_t count, std::size_t window) {
  std::mutex mutex;
  std::condition_variable answered;
  std::vector<std::pair<std::string, double>> runs;
  std::size_t in_flight = 0;
  std::string inbox = nats.new_inbox();
  auto sub = must(nats.subscribe(inbox, "", [&](broker::message&& m) {
    auto r = wire::decode<wire::invoke_reply>(m.data);
    std::lock_guard lock{mutex};
    if (r) runs.emplace_back(r->run_id, now_us());  // the run is on disk from here
    --in_flight;
    answered.notify_all();
  }), "subscribe inbox");
  auto bytes = wire::encode(wire::invoke_request{agent, "go", "", ""});
  for (std::size_t i = 0; i < count; ++i) {
    std::unique_lock lock{mutex};
    if (!answered.wait_for(lock, std::chrono::seconds(60), [&] { return in_flight < window; }))
      die("invokes are not answered");
    ++in_flight;
    lock.unlock();
    must(nats.publish("keel.default.invoke.tester", inbox, bytes).ok() ? result<int>(0) : result<int>(make_error(errc::io, "publish")), "invoke");
  }
  std::unique_lock lock{mutex};
  answered.wait_for(lock, std::chrono::seconds(120), [&] { return in_flight == 0; });
  return runs;
}

inline std::int64_t rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

// Each thread of a process: its name and CPU ticks (user + system) so far.
inline std::map<std::string, std::pair<std::string, long long>> thread_ticks(pid_t pid) {
  std::map<std::string, std::pair<std::string, long long>> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(entry.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    auto open = text.find('('), close = text.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::istringstream fields(text.substr(close + 2));
    std::string skip;
    for (int f = 0; f < 11; ++f) fields >> skip;
    long long utime = 0, stime = 0;
    fields >> utime >> stime;
    out[entry.path().filename().string()] = {text.substr(open + 1, close - open - 1), utime + stime};
  }
  return out;
}

inline long long process_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string skip;
  for (int f = 0; f < 11; ++f) fields >> skip;
  long long utime = 0, stime = 0;
  fields >> utime >> stime;
  return utime + stime;
}

} // namespace keel::bench
