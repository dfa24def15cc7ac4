// Where leases are kept: keys with values and revisions, each write checked against the revision
// it read (one writer wins). jetstream_lease_bucket is the real one (a replicated JetStream
// key-value bucket); tests/simulation has one with delays, lost answers and timeouts.
#pragma once

#include "runtime/result.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel::broker { class key_value; }

namespace keel::replication {

class lease_bucket {
public:
  virtual ~lease_bucket() = default;
  struct entry {
    std::string value;
    std::uint64_t revision = 0;
  };
  virtual result<std::optional<entry>> get_entry(const std::string& key) = 0;
  // Writes only if the key has no value: the new revision, or errc::conflict.
  virtual result<std::uint64_t> create(const std::string& key, const std::string& value) = 0;
  // Writes only if the key is still at `revision`: the new revision, or errc::conflict. A write
  // whose answer was lost (errc::timeout, errc::unavailable) may or may not have been made.
  virtual result<std::uint64_t> update(const std::string& key, const std::string& value, std::uint64_t revision) = 0;
  // Every key written.
  virtual result<std::vector<std::string>> keys() = 0;
};

// The bucket behind `kv`, which must outlive it.
std::unique_ptr<lease_bucket> jetstream_lease_bucket(broker::key_value& kv);

} // namespace keel::replication
