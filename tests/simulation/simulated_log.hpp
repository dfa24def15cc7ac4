// A replicated run log in a simulated world: one sequence for all subjects, each append checked
// against the sequence its subject must be at (the fence), an entry sent again (the same subject,
// expected sequence, writer and content) confirmed at its first position (the broker's duplicate
// window, here without end), purges of a subject's older entries, answers that take
// time, are sometimes lost (stored or not) and fail while the broker is out. It counts the
// tickets given and not yet waited for or forgotten.
#pragma once

#include "replication/run_log.hpp"
#include "tests/simulation/world.hpp"

#include <climits>
#include <map>
#include <string>
#include <vector>

namespace keel::simulation {

struct log_faults {
  std::int64_t delay_ms_max = 5;
  double lost_answer = 0.03;
  std::int64_t timeout_ms = 2000;
  std::int64_t until_ms = INT64_MAX;  // lost answers stop then
};

class simulated_log final : public replication::run_log {
public:
  simulated_log(world& w, log_faults faults) : world_(w), faults_(faults) {}

  struct stored {
    std::uint64_t seq;
    std::string data;
    std::string writer;
  };
  const std::map<std::string, std::vector<stored>>& subjects() const { return subjects_; }
  // The log loses the last entry it confirmed on `subject`, as nats-server 2.9 can when a stream's
  // leader is paused (tests/nats_server).
  void drop_last(const std::string& subject) {
    if (auto it = subjects_.find(subject); it != subjects_.end() && !it->second.empty()) it->second.pop_back();
  }
  std::size_t tickets_open() const { return tickets_.size(); }
  // The next `n` writes to `subject` are refused as if another write at their position had come
  // first (nats-server 2.9 confirming two writes at once on a replicated stream: keel's run log
  // answers the second so), nothing stored.
  void refuse_next(const std::string& subject, int n) { refusals_[subject] += n; }

  std::vector<result<std::uint64_t>> append(const std::vector<replication::log_entry>& entries) override {
    std::vector<result<std::uint64_t>> out;
    for (const auto& e : entries) {
      auto ticket = send(e);
      out.push_back(ticket ? wait(*ticket) : result<std::uint64_t>(ticket.error()));
    }
    return out;
  }
  result<std::uint64_t> send(const replication::log_entry& e) override {
    bool lost = world_.now_ms() < faults_.until_ms && world_.chance(faults_.lost_answer);
    outcome o;
    if (!lost || world_.chance(0.5)) o.answer = store(e);
    if (lost) o.answer = make_error(errc::timeout, "no answer (simulated)");
    o.ready_ms = world_.now_ms() + (lost ? faults_.timeout_ms : world_.uniform(1, faults_.delay_ms_max));
    tickets_[++next_ticket_] = std::move(o);
    return next_ticket_;
  }
  result<std::uint64_t> wait(std::uint64_t ticket) override {
    auto it = tickets_.find(ticket);
    if (it == tickets_.end()) return make_error(errc::internal, "no such ticket");
    auto o = std::move(it->second);
    tickets_.erase(it);
    if (o.ready_ms > world_.now_ms()) world_.sleep(o.ready_ms - world_.now_ms());
    return o.answer;
  }
  void forget(std::uint64_t ticket) override { tickets_.erase(ticket); }
  result<void> read(const std::string& filter, const reader& on_entry) override {
    world_.sleep(world_.uniform(1, faults_.delay_ms_max));
    auto prefix = filter.substr(0, filter.size() - (filter.ends_with(".>") ? 1 : 0));
    std::vector<std::pair<std::uint64_t, std::pair<std::string, std::string>>> all;
    for (const auto& [subject, list] : subjects_)
      if (subject == filter || (filter.ends_with(".>") && subject.starts_with(prefix)))
        for (const auto& s : list) all.push_back({s.seq, {subject, s.data}});
    std::sort(all.begin(), all.end());
    for (auto& [seq, e] : all) on_entry(e.first, seq, e.second);
    return success();
  }
  result<std::uint64_t> last_sequence(const std::string& subject) override {
    world_.sleep(world_.uniform(1, faults_.delay_ms_max));
    auto it = subjects_.find(subject);
    return it == subjects_.end() || it->second.empty() ? 0 : it->second.back().seq;
  }
  // Entries of the subject before `seq` go (those from `seq` on stay).
  result<void> purge_before(const std::string& subject, std::uint64_t seq) override {
    world_.sleep(world_.uniform(1, faults_.delay_ms_max));
    if (auto it = subjects_.find(subject); it != subjects_.end())
      std::erase_if(it->second, [seq](const stored& s) { return s.seq < seq; });
    return success();
  }

private:
  struct outcome {
    result<std::uint64_t> answer = make_error(errc::internal, "unset");
    std::int64_t ready_ms = 0;
  };
  result<std::uint64_t> store(const replication::log_entry& e) {
    auto& list = subjects_[e.subject];
    // A copy sent again: the broker knows it by its id (made of where it was to go, its writer
    // and its bytes), purged or not.
    auto id = e.subject + '\n' + std::to_string(e.expected_last) + '\n' + e.writer + '\n' + e.data;
    if (auto it = ids_.find(id); it != ids_.end()) return it->second;
    std::uint64_t last = list.empty() ? 0 : list.back().seq;
    if (auto r = refusals_.find(e.subject); r != refusals_.end() && r->second > 0) {
      --r->second;
      return make_error(errc::conflict, "another write at that position was stored first (simulated)");
    }
    if (e.expected_last >= 0 && static_cast<std::uint64_t>(e.expected_last) != last)
      return make_error(errc::conflict, "wrong last sequence");
    list.push_back({++seq_, e.data, e.writer});
    ids_[id] = seq_;
    return seq_;
  }
  world& world_;
  log_faults faults_;
  std::map<std::string, std::vector<stored>> subjects_;
  std::map<std::uint64_t, outcome> tickets_;
  std::map<std::string, std::uint64_t> ids_;  // id of each entry stored -> its sequence
  std::map<std::string, int> refusals_;       // subject -> writes still to refuse
  std::uint64_t next_ticket_ = 0;
  std::uint64_t seq_ = 0;
};

} // namespace keel::simulation
