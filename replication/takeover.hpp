// Takes over the runs of a domain (a node that is gone) once its lease is held: reads them from
// the run log into this node's store, fences the domain's admission gates (no new run can be
// admitted by the old owner after that) and then each run read or admitted (an entry of this
// node's where the run's last entry was, or at its start for a run admitted and not written,
// naming the epoch of the claim: whatever the old owner still writes is refused), and
// says which runs have work in flight. A later claim's fence found in the log means another node
// took the domain from this one meanwhile: it gives up, fencing nothing more.
#pragma once

#include "replication/environment.hpp"
#include "replication/lease_bucket.hpp"
#include "replication/log_writer.hpp"
#include "replication/ownership.hpp"
#include "replication/run_log.hpp"
#include "runtime/run_store.hpp"

#include <optional>
#include <string>
#include <vector>

namespace keel::replication {

struct takeover_context {
  environment& env;
  run_log& log;
  lease_bucket& bucket;
  ownership& owner;  // its leases are on
  log_writer& writer;
  store::run_store& store;
  std::string log_prefix;  // `<base>.log`: a run's subject is <log_prefix>.<domain>.<run>
};

struct takeover_outcome {
  bool done = false;            // read and fenced whole: the domain's runs are this node's now
  std::string why_not;          // when not done
  std::vector<std::string> runs;    // every run fenced (or ended)
  std::vector<std::string> active;  // those with work in flight
  // Runs that had ended, taken as they are (unfenced), with the sequence of their last entry:
  // their log is cut by this node now (their old owner may have stopped before it cut it).
  std::vector<std::pair<std::string, std::uint64_t>> ended;
  std::size_t suspended = 0;        // waiting for a person
  std::size_t entries = 0, unreadable = 0;
  std::uint64_t max_received_order = 0;  // results applied later keep their order after this
};

// Reads and fences however long the log takes to answer; gives up only when the lease goes, the
// node stops, or a later takeover is found.
takeover_outcome take_over(takeover_context& context, const std::string& domain, std::uint64_t epoch);

// A takeover's fence as written in the log, and read back: who wrote it and for which epoch.
// Anything else (a fence of another shape, fields of the wrong type) is not one: never an
// exception (it would end the process on every node that reads it, after every restart).
std::string encode_fence(const std::string& node, std::uint64_t epoch);
struct fence {
  std::string by;
  std::uint64_t epoch = 0;
};
std::optional<fence> decode_fence(const std::string& data);

} // namespace keel::replication
