#include "gateway/http_server.hpp"

#include "runtime/log.hpp"
#include "runtime/thread_pool.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <array>
#include <deque>
#include <mutex>
#include <optional>
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
  std::uint16_t port = 0;
  bool stopped = false;

  void accept();
};

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
    http_request request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    for (const auto& field : message) {
      std::string name(field.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      request.headers[name] = std::string(field.value());
    }
    request.body = std::move(message.body());
    beast::error_code peer_ec;
    auto peer = stream_.socket().remote_endpoint(peer_ec);
    if (!peer_ec) request.peer = peer.address().to_string();
    keep_alive_ = message.keep_alive();
    version_ = message.version();
    // The handler runs on a handler thread; its answer comes back to this connection's strand.
    auto self = shared_from_this();
    server_->handlers->submit([self, request = std::move(request)]() mutable {
      auto answered = std::make_shared<std::atomic<bool>>(false);
      self->server_->on_request(std::move(request), [self, answered](http_response response) {
        if (answered->exchange(true)) return;  // once
        asio::post(self->stream_.get_executor(), [self, response = std::move(response)]() mutable {
          self->write(std::move(response));
        });
      });
    });
  }

  void reply_now(int status, const std::string& message, const char* code) {
    keep_alive_ = false;
    version_ = 11;
    http_response r;
    r.status = status;
    r.body = std::string("{\"error\":{\"code\":\"") + code + "\",\"message\":\"" + message + "\"}}";
    write(std::move(r));
  }

  void write(http_response r) {
    if (r.on_stream) return start_stream(std::move(r));
    auto response = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), version_);
    response->set(http::field::server, "keel");
    response->set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) response->set(name, value);
    response->body() = std::move(r.body);
    response->keep_alive(keep_alive_);
    response->prepare_payload();
    stream_.expires_after(std::chrono::milliseconds(server_->options.idle_timeout_ms));
    http::async_write(stream_, *response,
                      [self = shared_from_this(), response](beast::error_code ec, std::size_t) {
                        if (ec || !self->keep_alive_) return self->close();
                        self->read();
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
  state->accept();
  for (std::size_t i = 0; i < std::max<std::size_t>(1, options.io_threads); ++i)
    state->io_threads.emplace_back([s = state.get()] { s->io.run(); });
  return std::unique_ptr<http_server>(new http_server(std::move(state)));
}

void http_server::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  asio::post(impl_->io, [s = impl_] {
    beast::error_code ec;
    s->acceptor.close(ec);
  });
  impl_->handlers->stop(1000);  // a handler still waiting on NATS is left to end on its own
  impl_->io.stop();
  for (auto& t : impl_->io_threads) t.join();
  impl_->io_threads.clear();
}

} // namespace keel::gateway
