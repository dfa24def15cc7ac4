// Removing ended runs for retention (docs/OPERATIONS.md): what a run left in the store goes in one
// write, and only if the run has ended by then.
#include "runtime/run_store.hpp"
#include "runtime/run_store_keys.hpp"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

namespace keel::store {

using namespace keys;

namespace {
error store_error(const rocksdb::Status& s, const char* what) {
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kSpaceLimit)
    return make_error(errc::unavailable, std::string("disk full: ") + what + ": " + s.ToString());
  return make_error(errc::io, std::string(what) + ": " + s.ToString());
}

// Every key of the run under `kind/<run>/` (journal, conversation, events, results received),
// one by one: range deletions pile up in RocksDB's memtable and slow every read until flushed.
rocksdb::Status delete_under(rocksdb::DB& db, rocksdb::WriteBatch& batch, const char* kind, const std::string& run) {
  std::string prefix = std::string(kind) + "/" + run + "/";
  std::string end = std::string(kind) + "/" + run + "0";  // '0' follows '/'
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions options;
  options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db.NewIterator(options));
  for (it->Seek(prefix); it->Valid(); it->Next()) batch.Delete(it->key());
  return it->status();
}
} // namespace

result<std::vector<run_store::time_entry>> run_store::list_oldest(std::int64_t after_ms, const std::string& after_run,
                                                                 std::size_t limit) const {
  std::vector<time_entry> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  std::string start = after_ms < 0 ? std::string("t/") : time_key(after_ms, after_run);
  it->Seek(start);
  if (it->Valid() && after_ms >= 0 && it->key().ToStringView() == start) it->Next();
  for (; it->Valid() && out.size() < limit; it->Next()) {
    auto key = it->key().ToStringView();
    if (!key.starts_with("t/")) break;
    if (auto entry = time_entry_of(key)) out.push_back(std::move(*entry));
  }
  if (!it->status().ok()) return store_error(it->status(), "scanning the time index");
  return out;
}

result<std::size_t> run_store::count_by_status(run_status s) const {
  std::string prefix = status_key(s, "");
  std::string end = prefix.substr(0, prefix.size() - 1) + "0";  // '0' follows '/'
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions options;
  options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options));
  std::size_t n = 0;
  for (it->Seek(prefix); it->Valid(); it->Next()) ++n;
  if (!it->status().ok()) return store_error(it->status(), "counting runs by status");
  return n;
}

result<std::vector<std::string>> run_store::remove_ended(const std::vector<std::string>& runs, std::int64_t ended_before_ms) {
  rocksdb::WriteBatch batch;
  std::vector<std::string> removed;
  for (const auto& run : runs) {
    auto record = get(run, false);
    if (!record) {
      if (record.error().code == errc::malformed) continue;  // damaged: left for a person
      return record.error();
    }
    if (!*record) continue;
    const auto& r = **record;
    if (!is_terminal(r.status) || r.updated_ms >= ended_before_ms) continue;
    batch.Delete(header_key(run));
    batch.Delete(snapshot_key(run));
    batch.Delete("z/" + run);  // a damaged record kept aside
    for (const char* kind : {"j", "c", "e", "x"})
      if (auto s = delete_under(*db_, batch, kind, run); !s.ok()) return store_error(s, "reading what a run left");
    batch.Delete(status_key(r.status, run));
    batch.Delete(agent_key(r.agent, r.created_ms, run));
    batch.Delete(time_key(r.created_ms, run));
    if (!r.idempotency_key.empty()) {
      auto owner = find_by_idempotency_key(r.agent, r.idempotency_key);
      if (owner && *owner && **owner == run) batch.Delete(idempotency_key(r.agent, r.idempotency_key));
    }
    removed.push_back(run);
  }
  if (removed.empty()) return removed;
  rocksdb::WriteOptions options;
  options.sync = fsync_;
  if (auto s = db_->Write(options, &batch); !s.ok()) return store_error(s, "removing ended runs");
  return removed;
}

} // namespace keel::store
