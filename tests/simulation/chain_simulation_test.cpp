// Simulation of the run log's counting rule (broker/run_log_messages.hpp): nats-server 2.9 may
// confirm two writes sent at once to the same position of a replicated stream, storing both
// (tests/nats_server/concurrent_cas.mjs). Writers that share subjects (an owner and the nodes
// that take its runs over) append after what they believe is their subject's last entry; the
// simulated server lets a second write through at a position just taken, with a seeded chance;
// each writer then decides whether its write counts with `walk`, asking a replica that may lag
// (a prefix of the stream), then the leader; cuts remove what came before an entry; readers read
// through lagging replicas with `chain_filter`. Invariants: a write its writer was told counts is
// counted by every read that holds it and is whole; a write its writer was told does not count is
// counted by none; no two counted writes of a subject follow the same one.
//
// The rule before Keel-Prev (every confirmed write counts, for its writer and for every reader)
// runs under the same schedules: it must break the invariants on some seed, which shows that the
// schedules reach the double confirmation.
//   KEEL_SIM_SEEDS=N, KEEL_SIM_SEED=S as in the lease simulation.
#include "broker/run_log_messages.hpp"
#include "tests/simulation/seeds.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace keel;
using namespace keel::broker::run_log_messages;

namespace {

struct message {
  std::uint64_t seq = 0;
  std::string subject;
  std::optional<std::uint64_t> prev;
  std::uint64_t step = 0;  // when it was stored
};

// The stream as its leader holds it; a replica holds a prefix of it (it lags), cuts applied.
class stream {
public:
  // The server's check: `prev` must be the subject's last message, or, with `double_confirm`, the
  // one before a message stored at this very step that also followed `prev` (two writes sent at
  // once, both checked before the replicas agreed).
  // `expected`: the subject's last message the server is told to expect, when it is not `prev`
  // (a write sent past messages that do not count: after_uncounted).
  std::optional<std::uint64_t> append(const std::string& subject, std::uint64_t prev, std::uint64_t step,
                                      bool double_confirm, std::optional<std::uint64_t> expected = std::nullopt) {
    auto check = expected.value_or(prev);
    std::uint64_t last = last_of(subject);
    bool taken = check == last;
    if (!taken && double_confirm && last != 0) {
      const auto& m = all_[last - 1];
      taken = m.step == step && prev_stored_before(subject, last) == check;
    }
    if (!taken) return std::nullopt;
    all_.push_back({all_.size() + 1, subject, prev, step});
    return all_.size();
  }
  // Removes the subject's messages before `seq` (purge_before keeps `seq` itself).
  void cut(const std::string& subject, std::uint64_t seq) { cut_below_[subject] = std::max(cut_below_[subject], seq); }
  // The subject's messages at or after `from` that a replica lagging to `held` messages holds.
  // With `lost`, a copy that lost that message (nats-server losing what it confirmed).
  std::vector<message> of(const std::string& subject, std::uint64_t from, std::uint64_t held, std::uint64_t lost = 0) const {
    std::vector<message> out;
    for (std::uint64_t s = std::max<std::uint64_t>(from, 1); s <= std::min<std::uint64_t>(held, all_.size()); ++s)
      if (all_[s - 1].subject == subject && s >= cut_below(subject) && s != lost) out.push_back(all_[s - 1]);
    return out;
  }
  std::vector<message> all_held(std::uint64_t held) const {
    std::vector<message> out;
    for (std::uint64_t s = 1; s <= std::min<std::uint64_t>(held, all_.size()); ++s)
      if (s >= cut_below(all_[s - 1].subject)) out.push_back(all_[s - 1]);
    return out;
  }
  std::uint64_t size() const { return all_.size(); }
  std::uint64_t last_of_subject(const std::string& subject) const { return last_of(subject); }
  bool cut_away(std::uint64_t seq) const { return seq < cut_below(all_[seq - 1].subject); }

private:
  std::uint64_t last_of(const std::string& subject) const {
    for (auto s = all_.size(); s > 0; --s)
      if (all_[s - 1].subject == subject) return s;
    return 0;
  }
  std::uint64_t prev_stored_before(const std::string& subject, std::uint64_t seq) const {
    for (auto s = seq - 1; s > 0; --s)
      if (all_[s - 1].subject == subject) return s;
    return 0;
  }
  std::uint64_t cut_below(const std::string& subject) const {
    auto it = cut_below_.find(subject);
    return it == cut_below_.end() ? 0 : it->second;
  }
  std::vector<message> all_;
  std::map<std::string, std::uint64_t> cut_below_;
};

struct writer {
  std::string subject;
  std::uint64_t belief = 0;  // the subject's last message that counts, as this writer knows it
};

// What a full read of a replica's copy counts: per message, whether it counts; empty on a gap.
std::optional<std::map<std::uint64_t, bool>> read(const stream& s, std::uint64_t held, bool old_rule) {
  chain_filter chain;
  std::map<std::uint64_t, bool> out;
  for (const auto& m : s.all_held(held)) {
    if (old_rule) {
      out[m.seq] = true;
      continue;
    }
    auto v = chain.see(m.subject, m.seq, m.prev);
    if (v == chain_filter::verdict::gap) return std::nullopt;
    out[m.seq] = v == chain_filter::verdict::counts;
  }
  return out;
}

// A read of a copy that lacks message `lost` (a replica that lost it), as read_chain makes it: a
// gap is resolved from the leader's copy (the whole stream) with the real resolve_gap, and the
// rest is read from the leader. `resolved`: whether a gap was met and mended. None: not whole.
std::optional<std::map<std::uint64_t, bool>> read_lossy(const stream& s, std::uint64_t lost, bool& resolved) {
  chain_filter chain;
  std::map<std::uint64_t, bool> out;
  auto copy = s.all_held(s.size());
  bool from_leader = false;
  resolved = false;
  std::uint64_t last = 0;
  for (std::size_t i = 0; i < copy.size(); ++i) {
    const auto& m = copy[i];
    if (m.seq <= last || (!from_leader && m.seq == lost)) continue;
    last = m.seq;
    auto v = chain.see(m.subject, m.seq, m.prev);
    if (v == chain_filter::verdict::gap) {
      auto r = resolve_gap(
        chain, m.subject, m.seq, *m.prev, m.prev,
        [&](std::uint64_t from) -> result<std::optional<leader_entry>> {
          auto of = s.of(m.subject, from, s.size());
          if (of.empty()) return std::optional<leader_entry>();
          leader_entry e;
          e.seq = of.front().seq;
          e.subject = m.subject;
          e.prev = of.front().prev;
          return std::optional<leader_entry>(std::move(e));
        },
        [&](leader_entry&& e) { out[e.seq] = true; });
      from_leader = true;
      if (!r || *r == chain_filter::verdict::gap) return std::nullopt;
      resolved = true;
      v = *r;
    }
    out[m.seq] = v == chain_filter::verdict::counts;
  }
  return out;
}

// The subject's last message that counts, read whole from the leader (last_sequence).
std::uint64_t last_counted(const stream& s, const std::string& subject, bool old_rule) {
  chain_filter chain;
  std::uint64_t last = 0;
  for (const auto& m : s.of(subject, 1, s.size())) {
    if (old_rule) last = m.seq;
    else if (chain.see(m.subject, m.seq, m.prev) == chain_filter::verdict::counts) last = m.seq;
  }
  return last;
}

// after_uncounted(): the subject's last message when nothing after `prev` counts (the write may
// go after those), as the leader holds it; none otherwise.
std::optional<std::uint64_t> after_uncounted(const stream& s, const std::string& subject, std::uint64_t prev) {
  auto of = s.of(subject, prev == 0 ? 1 : prev, s.size());
  if (of.empty() || prev == 0 || of.front().seq != prev) return std::nullopt;
  std::uint64_t last = prev;
  for (std::size_t i = 1; i < of.size(); ++i) {
    if (!of[i].prev || *of[i].prev == prev) return std::nullopt;
    last = of[i].seq;
  }
  return last == prev ? std::nullopt : std::optional<std::uint64_t>(last);
}

// follows(): the replica first (it may not hold the write yet: then the leader), by `walk`.
// None when even the leader's copy does not decide (a defect of the walk).
std::optional<bool> counts(const stream& s, const std::string& subject, std::uint64_t prev, std::uint64_t seq,
                           std::uint64_t replica_held, std::uint64_t replica_lost, bool prev_was_last = true) {
  walk w(prev, seq, prev_was_last);
  for (auto held : {replica_held, s.size()}) {
    for (bool again = true; again;) {
      again = false;
      auto next = s.of(subject, w.from, held, held == replica_held ? replica_lost : 0);
      if (next.empty()) break;  // that copy does not hold it yet
      switch (w.see(next.front().seq, next.front().prev)) {
        case walk::step::counts: return true;
        case walk::step::not_counted: return false;
        case walk::step::next: again = true; break;
        case walk::step::unknown: break;
      }
    }
  }
  return std::nullopt;
}

struct tally {
  std::uint64_t writes = 0, not_counted = 0, decided_by_replica_lagging = 0, cuts = 0, gaps = 0, mended = 0, sent_past = 0;
};

struct rules {
  bool old_rule = false;      // every confirmed write counts (before Keel-Prev)
  bool lossy_replica = false;  // the replica a writer asks may lack a message it confirmed
};

std::string simulate(std::uint64_t seed, rules r, tally& t) {
  bool old_rule = r.old_rule;
  std::mt19937_64 random(seed);
  auto chance = [&](int percent) { return static_cast<int>(random() % 100) < percent; };
  stream s;
  const std::vector<std::string> subjects = {"log.a", "log.b"};
  std::vector<writer> writers;
  for (int i = 0; i < 4; ++i) writers.push_back({subjects[i % 2], 0});
  std::map<std::uint64_t, bool> told;  // what each write's writer was told: counts or not
  std::ostringstream trace;
  for (std::uint64_t step = 1; step <= 60; ++step) {
    // Writers act at once in a step: those that append in it may be confirmed together.
    for (std::size_t w = 0; w < writers.size(); ++w) {
      auto& me = writers[w];
      if (!chance(60)) continue;
      if (chance(8) && me.belief != 0) {
        s.cut(me.subject, me.belief);
        ++t.cuts;
        trace << "step " << step << ": writer " << w << " cuts " << me.subject << " before " << me.belief << "\n";
        continue;
      }
      auto at = s.append(me.subject, me.belief, step, chance(50));
      if (!at && !old_rule) {
        // Refused only because writes that do not count came after its position: sent after them
        // (past_uncounted), and checked without taking its position for the subject's last.
        if (auto after = after_uncounted(s, me.subject, me.belief)) {
          auto past = s.append(me.subject, me.belief, step, chance(50), *after);
          if (past) {
            auto decided = counts(s, me.subject, me.belief, *past, s.size(), 0, false);
            if (!decided) return trace.str() + "the walk did not decide a write sent past writes that do not count";
            told[*past] = *decided;
            ++t.writes;
            ++t.sent_past;
            trace << "step " << step << ": writer " << w << " appends " << me.subject << " at " << *past << " after "
                  << me.belief << " past " << *after << ": " << (*decided ? "counts" : "does not count") << "\n";
            me.belief = *decided ? *past : last_counted(s, me.subject, old_rule);
            continue;
          }
        }
      }
      if (!at) {
        me.belief = last_counted(s, me.subject, old_rule);  // refused: where the subject ends, read again
        trace << "step " << step << ": writer " << w << " refused; reads " << me.subject << " to " << me.belief << "\n";
        continue;
      }
      auto replica_held = s.size() - std::min<std::uint64_t>(s.size(), random() % 4);
      std::uint64_t replica_lost = r.lossy_replica && chance(10) ? s.size() - random() % 3 : 0;
      auto decided = old_rule ? std::optional<bool>(true) : counts(s, me.subject, me.belief, *at, replica_held, replica_lost);
      if (!decided)
        return trace.str() + "step " + std::to_string(step) + ": the walk did not decide whether " + std::to_string(*at) +
               " counts, though the leader holds it";
      bool c = *decided;
      ++t.writes;
      if (!c) ++t.not_counted;
      if (replica_held < *at) ++t.decided_by_replica_lagging;
      told[*at] = c;
      trace << "step " << step << ": writer " << w << " appends " << me.subject << " at " << *at << " after "
            << me.belief << ": " << (c ? "counts" : "does not count") << "\n";
      me.belief = c ? *at : last_counted(s, me.subject, old_rule);
    }
    // A reader reads a replica's copy, lagging or not.
    // A reader of a copy that lost one of the last messages: a read that met the gap and mended it
    // from the leader says what a read of the leader says of every message it counts.
    if (!old_rule && s.size() > 0) {
      bool resolved = false;
      auto lossy = read_lossy(s, 1 + random() % s.size(), resolved);
      auto whole = read(s, s.size(), false);
      if (lossy && resolved && whole) {
        ++t.mended;
        for (const auto& [seq, counted] : *lossy)
          if (counted && !(*whole)[seq])
            return trace.str() + "step " + std::to_string(step) + ": a read that mended a gap from the leader counts " +
                   std::to_string(seq) + ", which a read of the leader skips";
      }
    }
    auto held = s.size() - std::min<std::uint64_t>(s.size(), random() % 4);
    auto seen = read(s, held, old_rule);
    if (!seen) {
      ++t.gaps;
      continue;  // a gap: the reader reads again
    }
    std::map<std::string, std::set<std::uint64_t>> followed;  // subject -> prevs of what counts
    std::map<std::string, bool> first;
    for (const auto& m : s.all_held(held)) {
      auto it = told.find(m.seq);
      bool counted = (*seen)[m.seq];
      if (it != told.end() && it->second != counted)
        return trace.str() + "step " + std::to_string(step) + ": write " + std::to_string(m.seq) + " was told it " +
               (it->second ? "counts" : "does not count") + ", a read of " + std::to_string(held) + " messages " +
               (counted ? "counts" : "skips") + " it";
      if (!counted) continue;
      if (!first[m.subject]) {
        first[m.subject] = true;
        continue;  // the first read of a subject counts whatever it follows (what a cut left)
      }
      if (m.prev && !followed[m.subject].insert(*m.prev).second)
        return trace.str() + "step " + std::to_string(step) + ": two counted writes of " + m.subject + " follow " +
               std::to_string(*m.prev);
    }
  }
  return {};
}

// The first of seeds 1 to 200 on which the invariants break under `r` (0: none), and the end of
// its report.
std::pair<std::uint64_t, std::string> first_broken_seed(rules r) {
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    tally t;
    auto what = simulate(seed, r, t);
    if (!what.empty()) return {seed, what.substr(what.size() > 1500 ? what.size() - 1500 : 0)};
  }
  return {0, {}};
}

} // namespace

TEST_CASE("simulation: run log counting: writes confirmed twice at one position, lagging replicas and cuts: every "
          "writer's verdict is every reader's",
          "[simulation]") {
  tally t;
  keel::simulation::for_each_seed(1000, [&](std::uint64_t seed) { return simulate(seed, {}, t); });
  // The schedules reach what the rule is for: writes that do not count, replicas that do not hold
  // a write yet, cuts.
  INFO(t.writes << " writes, " << t.not_counted << " not counted, " << t.decided_by_replica_lagging
                << " checked on a replica that lagged, " << t.cuts << " cuts, " << t.gaps << " reads with a gap, "
                << t.mended << " reads of a copy that lost a message mended from the leader, " << t.sent_past
                << " writes sent past writes that do not count");
  CHECK(t.not_counted > 0);
  CHECK(t.decided_by_replica_lagging > 0);
  CHECK(t.cuts > 0);
  CHECK(t.mended > 0);
  CHECK(t.sent_past > 0);
}

TEST_CASE("simulation: run log counting: the schedules reach a double confirmation (the rule before Keel-Prev breaks on "
          "them)",
          "[simulation]") {
  auto [found, what] = first_broken_seed({true, false});
  INFO("first seed that breaks the old rule: " << found << "\n" << what);
  CHECK(found != 0);
  CHECK(found <= 20);
}

TEST_CASE("simulation: run log counting: a replica that lost a message it confirmed can tell a writer its write counts "
          "while readers skip it (a limit: see docs/RELIABILITY.md)",
          "[simulation]") {
  // keel's rule assumes every copy holds what it confirmed. nats-server 2.9 can lose confirmed
  // messages (docs/RELIABILITY.md, "nats-server faults"); then a writer that asks such a copy may
  // keep going from a write that readers of the other copies skip. Shown here so that a change of
  // the rule that closes this is seen, and its price measured.
  auto [found, what] = first_broken_seed({false, true});
  INFO("first seed: " << found << "\n" << what);
  CHECK(found != 0);
}
