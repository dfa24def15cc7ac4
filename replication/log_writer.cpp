#include "replication/log_writer.hpp"
#include "replication/admission.hpp"
#include "replication/replication_log.hpp"
#include "replication/takeover.hpp"

#include "runtime/ids.hpp"
#include "runtime/log.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace keel::replication {

std::optional<std::uint64_t> log_writer::position(const std::string& run) {
  std::lock_guard lock{mutex_};
  if (auto it = positions_.find(run); it != positions_.end()) return it->second;
  return std::nullopt;
}

void log_writer::known(const std::string& run, std::uint64_t seq) {
  std::lock_guard lock{mutex_};
  positions_[run] = seq;
  lost_.erase(run);
  if (seq == 0) {
    unadmitted_.insert(run);
  } else {
    unadmitted_.erase(run);
    awaiting_first_.erase(run);
  }
}

void log_writer::lost(const std::string& run) {
  forget(run);
  std::lock_guard lock{mutex_};
  lost_.insert(run);
}

void log_writer::forget(const std::string& run) {
  std::lock_guard lock{mutex_};
  positions_.erase(run);
  unadmitted_.erase(run);
  awaiting_first_.erase(run);
  if (auto it = unconfirmed_.find(run); it != unconfirmed_.end()) {
    if (it->second.ticket) it->second.log->forget(it->second.ticket);
    unconfirmed_.erase(it);
  }
}

void log_writer::forget_if_settled(const std::string& run) {
  std::lock_guard lock{mutex_};
  if (unconfirmed_.count(run) || settling_.count(run)) return;
  // A later write looks its end up and admits it again.
  positions_.erase(run);
  unadmitted_.erase(run);
  awaiting_first_.erase(run);
}

result<void> log_writer::settle(const std::string& run) {
  std::optional<unconfirmed> u;
  {
    std::unique_lock lock{mutex_};
    settled_.wait(lock, [&] { return !settling_.count(run); });
    auto it = unconfirmed_.find(run);
    if (it == unconfirmed_.end()) return success();
    u = std::move(it->second);
    unconfirmed_.erase(it);
    settling_.insert(run);
  }
  struct done_settling {
    log_writer* self;
    const std::string& run;
    ~done_settling() {
      {
        std::lock_guard lock{self->mutex_};
        self->settling_.erase(run);
      }
      self->settled_.notify_all();
    }
  } done{this, run};
  auto seq = u->ticket ? u->log->wait(u->ticket) : result<std::uint64_t>(make_error(errc::timeout, "not confirmed"));
  if (!seq && seq.error().code != errc::conflict) {
    // Not confirmed: sent again (a copy the broker stored already is recognised and confirmed).
    auto again = u->log->append({u->entry});
    seq = std::move(again.front());
  }
  if (!seq && seq.error().code == errc::conflict) seq = write_again_after_refusal(*u->log, run, u->entry);
  if (!seq) {
    if (seq.error().code == errc::conflict) {
      lost(run);
      return make_error(errc::conflict, "the run log refused a write of run " + run + ": another node has it now");
    }
    // Still not confirmed: kept, to be sent again before the run's next write.
    std::lock_guard lock{mutex_};
    unconfirmed_[run] = unconfirmed{u->log, 0, std::move(u->entry)};
    return make_error(seq.error().code, "the run log: " + seq.error().message);
  }
  known(run, *seq);
  return success();
}

log_writer::started log_writer::replicate(run_log& log, const std::vector<store::run_transition>& batch, int gate) {
  started out;
  std::vector<std::string> runs;
  std::unordered_map<std::string, std::vector<const store::run_transition*>> by_run;
  for (const auto& t : batch) {
    auto& of_run = by_run[t.record.run_id];
    if (of_run.empty()) runs.push_back(t.record.run_id);
    of_run.push_back(&t);
  }
  struct sent {
    std::string run;
    std::uint64_t ticket;
    log_entry entry;
  };
  std::vector<sent> waiting;
  std::vector<std::string> ready;  // runs that may be written
  std::map<std::string, std::uint64_t> ends;  // where each run's log ends, as the write expects
  std::map<std::string, std::vector<std::string>> to_admit;  // gate subject -> new runs
  for (const auto& run : runs) {
    std::string domain(run_id{run}.owner());
    bool refused_before = false;
    {
      std::lock_guard lock{mutex_};
      refused_before = lost_.count(run) > 0;
    }
    if (refused_before || !owner_.serves(domain)) {
      out.refused[run] = make_error(errc::conflict, "run " + run + " is no longer this node's (taken over)");
      continue;
    }
    // Nor while the lease is not certain: a node paused past its lease, whose write was refused
    // because another took the run over, would otherwise ask the log where the run now ends and
    // append after the new owner's fence before learning its lease is gone.
    if (!owner_.answers_for(domain)) {
      out.refused[run] = make_error(errc::unavailable, "run " + run + ": this node's lease on the runs of " + domain +
                                                         " is not certain now");
      continue;
    }
    if (auto settled = settle(run); !settled) {
      out.refused[run] = settled.error();
      continue;
    }
    // Where the run's log ends, when not known here (it left memory, the node started again, or
    // it was made under an id claimed before): asked of the log, then the run is admitted again,
    // in that order. An admission that lands means no node had fenced the domain's gates when
    // that end was read, so none had fenced the run: a taker will learn of the run from the gate
    // and fence it, and the write refused if it comes after. (Asked alone, the log could name
    // the taker's fence as the end, and the write would land after it.)
    auto known_at = position(run);
    if (!known_at) {
      auto last = log.last_sequence(subject_of_(run));
      if (!last) {
        out.refused[run] = make_error(last.error().code, "run " + run + ": " + last.error().message);
        continue;
      }
      known_at = *last;
      std::lock_guard lock{mutex_};
      unadmitted_.insert(run);
    }
    // Kept for the write (the run may leave memory meanwhile: its position forgotten here).
    ends[run] = *known_at;
    ready.push_back(run);
    std::lock_guard lock{mutex_};
    if (unadmitted_.count(run)) to_admit[gate_subject(subject_of_(run), gate % admission_gates)].push_back(run);
  }
  // New runs are admitted before anything of theirs is written: one entry per gate and batch.
  for (const auto& [subject, admitted] : to_admit)
    if (auto a = admit(log, subject, admitted); !a)
      for (const auto& run : admitted) {
        if (a.error().code == errc::conflict) lost(run);
        out.refused[run] = a.error();
      }
  for (const auto& run : ready) {
    if (out.refused.count(run)) continue;
    auto known_at = ends.at(run);
    log_entry e{subject_of_(run), store::encode_transitions(by_run[run]), static_cast<std::int64_t>(known_at),
                owner_.node_id()};
    auto ticket = log.send(e);
    if (!ticket) {
      out.refused[run] = make_error(ticket.error().code, "the run log: " + ticket.error().message);
      continue;
    }
    bool unsynced = std::none_of(by_run[run].begin(), by_run[run].end(), [](const store::run_transition* t) { return t->sync; });
    if (unsynced) {
      // Needs no confirmation of its own (what follows from a result the log holds already):
      // confirmed before the run's next write.
      std::lock_guard lock{mutex_};
      unconfirmed_[run] = unconfirmed{&log, *ticket, std::move(e)};
      continue;
    }
    waiting.push_back({run, *ticket, std::move(e)});
  }
  if (waiting.empty()) return out;
  out.wait = [this, &log, waiting = std::move(waiting)]() mutable {
    failures failed;
    for (auto& w : waiting) {
      auto seq = log.wait(w.ticket);
      if (!seq && seq.error().code == errc::conflict) seq = write_again_after_refusal(log, w.run, w.entry);
      if (seq) {
        known(w.run, *seq);
        continue;
      }
      if (seq.error().code == errc::conflict) {
        lost(w.run);
        logger()->warn("run {}: the run log refused a write after sequence {}", w.run, w.entry.expected_last);
        failed[w.run] = make_error(errc::conflict, "the run log refused the write: another node has run " + w.run + " now");
      } else {
        {
          std::lock_guard lock{mutex_};
          unconfirmed_[w.run] = unconfirmed{&log, 0, std::move(w.entry)};
        }
        failed[w.run] = make_error(errc::unknown, "written on this node, but the run log did not confirm it (" +
                                                    seq.error().message + "): it counts if the log has it");
      }
    }
    // A write the log confirmed counts, whatever the clock said meanwhile: a node that took the
    // runs over either fenced the run before it (and the log refused it) or read it (its fence,
    // expecting an earlier end, was refused until it did), new runs included (admission.hpp).
    return failed;
  };
  return out;
}

result<std::uint64_t> log_writer::write_again_after_refusal(run_log& log, const std::string& run, log_entry e) {
  std::string domain(run_id{run}.owner());
  if (!owner_.answers_for(domain))
    return make_error(errc::unavailable, "refused, and this node does not certainly hold the lease on the runs of " + domain +
                                            " now: tried again later");
  // Another node's fence anywhere after this node's own last one (a taker may have written after
  // its fence already) means the run is that node's.
  std::uint64_t last_seq = 0;
  std::string last_data;
  std::optional<fence> foreign;
  auto read = log.read(e.subject, [&](const std::string&, std::uint64_t seq, std::string data) {
    if (auto f = decode_fence(data)) {
      if (f->by == owner_.node_id()) foreign.reset();
      else foreign = f;
    }
    if (seq >= last_seq) {
      last_seq = seq;
      last_data = std::move(data);
    }
  });
  if (!read) return make_error(read.error().code == errc::conflict ? errc::unavailable : read.error().code,
                               "refused, and the run's entries cannot be read: " + read.error().message);
  if (foreign) return make_error(errc::conflict, "fenced by " + foreign->by + " (epoch " + std::to_string(foreign->epoch) + ")");
  if (last_seq > 0 && last_data == e.data) return last_seq;  // stored after all (its confirmation lost)
  // Where the run's log ends: its last message, which may be a part of an entry whose other parts
  // never came (the read hands whole entries only; a write goes after that part).
  auto end = log.last_sequence(e.subject);
  if (!end) return make_error(end.error().code == errc::conflict ? errc::unavailable : end.error().code,
                              "refused, and where the run's log ends cannot be read: " + end.error().message);
  last_seq = std::max(last_seq, *end);
  // Ending where it was expected to, the log refused the write for messages that do not count
  // (two writes at once, nats-server 2.9): sent again there, it goes after them (run_log.hpp).
  // Refused again, it is tried later (below).
  // A fence in the run's own entries can be gone (the new owner finished the run and cut its log
  // to its last entry); the domain's gates keep the new owner's mark: read after the run's
  // entries, a gate whose last entry is this node's says that no node had fenced the domain then.
  if (auto g = gate_end(log, gate_subject(e.subject, 0), owner_.node_id()); !g)
    return make_error(g.error().code, "refused: " + g.error().message);
  // The read may have taken a while: the lease is asked again (a pause meanwhile may have let
  // another node take the runs over; its fence, written after the read, the log's check refuses).
  if (!owner_.answers_for(domain))
    return make_error(errc::unavailable, "refused, and this node does not certainly hold the lease on the runs of " + domain +
                                            " now: tried again later");
  logger()->warn("run {}: the run log refused a write after sequence {}, ends at {} without another node's fence: "
                 "it lost or moved what this node wrote; written again after it",
                 run, e.expected_last, last_seq);
  e.expected_last = static_cast<std::int64_t>(last_seq);
  auto again = log.append({e});
  // Refused again where no other node's fence is: something of this node's own came first (a
  // write whose answer was lost, stored meanwhile), or the log lost or moved entries again. That
  // is not a run taken over (a node that marks it so would never write it again, and nobody else
  // would serve it while this node holds the lease): tried again later, from a fresh read.
  if (!again.front() && again.front().error().code == errc::conflict)
    return make_error(errc::unavailable, "refused again after sequence " + std::to_string(last_seq) +
                                           ", where no other node's fence is (" + again.front().error().message + "): tried again later");
  return std::move(again.front());
}

log_writer::gate& log_writer::gate_of(const std::string& subject) {
  std::lock_guard lock{mutex_};
  auto& g = gates_[subject];
  if (!g) g = std::make_unique<gate>();
  return *g;
}

// Where a gate ends, read whole (it is short: admissions are purged once their runs are written):
// errc::conflict when its last entry is another node's (a fence, or an admission of the node that
// took the runs over and admits new ones: the runs are that node's now). Asking the log only where
// it ends would write after such an entry.
result<std::uint64_t> gate_end(run_log& log, const std::string& subject, const std::string& me) {
  std::string last_by, what;
  std::uint64_t last_seq = 0;
  auto read = log.read(subject, [&](const std::string&, std::uint64_t seq, std::string data) {
    if (seq < last_seq) return;
    last_seq = seq;
    if (auto f = decode_fence(data)) {
      last_by = f->by;
      what = "a takeover's fence by " + f->by + " (epoch " + std::to_string(f->epoch) + ")";
    } else if (auto a = decode_admission(data)) {
      last_by = a->by;
      what = "an admission by " + a->by;
    } else {
      last_by.clear();
      what = "an entry that cannot be read";
    }
  });
  if (!read) return make_error(errc::unavailable, "the run log cannot be read: " + read.error().message);
  if (last_seq > 0 && last_by != me)
    return make_error(errc::conflict, "the last entry of " + subject + " is " + what + ": the runs are that node's now");
  return last_seq;
}

result<void> log_writer::admit(run_log& log, const std::string& subject, const std::vector<std::string>& runs) {
  auto& g = gate_of(subject);
  std::lock_guard admitting{g.admitting};
  std::string domain(run_id{runs.front()}.owner());
  for (int tries = 0; tries < 3; ++tries) {
    if (!g.last) {
      auto end = gate_end(log, subject, owner_.node_id());
      if (!end) return make_error(end.error().code, "the admission of new runs: " + end.error().message);
      g.last = *end;
    }
    auto appended = log.append({log_entry{subject, encode_admission(owner_.node_id(), runs), static_cast<std::int64_t>(*g.last),
                                          owner_.node_id()}});
    auto& at = appended.front();
    if (at) {
      g.last = *at;
      std::optional<std::uint64_t> oldest;  // the oldest admission whose run is not written yet
      {
        std::lock_guard lock{mutex_};
        for (const auto& run : runs) {
          unadmitted_.erase(run);
          awaiting_first_[run] = {subject, *at};
        }
        for (const auto& [run, where] : awaiting_first_)
          if (where.first == subject && (!oldest || where.second < *oldest)) oldest = where.second;
      }
      // What a taker needs of a gate: its last entry (to fence after it) and the admissions of
      // runs not written yet (to fence those). The rest goes now and then.
      if (++g.since_purge >= purge_every_ && oldest) {
        g.since_purge = 0;
        if (auto p = log.purge_before(subject, *oldest); !p)
          logger()->debug("the admissions on {} were not purged: {}", subject, p.error().message);
      }
      return success();
    }
    // Refused (read again: behind another node's fence, the domain is that node's; without one,
    // the log lost or moved what this node wrote, or an admission of this node's whose answer was
    // lost is there: it goes after what the log holds), or not confirmed (read again next time).
    g.last.reset();
    if (at.error().code != errc::conflict)
      return make_error(at.error().code == errc::timeout ? errc::unavailable : at.error().code,
                        "the run log did not confirm the admission of new runs: " + at.error().message);
    if (!owner_.answers_for(domain))
      return make_error(errc::unavailable, "this node's lease on the runs of " + domain + " is not certain now");
  }
  return make_error(errc::unavailable, "the admission of new runs was refused three times in a row");
}

result<std::uint64_t> log_writer::append_after_last(run_log& log, const std::string& run, const store::run_transition& whole) {
  std::string domain(run_id{run}.owner());
  if (!owner_.answers_for(domain)) return make_error(errc::conflict, "this node does not hold the lease on the runs of " + domain);
  auto at = position(run);
  if (!at || *at == 0) return make_error(errc::not_found, "where its last entry is, is not known here");
  auto appended = log.append({log_entry{subject_of_(run), store::encode_transitions({&whole}), static_cast<std::int64_t>(*at),
                                        owner_.node_id()}});
  if (!appended.at(0)) return appended[0].error();
  std::lock_guard lock{mutex_};
  if (positions_.count(run)) positions_[run] = *appended[0];
  return *appended[0];
}

} // namespace keel::replication
