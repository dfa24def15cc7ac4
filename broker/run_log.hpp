// The replicated log of runs: a JetStream stream (file storage, as many replicas as asked) with
// one subject per run, `<prefix>.<ns>.log.<owner domain>.<run>`. An orchestrator appends each
// write of a run there before it acts on it; another orchestrator that takes the runs over reads
// them back. Each append names the sequence its subject must be at (JetStream's expected last
// subject sequence): an owner that lost its runs (a takeover wrote after it) is refused, which
// is the fence. On a replicated stream nats-server 2.9 may confirm two appends sent at once to
// one position; each message names the one it follows, the second of such a pair does not count
// (read() skips it, its writer is answered errc::conflict), and later appends go past it. Plain
// C++; nats.c stays inside.
#pragma once

#include "broker/connection.hpp"
#include "runtime/result.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace keel::broker {

namespace run_log_messages {
class chain_filter;
}

struct run_log_options {
  std::string stream;           // [A-Za-z0-9_-]
  std::string subjects;         // what it stores, e.g. "keel.default.log.>"
  std::int64_t replicas = 1;
  std::size_t message_bytes_max = 1 << 20;  // an entry larger than this goes in parts
  std::int64_t ack_wait_ms = 5000;
  // A read whose consumer has not handed the entry the stream's leader names as next within this
  // reads the rest entry by entry from the leader (a replica that lost what the leader has, as
  // nats-server 2.9 can after a paused leader, would otherwise never hand it). 0: from the leader
  // from the start.
  std::int64_t stall_ms = 3000;
};

class run_log {
public:
  // Opens the stream, creating it (or bringing it to these options). A new JetStream cluster
  // elects its leader first: asked again for up to 30 s.
  static result<std::unique_ptr<run_log>> open(std::shared_ptr<connection> nats, const run_log_options& options);
  ~run_log();
  run_log(const run_log&) = delete;
  run_log& operator=(const run_log&) = delete;

  struct entry {
    std::string subject;
    std::string data;
    // The sequence of the subject's last message, which must still be its last (0: the subject
    // has no message yet). -1: no check.
    std::int64_t expected_last = -1;
    // The writer's name for this entry (a node id): the same entry sent again within the
    // stream's duplicate window (2 min) is stored once and confirmed with its first position.
    std::string writer;
  };
  // Appends every entry, all at once, and waits for the broker to confirm each (stored on a
  // majority of its replicas). Per entry: the sequence of its last part, or the error
  // (errc::conflict when its subject had moved on: fenced).
  std::vector<result<std::uint64_t>> append(const std::vector<entry>& entries);
  // Sends one entry (of one part) without waiting: a ticket for wait(), which gives what
  // append() would have. An entry of several parts is appended at once instead. Every ticket is
  // waited for, or dropped with forget().
  result<std::uint64_t> send(const entry& e);
  result<std::uint64_t> wait(std::uint64_t ticket);
  void forget(std::uint64_t ticket);

  // Every entry under `filter` (a subject with wildcards), in order, parts joined: (subject,
  // sequence of its last part, data). Reads up to what the stream holds when it is called.
  using reader = std::function<void(const std::string& subject, std::uint64_t seq, std::string data)>;
  result<void> read(const std::string& filter, const reader& on_entry);
  // The sequence of the subject's last message that counts (the last part of an entry whose
  // other parts never came included: a write goes after it); 0 when it has none.
  result<std::uint64_t> last_sequence(const std::string& subject);
  // Drops the subject's entries before the one whose last part is at sequence `seq` (as append
  // answers); that entry, all its parts, and any after it stay (an entry another writer appended
  // meanwhile is never dropped). An entry in parts appended by another run_log is not cut
  // (errc::conflict): where it starts is not known here.
  result<void> purge_before(const std::string& subject, std::uint64_t seq);

  struct impl;

private:
  // The sequence of the subject's last message, whether it counts or not; 0 when it has none.
  result<std::uint64_t> last_message(const std::string& subject);
  // read(), telling `chain` what it read.
  result<void> read_chain(const std::string& filter, const reader& on_entry, run_log_messages::chain_filter& chain);
  explicit run_log(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

} // namespace keel::broker
