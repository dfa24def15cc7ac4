// Backups of a node's store while it serves (docs/OPERATIONS.md): a RocksDB checkpoint.
#include "runtime/run_store.hpp"

#include <rocksdb/db.h>
#include <rocksdb/utilities/checkpoint.h>

#include <filesystem>

namespace keel::store {

result<std::uint64_t> run_store::checkpoint(const std::string& dir) {
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) return make_error(errc::conflict, dir + " exists already: a backup goes to a new folder");
  rocksdb::Checkpoint* raw = nullptr;
  auto s = rocksdb::Checkpoint::Create(db_.get(), &raw);
  std::unique_ptr<rocksdb::Checkpoint> made(raw);
  // Memtables are flushed into it first (log_size_for_flush 0): the copy needs no log replay.
  if (s.ok()) s = made->CreateCheckpoint(dir, 0);
  if (!s.ok()) {
    std::filesystem::remove_all(dir, ec);
    if (s.IsNoSpace()) return make_error(errc::unavailable, "disk full: the backup was not made: " + s.ToString());
    return make_error(errc::io, "the backup was not made: " + s.ToString());
  }
  std::uint64_t bytes = 0;
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir, ec))
    if (f.is_regular_file(ec)) bytes += f.file_size(ec);
  return bytes;
}

} // namespace keel::store
