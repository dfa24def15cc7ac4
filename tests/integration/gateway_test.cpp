// The gateway's HTTP server on its own, over real sockets: streamed answers in order, a client
// that stops reading is cut off (and heard of), one that leaves is heard of at once, and many
// connections at once are served by a few threads.
#include "gateway/http_server.hpp"
#include "gateway/request.hpp"
#include "gateway/tokens.hpp"
#include "tests/support/test_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>

using namespace keel;
using namespace keel::gateway;
using namespace keel::testing;

namespace {

int connect_to(std::uint16_t port, int receive_buffer = 0) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  if (receive_buffer > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(port);
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);
  return fd;
}

void send_all(int fd, const std::string& text) {
  std::size_t sent = 0;
  while (sent < text.size()) {
    auto n = ::send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
    REQUIRE(n > 0);
    sent += static_cast<std::size_t>(n);
  }
}

// Reads until the peer closes (or `until` is in what came), for at most `timeout_ms`.
std::string read_all(int fd, const std::string& until = "", std::int64_t timeout_ms = 10'000) {
  timeval tv{0, 100'000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  char buffer[65536];
  auto deadline = steady_ms() + timeout_ms;
  while (steady_ms() < deadline) {
    auto n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n == 0) break;
    if (n > 0) out.append(buffer, static_cast<std::size_t>(n));
    if (!until.empty() && out.find(until) != std::string::npos) break;
  }
  return out;
}

struct server_fixture {
  std::unique_ptr<http_server> server;
  explicit server_fixture(handler h, server_options o = {}) {
    o.port = 0;
    auto s = http_server::start(o, std::move(h));
    REQUIRE(s.ok());
    server = std::move(*s);
  }
};

} // namespace

TEST_CASE("http server: a streamed answer goes out chunked, in order, and ends when closed", "[gateway][integration]") {
  server_fixture f([](http_request, responder respond) {
    http_response r;
    r.content_type = "text/event-stream";
    r.on_stream = [](std::shared_ptr<stream_sink> sink) {
      std::thread([sink] {
        for (int i = 0; i < 1000; ++i) sink->write("id: " + std::to_string(i) + "\ndata: x\n\n");
        sink->close();
      }).detach();
    };
    respond(std::move(r));
  });
  int fd = connect_to(f.server->port());
  send_all(fd, "GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
  auto got = read_all(fd);
  ::close(fd);
  CHECK(got.find("Transfer-Encoding: chunked") != std::string::npos);
  CHECK(got.find("Content-Type: text/event-stream") != std::string::npos);
  std::size_t at = 0;
  for (int i = 0; i < 1000; ++i) {
    auto next = got.find("id: " + std::to_string(i) + "\n", at);
    REQUIRE(next != std::string::npos);  // each once, in order
    at = next + 1;
  }
  CHECK((got.size() >= 5 && got.substr(got.size() - 5) == "0\r\n\r\n"));  // the last chunk
}

TEST_CASE("http server: a stream whose client stops reading is closed once too far behind, and says so",
          "[gateway][integration]") {
  std::atomic<bool> closed{false};
  std::atomic<int> refused_at{-1};
  server_options o;
  o.stream_queue_bytes_max = 1 << 20;
  server_fixture f([&](http_request, responder respond) {
    http_response r;
    r.on_stream = [&](std::shared_ptr<stream_sink> sink) {
      sink->on_closed([&] { closed = true; });
      std::thread([sink, &refused_at] {
        std::string block(64 << 10, 'x');
        for (int i = 0; i < 10'000; ++i)
          if (!sink->write(block)) {
            refused_at = i;
            return;
          }
      }).detach();
    };
    respond(std::move(r));
  }, o);
  int fd = connect_to(f.server->port(), 4096);  // reads nothing
  send_all(fd, "GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE_EVENTUALLY(10'000, closed.load());
  REQUIRE_EVENTUALLY(10'000, refused_at.load() >= 0);
  // It got at most what the kernel's buffers and the 1 MiB queue hold, not 640 MB.
  CHECK(refused_at.load() < 200);
  ::close(fd);
}

TEST_CASE("http server: a client that leaves a stream is heard of at once", "[gateway][integration]") {
  std::atomic<int> open{0}, closed{0};
  std::vector<std::shared_ptr<stream_sink>> sinks;
  std::mutex mutex;
  server_fixture f([&](http_request, responder respond) {
    http_response r;
    r.on_stream = [&](std::shared_ptr<stream_sink> sink) {
      sink->on_closed([&] { ++closed; });
      std::lock_guard lock{mutex};
      sinks.push_back(sink);
      ++open;
    };
    respond(std::move(r));
  });
  std::vector<int> fds;
  for (int i = 0; i < 50; ++i) {
    fds.push_back(connect_to(f.server->port()));
    send_all(fds.back(), "GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  REQUIRE_EVENTUALLY(10'000, open.load() == 50);
  for (int fd : fds) ::close(fd);
  REQUIRE_EVENTUALLY(10'000, closed.load() == 50);  // without writing anything to find out
  std::lock_guard lock{mutex};
  for (auto& s : sinks) CHECK(!s->write("late"));
}

TEST_CASE("http server: 2,000 connections at once, each answered, on two I/O threads", "[gateway][integration]") {
  std::atomic<int> answered{0};
  server_options o;
  o.io_threads = 2;
  o.handler_threads = 4;
  server_fixture f([&](http_request r, responder respond) {
    http_response out;
    out.body = "{\"path\": \"" + r.target + "\"}";
    ++answered;
    respond(std::move(out));
  }, o);
  std::vector<int> fds;
  for (int i = 0; i < 2000; ++i) fds.push_back(connect_to(f.server->port()));
  for (std::size_t i = 0; i < fds.size(); ++i) send_all(fds[i], "GET /n" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n");
  for (std::size_t i = 0; i < fds.size(); ++i) {
    auto got = read_all(fds[i], "}");
    CHECK(got.find("/n" + std::to_string(i) + "\"") != std::string::npos);
    ::close(fds[i]);
  }
  CHECK(answered.load() == 2000);
}

TEST_CASE("http server: malformed and oversized requests get errors, and the server goes on", "[gateway][integration]") {
  server_options o;
  o.body_bytes_max = 1024;
  server_fixture f([](http_request, responder respond) { respond(http_response{}); }, o);
  auto status_of = [&](const std::string& raw) {
    int fd = connect_to(f.server->port());
    send_all(fd, raw);
    auto got = read_all(fd, "\r\n\r\n", 5000);
    ::close(fd);
    return got.substr(0, got.find("\r\n"));
  };
  CHECK(status_of("NONSENSE\r\n\r\n").find("400") != std::string::npos);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + std::string(5000, 'b')).find("413") != std::string::npos);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20'000, 'h') + "\r\n\r\n").find("431") != std::string::npos);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n").find("400") != std::string::npos);
  CHECK(status_of(std::string("GET /\0x HTTP/1.1\r\n\r\n", 20)).find("400") != std::string::npos);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: x\r\n\r\n").find("200") != std::string::npos);  // still serving
}

TEST_CASE("http api: request reading on hostile input: an empty token, bad percent codes, bad counts", "[gateway]") {
  using namespace keel::gateway;
  // An empty expected token matches only an empty one (it divided by zero).
  CHECK(same_secret("", ""));
  CHECK_FALSE(same_secret("Bearer x", ""));
  CHECK_FALSE(same_secret("", "Bearer x"));
  CHECK(same_secret("Bearer x", "Bearer x"));
  CHECK_FALSE(same_secret("Bearer y", "Bearer x"));
  // Percent codes: a broken one stays as it is; a value never grows.
  CHECK(decode_percent("a%2") == "a%2");
  CHECK(decode_percent("%zz%41+") == "%zzA ");
  auto t = parse_target("/api/v1/runs?limit=%31%30&x&=y&&after=-1");
  CHECK(t.path == "/api/v1/runs");
  CHECK(t.query["limit"] == "10");
  CHECK(count_param(t, "limit", 5).value() == 10);
  CHECK(count_param(t, "after", 0).error().code == keel::errc::invalid_argument);
  CHECK(count_param(parse_target("/?limit=99999999999999999999"), "limit", 0).error().code == keel::errc::invalid_argument);
  CHECK(parts_of("/a//b/").size() == 3);
  // A body nested deeper than any request needs is refused before it is parsed (parsing and
  // copying it would recurse past the stack): 100,000 deep, in arrays, objects and inside strings.
  http_request deep;
  deep.body = "{\"input\": " + std::string(100'000, '[') + std::string(100'000, ']') + "}";
  CHECK(json_body(deep).error().message.find("nested at most") != std::string::npos);
  std::string objects;
  for (int i = 0; i < 100'000; ++i) objects += "{\"a\":";
  deep.body = objects + "1" + std::string(100'000, '}');
  CHECK(json_body(deep).error().code == keel::errc::malformed);
  deep.body = "{\"input\": \"" + std::string(100'000, '[') + "\\\"[\"}";  // brackets in a string are text
  CHECK(json_body(deep).ok());
  deep.body = "{\"a\": " + std::string(47, '[') + std::string(47, ']') + "}";
  CHECK(json_body(deep).ok());
}

TEST_CASE("http server: framing, Host and HEAD by RFC 9112, every answer with the security headers", "[gateway][integration]") {
  server_options o;
  o.body_bytes_max = 1 << 20;
  std::atomic<int> requests{0};
  server_fixture f([&](http_request r, responder respond) {
    ++requests;
    http_response answer;
    answer.body = "{\"path\":\"" + r.target + "\"}";
    respond(answer);
  }, o);
  auto exchange = [&](const std::string& raw, const std::string& until = "", std::int64_t wait_ms = 3000) {
    int fd = connect_to(f.server->port());
    send_all(fd, raw);
    auto got = read_all(fd, until, wait_ms);
    ::close(fd);
    return got;
  };
  auto count = [](const std::string& text, const std::string& part) {
    std::size_t n = 0;
    for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
    return n;
  };
  // A body framed by an encoding that is not chunked alone: one 400, the connection closed, and
  // what the body holds is never taken for a second request.
  const std::string smuggled = "GET /second HTTP/1.1\r\nHost: x\r\n\r\n";
  for (const char* encoding : {"xchunked", "chunked, identity", "identity", "gzip, chunked, identity", "Chunked "}) {
    INFO(encoding);
    requests = 0;
    auto got = exchange("POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + std::string(encoding) +
                        "\r\n\r\n" + smuggled);
    CHECK(got.rfind("HTTP/1.1 400", 0) == 0);
    CHECK(count(got, "HTTP/1.1 ") == 1);
    CHECK(got.find("/second") == std::string::npos);
    CHECK(requests == 0);
  }
  // Both framings at once: 400.
  CHECK(exchange("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
          .rfind("HTTP/1.1 400", 0) == 0);
  // Host: HTTP/1.1 needs exactly one; HTTP/1.0 may go without.
  CHECK(exchange("GET / HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
  CHECK(exchange("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
  CHECK(exchange("GET / HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 200", 0) == 0);
  // HEAD: GET's headers and length, no body; the next answer on the connection is whole.
  auto both = exchange("HEAD /page HTTP/1.1\r\nHost: x\r\n\r\nGET /page HTTP/1.1\r\nHost: x\r\n\r\n", "{\"path\":\"/page\"}");
  INFO(both);
  REQUIRE(count(both, "HTTP/1.1 200") == 2);
  auto second = both.find("HTTP/1.1 200", 1);
  CHECK(both.substr(0, second).find("Content-Length: 16\r\n") != std::string::npos);
  CHECK(both.substr(0, second).find("{\"path\"") == std::string::npos);
  CHECK(both.substr(second).find("{\"path\":\"/page\"}") != std::string::npos);
  // The server's own answers carry the headers every answer carries.
  for (const std::string& raw : {std::string("NONSENSE\r\n\r\n"), std::string("GET / HTTP/1.1\r\n\r\n"),
                                 "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20'000, 'h') + "\r\n\r\n"}) {
    auto got = exchange(raw);
    INFO(got.substr(0, 200));
    CHECK(got.find("X-Content-Type-Options: nosniff\r\n") != std::string::npos);
    CHECK(got.find("Content-Security-Policy: default-src 'self'; frame-ancestors 'none'\r\n") != std::string::npos);
    CHECK(got.find("Cache-Control: no-store\r\n") != std::string::npos);
  }
}

TEST_CASE("http server: a body over the limit is answered 413, and the client that keeps sending reads it", "[gateway][integration]") {
  server_options o;
  o.body_bytes_max = 1 << 20;
  server_fixture f([](http_request, responder respond) { respond(http_response{}); }, o);
  int fd = connect_to(f.server->port());
  const std::size_t size = 8 << 20;
  send_all(fd, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n");
  // The whole body goes out without a reset (send_all requires every send to succeed).
  std::string chunk(64 << 10, 'b');
  for (std::size_t sent = 0; sent < size; sent += chunk.size()) send_all(fd, chunk);
  auto got = read_all(fd, "}}", 5000);
  ::close(fd);
  CHECK(got.rfind("HTTP/1.1 413", 0) == 0);
  CHECK(got.find("Connection: close") != std::string::npos);
  CHECK(got.find("X-Content-Type-Options: nosniff") != std::string::npos);
}

TEST_CASE("http server: requests that wait are bounded per client and never delay the quick ones", "[gateway][integration]") {
  server_options o;
  o.handler_threads = 8;
  o.waiting_per_client_max = 4;
  o.may_wait = [](const http_request& r) { return r.target.rfind("/api/", 0) == 0; };
  std::atomic<bool> release{false};
  server_fixture f([&](http_request r, responder respond) {
    if (r.target.rfind("/api/", 0) == 0)
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    respond(http_response{});
  }, o);
  // 40 requests that wait, as any page could send: 4 are taken, the rest answered 429 at once.
  std::vector<int> waiting;
  int busy = 0;
  for (int i = 0; i < 40; ++i) {
    int fd = connect_to(f.server->port());
    send_all(fd, "GET /api/slow HTTP/1.1\r\nHost: x\r\n\r\n");
    auto got = read_all(fd, "\r\n\r\n", 300);
    if (got.rfind("HTTP/1.1 429", 0) == 0) {
      ++busy;
      CHECK(got.find("Retry-After: 1") != std::string::npos);
      ::close(fd);
    } else {
      CHECK(got.empty());
      waiting.push_back(fd);
    }
  }
  CHECK(waiting.size() == 4);
  CHECK(busy == 36);
  // Health and pages are answered at once all the while.
  for (int i = 0; i < 20; ++i) {
    auto started = steady_ms();
    int fd = connect_to(f.server->port());
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    auto got = read_all(fd, "\r\n\r\n", 5000);
    ::close(fd);
    CHECK(got.rfind("HTTP/1.1 200", 0) == 0);
    CHECK(steady_ms() - started < 2000);
  }
  release = true;
  for (int fd : waiting) {
    CHECK(read_all(fd, "\r\n\r\n", 5000).rfind("HTTP/1.1 200", 0) == 0);
    ::close(fd);
  }
  // Their places are given back.
  int fd = connect_to(f.server->port());
  send_all(fd, "GET /api/slow HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_all(fd, "\r\n\r\n", 5000).rfind("HTTP/1.1 200", 0) == 0);
  ::close(fd);
}

TEST_CASE("http server: a header a check reads, sent twice, is refused, and other repeated headers are joined",
          "[gateway][integration]") {
  std::atomic<int> requests{0};
  std::string seen_accept;
  std::mutex seen_mutex;
  server_fixture f([&](http_request r, responder respond) {
    ++requests;
    {
      std::lock_guard lock{seen_mutex};
      seen_accept = r.headers.count("accept") ? r.headers["accept"] : "";
    }
    respond(http_response{});
  }, server_options{});
  auto exchange = [&](const std::string& raw) {
    int fd = connect_to(f.server->port());
    send_all(fd, raw);
    auto got = read_all(fd, "\r\n\r\n", 3000);
    ::close(fd);
    return got;
  };
  // Two Origins (a hostile first, the gateway's own last), two tokens, two types, in any case.
  for (const char* twice : {"Origin: http://evil.test\r\nOrigin: http://127.0.0.1\r\n",
                            "Authorization: Bearer a\r\nauthorization: Bearer b\r\n",
                            "Content-Type: text/plain\r\nCONTENT-TYPE: application/json\r\n",
                            "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Site: same-origin\r\n",
                            "Last-Event-ID: 1\r\nLast-Event-ID: 2\r\n"}) {
    INFO(twice);
    auto got = exchange(std::string("POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n") + twice + "Content-Length: 2\r\n\r\n{}");
    CHECK(got.rfind("HTTP/1.1 400", 0) == 0);
    CHECK(got.find("more than one") != std::string::npos);
  }
  CHECK(requests == 0);
  // A list header sent twice is one list (RFC 9110), and the request is served.
  auto got = exchange("GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\nAccept: application/json\r\n\r\n");
  CHECK(got.rfind("HTTP/1.1 200", 0) == 0);
  std::lock_guard lock{seen_mutex};
  CHECK(seen_accept == "text/html, application/json");
}

TEST_CASE("gateway tokens: named, hashed, owner-only, read again when changed, a broken edit keeps the last good ones",
          "[gateway]") {
  temp_dir dir;
  auto file = dir.file("tokens");
  token_book none("", "operator", file);
  CHECK_FALSE(none.any());  // no file, no gateway.token: nothing is known
  auto ana = random_token(), bob = random_token();
  CHECK(ana.size() == 5 + 64);
  CHECK(ana != bob);
  REQUIRE(write_tokens_file(file, {{"ana", token_hash(ana)}, {"bob", token_hash(bob)}}).ok());
  struct stat st{};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(read_file(file).find(ana) == std::string::npos);  // only the hash is kept
  token_book book("s3cret", "operator", file);
  CHECK(book.any());
  CHECK(book.who("Bearer " + ana) == std::optional<std::string>("ana"));
  CHECK(book.who("bearer " + bob) == std::optional<std::string>("bob"));    // the scheme in any case
  CHECK(book.who("BEARER   " + bob) == std::optional<std::string>("bob"));  // and more than one space
  CHECK(book.who("Bearer s3cret") == std::optional<std::string>("operator"));
  for (const std::string& wrong : std::vector<std::string>{"Bearer " + ana.substr(1), "Bearer " + ana + "x", "Basic " + ana, ana, "Bearer ",
                                   "Bearer", "", "Bearer " + token_hash(ana), "Bearer sha256:" + ana})
    CHECK_FALSE(book.who(wrong).has_value());
  // Removing bob is seen within a second, with no restart.
  REQUIRE(write_tokens_file(file, {{"ana", token_hash(ana)}}).ok());
  REQUIRE_EVENTUALLY(3000, !book.who("Bearer " + bob).has_value());
  CHECK(book.who("Bearer " + ana) == std::optional<std::string>("ana"));
  // A line that does not read, or a file others may read: refused, and the last good list kept.
  for (const std::string& bad : {std::string("ana sha256:zz\n"), std::string("a.b ") + token_hash(ana) + "\n",
                                 std::string("ana ") + token_hash(ana) + "\nana " + token_hash(bob) + "\n",
                                 std::string("ana ") + token_hash(ana) + " extra\n",
                                 // Names keel's own parts send under (a webhook's, a fan-out child's), in any line.
                                 std::string("webhook-gh ") + token_hash(ana) + "\n", std::string("keel-join ") + token_hash(ana) + "\n",
                                 std::string("ana ") + token_hash(ana) + "\nwebhook- " + token_hash(bob) + "\n"}) {
    INFO(bad);
    write_file(file, bad);
    ::chmod(file.c_str(), 0600);
    auto read = read_tokens_file(file);
    REQUIRE_FALSE(read.ok());
    CHECK(read.error().message.find(file + ":") == 0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  CHECK(book.who("Bearer " + ana) == std::optional<std::string>("ana"));
  REQUIRE(write_tokens_file(file, {{"ana", token_hash(ana)}}).ok());
  ::chmod(file.c_str(), 0644);
  CHECK(read_tokens_file(file).error().message.find("others may read") != std::string::npos);
  // With no token at all a first one is made, once, and the address with it is the owner's only.
  auto fresh = dir.file("fresh-tokens");
  auto made = make_first_token(fresh, "owner", "http://127.0.0.1:8080", dir.file("url"));
  REQUIRE(made.ok());
  CHECK(*made);
  auto url = read_file(dir.file("url"));
  REQUIRE(url.rfind("http://127.0.0.1:8080/#token=keel_", 0) == 0);
  REQUIRE(::stat(dir.file("url").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto token = url.substr(url.find("#token=") + 7, 5 + 64);
  token_book first("", "operator", fresh);
  CHECK(first.who("Bearer " + token) == std::optional<std::string>("owner"));
  auto again = make_first_token(fresh, "owner", "http://127.0.0.1:8080", dir.file("url"));
  REQUIRE(again.ok());
  CHECK_FALSE(*again);
  CHECK(read_file(dir.file("url")) == url);
}

TEST_CASE("http server: one client's waiting requests hold a share of the threads, never all: another client's still start",
          "[gateway][integration]") {
  server_options o;
  o.handler_threads = 8;  // a quarter each: 2
  o.waiting_per_client_max = 100;
  o.may_wait = [](const http_request& r) { return r.target.rfind("/api/", 0) == 0; };
  o.client_of = [](const http_request& r) {
    auto it = r.headers.find("x-client");
    return it == r.headers.end() ? r.peer : it->second;
  };
  std::atomic<bool> release{false};
  std::atomic<int> running_a{0}, most_a{0};
  server_fixture f([&](http_request r, responder respond) {
    if (r.headers["x-client"] == "a") {
      int now = ++running_a;
      for (int seen = most_a; now > seen && !most_a.compare_exchange_weak(seen, now);) {}
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      --running_a;
    }
    respond(http_response{});
  }, o);
  // Client a: 60 requests that each wait (an owner that is gone), all taken.
  std::vector<int> held;
  for (int i = 0; i < 60; ++i) {
    int fd = connect_to(f.server->port());
    send_all(fd, "GET /api/slow HTTP/1.1\r\nHost: x\r\nX-Client: a\r\n\r\n");
    held.push_back(fd);
  }
  REQUIRE_EVENTUALLY(5000, running_a == 2);
  // Clients b to k, each one request: every one answered while all of a's still wait.
  for (char c = 'b'; c <= 'k'; ++c) {
    int fd = connect_to(f.server->port());
    send_all(fd, std::string("GET /api/quick HTTP/1.1\r\nHost: x\r\nX-Client: ") + c + "\r\n\r\n");
    CHECK(read_all(fd, "\r\n\r\n", 10'000).rfind("HTTP/1.1 200", 0) == 0);
    ::close(fd);
  }
  CHECK(running_a == 2);
  release = true;
  for (int fd : held) {
    CHECK(read_all(fd, "\r\n\r\n", 10'000).rfind("HTTP/1.1 200", 0) == 0);
    ::close(fd);
  }
  CHECK(most_a == 2);  // never more than its share at once
}
