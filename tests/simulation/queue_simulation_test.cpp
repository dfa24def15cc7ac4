// Run queues driven by three orchestrators at once (actors/queue_driver), on a simulated clock:
// runs are made on every node and get in line, nodes crash (forgetting all they held in memory)
// and come back or have their runs taken over by another node, the shared record's reads fail,
// its writes fail or are made while their caller hears "timeout", a node's word to its run that it
// may start is late, told twice or lost in a crash, reads come from a replica behind, the wall clock
// jumps back and forth, runs end, fail and are retried, or are cancelled in line.
// Checked at every moment: no more runs of a queue are going than its concurrency, nor of one key
// than its key_concurrency. Checked at the end (faults stopped, every node back): every run ended
// and every queue's record is empty (no slot held by a run that is over).
//   KEEL_SIM_SEEDS=N, KEEL_SIM_SEED=S as in the lease simulation.
#include "actors/queue_driver.hpp"
#include "tests/simulation/seeds.hpp"

#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>

using namespace keel;
using namespace keel::actors;
using store::run_status;

namespace {

constexpr int nodes = 3;

struct sim_run {
  std::string id;
  int owner = 0;
  run_status status = run_status::queued;
  store::queue_place place;
  std::int64_t ends_at = 0;  // running: when it ends
  bool fails = false;        // running: it fails at its end (and is retried later)
};

struct world {
  std::mt19937_64 random;
  std::int64_t now = 1'804'000'000'000;
  std::int64_t last_since = 0;
  std::map<std::string, std::pair<queue_record, std::uint64_t>> records;
  std::map<std::string, std::vector<std::pair<queue_record, std::uint64_t>>> history;  // older versions
  std::uint64_t revisions = 0;
  std::map<std::string, sim_run> runs;
  bool alive[nodes] = {true, true, true};
  std::unique_ptr<queue_driver> drivers[nodes][2];
  std::int64_t due[nodes][2] = {};
  std::int64_t reconcile_at[nodes] = {};
  // Words to runs that they may start, in flight: (when, node, run, the place admitted).
  std::vector<std::tuple<std::int64_t, int, std::string, std::int64_t>> admissions;
  bool faults = true;
  std::size_t stale_reads = 0, duplicates = 0, clock_jumps = 0;
  std::size_t lost_replies = 0, failed_writes = 0, crashes = 0, takeovers = 0, admitted = 0, ended = 0, retried = 0,
              cancelled = 0, max_running = 0;
  std::string wrong;

  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(random) < p; }
  std::int64_t between(std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(random); }
};

std::vector<config::queue_config> queues() {
  config::queue_config deploys;
  deploys.name = "deploys";
  deploys.concurrency = 2;
  deploys.waiting_max = 20;
  config::queue_config repos;
  repos.name = "repos";
  repos.concurrency = 4;
  repos.key_concurrency = 1;
  repos.waiting_max = 1000;
  return {deploys, repos};
}

queue_io io_for(world& w, int node) {
  queue_io io;
  io.now = [&w] { return w.now; };
  io.read = [&w](const std::string& name) -> result<std::optional<std::pair<queue_record, std::uint64_t>>> {
    if (w.faults && w.chance(0.03)) return make_error(errc::unavailable, "no answer");
    // A replica behind the leader answers with an older version (a write at it is refused).
    if (auto old = w.history.find(name); w.faults && old != w.history.end() && !old->second.empty() && w.chance(0.05)) {
      ++w.stale_reads;
      return std::optional(old->second[static_cast<std::size_t>(w.between(0, static_cast<std::int64_t>(old->second.size()) - 1))]);
    }
    auto it = w.records.find(name);
    if (it == w.records.end()) return std::optional<std::pair<queue_record, std::uint64_t>>{};
    return std::optional(it->second);
  };
  // A write may fail without effect, or take effect while its caller hears "timeout".
  auto write = [&w](const std::string& name, const queue_record& r, std::optional<std::uint64_t> revision) -> result<std::uint64_t> {
    bool lose_reply = false;
    if (w.faults && w.chance(0.06)) {
      if (w.chance(0.5)) {
        ++w.failed_writes;
        return make_error(errc::timeout, "no answer");
      }
      lose_reply = true;
    }
    auto it = w.records.find(name);
    if (!revision && it != w.records.end()) return make_error(errc::conflict, "exists");
    if (revision && (it == w.records.end() || it->second.second != *revision)) return make_error(errc::conflict, "wrong revision");
    if (it != w.records.end()) {
      auto& kept = w.history[name];
      kept.push_back(it->second);
      if (kept.size() > 8) kept.erase(kept.begin());
    }
    w.records[name] = {r, ++w.revisions};
    if (lose_reply) {
      ++w.lost_replies;
      return make_error(errc::timeout, "no answer");
    }
    return w.revisions;
  };
  io.create = [write](const std::string& name, const queue_record& r) { return write(name, r, std::nullopt); };
  io.update = [write](const std::string& name, const queue_record& r, std::uint64_t rev) { return write(name, r, rev); };
  io.look_up = [&w, node](const std::string& run) -> std::optional<local_run> {
    auto it = w.runs.find(run);
    if (it == w.runs.end() || it->second.owner != node) return std::nullopt;
    return local_run{it->second.status, it->second.place, true};
  };
  io.start = [&w, node](const std::string& run, std::int64_t since) {
    w.admissions.emplace_back(w.now + w.between(0, 300), node, run, since);
    if (w.faults && w.chance(0.1)) {  // the word delivered twice, later
      ++w.duplicates;
      w.admissions.emplace_back(w.now + w.between(0, 3000), node, run, since);
    }
  };
  return io;
}

int queue_index(const std::string& name) { return name == "deploys" ? 0 : 1; }

void boot(world& w, int node) {
  auto qs = queues();
  for (int q = 0; q < 2; ++q) {
    w.drivers[node][q] = std::make_unique<queue_driver>(qs[q], io_for(w, node));
    w.due[node][q] = 0;
  }
  w.reconcile_at[node] = w.now;
  w.alive[node] = true;
  // The supervisor's scan: its runs in line ask for their place again.
  for (auto& [id, r] : w.runs)
    if (r.owner == node && r.status == run_status::queued)
      w.drivers[node][queue_index(r.place.name)]->enter(id, r.place.key, r.place.since_ms);
}

void crash(world& w, int node) {
  ++w.crashes;
  w.alive[node] = false;
  for (auto& d : w.drivers[node]) d.reset();
  std::erase_if(w.admissions, [&](const auto& a) { return std::get<1>(a) == node; });
}

// The runs going now, checked against every queue's limits.
void check_limits(world& w) {
  std::map<std::string, std::size_t> going;
  std::map<std::string, std::size_t> by_key;
  for (const auto& [id, r] : w.runs)
    if (r.status == run_status::running) {
      going[r.place.name] += 1;
      if (!r.place.key.empty()) by_key[r.place.name + "/" + r.place.key] += 1;
    }
  for (const auto& q : queues()) {
    w.max_running = std::max(w.max_running, going[q.name]);
    if (static_cast<std::int64_t>(going[q.name]) > q.concurrency && w.wrong.empty())
      w.wrong = "at " + std::to_string(w.now) + ": " + std::to_string(going[q.name]) + " runs of " + q.name + " going; its limit is " +
                std::to_string(q.concurrency);
  }
  for (const auto& [key, n] : by_key)
    if (key.rfind("repos/", 0) == 0 && n > 1 && w.wrong.empty())
      w.wrong = "at " + std::to_string(w.now) + ": " + std::to_string(n) + " runs of key " + key + " going; its limit is 1";
}

void new_run(world& w, int serial) {
  int node = static_cast<int>(w.between(0, nodes - 1));
  if (!w.alive[node]) return;
  sim_run r;
  r.id = "n" + std::to_string(node) + "-r" + std::to_string(serial);
  r.owner = node;
  bool deploy = w.chance(0.4);
  r.place.name = deploy ? "deploys" : "repos";
  r.place.key = deploy ? "" : "repo-" + std::to_string(w.between(0, 5));
  r.place.since_ms = w.last_since = std::max(w.now, w.last_since + 1);
  w.runs[r.id] = r;
  w.drivers[node][queue_index(r.place.name)]->enter(r.id, r.place.key, r.place.since_ms);
}

// A run changed on disk (by its owner): its slot freed, or its place asked for.
void written(world& w, sim_run& r, bool release) {
  if (!w.alive[r.owner]) return;
  auto& d = *w.drivers[r.owner][queue_index(r.place.name)];
  if (release) d.release(r.id, r.place.since_ms);
  else d.enter(r.id, r.place.key, r.place.since_ms);
}

void tick(world& w) {
  w.now += w.between(10, 400);
  // The wall clock set back or forward (places in line stay ordered: each is later than the last).
  if (w.faults && w.chance(0.002)) {
    ++w.clock_jumps;
    w.now += w.chance(0.5) ? -w.between(1000, 60'000) : w.between(1000, 600'000);
  }
  // Words to runs that they may start.
  std::vector<std::tuple<std::int64_t, int, std::string, std::int64_t>> later;
  bool admitted_now = false;
  for (auto& a : w.admissions) {
    if (std::get<0>(a) > w.now) {
      later.push_back(a);
      continue;
    }
    auto& r = w.runs.at(std::get<2>(a));
    // The run checks that it still waits in the place admitted (a retried run is in line again).
    if (r.owner != std::get<1>(a) || !w.alive[r.owner] || r.status != run_status::queued || r.place.since_ms != std::get<3>(a)) continue;
    r.status = run_status::running;
    r.place.admitted_ms = w.now;
    r.ends_at = w.now + w.between(100, 5000);
    r.fails = w.chance(0.1);
    ++w.admitted;
    admitted_now = true;
  }
  w.admissions.swap(later);
  if (admitted_now) check_limits(w);  // only an admission can break a limit
  for (auto& [id, r] : w.runs) {
    if (!w.alive[r.owner]) continue;
    if (r.status == run_status::running && r.ends_at <= w.now) {
      r.status = r.fails ? run_status::failed : run_status::completed;
      ++w.ended;
      // Its node may die between the write and the word to its queue.
      if (!(w.faults && w.chance(0.02))) written(w, r, true);
    } else if (r.status == run_status::failed && w.chance(0.05)) {
      r.status = run_status::queued;  // retried: back in line, later
      r.place.since_ms = w.last_since = std::max(w.now, std::max(w.last_since, r.place.since_ms) + 1);
      r.place.admitted_ms = 0;
      ++w.retried;
      written(w, r, false);
    } else if (r.status == run_status::queued && w.faults && w.chance(0.002)) {
      r.status = run_status::cancelled;
      ++w.cancelled;
      written(w, r, true);
    }
  }
  for (int n = 0; n < nodes; ++n) {
    if (!w.alive[n]) continue;
    bool reconcile = w.now >= w.reconcile_at[n];
    if (reconcile) w.reconcile_at[n] = w.now + 5000;
    for (int q = 0; q < 2; ++q)
      if (w.drivers[n][q] && (w.due[n][q] <= w.now || reconcile)) w.due[n][q] = w.drivers[n][q]->step(reconcile);
  }
  if (!w.faults) return;
  for (int n = 0; n < nodes; ++n) {
    if (w.alive[n] && w.chance(0.004)) {
      crash(w, n);
    } else if (!w.alive[n] && w.chance(0.02)) {
      // Back, or its runs taken over by a node that is up.
      int to = static_cast<int>(w.between(0, nodes - 1));
      if (to != n && w.alive[to] && w.chance(0.5)) {
        ++w.takeovers;
        for (auto& [id, r] : w.runs)
          if (r.owner == n) r.owner = to;
        boot(w, to);  // the takeover's scan (a second boot of its drivers: what they held is asked again)
      }
      boot(w, n);
    }
  }
}

std::string check(std::uint64_t seed, std::string* summary = nullptr) {
  world w;
  w.random.seed(seed);
  for (int n = 0; n < nodes; ++n) boot(w, n);
  int serial = 0;
  for (int i = 0; i < 3000 && w.wrong.empty(); ++i) {
    if (w.chance(0.3)) new_run(w, serial++);
    tick(w);
  }
  // Quiet: faults stop, every node is back; everything in line gets its turn.
  w.faults = false;
  for (int n = 0; n < nodes; ++n)
    if (!w.alive[n]) boot(w, n);
  for (int i = 0; i < 20000 && w.wrong.empty(); ++i) {
    tick(w);
    if (i % 25) continue;
    bool done = true;
    for (const auto& [id, r] : w.runs) done = done && (store::is_terminal(r.status) || r.status == run_status::failed);
    bool empty = true;
    for (const auto& [name, rec] : w.records) empty = empty && rec.first.running.empty() && rec.first.waiting.empty();
    if (done && empty) break;
  }
  if (!w.wrong.empty()) return w.wrong;
  std::ostringstream out;
  for (const auto& [id, r] : w.runs)
    if (!store::is_terminal(r.status)) {
      out << "run " << id << " never ended: " << store::to_string(r.status) << " in " << r.place.name << " since " << r.place.since_ms
          << " (owner n" << r.owner << ")\n";
      break;
    }
  for (const auto& [name, rec] : w.records)
    if (!rec.first.running.empty() || !rec.first.waiting.empty())
      out << "queue " << name << " still holds " << rec.first.running.size() << " running and " << rec.first.waiting.size()
          << " waiting (first: " << (rec.first.running.empty() ? rec.first.waiting[0].run : rec.first.running[0].run) << ")\n";
  if (summary)
    *summary = std::to_string(w.runs.size()) + " runs, " + std::to_string(w.admitted) + " admitted, " + std::to_string(w.retried) +
               " retried, " + std::to_string(w.cancelled) + " cancelled in line, " + std::to_string(w.crashes) + " crashes, " +
               std::to_string(w.takeovers) + " takeovers, " + std::to_string(w.lost_replies) + " writes made unheard, " +
               std::to_string(w.failed_writes) + " failed, " + std::to_string(w.stale_reads) + " stale reads, " +
               std::to_string(w.duplicates) + " admissions told twice, " + std::to_string(w.clock_jumps) +
               " clock jumps, most going at once " + std::to_string(w.max_running);
  return out.str();
}

} // namespace

TEST_CASE("simulation: run queues hold their limits across three orchestrators through crashes, takeovers, stale reads, clock jumps and lost writes") {
  simulation::for_each_seed(300, [](std::uint64_t seed) { return check(seed); });
  std::string summary;
  REQUIRE(check(1, &summary).empty());
  WARN("seed 1: " << summary);
}

TEST_CASE("queues: admission is in line order, a full key lets the runs behind it go") {
  config::queue_config limits;
  limits.name = "q";
  limits.concurrency = 3;
  limits.key_concurrency = 1;
  queue_record r;
  for (auto [run, key] : std::vector<std::pair<std::string, std::string>>{{"a", "x"}, {"b", "x"}, {"c", "y"}, {"d", ""}, {"e", "z"}})
    r.waiting.push_back(queue_entry{run, key, 1, 0});
  CHECK(admit(r, limits, 10) == std::vector<std::string>{"a", "c", "d"});
  CHECK(r.waiting.size() == 2);
  CHECK(r.waiting[0].run == "b");  // its key is full; it keeps its place
  CHECK(r.running[0].admitted_ms == 10);
  CHECK(admit(r, limits, 11).empty());  // full
  r.running.erase(r.running.begin());   // a (key x) ended
  CHECK(admit(r, limits, 12) == std::vector<std::string>{"b"});
  auto back = decode_queue_record(encode(r));
  REQUIRE(back);
  CHECK(back->running.size() == 3);
  CHECK(back->waiting[0].run == "e");
  CHECK(back->admitted == 4);
  CHECK_FALSE(decode_queue_record("\x81\xa7running\x05"));  // running is not a list
  CHECK_FALSE(decode_queue_record("not msgpack at all"));
}
