#include "gateway/http_server.hpp"

#include "gateway/client_limiter.hpp"

#include "runtime/log.hpp"
#include "runtime/thread_pool.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <array>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace keel::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("gateway");
  return l;
}

} // namespace

struct http_server::impl : std::enable_shared_from_this<http_server::impl> {
  server_options options;
  handler on_request;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::vector<std::thread> io_threads;
  std::unique_ptr<thread_pool> handlers;  // a handler waiting on NATS never holds an I/O thread
  std::unique_ptr<thread_pool> quick;     // health and pages: never behind a waiting request
  std::unique_ptr<client_limiter> fair;   // each client's share of the handler threads
  std::mutex waiting_mutex;
  std::map<std::string, std::size_t> waiting;  // requests that may wait, in flight, per client
  std::uint16_t port = 0;
  std::atomic<bool> stopped{false};  // read by accept handlers on the I/O threads

  void accept();
  // Takes a place for a request of `client` that may wait; false when it has too many already.
  bool take_waiting_place(const std::string& client) {
    std::lock_guard lock{waiting_mutex};
    auto& count = waiting[client];
    if (options.waiting_per_client_max > 0 && count >= options.waiting_per_client_max) return false;
    ++count;
    return true;
  }
  void give_back_waiting_place(const std::string& client) {
    std::lock_guard lock{waiting_mutex};
    auto it = waiting.find(client);
    if (it != waiting.end() && --it->second == 0) waiting.erase(it);
  }
};

const std::vector<std::pair<std::string, std::string>>& security_headers() {
  static const std::vector<std::pair<std::string, std::string>> headers = {
    {"X-Content-Type-Options", "nosniff"},
    {"X-Frame-Options", "DENY"},
    {"Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"},
    {"Cache-Control", "no-store"}};
  return headers;
}

namespace {

// One connection: read a request, hand it to the handler, write its answer, and again.
class session : public std::enable_shared_from_this<session> {
public:
  session(tcp::socket socket, std::shared_ptr<http_server::impl> server)
    : stream_(std::move(socket)), server_(std::move(server)) {}

  void start() { read(); }

private:
  void read() {
    parser_.emplace();
    parser_->body_limit(server_->options.body_bytes_max);
    parser_->header_limit(static_cast<std::uint32_t>(server_->options.header_bytes_max));
    stream_.expires_after(std::chrono::milliseconds(server_->options.idle_timeout_ms));
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_reset || ec == asio::error::eof)
      return close();
    if (ec == http::error::body_limit) return reply_now(413, "the request body is over " + std::to_string(server_->options.body_bytes_max) + " bytes", "too_large");
    if (ec == http::error::header_limit) return reply_now(431, "the request headers are too large", "too_large");
    if (ec) return reply_now(400, "the request could not be read: " + ec.message(), "malformed");
    auto& message = parser_->get();
    // RFC 9112: a body framed by anything but chunked alone cannot be read safely (the rest would
    // be taken for a next request): 400, and the connection closes. So does a request with both
    // framings, and an HTTP/1.1 request without exactly one Host.
    std::size_t hosts = 0, encodings = 0, lengths = 0;
    std::string encoding;
    for (const auto& field : message) {
      if (field.name() == http::field::host) ++hosts;
      if (field.name() == http::field::transfer_encoding) {
        ++encodings;
        encoding = std::string(field.value());
      }
      if (field.name() == http::field::content_length) ++lengths;
    }
    for (auto& c : encoding) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (encodings > 1 || (encodings == 1 && encoding != "chunked"))
      return reply_now(400, "a Transfer-Encoding other than chunked is not accepted", "malformed");
    if (encodings == 1 && lengths > 0)
      return reply_now(400, "a request has both Transfer-Encoding and Content-Length", "malformed");
    if (message.version() >= 11 && hosts != 1)
      return reply_now(400, hosts == 0 ? "an HTTP/1.1 request needs a Host header" : "a request has more than one Host header",
                       "malformed");
    http_request request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    // A header the gateway decides on may come once: with two, which one counts would depend on
    // who reads it (a proxy, a check, the handler).
    static const std::set<std::string> decided_on = {"authorization", "origin", "sec-fetch-site", "sec-fetch-mode",
                                                     "content-type", "last-event-id", "content-length"};
    for (const auto& field : message) {
      std::string name(field.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!request.headers.emplace(name, std::string(field.value())).second) {
        if (decided_on.count(name)) return reply_now(400, "a request has more than one " + name + " header", "malformed");
        request.headers[name] += ", " + std::string(field.value());  // RFC 9110: a list, joined
      }
    }
    request.body = std::move(message.body());
    beast::error_code peer_ec;
    auto peer = stream_.socket().remote_endpoint(peer_ec);
    if (!peer_ec) request.peer = peer.address().to_string();
    keep_alive_ = message.keep_alive();
    version_ = message.version();
    head_ = request.method == "HEAD";
    // The handler runs on a handler thread; its answer comes back to this connection's strand.
    auto self = shared_from_this();
    const auto& options = server_->options;
    // Without a rule, every request runs on the handler threads, unbounded per client.
    bool bounded = static_cast<bool>(options.may_wait);
    bool may_wait = !bounded || options.may_wait(request);
    std::string client = bounded && may_wait && options.client_of ? options.client_of(request) : request.peer;
    if (bounded && may_wait && !server_->take_waiting_place(client))
      return reply_now(429, "this client has " + std::to_string(options.waiting_per_client_max) +
                         " requests waiting already; send more once they are answered", "busy", true);
    bool holds_place = bounded && may_wait;
    auto job = [self, request = std::move(request), client, holds_place]() mutable {
      auto answered = std::make_shared<std::atomic<bool>>(false);
      self->server_->on_request(std::move(request), [self, answered, client, holds_place](http_response response) {
        if (answered->exchange(true)) return;  // once
        if (holds_place) self->server_->give_back_waiting_place(client);
        asio::post(self->stream_.get_executor(), [self, response = std::move(response)]() mutable {
          self->write(std::move(response));
        });
      });
    };
    if (!may_wait) server_->quick->submit(std::move(job));
    else if (bounded) server_->fair->submit(client, std::move(job));
    else server_->handlers->submit(std::move(job));
  }

  // An answer of the server's own. The connection closes after it, unless `keep` (a 429: the
  // request was read whole); after a 413 the rest of the body is read and dropped first, so
  // that the client, still sending, reads the answer instead of a reset.
  void reply_now(int status, const std::string& message, const char* code, bool keep = false) {
    keep_alive_ = keep && keep_alive_;
    if (!keep) version_ = 11;
    discard_rest_ = status == 413;
    http_response r;
    r.status = status;
    r.body = nlohmann::json{{"error", {{"code", code}, {"message", message}}}}.dump();
    if (status == 429) r.headers.emplace_back("Retry-After", "1");
    write(std::move(r));
  }

  void write(http_response r) {
    if (r.on_stream) return start_stream(std::move(r));
    auto response = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), version_);
    response->set(http::field::server, "keel");
    response->set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : security_headers()) response->set(name, value);
    for (const auto& [name, value] : r.headers) response->set(name, value);
    response->keep_alive(keep_alive_);
    stream_.expires_after(std::chrono::milliseconds(server_->options.idle_timeout_ms));
    auto after = [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      if (self->discard_rest_) return self->discard_then_close();
      if (!self->keep_alive_) return self->close();
      self->read();
    };
    if (head_) {
      // HEAD: the headers GET would have, Content-Length included, and no body.
      response->content_length(r.body.size());
      auto serializer = std::make_shared<http::response_serializer<http::string_body>>(*response);
      http::async_write_header(stream_, *serializer,
                               [after, response, serializer](beast::error_code ec, std::size_t n) { after(ec, n); });
      return;
    }
    response->body() = std::move(r.body);
    response->prepare_payload();
    http::async_write(stream_, *response, [after, response](beast::error_code ec, std::size_t n) { after(ec, n); });
  }

  // After a 413: no more answers on this connection, and what the client still sends is read
  // and dropped (bounded in bytes and time) before the connection closes.
  void discard_then_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::milliseconds(5000));
    discard_next();
  }
  void discard_next() {
    stream_.async_read_some(asio::buffer(peer_bytes_), [self = shared_from_this()](beast::error_code ec, std::size_t n) {
      self->discarded_ += n;
      if (ec || self->discarded_ > self->server_->options.discard_body_bytes_max) {
        beast::error_code ignored;
        self->stream_.socket().close(ignored);
        return;
      }
      self->discard_next();
    });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  // A streamed answer: chunked headers, then chunks queued by the sink, until either side ends it.
  void start_stream(http_response r) {
    auto response = std::make_shared<http::response<http::empty_body>>(static_cast<http::status>(r.status), version_);
    response->set(http::field::server, "keel");
    response->set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) response->set(name, value);
    response->chunked(true);
    response->keep_alive(false);
    auto serializer = std::make_shared<http::response_serializer<http::empty_body>>(*response);
    stream_.expires_never();
    http::async_write_header(stream_, *serializer,
                             [self = shared_from_this(), response, serializer, on_stream = std::move(r.on_stream)](
                               beast::error_code ec, std::size_t) {
                               if (ec) return self->close();
                               auto sink = std::make_shared<chunk_sink>(self, self->server_->options.stream_queue_bytes_max);
                               self->sink_ = sink;
                               self->watch_peer();
                               on_stream(sink);
                             });
  }

  // Reads (and ignores) what the client sends while it streams, to hear at once that it left.
  void watch_peer() {
    stream_.socket().async_read_some(asio::buffer(peer_bytes_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (!ec) return self->watch_peer();
      if (auto sink = self->sink_.lock()) sink->ended();
    });
  }

  class chunk_sink : public stream_sink, public std::enable_shared_from_this<chunk_sink> {
  public:
    chunk_sink(const std::shared_ptr<session>& owner, std::size_t queue_max) : owner_(owner), queue_max_(queue_max) {}

    bool write(std::string text) override {
      std::unique_lock lock{mutex_};
      if (closed_ || closing_) return false;
      if (queued_bytes_ + text.size() > queue_max_) {
        lock.unlock();
        logger()->info("a stream fell {} bytes behind; closed (its client resumes from its last event)", queued_bytes_);
        ended();
        return false;
      }
      queued_bytes_ += text.size();
      queue_.push_back(std::move(text));
      if (writing_) return true;
      writing_ = true;
      lock.unlock();
      post_write();
      return true;
    }

    void close() override {
      std::unique_lock lock{mutex_};
      if (closed_ || closing_) return;
      closing_ = true;
      if (writing_) return;  // the writer ends it after the queue
      writing_ = true;
      lock.unlock();
      post_write();
    }

    bool closed() const override {
      std::lock_guard lock{mutex_};
      return closed_;
    }

    void on_closed(std::function<void()> callback) override {
      std::unique_lock lock{mutex_};
      if (closed_) {
        lock.unlock();
        if (callback) callback();
        return;
      }
      callbacks_.push_back(std::move(callback));
    }

    // The stream is over: the client left, writing failed, or it fell behind.
    void ended() {
      std::vector<std::function<void()>> callbacks;
      {
        std::lock_guard lock{mutex_};
        if (closed_) return;
        closed_ = true;
        queue_.clear();
        queued_bytes_ = 0;
        callbacks.swap(callbacks_);
      }
      if (auto owner = owner_.lock())
        asio::post(owner->stream_.get_executor(), [owner] {
          beast::error_code ec;
          owner->stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
          owner->stream_.socket().close(ec);
        });
      for (auto& c : callbacks)
        if (c) c();
    }

  private:
    // On the connection's strand: one chunk at a time.
    // The connection is held only while something is being written: a sink its user keeps
    // after the connection (or the whole server) is gone holds no Asio object past its end.
    void post_write() {
      auto owner = owner_.lock();
      if (!owner) return ended();
      asio::post(owner->stream_.get_executor(), [self = shared_from_this(), owner] { self->write_next(); });
    }
    void write_next() {
      auto owner = owner_.lock();
      if (!owner) return ended();
      std::unique_lock lock{mutex_};
      if (closed_) return;
      if (queue_.empty()) {
        if (!closing_) {
          writing_ = false;
          return;
        }
        lock.unlock();
        asio::async_write(owner->stream_, http::make_chunk_last(), [self = shared_from_this(), owner](beast::error_code, std::size_t) {
          self->ended();
        });
        return;
      }
      auto text = std::make_shared<std::string>(std::move(queue_.front()));
      queue_.pop_front();
      queued_bytes_ -= text->size();
      lock.unlock();
      asio::async_write(owner->stream_, http::make_chunk(asio::buffer(*text)), [self = shared_from_this(), owner, text](beast::error_code ec, std::size_t) {
        if (ec) return self->ended();
        self->write_next();
      });
    }

    std::weak_ptr<session> owner_;
    std::size_t queue_max_;
    mutable std::mutex mutex_;
    std::deque<std::string> queue_;
    std::size_t queued_bytes_ = 0;
    bool writing_ = false, closing_ = false, closed_ = false;
    std::vector<std::function<void()>> callbacks_;
  };

  beast::tcp_stream stream_;
  std::shared_ptr<http_server::impl> server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keep_alive_ = true;
  bool head_ = false;
  bool discard_rest_ = false;
  std::size_t discarded_ = 0;
  unsigned version_ = 11;
  std::weak_ptr<chunk_sink> sink_;
  std::array<char, 256> peer_bytes_{};
};

} // namespace

void http_server::impl::accept() {
  acceptor.async_accept(asio::make_strand(io), [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || self->stopped) return;
    if (!ec) std::make_shared<session>(std::move(socket), self)->start();
    else logger()->warn("accepting a connection failed: {}", ec.message());
    self->accept();
  });
}

http_server::http_server(std::shared_ptr<impl> state) : impl_(std::move(state)) {}
http_server::~http_server() { stop(); }
std::uint16_t http_server::port() const { return impl_->port; }

result<std::unique_ptr<http_server>> http_server::start(const server_options& options, handler on_request) {
  auto state = std::make_shared<impl>();
  state->options = options;
  state->on_request = std::move(on_request);
  beast::error_code ec;
  auto address = asio::ip::make_address(options.host, ec);
  if (ec) return make_error(errc::config, "gateway.listen: '" + options.host + "' is not an IP address");
  tcp::endpoint endpoint{address, options.port};
  state->acceptor.open(endpoint.protocol(), ec);
  if (!ec) state->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) state->acceptor.bind(endpoint, ec);
  if (!ec) state->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return make_error(errc::unavailable, "gateway.listen: cannot listen on " + options.host + ":" +
                                           std::to_string(options.port) + ": " + ec.message());
  state->port = state->acceptor.local_endpoint().port();
  state->handlers = std::make_unique<thread_pool>(std::max<std::size_t>(1, options.handler_threads),
                                                 [](const char* what) { logger()->error("an HTTP handler threw: {}", what); },
                                                 "keel http");
  state->quick = std::make_unique<thread_pool>(std::max<std::size_t>(1, options.quick_threads),
                                              [](const char* what) { logger()->error("an HTTP handler threw: {}", what); },
                                              "keel http quick");
  state->fair = std::make_unique<client_limiter>(
    *state->handlers, options.running_per_client_max ? options.running_per_client_max
                                                     : std::max<std::size_t>(1, options.handler_threads / 4));
  state->accept();
  for (std::size_t i = 0; i < std::max<std::size_t>(1, options.io_threads); ++i)
    state->io_threads.emplace_back([s = state.get()] { s->io.run(); });
  return std::unique_ptr<http_server>(new http_server(std::move(state)));
}

void http_server::stop() {
  if (!impl_) return;
  if (impl_->stopped.exchange(true)) return;
  asio::post(impl_->io, [s = impl_] {
    beast::error_code ec;
    s->acceptor.close(ec);
  });
  impl_->fair->stop();
  impl_->handlers->stop(1000);  // a handler still waiting on NATS is left to end on its own
  impl_->quick->stop(1000);
  impl_->io.stop();
  for (auto& t : impl_->io_threads) t.join();
  impl_->io_threads.clear();
}

} // namespace keel::gateway
