// Queues (docs/WORKFLOWS.md): at most `concurrency` runs of a queue at once across the cluster (at
// most `key_concurrency` of one concurrency key), the rest waiting in line, in order.
//
// The line is one shared record per queue (running and waiting entries), read and replaced at a
// revision by whichever orchestrator has a change: a run getting in line, a run that ended, a
// slot to hand to the first in line that may take it. Any orchestrator may move any entry from
// waiting to running; each tells its own runs that they may start when it sees them running. A
// run starts only after the record says it runs, and its entry leaves only after its end is on
// disk: so the runs going at once are never more than the record's running entries, never more
// than the limit. Every change is idempotent (a run in line is not added twice; a release names
// the run and when it got in line), so a write whose answer was lost is simply read back, and a
// node that forgot what it asked (a crash) is put right by reconcile(), from its own store.
//
// Plain C++ with the record's store, the node's runs and the clock as interfaces: the real ones
// are JetStream and the run store (actors/queue_keeper), simulated ones are in tests/simulation.
#pragma once

#include "runtime/config.hpp"
#include "runtime/result.hpp"
#include "runtime/run_state.hpp"
#include "runtime/run_store.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace keel::actors {

struct queue_entry {
  std::string run;
  std::string key;            // the run's concurrency key (empty: none)
  std::int64_t since_ms = 0;  // when it got in line (a retried run gets in line again, later)
  std::int64_t admitted_ms = 0;
};

struct queue_record {
  std::vector<queue_entry> running;  // in the order they were admitted
  std::vector<queue_entry> waiting;  // the line, first first
  std::int64_t admitted = 0;         // runs admitted since the record was made
};
std::string encode(const queue_record& r);
result<queue_record> decode_queue_record(const std::string& bytes);

// Admits, in line order, every waiting run that fits: fewer than concurrency running, and fewer
// than key_concurrency running with its key (0: no limit per key). A run held back by its key
// does not hold back the runs behind it. Returns the runs admitted.
std::vector<std::string> admit(queue_record& record, const config::queue_config& limits, std::int64_t now_ms);

// What the node knows of one of its runs (from its store): its status and its place in line.
struct local_run {
  store::run_status status = store::run_status::pending;
  std::optional<store::queue_place> place;
  bool readable = true;  // false: its stored state could not be read
};

struct queue_io {
  std::function<std::int64_t()> now;
  // The shared record at a revision (nullopt: none yet); create it; replace it at a revision
  // (conflict: another wrote first; any error may also mean it was written).
  std::function<result<std::optional<std::pair<queue_record, std::uint64_t>>>(const std::string& queue)> read;
  std::function<result<std::uint64_t>(const std::string& queue, const queue_record&)> create;
  std::function<result<std::uint64_t>(const std::string& queue, const queue_record&, std::uint64_t revision)> update;
  // The run in this node's store, if this node serves it now (nullopt: not this node's).
  std::function<std::optional<local_run>(const std::string& run)> look_up;
  // Tell this node's run that it may start, in that place (it checks that it still waits there; a
  // repeat is harmless).
  std::function<void(const std::string& run, std::int64_t since_ms)> start;
};

class queue_driver {
public:
  queue_driver(config::queue_config limits, queue_io io);

  // Asked by this node's runs, after what they say is on disk.
  void enter(const std::string& run, const std::string& key, std::int64_t since_ms);
  void release(const std::string& run, std::int64_t since_ms);

  // Reads the record, applies what this node asked, admits what fits, writes it at its revision,
  // and tells this node's runs that were admitted. Returns when to look again (wall clock, ms):
  // soon while this node has runs in line or changes not yet written, else a few seconds.
  // `reconcile`: also look up every entry's run this node serves and put right what the record
  // says of it (a run that ended still in it; a run admitted that was never told).
  std::int64_t step(bool reconcile = false);

  // The record as last read (listing), and the last problem (empty: none).
  const queue_record& shown() const { return shown_; }
  const std::string& problem() const { return problem_; }
  const config::queue_config& limits() const { return limits_; }
  // Runs of this node still waiting to get in line (the line was full).
  std::size_t outside() const;
  // The last step() changed the record (others may look at once).
  bool wrote() const { return wrote_; }

private:
  config::queue_config limits_;
  queue_io io_;
  std::map<std::string, queue_entry> entering_;     // run -> entry, not yet seen in the record
  std::map<std::string, std::int64_t> releasing_;   // run -> since_ms, not yet seen gone
  std::map<std::string, std::int64_t> mine_;        // in line, this node's: told to start when admitted
  queue_record shown_;
  std::string problem_;
  bool wrote_ = false;
};

} // namespace keel::actors
