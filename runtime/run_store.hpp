// The run store: one RocksDB database per orchestrator holding each run's snapshot, journal and
// events, and indexes by status, agent, time and idempotency key. Every transition of a run is
// one atomic write batch; with fsync on, a transition is on disk when apply() returns.
//
// The conversation (state["messages"]) is the part of a run that grows without bound, so it is
// not in the snapshot: each message is written once, under its own key, by the transition that
// added it, and get() puts them back. A step so writes what it changed, not the whole run.
#pragma once

#include "runtime/result.hpp"
#include "runtime/wire.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace rocksdb { class DB; }

namespace keel::store {

// waiting: for a time or an outside event (docs/WORKFLOWS.md), on disk only, as suspended is.
enum class run_status { pending, running, suspended, completed, failed, cancelled, waiting, queued };
std::string_view to_string(run_status s);
bool from_string(std::string_view name, run_status& s);
bool is_terminal(run_status s);
// Pending or running: the run has work in flight (not waiting for a person, not ended).
bool is_active(run_status s);

struct run_record {
  std::string run_id;
  std::string agent;
  std::string session_id;
  std::string idempotency_key;
  run_status status = run_status::pending;
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
  std::uint64_t last_event_seq = 0;
  std::uint64_t last_journal_seq = 0;
  wire::value state;  // what the run actor needs beyond the fields above
  // How many of state["messages"] are on disk (set by get(); not stored): a transition writes
  // the messages after these.
  std::size_t messages_on_disk = 0;
};

struct journal_entry {
  std::uint64_t seq = 0;
  std::string kind;
  std::int64_t time_ms = 0;
  wire::value data;
};

// A task result as it came off NATS, written before its run has seen it (so that the next task
// may go as soon as it is on disk) and removed by the transition that applies it. `order` is the
// order of arrival on this node: the run applies its results in that order, and so does a replay.
struct received_result {
  std::uint64_t order = 0;
  std::string message;
};

// One change of one run: its new record, and the journal entries and events it adds. The
// record's state may be left empty when `snapshot` holds the whole record already packed.
struct run_transition {
  run_record record;
  std::string snapshot;  // pack_record(record), when the caller packed it
  // Entries of what this transition did. Kept on disk only by entries_only transitions: a full
  // one writes a snapshot that already reflects them.
  std::vector<journal_entry> journal;
  std::vector<wire::event> events;
  std::uint64_t journal_truncate_through = 0;  // drop entries up to this seq (0: none)
  // Messages of the conversation new since the last transition: packed messages numbered from
  // messages_from. Empty with an unpacked snapshot: apply() takes them from record.state.
  std::uint64_t messages_from = 0;
  std::vector<std::string> messages;
  // Results received for the run (written), and those now applied or dropped (removed).
  std::vector<received_result> received;
  std::vector<std::uint64_t> received_done;
  // Only the journal entries and the received results above: no header, snapshot, index,
  // message or event is written. record.run_id names the run.
  bool entries_only = false;
  // False when everything in it follows from what a synced write holds already (a received
  // result and the state before it): then it is written without waiting for a sync. It survives
  // the process being killed (it is in the operating system's hands); after a power loss, the
  // next start replays the received result and writes it again. The next synced write makes it
  // durable too (one log, written in order).
  bool sync = true;
  // The run's status as the store has it before this transition, when the caller knows it (a
  // run's actor does after its first write): the header is then neither read first nor written
  // again unless the status changes. Unset: the store reads it.
  std::optional<run_status> stored_status;
  // Items appended to lists kept beside the runs (key, packed item; an item already there is not
  // added twice): a session's remembered approvals. Read and written within the batch, in order.
  std::vector<std::pair<std::string, std::string>> list_appends;
};

// Values on disk use the wire encoding, without its size limit (a run may grow large).
wire::limits disk_limits();

// Transitions as bytes, whole (for the replicated log): apply() of the decoded transitions on
// another store writes what apply() of these wrote here. Decoding checks every field.
std::string encode_transitions(const std::vector<const run_transition*>& transitions);
result<std::vector<run_transition>> decode_transitions(std::string_view bytes);

// The record as stored: packed without copying its state, and without its conversation, which
// is stored message by message (see above); the snapshot says how many messages there are.
std::string pack_record(const run_record& r);

struct store_options {
  std::string path;
  bool fsync = true;
  std::size_t memtable_bytes = 16 << 20;     // per memtable; at most two are held
  std::size_t block_cache_bytes = 16 << 20;  // for reads (recovery, history, resumes)
  // Free space the store keeps on its file system: below it no new run is taken
  // (admits_new_run), and no write goes that would leave less than half of it, so that the
  // write-ahead log and the memtable flushes never meet a full disk. 0: no check.
  std::uint64_t reserve_bytes = 0;
  // A run that completes or is cancelled keeps its conversation (a fork or a rerun reads it);
  // false: it is dropped then, as its journal always is.
  bool keep_conversations = true;
};

class run_store {
public:
  static result<std::unique_ptr<run_store>> open(const store_options& options);
  ~run_store();
  run_store(const run_store&) = delete;
  run_store& operator=(const run_store&) = delete;

  // Writes every transition in one atomic batch with one sync (none when no transition needs
  // one, or fsync is off): the group commit of many runs.
  result<void> apply(const std::vector<run_transition>& transitions);
  result<void> apply(const run_transition& transition);

  // The run with its whole conversation in state["messages"], or (with_conversation false: a run
  // actor, a listing) without it, its length in state["messages_count"].
  result<std::optional<run_record>> get(const std::string& run_id, bool with_conversation = true) const;
  // A run whose record cannot be read becomes failed with the reason (its damaged bytes are kept
  // apart under "z/<run>"), so that it is not loaded again at every start.
  result<void> fail_unreadable(const std::string& run_id, const std::string& reason);
  // Messages [from, to) of a run's conversation as stored (packed), stopping after bytes_max (at
  // least one is returned when there is one) or at the first not on disk.
  result<std::vector<std::string>> messages(const std::string& run_id, std::uint64_t from, std::uint64_t to,
                                            std::size_t bytes_max) const;
  result<std::vector<journal_entry>> journal(const std::string& run_id,
                                             std::uint64_t from_seq = 1) const;
  // The results received for a run and not yet applied, in order of arrival.
  result<std::vector<received_result>> received(const std::string& run_id) const;
  // The runs that have such results (at most a few: they live until their run applies them).
  result<std::vector<std::string>> runs_with_received() const;
  result<std::vector<wire::event>> events(const std::string& run_id, std::uint64_t from_seq = 1,
                                          std::size_t limit = SIZE_MAX) const;

  // Run ids, oldest first (by status, agent) or newest first (recent).
  result<std::vector<std::string>> list_by_status(run_status s, std::size_t limit = SIZE_MAX) const;
  result<std::vector<std::string>> list_by_agent(const std::string& agent,
                                                 std::size_t limit = SIZE_MAX) const;
  result<std::vector<std::string>> list_recent(std::size_t limit) const;
  // Runs created before the position (created_ms, run id), newest first: a page of the time
  // index. `before_ms` < 0 starts at the newest run.
  struct time_entry {
    std::int64_t created_ms;
    std::string run_id;
  };
  result<std::vector<time_entry>> list_by_time(std::int64_t before_ms, const std::string& before_run,
                                               std::size_t limit) const;
  result<std::optional<std::string>> find_by_idempotency_key(const std::string& agent,
                                                              const std::string& key) const;

  // Retention (docs/OPERATIONS.md, run_store_retention.cpp). Runs created after the position
  // (after_ms, after_run), oldest first; after_ms < 0 starts at the oldest.
  result<std::vector<time_entry>> list_oldest(std::int64_t after_ms, const std::string& after_run,
                                              std::size_t limit) const;
  // How many runs have status `s` (the status index counted, no id kept).
  result<std::size_t> count_by_status(run_status s) const;
  // Removes each of `runs` that has ended (completed, failed, cancelled) and was last written
  // before `ended_before_ms`: its record, conversation, journal, events, results received,
  // indexes and idempotency key, in one write. Runs not ended, newer, or gone are left. Returns
  // those removed.
  result<std::vector<std::string>> remove_ended(const std::vector<std::string>& runs, std::int64_t ended_before_ms);

  result<std::optional<std::string>> get_meta(const std::string& key) const;
  result<void> put_meta(const std::string& key, const std::string& value);
  // A list that transitions append to (see run_transition::list_appends); empty when none.
  result<wire::value> get_list(const std::string& key) const;

  // Makes every write so far durable (used at shutdown when fsync is off).
  result<void> flush();

  // Disk space. A refusal is errc::unavailable, its message beginning "disk full": the
  // condition passes once space is freed, and whoever was refused may try again.
  // Whether a new run may be taken: free space at or above the reserve.
  result<void> admits_new_run() const;
  // Whether a write of about `bytes` would go (it leaves at least half the reserve free).
  result<void> room_for(std::size_t bytes) const;
  // After a refused or failed write: checks that the free space is back above the reserve and
  // clears the database's error state (RocksDB's Resume), so that writes go again.
  result<void> recover();
  // Free bytes on the store's file system (statvfs; the largest value when it cannot say).
  std::uint64_t free_bytes() const;

  // How many writes waited for a sync since the store was opened.
  std::uint64_t synced_writes() const { return synced_writes_; }
  // Bytes handed to the database in write batches since the store was opened (before
  // compression: what the write-ahead log receives).
  std::uint64_t bytes_written() const { return bytes_written_; }
  // Compacts the whole database (benchmarks, and a node asked to reclaim space).
  result<void> compact();
  // A consistent copy of the store as it is now, taken while it serves (a RocksDB checkpoint:
  // files hard-linked where `dir` is on the same file system, copied otherwise), into `dir`, which
  // must not exist. Returns its size in bytes (run_store_backup.cpp).
  result<std::uint64_t> checkpoint(const std::string& dir);

private:
  run_store(std::unique_ptr<rocksdb::DB> db, const store_options& options);
  result<std::vector<std::string>> scan_ids(const std::string& prefix, std::size_t limit,
                                            bool reverse) const;

  std::unique_ptr<rocksdb::DB> db_;
  bool fsync_;
  std::string path_;
  std::uint64_t reserve_bytes_;
  bool keep_conversations_;
  std::atomic<std::uint64_t> synced_writes_{0};
  std::atomic<std::uint64_t> bytes_written_{0};
  // apply() may run on several threads at once (one store writer per lane): a write that
  // appends to a list reads it first, so those writes take turns.
  std::mutex lists_mutex_;
};

} // namespace keel::store
