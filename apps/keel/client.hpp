// A client of one keel cluster over NATS: requests to orchestrators and a run's event stream,
// history first and then live, each event once and in order.
#pragma once

#include "apps/keel/context.hpp"
#include "broker/connection.hpp"
#include "runtime/wire.hpp"

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>

namespace keel::cli {

class client {
public:
  static result<client> connect(const context& c, const std::string& name, std::int64_t timeout_ms);

  result<wire::invoke_reply> invoke(const wire::invoke_request& request);
  result<wire::resume_reply> resume(const wire::resume_request& request);
  result<wire::value> cancel(const std::string& run_id, const std::string& reason);
  result<wire::value> retry(const std::string& run_id);
  // Forks and replays (docs/FORKS.md): the fork request's fields as given ({run_id, created} back),
  // and the replay's report.
  result<wire::invoke_reply> fork(const std::string& run_id, const wire::value& fields);
  result<wire::value> replay(const std::string& run_id);
  // Schedules (workflows): the list as one orchestrator holds it, and pause or resume one.
  result<wire::value> schedules();
  result<wire::value> run_queues();
  result<wire::value> pause_schedule(const std::string& name, bool pause);
  result<wire::value> define_schedule(const wire::value& schedule);  // {schedule, created}
  result<void> remove_schedule(const std::string& name);
  // An outside event for a run (workflows): the signal_reply ({delivered, duplicate, id}).
  result<wire::value> signal(const std::string& run_id, const std::string& name, const wire::value& payload,
                             const std::string& id);
  result<wire::value> show(const std::string& run_id);  // the run's summary
  // The run's summary once it is not running (suspended or ended), or a timeout error.
  result<wire::value> wait(const std::string& run_id);
  // Summaries from every orchestrator that answers within the timeout, newest first.
  // Every orchestrator's runs, newest first; `missing` gets the live orchestrators that did not
  // answer in time (their runs are not in the list).
  result<std::vector<wire::value>> runs(const wire::value& filter, std::vector<std::string>* missing = nullptr);
  result<wire::value> history(const std::string& run_id, std::uint64_t from_seq, std::size_t limit);

  const broker::subjects& subjects() const { return subjects_; }
  broker::connection& nats() { return *nats_; }
  std::int64_t timeout_ms() const { return timeout_ms_; }

private:
  result<broker::message> request(const std::string& subject, const std::string& bytes,
                                  const std::string& run_id);
  std::shared_ptr<broker::connection> nats_;
  broker::subjects subjects_;
  std::string who_;  // the name that ends the subjects of requests that act
  std::int64_t timeout_ms_ = 5000;
};

// Follows one run: subscribes to live events first, then reads the history, so that nothing
// falls between; repeats are dropped and a gap in live events is filled from history.
class event_stream {
public:
  static result<std::unique_ptr<event_stream>> open(client& c, const std::string& run_id,
                                                    std::uint64_t from_seq = 1);
  // The next event in order, or none when `timeout_ms` passes (errors: the run is unknown).
  result<std::optional<wire::event>> next(std::int64_t timeout_ms);
  // Whether every event stored so far has been returned (history read to its end).
  bool caught_up() const { return caught_up_ && buffered_.empty(); }

private:
  event_stream(client& c, std::string run_id, std::uint64_t from_seq)
    : client_(c), run_id_(std::move(run_id)), next_seq_(from_seq) {}
  result<void> fill_from_history();
  client& client_;
  std::string run_id_;
  std::uint64_t next_seq_ = 1;
  bool caught_up_ = false;
  std::map<std::uint64_t, wire::event> buffered_;  // history and live, by seq
  // Live events as the subscription delivers them; shared with its delivery thread, which may
  // still be in the callback when this stream is gone.
  struct incoming {
    std::mutex mutex;
    std::condition_variable arrived;
    std::map<std::uint64_t, wire::event> events;
  };
  std::shared_ptr<incoming> live_ = std::make_shared<incoming>();
  std::unique_ptr<broker::subscription> subscription_;
};

bool is_final_event(const std::string& event_type);

} // namespace keel::cli
