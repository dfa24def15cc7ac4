// An HTTP/1.1 server on Boost.Beast and Asio: a few threads serve any number of connections
// (each waits without a thread of its own), and handlers answer from any thread, when ready.
// Plain C++; Beast and Asio stay inside this file's implementation.
#pragma once

#include "runtime/result.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace keel::gateway {

struct http_request {
  std::string method;                          // "GET", "POST", ...
  std::string target;                          // path and query, as sent
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string peer;                            // the client's address
};

// The open end of a streamed answer (Server-Sent Events): chunks go out in order, from any
// thread, without blocking. A client that falls `stream_queue_bytes_max` behind is closed (it
// reconnects and resumes); so is one that goes away.
class stream_sink {
public:
  virtual ~stream_sink() = default;
  // Queues the text; false when the stream is closed (or was closed now for being too far behind).
  virtual bool write(std::string text) = 0;
  // Ends the answer after what is queued.
  virtual void close() = 0;
  virtual bool closed() const = 0;
  // Called once, from any thread, when the stream ends for whatever reason.
  virtual void on_closed(std::function<void()> callback) = 0;
};

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Set for a streamed answer: the headers go out (chunked, no body), then this is called with
  // the stream's sink. The connection is not reused afterwards.
  std::function<void(std::shared_ptr<stream_sink>)> on_stream;
};

// Called once per request; may be called from any thread.
using responder = std::function<void(http_response)>;
// Runs on one of the server's handler threads (never an I/O thread): it may block.
using handler = std::function<void(http_request, responder)>;

struct server_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;           // 0: any free port
  std::size_t io_threads = 2;
  std::size_t handler_threads = 8;
  std::size_t body_bytes_max = 1 << 20;
  std::size_t header_bytes_max = 16 << 10;
  std::int64_t idle_timeout_ms = 60'000;  // a connection with no request for this long is closed
  std::size_t stream_queue_bytes_max = 4 << 20;  // a streamed answer this far behind is closed
  // Requests that may wait on something slow (the broker): they run on the handler threads, at
  // most `waiting_per_client_max` at once per client address (more are answered 429 at once).
  // The others (health, the pages) run on threads of their own, so that no number of waiting
  // requests delays them. Unset: every request may wait.
  std::function<bool(const http_request&)> may_wait;
  std::size_t waiting_per_client_max = 8;  // 0: no bound
  // Of those, how many one client has on the handler threads at once (the rest wait in its own
  // line): 0 is a quarter of handler_threads. No client can hold every thread.
  std::size_t running_per_client_max = 0;
  // Who a request counts against for that bound; empty: its address.
  std::function<std::string(const http_request&)> client_of;
  std::size_t quick_threads = 4;
  std::size_t discard_body_bytes_max = 16 << 20;  // read and dropped after a 413, so the client sees it
};

// The headers every answer carries, the server's own (400, 413, 431, 429) included.
const std::vector<std::pair<std::string, std::string>>& security_headers();

class http_server {
public:
  static result<std::unique_ptr<http_server>> start(const server_options& options, handler on_request);
  ~http_server();
  std::uint16_t port() const;
  void stop();

  struct impl;

private:
  explicit http_server(std::shared_ptr<impl> state);
  std::shared_ptr<impl> impl_;
};

} // namespace keel::gateway
