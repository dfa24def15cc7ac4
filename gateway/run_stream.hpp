// Live runs over Server-Sent Events. Each client gets a run's stored events in order from the seq
// it asks for, with no gap and no repeat, then the live ones as the owner publishes them, then a
// final `end` event when the run is over. One NATS subscription per run serves every client
// watching it; no client holds a thread: catching up runs on the handler pool, live events go
// from the NATS delivery thread straight to each client's queue.
#pragma once

#include "broker/connection.hpp"
#include "gateway/http_server.hpp"
#include "runtime/result.hpp"
#include "runtime/thread_pool.hpp"
#include "runtime/wire.hpp"

#include <functional>
#include <memory>
#include <string>

namespace keel::gateway {

// A page of a run's stored events from `from_seq`: the history reply of docs/PROTOCOL.md.
using history_reader = std::function<result<wire::value>(const std::string& run, std::uint64_t from_seq)>;

struct stream_options {
  std::int64_t ping_ms = 15'000;     // a comment line this often keeps proxies and dead peers honest
  std::size_t clients_max = 10'000;  // streams one gateway serves at once; more get 503
  std::int64_t retry_ms = 2'000;     // how long a browser waits before it reconnects
};

class run_streams {
public:
  run_streams(std::shared_ptr<broker::connection> nats, broker::subjects subjects, history_reader history,
              stream_options options);
  ~run_streams();
  run_streams(const run_streams&) = delete;
  run_streams& operator=(const run_streams&) = delete;

  // Streams `run` to `sink`, starting after `after_seq`.
  void follow(const std::string& run, std::uint64_t after_seq, std::shared_ptr<stream_sink> sink);
  // False when a new stream would pass clients_max.
  bool has_room() const;
  std::size_t clients() const;
  void stop();

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

// One SSE frame: `event:` (when not empty), `id:` (when not empty), and the data on one line.
std::string sse_frame(const std::string& event, const std::string& id, const std::string& data);

} // namespace keel::gateway
