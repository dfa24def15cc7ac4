// Simulation of the leases that say which orchestrator serves which runs
// (replication/lease_keeper): three nodes on one simulated bucket, under seeded schedules of
// slow and lost answers, broker outages, pauses, suspends and crashes. Invariants: no two nodes
// hold a valid lease on the same runs at any instant (one owner acts at a time), and once the
// faults stop, every node's runs are served by a live node.
//   KEEL_SIM_SEEDS=N   how many seeds each test runs (default 1000)
//   KEEL_SIM_SEED=S    one seed only (to reproduce a failure: its report names the seed)
#include "replication/epoch_book.hpp"
#include "replication/lease_keeper.hpp"
#include "tests/simulation/simulated.hpp"
#include "tests/simulation/seeds.hpp"
#include "tests/simulation/trace_log.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <memory>
#include <set>

using namespace keel;
using namespace keel::simulation;

namespace {

constexpr std::int64_t lease_ms = 1000;

struct scenario_options {
  bool clock_stops_while_suspended = false;  // CLOCK_MONOTONIC's behaviour; keel uses CLOCK_BOOTTIME
  bool suspends = false;                     // machines sleep (a laptop lid, a VM migrated)
  bool broker_only = false;  // only the broker fails (outages, writes not taken): no node may stop
  // Two workers ask the owners of random domains (as task_wanted does) and act on the answers.
  bool workers = false;
  // ...with epochs: a worker names the newest epoch it saw, an owner answers with its own after
  // confirming any newer one named on the lease, and a worker acts on no answer of an older owner.
  bool epochs = false;
  bool check_one_owner = true;  // off where clocks are broken on purpose
  // Reads of the bucket sometimes answered by a replica up to two leases behind (a direct get).
  bool stale_reads = false;
};

struct worker_counts {
  std::int64_t acted = 0;
  std::int64_t refused = 0;         // answers of an owner older than one seen, not acted on
  std::int64_t unsure = 0;          // questions an owner left unanswered until its lease bore out the epoch named
  std::int64_t owners_stopped = 0;  // owners that learnt from a worker's epoch that they were taken over
};

struct outcome {
  std::string violation;  // empty when every invariant held
  std::string trace;
  worker_counts counts;
  std::int64_t stale_reads = 0;  // reads a replica behind answered
};

struct node {
  std::string id;
  int index = 0;  // its processes' node in the world (a restart is a new one)
  std::unique_ptr<simulated_environment> env;
  std::unique_ptr<bucket_view> bucket;
  std::unique_ptr<replication::lease_keeper> keeper;
};

class scenario {
public:
  scenario(std::uint64_t seed, const scenario_options& options) : w_(seed), bucket_(w_, faults(options)), options_(options) {}

  outcome run() {
    traced_logs logs(w_, "replication");
    bucket_.describe = [](const std::string& v) {
      auto lease = replication::lease_keeper::decode(v);
      return lease ? lease->first + " epoch " + std::to_string(lease->second) : std::string("?");
    };
    for (int i = 0; i < 3; ++i) start("n" + std::to_string(i));
    w_.spawn(-1, "faults", [this] { inject_faults(); });
    if (options_.workers)
      for (int i = 0; i < 2; ++i) w_.spawn(-1, "worker w" + std::to_string(i), [this, i] { work("w" + std::to_string(i)); });
    w_.run_until(faults_end_ms + 20 * lease_ms, [this] {
      if (options_.check_one_owner) check_one_owner();
    });
    if (violation_.empty()) check_served();
    for (const auto& e : w_.errors()) violation_ += "\n" + e;
    outcome out{violation_, w_.trace(), counts_, bucket_.stale_reads()};
    w_.halt();
    return out;
  }

private:
  static constexpr std::int64_t faults_end_ms = 20'000;
  static bucket_faults faults(const scenario_options& options) {
    bucket_faults f;
    f.until_ms = faults_end_ms;
    f.timeout_ms = lease_ms;  // as keel's lease requests (actors/orchestrator.cpp)
    // Broker faults alone: no answer lost to a single request (a lost renewal that outlasts a
    // lease is a node that cannot renew, which the others rightly take over).
    if (options.broker_only) f.lost_answer = 0;
    if (options.stale_reads) {
      f.stale_read = 0.25;
      f.stale_ms_max = 2 * lease_ms;
    }
    return f;
  }

  bool live(const node& n) const { return n.keeper && !w_.crashed(n.index); }

  // A node starts (again): under its id if its runs are still its own, else as a new member.
  void start(const std::string& id) {
    auto& n = *nodes_.emplace_back(std::make_unique<node>());
    n.id = id;
    n.index = next_index_++;
    ids_.insert(id);
    n.env = std::make_unique<simulated_environment>(w_, n.index, w_.uniform(0, 1'000'000'000), options_.clock_stops_while_suspended,
                                                    1.0 + static_cast<double>(w_.uniform(-20, 20)) / 1000.0);
    n.bucket = std::make_unique<bucket_view>(bucket_);
    w_.spawn(n.index, "start " + id, [this, &n] {
      replication::lease_keeper::hooks hooks;
      hooks.take_over = [this, &n](const std::string& domain, std::uint64_t epoch) {
        w_.note(n.id + " takes over " + domain + " (epoch " + std::to_string(epoch) + ")");
      };
      hooks.lost = [this, &n](const std::string& domain, const std::string& why) {
        w_.note(n.id + " lost " + domain + ": " + why + "; it stops");
        // Only the broker failed: a node gives up runs only that another live node has taken.
        if (options_.broker_only && violation_.empty()) {
          // (Taken: the bucket names a live node; that node may learn it a round later, when its
          // claim's answer was lost.)
          bool taken = false;
          auto entry = bucket_.peek(domain);
          auto lease = entry ? replication::lease_keeper::decode(entry->value)
                             : result<std::pair<std::string, std::uint64_t>>(make_error(errc::not_found, "none"));
          for (const auto& other : nodes_)
            taken = taken || (other.get() != &n && live(*other) && lease && lease->first == other->id);
          if (!taken)
            violation_ = "at " + std::to_string(w_.now_ms()) + " ms, " + n.id + " gave up the runs of " + domain +
                         " though only the broker failed, and no live node has them";
        }
        if (why.find("a message named epoch") != std::string::npos) {
          ++counts_.owners_stopped;
          // Only a lease that certainly names another (or a newer epoch) drops a domain: the one
          // named, or the node's own (every domain goes with it).
          auto named = why.find("of " + domain + " and") != std::string::npos ? domain : n.id;
          auto entry = bucket_.peek(named);
          auto lease = entry ? replication::lease_keeper::decode(entry->value)
                             : result<std::pair<std::string, std::uint64_t>>(make_error(errc::not_found, "none"));
          auto mine = asked_epoch_[&n][named];
          if (violation_.empty() && (!lease || (lease->first == n.id && lease->second == mine)))
            violation_ = "at " + std::to_string(w_.now_ms()) + " ms, " + n.id + " gave up the runs of " + domain +
                         " on a worker's epoch though the lease of " + named + " names it: " +
                         (lease ? lease->first + " epoch " + std::to_string(lease->second) : "none");
        }
        stop(n);
      };
      auto k = replication::lease_keeper::start(*n.env, *n.bucket, n.id, lease_ms, hooks);
      if (!k) {
        w_.note(n.id + " did not start: " + k.error().message);
        // Its runs were taken over: it rejoins as a new member, under a name never used.
        if (k.error().code == errc::conflict) restart_later("m" + std::to_string(next_member_++));
        return;
      }
      n.keeper = std::move(*k);
    });
  }
  // The real node exits and is started again by its supervisor (unless another copy of it runs:
  // two copies under one name would take the name from each other for ever).
  void stop(node& n) {
    if (w_.crashed(n.index)) return;
    w_.crash(n.index);
    for (const auto& other : nodes_)
      if (other.get() != &n && other->id == n.id && !w_.crashed(other->index)) return;
    restart_later(n.id);
  }
  void restart_later(const std::string& id) {
    // Bounds on the churn: far above what 20 s of faults make; none once the faults are long over
    // (a node still starting at the end would serve nothing yet).
    if (nodes_.size() >= 60 || w_.now_ms() > faults_end_ms + 8 * lease_ms) return;
    w_.spawn(-1, "restart " + id, [this, id] {
      w_.sleep(w_.uniform(200, 3000));
      start(id);
    });
  }

  // From a process of no node (never paused): until faults_end_ms, then quiet.
  void inject_faults() {
    while (w_.now_ms() < faults_end_ms) {
      w_.sleep(w_.uniform(100, 2500));
      std::vector<node*> up;
      for (auto& n : nodes_)
        if (live(*n)) up.push_back(n.get());
      if (up.empty()) continue;
      auto& victim = *up[static_cast<std::size_t>(w_.uniform(0, static_cast<std::int64_t>(up.size()) - 1))];
      auto kind = w_.uniform(0, 10);
      if (options_.broker_only) {
        // Outages of up to 10 s, each followed by at least a lease of a broker that works (else
        // one node's renewals can fall in the outages while another's go through: that node did
        // fail to renew, and is rightly taken over).
        if (w_.now_ms() < broker_back_ms_ + lease_ms) w_.sleep(broker_back_ms_ + lease_ms - w_.now_ms());
        if (w_.now_ms() + 200 >= faults_end_ms) break;  // every outage is over when the faults end
        auto ms = std::min<std::int64_t>(w_.uniform(200, 10'000), faults_end_ms - w_.now_ms());
        broker_back_ms_ = w_.now_ms() + ms;
        if (kind <= 5) {
          w_.note("the broker takes no write for " + std::to_string(ms) + " ms");
          bucket_.writes_out_until(w_.now_ms() + ms);
        } else {
          w_.note("the broker answers nothing for " + std::to_string(ms) + " ms");
          bucket_.out_until(w_.now_ms() + ms);
        }
        continue;
      }
      if (kind <= 4) {
        auto ms = w_.uniform(100, 3 * lease_ms);
        w_.note(victim.id + " paused for " + std::to_string(ms) + " ms");
        w_.pause(victim.index, ms);
      } else if (kind <= 6 && options_.suspends) {
        auto ms = w_.uniform(100, 3 * lease_ms);
        w_.note(victim.id + " suspended for " + std::to_string(ms) + " ms");
        w_.suspend(victim.index, ms);
      } else if (kind == 7) {
        auto ms = w_.uniform(200, 4000);
        w_.note("the broker answers nothing for " + std::to_string(ms) + " ms");
        bucket_.out_until(w_.now_ms() + ms);
      } else if (kind == 9 && twins_++ < 2) {
        // A second copy under the same name while the first is only paused (a supervisor that
        // gave up on a hung process, an operator's mistake): both must never act at once.
        auto ms = w_.uniform(100, 2 * lease_ms);
        w_.note(victim.id + " paused for " + std::to_string(ms) + " ms; a second copy of it starts");
        w_.pause(victim.index, ms);
        start(victim.id);
      } else if (kind == 8 && kills_++ < 3) {
        w_.note(victim.id + " is killed");
        stop(victim);
      }
    }
  }

  // A worker: asks the owner of a random domain (one of the nodes that hold it, as a queue group
  // picks one) whether a task is wanted, and acts on the answer. An owner answers while its lease
  // is valid by its clock (and, with epochs, its epoch is confirmed against any newer one named).
  void work(const std::string& me) {
    replication::epoch_book book;
    std::map<std::string, std::pair<std::uint64_t, std::string>> last;  // domain -> the epoch and owner last acted on
    while (w_.now_ms() < faults_end_ms + 10 * lease_ms) {
      w_.sleep(w_.uniform(50, 500));
      if (ids_.empty()) continue;
      auto domain = *std::next(ids_.begin(), w_.uniform(0, static_cast<std::int64_t>(ids_.size()) - 1));
      std::vector<node*> holders;
      for (auto& n : nodes_)
        if (live(*n) && n->keeper->holds(domain)) holders.push_back(n.get());
      if (holders.empty()) continue;
      auto& owner = *holders[static_cast<std::size_t>(w_.uniform(0, static_cast<std::int64_t>(holders.size()) - 1))];
      w_.sleep(w_.uniform(1, 5));  // the question's way
      if (!live(owner) || !owner.keeper->valid(domain)) continue;  // says nothing
      asked_epoch_[&owner][domain] = owner.keeper->epoch_of(domain);
      auto [verdict, epoch] = owner.keeper->named(domain, options_.epochs ? book.highest(domain) : 0);
      if (verdict == replication::lease_keeper::verdict::unsure) ++counts_.unsure;
      if (verdict != replication::lease_keeper::verdict::held || epoch == 0) continue;  // says nothing (not now)
      w_.sleep(w_.uniform(1, 5));  // the answer's way
      if (options_.epochs && epoch < book.saw(domain, epoch)) {
        ++counts_.refused;
        continue;
      }
      ++counts_.acted;
      auto& before = last[domain];
      if (epoch < before.first && violation_.empty()) {
        violation_ = "at " + std::to_string(w_.now_ms()) + " ms, worker " + me + " acted on the answer of " + owner.id +
                     " (epoch " + std::to_string(epoch) + ") for the runs of " + domain + " after acting on " +
                     before.second + "'s (epoch " + std::to_string(before.first) + ")";
        w_.note(violation_);
      }
      if (epoch >= before.first) before = {epoch, owner.id};
    }
  }

  void check_one_owner() {
    if (!violation_.empty()) return;
    for (const auto& domain : ids_) {
      std::vector<std::string> valid;
      for (const auto& n : nodes_)
        if (live(*n) && n->keeper->valid(domain)) valid.push_back(n->id);
      if (valid.size() > 1) {
        violation_ = "at " + std::to_string(w_.now_ms()) + " ms, " + valid[0] + " and " + valid[1] +
                     " both hold a valid lease on the runs of " + domain;
        w_.note(violation_);
        return;
      }
    }
  }
  // Once quiet: every node's runs are served by a live node (its own or a taker).
  void check_served() {
    for (const auto& domain : ids_) {
      bool served = false;
      for (const auto& n : nodes_) served = served || (live(*n) && n->keeper->valid(domain));
      if (!served) {
        violation_ = "20 leases after the last fault, nobody serves the runs of " + domain;
        break;
      }
    }
    if (violation_.empty()) return;
    for (const auto& n : nodes_) {
      std::string held;
      if (n->keeper)
        for (const auto& d : n->keeper->domains()) held += " " + d + (n->keeper->valid(d) ? "" : " (not valid)");
      w_.note("at the end, " + n->id + " (node " + std::to_string(n->index) + (live(*n) ? ", live)" : n->keeper ? ", stopped)" : ", not started)") + " holds:" + held);
    }
    for (const auto& d : ids_)
      if (auto e = bucket_.peek(d)) {
        auto lease = replication::lease_keeper::decode(e->value);
        w_.note("the bucket: " + d + " held by " + (lease ? lease->first + " epoch " + std::to_string(lease->second) : "?") +
                " at revision " + std::to_string(e->revision));
      }
  }

  world w_;
  simulated_bucket bucket_;
  scenario_options options_;
  std::vector<std::unique_ptr<node>> nodes_;
  std::set<std::string> ids_;
  int next_index_ = 0;
  int kills_ = 0;
  int twins_ = 0;
  std::int64_t broker_back_ms_ = 0;
  int next_member_ = 1;
  std::string violation_;
  worker_counts counts_;
  std::map<const node*, std::map<std::string, std::uint64_t>> asked_epoch_;  // the epoch a node held when last asked
};

outcome run_scenario(std::uint64_t seed, const scenario_options& options) { return scenario(seed, options).run(); }

} // namespace

TEST_CASE("simulation: leases: no two nodes hold a valid lease on the same runs, and every node's runs end up served",
          "[replication][simulation]") {
  for_each_seed(1000, [](std::uint64_t seed) {
    auto out = run_scenario(seed, {});
    return out.violation.empty() ? std::string() : out.violation + "\n" + out.trace;
  });
}

TEST_CASE("simulation: leases: a machine that sleeps does not keep its lease on a clock that ran on",
          "[replication][simulation]") {
  for_each_seed(1000, [](std::uint64_t seed) {
    scenario_options o;
    o.suspends = true;
    auto out = run_scenario(seed, o);
    return out.violation.empty() ? std::string() : out.violation + "\n" + out.trace;
  });
}

TEST_CASE("simulation: leases: a broker that answers nothing or takes no writes for a while makes no node give up runs that no live node has taken",
          "[replication][simulation]") {
  for_each_seed(1000, [](std::uint64_t seed) {
    scenario_options o;
    o.broker_only = true;
    auto out = run_scenario(seed, o);
    return out.violation.empty() ? std::string() : out.violation + "\n" + out.trace;
  });
}

TEST_CASE("simulation: leases: the harness finds two owners when leases are measured on a clock that stops while the machine sleeps",
          "[replication][simulation]") {
  // CLOCK_MONOTONIC (std::steady_clock) stops during a suspend: the holder wakes believing its
  // lease valid while another has taken it. keel measures leases on CLOCK_BOOTTIME; this checks
  // that the simulation would see the difference.
  std::uint64_t found = 0;
  for (std::uint64_t seed = 1; seed <= 200 && !found; ++seed) {
    scenario_options o;
    o.suspends = true;
    o.clock_stops_while_suspended = true;
    if (run_scenario(seed, o).violation.find("both hold a valid lease") != std::string::npos) found = seed;
  }
  INFO("no seed of 1..200 found two owners with a clock that stops");
  CHECK(found != 0);
}

namespace {
// Machines that sleep, measured on a clock that stops meanwhile: the time fence fails (above), and
// an owner taken over while asleep wakes believing its lease valid. What remains is the epoch.
scenario_options broken_clocks(bool epochs) {
  scenario_options o;
  o.suspends = true;
  o.clock_stops_while_suspended = true;
  o.workers = true;
  o.epochs = epochs;
  o.check_one_owner = false;
  return o;
}
} // namespace

TEST_CASE("simulation: epochs: a worker never acts on an owner older than one it heard, and an owner a newer epoch names "
          "learns it was taken over, even on clocks that stop while the machine sleeps",
          "[replication][simulation]") {
  worker_counts total;
  for_each_seed(1000, [&](std::uint64_t seed) {
    auto out = run_scenario(seed, broken_clocks(true));
    total.acted += out.counts.acted;
    total.refused += out.counts.refused;
    total.unsure += out.counts.unsure;
    total.owners_stopped += out.counts.owners_stopped;
    return out.violation.empty() ? std::string() : out.violation + "\n" + out.trace;
  });
  // Not vacuous: stale owners answered, were refused, and were stopped by what workers named
  // (over the seeds CI runs; one seed replayed alone need not show each).
  if (std::getenv("KEEL_SIM_SEED") || total.acted < 10'000) return;
  INFO("answers acted on " << total.acted << ", refused " << total.refused << ", unanswered until checked "
                            << total.unsure << ", owners stopped " << total.owners_stopped);
  CHECK(total.acted > 0);
  CHECK(total.unsure > 0);
  CHECK(total.owners_stopped > 0);
}

TEST_CASE("simulation: epochs: without them the harness finds a worker acting on a stale owner after its taker",
          "[replication][simulation]") {
  std::uint64_t found = 0;
  for (std::uint64_t seed = 1; seed <= 300 && !found; ++seed)
    if (run_scenario(seed, broken_clocks(false)).violation.find("after acting on") != std::string::npos) found = seed;
  INFO("no seed of 1..300 found a worker acting on a stale owner without epochs");
  CHECK(found != 0);
  INFO("found on seed " << found);
  CHECK(found <= 300);
}

TEST_CASE("simulation: epochs: with clocks that count sleeps, workers asking owners change nothing of the leases' promises",
          "[replication][simulation]") {
  for_each_seed(1000, [](std::uint64_t seed) {
    scenario_options o;
    o.suspends = true;
    o.workers = true;
    o.epochs = true;
    auto out = run_scenario(seed, o);
    return out.violation.empty() ? std::string() : out.violation + "\n" + out.trace;
  });
}

TEST_CASE("simulation: leases: reads answered by a replica up to two leases behind change nothing of the leases' promises",
          "[replication][simulation]") {
  // A lease read from a replica behind looks unmoved (a watcher may try to take it: its
  // compare-and-set, at the leader, is refused) or older than the holder's own (nothing follows
  // from it); a node starting may not see its own key yet.
  std::int64_t stale = 0;
  for_each_seed(1000, [&](std::uint64_t seed) {
    scenario_options o;
    o.suspends = true;
    o.stale_reads = true;
    auto out = run_scenario(seed, o);
    stale += out.stale_reads;
    return out.violation.empty() ? std::string() : out.violation + "\n" + out.trace;
  });
  if (std::getenv("KEEL_SIM_SEED")) return;
  INFO("reads answered by a replica behind: " << stale);
  CHECK(stale > 0);
}

TEST_CASE("simulation: epochs: a lease read from a replica behind stops no owner and lets no worker act on a stale one",
          "[replication][simulation]") {
  // The owner that checks an epoch a worker named may read its lease from a replica behind:
  // naming itself in its own epoch (the real lease a taker's) it keeps telling the worker to ask
  // again; naming an older epoch, it takes nothing. Neither may stop an owner the lease still names.
  worker_counts total;
  std::int64_t stale = 0;
  for_each_seed(1000, [&](std::uint64_t seed) {
    auto o = broken_clocks(true);
    o.stale_reads = true;
    auto out = run_scenario(seed, o);
    total.acted += out.counts.acted;
    total.owners_stopped += out.counts.owners_stopped;
    stale += out.stale_reads;
    return out.violation.empty() ? std::string() : out.violation + "\n" + out.trace;
  });
  if (std::getenv("KEEL_SIM_SEED") || total.acted < 10'000) return;
  INFO("answers acted on " << total.acted << ", owners stopped " << total.owners_stopped << ", stale reads " << stale);
  CHECK(stale > 0);
  CHECK(total.owners_stopped > 0);
}
