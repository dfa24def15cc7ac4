// Simulation of a takeover against an owner that goes on writing: n1 writes batches of new and
// existing runs (replication/log_writer) to a simulated log while its machine is paused and
// suspended past its lease; n2 watches the leases, claims n1's and takes its runs over
// (replication/takeover, into a real RocksDB store), then writes them and cuts some (a final
// entry, then a purge of what came before, its fence included). Gates are purged often. n1's runs leave its memory now and then (where
// each ends is then looked up when it is written again). Half the seeds give n1 a clock that stops
// while its machine sleeps, so that n1 wakes sure its lease still holds: time cannot fence it,
// only the log can. Invariants, once n2 took the runs over: every entry n1 has in the log is
// before n2's fence on its run (n2 read it), new runs included; every write n1 acknowledged is in
// the log; no entry of n1 follows a fence.
//   KEEL_SIM_SEEDS=N, KEEL_SIM_SEED=S as in the lease simulation.
#include "replication/admission.hpp"
#include "replication/lease_keeper.hpp"
#include "replication/log_writer.hpp"
#include "replication/takeover.hpp"
#include "runtime/ids.hpp"
#include "tests/simulation/seeds.hpp"
#include "tests/simulation/simulated.hpp"
#include "tests/simulation/simulated_log.hpp"
#include "tests/simulation/trace_log.hpp"
#include "tests/support/test_support.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <map>
#include <set>

using namespace keel;
using namespace keel::simulation;

namespace {

constexpr std::int64_t lease_ms = 1000;
constexpr std::int64_t writes_end_ms = 12'000;

// n1's handle on the bucket, whose writes (its renewals) are sometimes slow on their way: after a
// pause, n1 then goes on writing for a while before it learns its lease was taken.
class slow_bucket_view final : public replication::lease_bucket {
public:
  slow_bucket_view(world& w, simulated_bucket& b) : world_(w), bucket_(b) {}
  result<std::optional<entry>> get_entry(const std::string& key) override { return bucket_.get_entry(key); }
  result<std::uint64_t> create(const std::string& key, const std::string& value) override { return bucket_.create(key, value); }
  result<std::uint64_t> update(const std::string& key, const std::string& value, std::uint64_t revision) override {
    if (world_.chance(0.3)) world_.sleep(world_.uniform(50, 400));
    return bucket_.update(key, value, revision);
  }
  result<std::vector<std::string>> keys() override { return bucket_.keys(); }

private:
  world& world_;
  simulated_bucket& bucket_;
};

struct node {
  std::string id;
  int index = 0;
  std::unique_ptr<simulated_environment> env;
  std::unique_ptr<replication::lease_bucket> bucket;
  std::unique_ptr<replication::ownership> owner;
  std::unique_ptr<replication::log_writer> writer;
  bool stopped = false;
};

std::string subject_of(const std::string& run) { return "keel.log." + std::string(run_id{run}.owner()) + "." + run; }

class scenario {
public:
  scenario(std::uint64_t seed, store::run_store& store) : w_(seed), bucket_(w_, bucket_options()), log_(w_, log_options()), store_(store) {}

  std::string run() {
    traced_logs logs(w_, "replication");
    broken_clock_ = w_.chance(0.5);
    w_.note(broken_clock_ ? "n1's clock stops while its machine sleeps" : "n1's clock runs while its machine sleeps");
    start(n1_, "n1", 0, broken_clock_);
    start(n2_, "n2", 1, false);
    w_.spawn(0, "n1 writes", [this] { write(); });
    w_.spawn(-1, "faults", [this] { inject_faults(); });
    w_.run_until(writes_end_ms + 5 * lease_ms);
    // Quiet: n1, if it still runs, settles each run's last entry (sent again if need be).
    w_.spawn(0, "n1 settles", [this] {
      for (const auto& run : runs_) (void)n1_.writer->settle(run);
    });
    w_.run_until(writes_end_ms + 20 * lease_ms);
    check();
    for (const auto& e : w_.errors()) wrong_ += "\n" + e;
    auto trace = w_.trace();
    w_.halt();
    return wrong_.empty() ? std::string() : wrong_ + "\n" + trace;
  }

private:
  static bucket_faults bucket_options() {
    bucket_faults f;
    f.until_ms = writes_end_ms;
    f.timeout_ms = lease_ms;
    f.lost_answer = 0.005;
    return f;
  }
  static log_faults log_options() {
    log_faults f;
    f.until_ms = writes_end_ms;
    return f;
  }

  void start(node& n, const std::string& id, int index, bool clock_stops) {
    n.id = id;
    n.index = index;
    n.env = std::make_unique<simulated_environment>(w_, index, w_.uniform(0, 1'000'000'000), clock_stops);
    if (id == "n1") n.bucket = std::make_unique<slow_bucket_view>(w_, bucket_);
    else n.bucket = std::make_unique<bucket_view>(bucket_);
    n.owner = std::make_unique<replication::ownership>(id);
    n.writer = std::make_unique<replication::log_writer>(*n.owner, subject_of, 4);  // gates purged often
    replication::lease_keeper::hooks hooks;
    hooks.lost = [this, &n](const std::string& domain, const std::string& why) {
      w_.note(n.id + " lost " + domain + ": " + why + "; it stops");
      n.stopped = true;
      w_.crash(n.index);
    };
    hooks.take_over = [this, &n](const std::string& domain, std::uint64_t epoch) {
      if (n.id != "n2") return;  // only n2 takes runs over here
      w_.note("n2 takes over " + domain + " (epoch " + std::to_string(epoch) + ")");
      replication::takeover_context c{*n.env, log_, *n.bucket, *n.owner, *n.writer, store_, "keel.log"};
      auto out = replication::take_over(c, domain, epoch);
      if (!out.done) {
        w_.note("n2's takeover of " + domain + " stopped: " + out.why_not);
        return;
      }
      n.owner->serve(domain);
      taken_.insert(domain);
      w_.note("n2 took over " + domain + ": " + std::to_string(out.entries) + " entries read");
      if (domain == "n1") w_.spawn(1, "n2 serves n1's runs", [this, &n] { serve_taken(n); });
    };
    // Started from a process of the node (its threads are the node's processes).
    w_.spawn(index, "start " + id, [this, &n, hooks] {
      while (true) {
        auto k = replication::lease_keeper::start(*n.env, *n.bucket, n.id, lease_ms, hooks);
        if (k) {
          n.owner->use(std::move(*k));
          return;
        }
        w_.note(n.id + " did not start: " + k.error().message);
        if (k.error().code == errc::conflict) {
          n.stopped = true;
          return;
        }
        w_.sleep(500);  // the broker did not answer: started again
      }
    });
  }

  std::string new_run_name() {
    char unique[32];
    std::snprintf(unique, sizeof unique, "s%06llur%05d", static_cast<unsigned long long>(w_.seed()), next_run_++);
    std::string name = unique;
    name.resize(16, 'x');
    return name + "-n1";
  }

  // n1's orchestrator: batches of one to three runs, new ones among them, each batch on a gate.
  void write() {
    while (!n1_.owner->leases()) w_.sleep(10);
    std::uint64_t next = 1;
    while (w_.now_ms() < writes_end_ms && !n1_.stopped) {
      w_.sleep(w_.uniform(1, 30));
      std::set<std::string> picked;
      for (auto n = w_.uniform(1, 3); static_cast<std::int64_t>(picked.size()) < n;) {
        if (runs_.empty() || w_.chance(0.35)) {
          auto run = new_run_name();
          n1_.writer->known(run, 0);  // a new run: nothing of it in the log yet
          runs_.push_back(run);
          picked.insert(run);
        } else {
          picked.insert(runs_[static_cast<std::size_t>(w_.uniform(0, static_cast<std::int64_t>(runs_.size()) - 1))]);
        }
      }
      std::vector<store::run_transition> batch;
      std::map<std::string, std::pair<std::uint64_t, bool>> id_of;  // run -> (write id, synced)
      for (const auto& run : picked) {
        store::run_transition t;
        t.record.run_id = run;
        t.entries_only = true;
        t.sync = w_.chance(0.7);
        t.received.push_back({next, "w" + std::to_string(next)});
        id_of[run] = {next++, t.sync};
        batch.push_back(std::move(t));
      }
      auto started = n1_.writer->replicate(log_, batch, static_cast<int>(w_.uniform(0, replication::admission_gates - 1)));
      auto failed = started.wait ? started.wait() : replication::log_writer::failures{};
      for (const auto& [run, id] : id_of)
        if (!started.refused.count(run) && !failed.count(run) && id.second) acknowledged_[run].push_back(id.first);
      // A run leaves memory now and then (it waits for a person): where its log ends is no longer
      // known here, and is looked up when it is written again.
      if (w_.chance(0.2)) n1_.writer->forget_if_settled(runs_[static_cast<std::size_t>(w_.uniform(0, static_cast<std::int64_t>(runs_.size()) - 1))]);
    }
  }

  // n2, once it took n1's runs over, writes them and cuts some (its final entry, then a purge of
  // what came before it, the fence included), while n1 may still have writes of its own to make.
  void serve_taken(node& n) {
    std::vector<std::string> taken;
    for (const auto& [subject, list] : log_.subjects()) {
      auto token = subject.substr(subject.rfind('.') + 1);
      if (!subject.starts_with("keel.log.n1.") || replication::is_gate_token(token)) continue;
      for (const auto& e : list)
        if (e.writer == "n2") {
          taken.push_back(token);
          break;
        }
    }
    std::uint64_t next = 1'000'000;
    // Half of them are cut at once (they had ended), the rest written and cut now and then.
    std::size_t at_once = taken.size() / 2;
    while (!taken.empty() && w_.now_ms() < writes_end_ms + 2 * lease_ms) {
      if (at_once > 0) --at_once;
      else w_.sleep(w_.uniform(20, 300));
      const auto& run = taken[static_cast<std::size_t>(w_.uniform(0, static_cast<std::int64_t>(taken.size()) - 1))];
      store::run_transition t;
      t.record.run_id = run;
      t.entries_only = true;
      t.sync = true;
      t.received.push_back({next, "w" + std::to_string(next)});
      ++next;
      if (at_once == 0 && w_.chance(0.1)) {
        // A run made under an id of n1's (an idempotency key n1 claimed, answered by n2): n2
        // admits it on n1's gates, after its own fence there.
        t.record.run_id = new_run_name();
        n.writer->known(t.record.run_id, 0);
        auto started = n.writer->replicate(log_, {t}, static_cast<int>(w_.uniform(0, replication::admission_gates - 1)));
        auto failed = started.wait ? started.wait() : replication::log_writer::failures{};
        for (const auto& f : {started.refused, failed})
          if (auto it = f.find(t.record.run_id); it != f.end() && it->second.code == errc::conflict && wrong_.empty())
            wrong_ = "n2 could not write run " + t.record.run_id + " of n1's, whose runs it took over: " + it->second.message;
        continue;
      }
      if (at_once == 0 && w_.chance(0.6)) {
        auto started = n.writer->replicate(log_, {t}, 0);
        if (started.wait) (void)started.wait();
        continue;
      }
      auto at = n.writer->append_after_last(log_, run, t);
      if (!at) continue;
      auto subject = subject_of(run);
      for (const auto& e : log_.subjects().at(subject))
        if (e.writer == "n1" && e.seq < *at)
          if (auto transitions = store::decode_transitions(e.data))
            for (const auto& tr : *transitions)
              for (const auto& r : tr.received) cut_.insert(r.order);
      (void)log_.purge_before(subject, *at);
    }
  }

  // From a process of no node: n1's machine paused and suspended, some past its lease.
  void inject_faults() {
    while (w_.now_ms() < writes_end_ms - 3 * lease_ms) {
      w_.sleep(w_.uniform(300, 3000));
      if (n1_.stopped) return;
      auto ms = w_.uniform(100, 3 * lease_ms);
      if (w_.chance(0.5)) {
        w_.note("n1 paused for " + std::to_string(ms) + " ms");
        w_.pause(0, ms);
      } else {
        w_.note("n1's machine sleeps for " + std::to_string(ms) + " ms");
        w_.suspend(0, ms);
      }
    }
  }

  void check() {
    std::set<std::uint64_t> in_log;  // write ids of n1 in the log
    std::map<std::string, std::uint64_t> fence_of;  // run -> sequence of n2's first entry there
    for (const auto& [subject, list] : log_.subjects()) {
      auto token = subject.substr(subject.rfind('.') + 1);
      if (!subject.starts_with("keel.log.n1.") || replication::is_gate_token(token)) continue;
      for (const auto& s : list)
        if (s.writer == "n2" && !fence_of.count(token)) fence_of[token] = s.seq;
      for (const auto& s : list) {
        if (s.writer != "n1") continue;
        auto transitions = store::decode_transitions(s.data);
        if (transitions)
          for (const auto& t : *transitions)
            for (const auto& r : t.received) in_log.insert(r.order);
        if (!taken_.count("n1")) continue;
        if (!fence_of.count(token)) {
          wrong_ = "run " + token + ": n1's entry at " + std::to_string(s.seq) +
                   " is in the log, but n2 took n1's runs over without fencing the run: it never read it" +
                   gates_described();
          return;
        }
        if (s.seq > fence_of[token]) {
          wrong_ = "run " + token + ": n1's entry at " + std::to_string(s.seq) + " follows n2's fence at " +
                   std::to_string(fence_of[token]);
          return;
        }
      }
    }
    for (const auto& [run, ids] : acknowledged_)
      for (auto id : ids)
        if (!in_log.count(id) && !cut_.count(id)) {
          wrong_ = "run " + run + ": write " + std::to_string(id) + " was acknowledged but is not in the log";
          return;
        }
    if (log_.tickets_open() > 0 && !n1_.stopped && !w_.crashed(0))
      wrong_ = std::to_string(log_.tickets_open()) + " tickets of the log were never waited for nor forgotten";
  }

  // What the gates hold, for a failure's report.
  std::string gates_described() const {
    std::string out;
    for (const auto& [subject, list] : log_.subjects()) {
      if (subject.find("._admit-") == std::string::npos) continue;
      out += "\n" + subject + ":";
      for (const auto& s : list) {
        out += " " + std::to_string(s.seq) + " " + s.writer;
        if (auto a = replication::decode_admission(s.data)) {
          out += " admits";
          for (const auto& r : a->runs) out += " " + r.substr(0, 16);
        } else {
          out += " fence";
        }
        out += ";";
      }
    }
    return out;
  }

  world w_;
  simulated_bucket bucket_;
  simulated_log log_;
  store::run_store& store_;
  bool broken_clock_ = false;
  node n1_, n2_;
  std::vector<std::string> runs_;
  int next_run_ = 0;
  std::map<std::string, std::vector<std::uint64_t>> acknowledged_;
  std::set<std::string> taken_;
  std::set<std::uint64_t> cut_;  // n1's writes purged by n2's cuts (its final entry holds them)
  std::string wrong_;
};

} // namespace

TEST_CASE("simulation: takeover: an owner whose clock says its lease still holds writes nothing its taker did not read, new runs included",
          "[simulation][replication]") {
  keel::testing::temp_dir dir;
  store::store_options options;
  options.path = dir.file("store");
  options.fsync = false;
  auto store = store::run_store::open(options);
  REQUIRE(store.ok());
  for_each_seed(1000, [&](std::uint64_t seed) { return scenario(seed, **store).run(); });
}
