// For broker/run_log.cpp (and the simulation of its rule): the run log's messages one at a time,
// as the stream's leader (or the nearest replica) has them, and which of them count.
#pragma once

#include "runtime/result.hpp"

#include <nats/nats.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace keel::broker::run_log_messages {

inline constexpr const char* part_header = "Keel-Part";  // "<index>/<count>", from 1; absent: whole
// The sequence of the message this one follows on its subject: what its writer expected there.
// nats-server 2.9 may confirm two writes sent at once at the same position of a replicated
// stream (its check of the expected last sequence is made before the replicas agree: see
// tests/nats_server/concurrent_cas.mjs); both are stored, one after the other. A message counts
// only if it follows the last one that counts: the second of such a pair does not, nor anything
// written after it by a writer that took it for its own (docs/ARCHITECTURE.md, "Failover").
inline constexpr const char* prev_header = "Keel-Prev";

// The messages of each subject that count, in the order read: a message counts when it follows
// the last one that did (its Keel-Prev), when it is the first read of its subject (what a cut
// left, or the first ever), or when it names none (written without a check). One that names a
// message of its subject after the first read that this read never saw is a gap (a cut made
// while reading, or a copy that lacks a message): the read is not whole.
class chain_filter {
public:
  enum class verdict { counts, skipped, gap };
  verdict see(const std::string& subject, std::uint64_t seq, std::optional<std::uint64_t> prev) {
    auto& s = subjects_[subject];
    if (s.seen.empty()) {
      s.seen.insert(seq);
      s.first = s.last = seq;
      return verdict::counts;
    }
    s.seen.insert(seq);
    if (!prev || *prev == s.last) {
      s.last = seq;
      return verdict::counts;
    }
    if (*prev >= s.first && !s.seen.count(*prev)) return verdict::gap;
    return verdict::skipped;
  }
  // Whether a message of `subject` between `lo` and `hi` (both left out) was read.
  bool seen_between(const std::string& subject, std::uint64_t lo, std::uint64_t hi) const {
    auto it = subjects_.find(subject);
    if (it == subjects_.end()) return false;
    auto next = it->second.seen.upper_bound(lo);
    return next != it->second.seen.end() && *next < hi;
  }
  // The subject's last message that counts (a part of an entry included); 0 when none was read.
  std::uint64_t last(const std::string& subject) const {
    auto it = subjects_.find(subject);
    return it == subjects_.end() ? 0 : it->second.last;
  }

private:
  struct state {
    std::uint64_t first = 0, last = 0;
    std::set<std::uint64_t> seen;
  };
  std::map<std::string, state> subjects_;
};

// Whether a write at `seq` sent to follow `prev` counts, by the readers' rule (chain_filter), told
// the subject's messages from `from` on, one at a time: `prev` itself first (gone, cut away: then
// only the subject's first message counts), then those after it. A subject's first message always
// counts, so a write to follow 0 counts only as the first.
struct walk {
  enum class step { counts, not_counted, next, unknown };
  std::uint64_t prev, seq, from;
  bool prev_seen;
  // `prev_was_last`: the server took the write only with `prev` its subject's last message (its
  // check, made before the replicas agree, can let a second write through, never one whose
  // `prev` was cut away): `prev` need not be looked for.
  walk(std::uint64_t p, std::uint64_t s, bool prev_was_last)
    : prev(p), seq(s), from(p == 0 ? 1 : (prev_was_last ? p + 1 : p)), prev_seen(p == 0 || prev_was_last) {}
  step see(std::uint64_t m, std::optional<std::uint64_t> m_prev) {
    if (m < from || m > seq) return step::unknown;  // that copy does not hold the write yet
    if (!prev_seen) {
      if (m == prev) {
        prev_seen = true;
        from = prev + 1;
        return step::next;
      }
      return m == seq ? step::counts : step::not_counted;  // `prev` was cut away: `m` is the first
    }
    if (prev == 0) return m == seq ? step::counts : step::not_counted;
    if (m == seq) return step::counts;
    if (!m_prev || *m_prev == prev) return step::not_counted;
    from = m + 1;  // a message that does not count: look past it
    return step::next;
  }
};

// A message's Keel-Prev, if it has one.
std::optional<std::uint64_t> prev_of(natsMsg* msg);

// An entry as the stream's leader has it.
struct leader_entry {
  std::uint64_t seq = 0;
  std::string subject;
  std::string data;
  std::string part;  // the Keel-Part header, if any
  std::optional<std::uint64_t> prev;  // the Keel-Prev header, if any
};

// The message at `seq` of `subject` follows `prev`, which the copy read did not hand (chain_filter
// said gap). The leader's copy decides: `next(from)` is the subject's first message at or after
// `from` as the leader holds it (a result<std::optional<leader_entry>>). When the leader holds
// `prev` and the read handed none of the subject's messages between the two, `prev` and every
// message of the subject up to `seq` are seen as the leader has them, those that count are given
// to `hand`, and the verdict for `seq` follows. Otherwise gap: the leader lacks `prev` too (cut
// meanwhile, or the log does not hold it), or the read already counted a message the leader holds
// after it (the copy's order cannot be mended): the read is not whole.
template <class Next, class Hand>
result<chain_filter::verdict> resolve_gap(chain_filter& chain, const std::string& subject, std::uint64_t seq,
                                          std::uint64_t prev, std::optional<std::uint64_t> seq_prev, Next&& next,
                                          Hand&& hand) {
  if (chain.seen_between(subject, prev, seq)) return chain_filter::verdict::gap;
  auto first = next(prev);
  if (!first) return first.error();
  if (!*first || (*first)->seq != prev) return chain_filter::verdict::gap;
  auto m = std::move(**first);
  while (true) {
    auto verdict = chain.see(subject, m.seq, m.prev);
    if (verdict == chain_filter::verdict::gap) return verdict;
    auto at = m.seq;
    if (verdict == chain_filter::verdict::counts) hand(std::move(m));
    auto after = next(at + 1);
    if (!after) return after.error();
    if (!*after || (*after)->seq >= seq) break;
    m = std::move(**after);
  }
  return chain.see(subject, seq, seq_prev);
}

// The first entry matching `filter` at or after `from`, asked of the stream's leader (nats-server
// answers a stream's message requests from its leader only, and not while it has none); none when
// there is none.
result<std::optional<leader_entry>> entry_from_leader(natsConnection* nc, const std::string& stream,
                                                      const std::string& filter, std::uint64_t from,
                                                      std::int64_t timeout_ms);
// The sequence of that entry: 0 when there is none.
result<std::uint64_t> next_matching(natsConnection* nc, const std::string& stream, const std::string& filter,
                                    std::uint64_t from, std::int64_t timeout_ms);
// Whether the message at `seq` of `subject`, sent to follow `prev`, counts: not when a message
// between them follows `prev` already (another write sent at once to the same position and stored
// first, or one written without a check).
// `prev_was_last`: the server's own check took `prev` for the subject's last message (else `prev`
// is looked for first: cut away, only the subject's first message counts).
result<bool> follows(jsCtx* js, natsConnection* nc, const std::string& stream, const std::string& subject, std::uint64_t prev,
                     std::uint64_t seq, bool prev_was_last, std::int64_t timeout_ms);
struct follow_check {
  std::string subject;
  std::uint64_t prev = 0, seq = 0;
  bool prev_was_last = true;
};
// follows() for many writes at once (a lane's batch): the nearest replica is asked, its answers
// coming to `inbox`.* through `sub` (the caller's: none, the leader is asked one by one).
std::vector<result<bool>> follow_all(jsCtx* js, natsConnection* nc, natsSubscription* sub, const std::string& inbox,
                                     const std::string& stream, const std::vector<follow_check>& checks, std::int64_t timeout_ms);
// For a write refused while expecting `prev` last: the subject's last message when nothing after
// `prev` counts (it may go after what came); none when something after it counts, or nothing is
// there (refused for another reason).
result<std::optional<std::uint64_t>> after_uncounted(natsConnection* nc, const std::string& stream, const std::string& subject,
                                                     std::uint64_t prev, std::int64_t timeout_ms);

} // namespace keel::broker::run_log_messages
