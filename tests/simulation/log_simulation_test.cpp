// Simulation of the run-log writer (replication/log_writer): one owner writes batches of several
// runs (synced and not) to a simulated log whose answers are slow or lost, while a taker fences
// runs at random. Invariants: every write acknowledged with a sync is in the log; for every run
// still the owner's, what it wrote to its store is exactly what the log holds of it, in order
// (a batch that fails for one run never leaves the others in one place and not the other); the log
// holds no write of the owner after a fence; no ticket is left open.
//   KEEL_SIM_SEEDS=N, KEEL_SIM_SEED=S as in the lease simulation.
#include "replication/log_writer.hpp"
#include "replication/takeover.hpp"
#include "runtime/ids.hpp"
#include "tests/simulation/seeds.hpp"
#include "tests/simulation/simulated_log.hpp"
#include "tests/simulation/trace_log.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <optional>
#include <set>

using namespace keel;
using namespace keel::simulation;

namespace {

constexpr std::int64_t writes_end_ms = 20'000;
constexpr int run_count = 6;

std::string run_name(int i) {
  std::string unique = "simrun" + std::to_string(i);
  unique.resize(16, '0');  // the unique part of a run id (runtime/ids.cpp)
  return unique + "-n1";
}

// The writes of `writer` in one subject of the log, by id (a received result's order).
std::vector<std::uint64_t> writes_in(const std::vector<simulated_log::stored>& list, const std::string& writer,
                                     std::uint64_t after_seq = 0) {
  std::vector<std::uint64_t> out;
  for (const auto& s : list) {
    if (s.writer != writer || s.seq <= after_seq) continue;
    auto transitions = store::decode_transitions(s.data);
    if (!transitions) continue;
    for (const auto& t : *transitions)
      for (const auto& r : t.received) out.push_back(r.order);
  }
  return out;
}

std::string run_scenario(std::uint64_t seed) {
  world w(seed);
  traced_logs logs(w, "replication");
  log_faults faults;
  faults.until_ms = writes_end_ms;
  simulated_log log(w, faults);
  replication::ownership owner("n1");
  replication::log_writer writer(owner, [](const std::string& run) { return "keel.log.n1." + run; });
  std::map<std::string, std::vector<std::uint64_t>> stored, acknowledged;  // run -> write ids
  std::map<std::string, std::uint64_t> fenced_at;                        // run -> the fence's sequence
  std::string wrong;

  w.spawn(0, "owner", [&] {
    std::uint64_t next = 1;
    while (w.now_ms() < writes_end_ms) {
      w.sleep(w.uniform(1, 30));
      std::set<int> picked;
      for (auto n = w.uniform(1, 4); static_cast<std::int64_t>(picked.size()) < n;) picked.insert(static_cast<int>(w.uniform(0, run_count - 1)));
      std::vector<store::run_transition> batch;
      std::map<std::string, std::pair<std::uint64_t, bool>> id_of;  // run -> (write id, synced)
      for (int i : picked) {
        store::run_transition t;
        t.record.run_id = run_name(i);
        t.entries_only = true;
        t.sync = w.chance(0.7);
        t.received.push_back({next, "w" + std::to_string(next)});
        id_of[t.record.run_id] = {next++, t.sync};
        batch.push_back(std::move(t));
      }
      auto started = writer.replicate(log, batch);
      for (const auto& t : batch)
        if (!started.refused.count(t.record.run_id)) stored[t.record.run_id].push_back(id_of[t.record.run_id].first);
      auto failed = started.wait ? started.wait() : replication::log_writer::failures{};
      for (const auto& [run, id] : id_of)
        if (!started.refused.count(run) && !failed.count(run) && id.second) acknowledged[run].push_back(id.first);
    }
  });
  w.spawn(1, "taker", [&] {
    while (w.now_ms() < writes_end_ms) {
      w.sleep(w.uniform(500, 6000));
      // A takeover fences the runs it read (those with an entry): a run never written has nothing
      // to fence, and its first write is kept from a node that lost it by the lease, not the log.
      auto run = run_name(static_cast<int>(w.uniform(0, run_count - 1)));
      if (fenced_at.count(run) || !log.subjects().count("keel.log.n1." + run)) continue;
      for (int tries = 0; tries < 20; ++tries) {
        auto last = log.last_sequence("keel.log.n1." + run);
        if (!last) continue;
        auto out = log.append({{"keel.log.n1." + run, replication::encode_fence("taker", 2), static_cast<std::int64_t>(*last), "taker"}});
        if (out[0]) {
          fenced_at[run] = *out[0];
          w.note("the taker fenced " + run + " at " + std::to_string(*out[0]));
          break;
        }
        if (out[0].error().code == errc::timeout) {  // stored or not: look
          const auto& list = log.subjects().at("keel.log.n1." + run);
          if (!list.empty() && list.back().writer == "taker") {
            fenced_at[run] = list.back().seq;
            break;
          }
        }
      }
    }
  });
  w.run_until(writes_end_ms + 5000);
  // Quiet: each run's last entry settled (sent again if need be).
  w.spawn(0, "settle", [&] {
    for (int i = 0; i < run_count; ++i) (void)writer.settle(run_name(i));
  });
  w.run_until(writes_end_ms + 60'000);
  for (int i = 0; i < run_count && wrong.empty(); ++i) {
    auto run = run_name(i);
    const auto& list = log.subjects().count("keel.log.n1." + run) ? log.subjects().at("keel.log.n1." + run)
                                                                  : std::vector<simulated_log::stored>{};
    auto in_log = writes_in(list, "n1");
    std::set<std::uint64_t> logged(in_log.begin(), in_log.end());
    for (auto id : acknowledged[run])
      if (!logged.count(id)) wrong = run + ": write " + std::to_string(id) + " was acknowledged but is not in the log";
    if (!wrong.empty()) break;
    if (!fenced_at.count(run)) {
      if (in_log != stored[run]) {
        wrong = run + ": the store and the log differ (store:";
        for (auto id : stored[run]) wrong += " " + std::to_string(id);
        wrong += "; log:";
        for (auto id : in_log) wrong += " " + std::to_string(id);
        wrong += ")";
      }
    } else {
      std::set<std::uint64_t> in_store(stored[run].begin(), stored[run].end());
      for (auto id : in_log)
        if (!in_store.count(id)) wrong = run + ": write " + std::to_string(id) + " is in the log but not in the store";
      if (auto after = writes_in(list, "n1", fenced_at[run]); !after.empty())
        wrong = run + ": write " + std::to_string(after.front()) + " of the fenced owner is in the log after the fence";
    }
  }
  if (wrong.empty() && log.tickets_open() > 0)
    wrong = std::to_string(log.tickets_open()) + " tickets of the log were never waited for nor forgotten";
  for (const auto& e : w.errors()) wrong += "\n" + e;
  auto trace = w.trace();
  w.halt();
  return wrong.empty() ? std::string() : wrong + "\n" + trace;
}

// One owner writing one run, synced, to a log that loses no answer: each write's error, if any.
struct one_run {
  world w{1};
  simulated_log log{w, [] {
    log_faults f;
    f.lost_answer = 0;
    return f;
  }()};
  replication::ownership owner{"n1"};
  replication::log_writer writer{owner, [](const std::string& run) { return "keel.log.n1." + run; }};
  std::string run = run_name(0);
  std::string subject = "keel.log.n1." + run;
  std::vector<std::string> failures;
  std::optional<keel::error> write(std::uint64_t id) {
    store::run_transition t;
    t.record.run_id = run;
    t.entries_only = true;
    t.sync = true;
    t.received.push_back({id, "w" + std::to_string(id)});
    auto started = writer.replicate(log, {t});
    if (auto r = started.refused.find(run); r != started.refused.end()) return r->second;
    auto failed = started.wait ? started.wait() : replication::log_writer::failures{};
    if (auto f = failed.find(run); f != failed.end()) return f->second;
    return std::nullopt;
  }
};

} // namespace

TEST_CASE("simulation: run log writes: what is acknowledged is in the log, the store and the log never part, a fence stops the owner",
          "[replication][simulation]") {
  for_each_seed(1000, run_scenario);
}

// A log that lost the owner's last confirmed entry (nats-server 2.9 with a paused stream leader)
// refuses the owner's next write, expected after it. No other node fenced the run and the owner
// certainly holds it: the write goes again after what the log holds, and the run goes on (it
// was left refused for good, its actor retrying every half second). A fence of another node found
// there still makes the run lost to it, and nothing of the owner lands after the fence.
TEST_CASE("simulation: run log writes: a log that lost the owner's last entry takes its next write after what it holds, and another's fence still stops it",
          "[replication][simulation]") {
  one_run t;
  auto& [w, log, owner, writer, run, subject, failures] = t;
  auto write = [&](std::uint64_t id) { return t.write(id); };
  w.spawn(0, "owner", [&] {
    for (std::uint64_t id : {1, 2})
      if (auto e = write(id)) failures.push_back("write " + std::to_string(id) + ": " + e->message);
    log.drop_last(subject);  // write 2 is gone
    if (auto e = write(3)) failures.push_back("write 3: " + e->message);
    if (auto e = write(4)) failures.push_back("write 4: " + e->message);
    // Another node's fence after that: the next write is refused, and the run is lost to it.
    auto last = log.last_sequence(subject);
    auto fenced = log.append({{subject, replication::encode_fence("n2", 2), static_cast<std::int64_t>(*last), "n2"}});
    if (!fenced[0]) failures.push_back("the fence: " + fenced[0].error().message);
    auto e = write(5);
    if (!e || e->code != errc::conflict) failures.push_back("write 5 after another's fence: " + (e ? e->message : std::string("taken")));
  });
  w.run_until(60'000);
  w.halt();
  INFO(w.trace());
  std::string all;
  for (const auto& f : failures) all += f + "\n";
  INFO(all);
  CHECK(failures.empty());
  CHECK(writes_in(log.subjects().at(subject), "n1") == std::vector<std::uint64_t>{1, 3, 4});
}

// A write refused, then refused again where the log shows no other node's fence (the log lost the
// owner's last entry, and the write sent after what it holds was refused too: an earlier copy of
// the owner's own stored first, or more of the log lost) is not a run taken over: the owner keeps
// the write and sends it later. It used to count the run lost, and then refused every later write
// of it as "no longer this node's" while holding its lease: nobody served it again (chaos seed 7
// with nats-server faults left runs so).
TEST_CASE("simulation: run log writes: a write refused twice with no other node's fence leaves the run its owner's, and goes on later",
          "[replication][simulation]") {
  one_run t;
  auto& [w, log, owner, writer, run, subject, failures] = t;
  auto write = [&](std::uint64_t id) { return t.write(id); };
  w.spawn(0, "owner", [&] {
    for (std::uint64_t id : {1, 2})
      if (auto e = write(id)) failures.push_back("write " + std::to_string(id) + ": " + e->message);
    log.drop_last(subject);  // write 2 is gone
    log.refuse_next(subject, 2);
    // Refused, read, sent after write 1, refused again: not confirmed, not lost.
    auto third = write(3);
    if (!third) failures.push_back("write 3 was confirmed through two refusals");
    else if (third->code == errc::conflict) failures.push_back("write 3: the run was counted lost: " + third->message);
    // The next write sends write 3 first, then itself.
    if (auto e = write(4)) failures.push_back("write 4: " + e->message);
    if (auto e = write(5)) failures.push_back("write 5: " + e->message);
  });
  w.run_until(60'000);
  w.halt();
  INFO(w.trace());
  std::string all;
  for (const auto& f : failures) all += f + "\n";
  INFO(all);
  CHECK(failures.empty());
  CHECK(writes_in(log.subjects().at(subject), "n1") == std::vector<std::uint64_t>{1, 3, 4, 5});
}
