#include "mcp/stdio_transport.hpp"

#include "runtime/clock.hpp"
#include "sandbox/confined_call.hpp"
#include "sandbox/text.hpp"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <unistd.h>

namespace keel::mcp {

using nlohmann::json;

namespace {

constexpr std::size_t stderr_kept = 8 << 10;

class stdio_transport final : public transport {
public:
  stdio_transport(std::string name, std::unique_ptr<sandbox::confined_call> call,
                  std::unique_ptr<sandbox::running_program> program)
      : name_(std::move(name)), call_(std::move(call)), program_(std::move(program)) {}

  std::string describe() const override { return "MCP server " + name_ + " (stdio)"; }

  result<void> notify(const json& notification) override { return send(notification, steady_ms() + 5'000); }

  result<json> exchange(const json& request, std::int64_t timeout_ms, const answer_fn& answer) override {
    const auto deadline = steady_ms() + timeout_ms;
    if (auto sent = send(request, deadline); !sent) return sent.error();
    for (;;) {
      auto line = next_line(deadline);
      if (!line) return line.error();
      auto message = parse_message(*line);
      if (!message) return fail(message.error().message + ": " + sandbox::sanitize_utf8(sandbox::escape_controls(line->substr(0, 200))));
      const json& m = *message;
      if (m.contains("method")) {  // the server asks (or tells) something on the way
        json reply = answer(m);
        if (m.contains("id"))
          if (auto sent = send(reply, deadline); !sent) return sent.error();
        continue;
      }
      if (is_response_to(m, request)) return m;
      // A response to an earlier request that timed out cannot arrive: a timeout ends the session.
      return fail("the server answered a request keel did not make (id " + m.value("id", json()).dump().substr(0, 40) + ")");
    }
  }

private:
  error fail(const std::string& why) {
    std::string status;
    std::string text = describe() + ": " + why;
    if (program_->ended(&status)) text += " (it " + status + ")";
    drain_stderr();
    if (!stderr_.empty())
      text += "; it wrote to stderr: " + sandbox::sanitize_utf8(sandbox::escape_controls(stderr_.substr(stderr_.size() > 2000 ? stderr_.size() - 2000 : 0)));
    return keel::error{errc::unavailable, text};
  }

  void drain_stderr() {
    char chunk[4096];
    for (;;) {
      auto n = ::read(program_->errors(), chunk, sizeof chunk);
      if (n <= 0) return;
      stderr_.append(chunk, static_cast<std::size_t>(n));
      if (stderr_.size() > stderr_kept) stderr_.erase(0, stderr_.size() - stderr_kept);
    }
  }

  result<void> send(const json& message, std::int64_t deadline) {
    std::string line = message.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    std::size_t at = 0;
    while (at < line.size()) {
      auto n = ::write(program_->input(), line.data() + at, line.size() - at);
      if (n > 0) {
        at += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) return fail(std::string("cannot write to it: ") + std::strerror(errno));
      auto left = deadline - steady_ms();
      if (left <= 0) return fail("it did not read its input in time");
      pollfd p{program_->input(), POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left, 100)));
    }
    return success();
  }

  result<std::string> next_line(std::int64_t deadline) {
    for (;;) {
      auto newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        return line;
      }
      if (buffer_.size() > message_bytes_max)
        return fail("it wrote a message of more than " + std::to_string(message_bytes_max) + " bytes");
      auto left = deadline - steady_ms();
      if (left <= 0) return keel::error{errc::timeout, describe() + ": no answer in time"};
      pollfd polled[2] = {{program_->output(), POLLIN, 0}, {program_->errors(), POLLIN, 0}};
      ::poll(polled, 2, static_cast<int>(std::min<std::int64_t>(left, 200)));
      if (polled[1].revents) drain_stderr();
      char chunk[65536];
      auto n = ::read(program_->output(), chunk, sizeof chunk);
      if (n > 0) buffer_.append(chunk, static_cast<std::size_t>(n));
      else if (n == 0) return fail("it closed its output");
      else if (errno != EAGAIN && errno != EINTR) return fail(std::string("cannot read its output: ") + std::strerror(errno));
      else if (program_->ended()) return fail("it ended");
    }
  }

  std::string name_;
  std::unique_ptr<sandbox::confined_call> call_;  // what the program's confinement holds open
  std::unique_ptr<sandbox::running_program> program_;
  std::string buffer_;
  std::string stderr_;
};

} // namespace

result<std::unique_ptr<transport>> start_stdio(const config::mcp_server& server, const sandbox::workspace& ws,
                                               const sandbox::policy& p) {
  auto root = ws.locate("", sandbox::outside_paths::leave);
  if (!root) return root.error();
  auto call = std::make_unique<sandbox::confined_call>();
  if (auto prepared = sandbox::prepare_confined(*call, ws, p, *root, server.env, "mcp-" + server.name); !prepared)
    return make_error(prepared.error().code, "MCP server " + server.name + ": " + prepared.error().message);
  call->request.argv = server.command;
  auto program = sandbox::running_program::start(call->request);
  if (!program) return make_error(program.error().code, "MCP server " + server.name + ": " + program.error().message);
  return std::unique_ptr<transport>(new stdio_transport(server.name, std::move(call), std::move(*program)));
}

} // namespace keel::mcp
