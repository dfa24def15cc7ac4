// The replicated run log as the replication layer uses it: one subject per run, each entry
// appended where the run's last entry is (the log checks it: that is the fence), read back by a
// node that takes the runs over. jetstream_run_log wraps broker::run_log; tests/simulation has
// one of its own.
#pragma once

#include "broker/run_log.hpp"
#include "runtime/result.hpp"

#include <memory>
#include <string>
#include <vector>

namespace keel::replication {

using log_entry = broker::run_log::entry;

class run_log {
public:
  virtual ~run_log() = default;
  // Per entry: the sequence of its last part, or the error (errc::conflict: its subject moved on).
  virtual std::vector<result<std::uint64_t>> append(const std::vector<log_entry>& entries) = 0;
  // Sent without waiting: a ticket for wait() (or forget()).
  virtual result<std::uint64_t> send(const log_entry& e) = 0;
  virtual result<std::uint64_t> wait(std::uint64_t ticket) = 0;
  virtual void forget(std::uint64_t ticket) = 0;
  using reader = broker::run_log::reader;
  virtual result<void> read(const std::string& filter, const reader& on_entry) = 0;
  virtual result<std::uint64_t> last_sequence(const std::string& subject) = 0;
  virtual result<void> purge_before(const std::string& subject, std::uint64_t seq) = 0;
};

// The log behind `log`, which must outlive it.
std::unique_ptr<run_log> jetstream_run_log(broker::run_log& log);

} // namespace keel::replication
