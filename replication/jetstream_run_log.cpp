// The run log on a replicated JetStream stream.
#include "replication/run_log.hpp"

namespace keel::replication {

namespace {

class jetstream_log final : public run_log {
public:
  explicit jetstream_log(broker::run_log& log) : log_(log) {}
  std::vector<result<std::uint64_t>> append(const std::vector<log_entry>& entries) override { return log_.append(entries); }
  result<std::uint64_t> send(const log_entry& e) override { return log_.send(e); }
  result<std::uint64_t> wait(std::uint64_t ticket) override { return log_.wait(ticket); }
  void forget(std::uint64_t ticket) override { log_.forget(ticket); }
  result<void> read(const std::string& filter, const reader& on_entry) override { return log_.read(filter, on_entry); }
  result<std::uint64_t> last_sequence(const std::string& subject) override { return log_.last_sequence(subject); }
  result<void> purge_before(const std::string& subject, std::uint64_t seq) override { return log_.purge_before(subject, seq); }

private:
  broker::run_log& log_;
};

} // namespace

std::unique_ptr<run_log> jetstream_run_log(broker::run_log& log) { return std::make_unique<jetstream_log>(log); }

} // namespace keel::replication
