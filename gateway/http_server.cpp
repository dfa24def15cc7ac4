#include "gateway/http_server.hpp"

#include "runtime/log.hpp"
#include "runtime/thread_pool.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <condition_variable>
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

  beast::tcp_stream stream_;
  std::shared_ptr<http_server::impl> server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keep_alive_ = true;
  unsigned version_ = 11;
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
                                                 [](const char* what) { logger()->error("an HTTP handler threw: {}", what); });
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
