// A JetStream key-value bucket, replicated like the task stream: what the cluster agrees on
// without a database of its own (idempotency keys, for one).
#pragma once

#include "broker/work_queue.hpp"
#include "runtime/result.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel::broker {

struct key_value_options {
  std::string bucket;          // [A-Za-z0-9_-]
  std::int64_t replicas = 1;   // copies on as many servers
  std::int64_t ttl_ms = 0;     // an entry is dropped this long after it was written; 0: never
  // A compare-and-set on a replicated bucket that other writes keep coming between is tried again
  // for this long, then answered unavailable (a lease's bucket: a fraction of the lease).
  std::int64_t write_within_ms = 5'000;
};

class key_value {
public:
  // Opens the bucket, creating it when there is none (a new cluster elects its leader first:
  // asked again for up to 30 s).
  static result<std::unique_ptr<key_value>> open(jetstream& js, const key_value_options& options);
  ~key_value();
  key_value(const key_value&) = delete;
  key_value& operator=(const key_value&) = delete;

  // Writes `value` under `key` only if the key has none: the value that is there afterwards, and
  // whether it is this one. Keys are [A-Za-z0-9_=.-] (see key_of).
  struct created {
    bool written = false;
    std::string value;  // ours when written, else the one that was there first
  };
  result<created> create_if_absent(const std::string& key, const std::string& value);
  result<std::optional<std::string>> get(const std::string& key);

  // A value with its revision, for writes that must not cross another's (leases).
  struct entry {
    std::string value;
    std::uint64_t revision = 0;
  };
  result<std::optional<entry>> get_entry(const std::string& key);
  // Writes only if the key has no value: the new revision, or errc::conflict.
  result<std::uint64_t> create(const std::string& key, const std::string& value);
  // Writes only if the key is still at `revision`: the new revision, or errc::conflict.
  result<std::uint64_t> update(const std::string& key, const std::string& value, std::uint64_t revision);
  // Writes whatever the key held: the new revision.
  result<std::uint64_t> put(const std::string& key, const std::string& value);
  // Every key written (one deleted since included: get_entry says it has none).
  result<std::vector<std::string>> keys();

  struct impl;

private:
  // create (revision 0) or update as a compare-and-set on a replicated bucket (key_value.cpp).
  result<std::uint64_t> write_at(const std::string& key, const std::string& value, std::uint64_t revision);

  explicit key_value(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

// A key from any bytes: the prefix, a '.', and the bytes in hex (keys allow few characters).
std::string key_of(const std::string& prefix, const std::string& bytes);

} // namespace keel::broker
