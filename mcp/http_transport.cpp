#include "mcp/http_transport.hpp"
#include "runtime/json_bounded.hpp"

#include "llm/http_client.hpp"
#include "sandbox/text.hpp"

#include <fstream>
#include <sstream>

namespace keel::mcp {

using nlohmann::json;

namespace {

// The messages of a body as they arrive: one JSON document, or server-sent events (data lines).
class body_reader {
public:
  // Takes a piece; false once the body is too large.
  bool take(std::string_view piece) {
    if (buffer_.size() + piece.size() > message_bytes_max) return false;
    buffer_.append(piece);
    if (mode_ == mode::unknown) {
      auto first = buffer_.find_first_not_of(" \t\r\n");
      if (first == std::string::npos) return true;
      mode_ = buffer_[first] == '{' || buffer_[first] == '[' ? mode::json : mode::events;
    }
    if (mode_ == mode::events) split_events();
    return true;
  }
  // At the end of the body: a JSON body's messages.
  void finish() {
    if (mode_ == mode::json) {
      auto v = keel::parse_bounded(buffer_);
      if (v.is_array())
        for (auto& m : v) messages_.push_back(std::move(m));
      else
        messages_.push_back(std::move(v));
      buffer_.clear();
    } else if (mode_ == mode::events) {
      buffer_ += "\n\n";
      split_events();
    }
  }
  std::vector<json> take_messages() { return std::exchange(messages_, {}); }

private:
  enum class mode { unknown, json, events };
  void split_events() {
    for (;;) {
      auto end = buffer_.find("\n\n");
      auto end_crlf = buffer_.find("\r\n\r\n");
      std::size_t cut = std::min(end, end_crlf);
      if (cut == std::string::npos) return;
      std::string event = buffer_.substr(0, cut);
      buffer_.erase(0, cut + (cut == end_crlf ? 4 : 2));
      std::string data;
      std::istringstream lines(event);
      std::string line;
      while (std::getline(lines, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.rfind("data:", 0) != 0) continue;  // event:, id:, retry: and comments
        std::string value = line.substr(5);
        if (!value.empty() && value[0] == ' ') value.erase(0, 1);
        if (!data.empty()) data.push_back('\n');
        data += value;
      }
      if (data.empty()) continue;
      messages_.push_back(keel::parse_bounded(data));
    }
  }
  mode mode_ = mode::unknown;
  std::string buffer_;
  std::vector<json> messages_;
};

class http_transport final : public transport {
public:
  http_transport(const config::mcp_server& server, std::string token)
      : name_(server.name), url_(server.url), token_(std::move(token)) {}

  std::string describe() const override { return "MCP server " + name_ + " (" + url_ + ")"; }
  void agreed(const std::string& version) override { version_ = version; }

  result<void> notify(const json& notification) override {
    auto posted = post(notification, 10'000, nullptr);
    if (!posted) return posted.error();
    return success();
  }

  result<json> exchange(const json& request, std::int64_t timeout_ms, const answer_fn& answer) override {
    std::optional<json> response;
    std::optional<error> problem;
    auto on_message = [&](json m) {
      if (m.is_discarded() || !m.is_object() || m.value("jsonrpc", json()) != "2.0") {
        problem = error{errc::malformed, describe() + ": it sent something that is not a JSON-RPC 2.0 message"};
        return false;
      }
      if (m.contains("method")) {
        json reply = answer(m);
        if (m.contains("id")) (void)post(reply, 10'000, nullptr);
        return true;
      }
      if (is_response_to(m, request)) {
        response = std::move(m);
        return false;  // the answer: the rest of the stream is not needed
      }
      return true;
    };
    auto posted = post(request, timeout_ms, on_message);
    if (!posted) return posted.error();
    if (problem) return *problem;
    if (!response) return make_error(errc::malformed, describe() + ": its answer held no response to the request");
    return *response;
  }

private:
  // POSTs a message; each message of the answer goes to `on_message` until it returns false.
  result<void> post(const json& message, std::int64_t timeout_ms, const std::function<bool(json)>& on_message) {
    llm::http_request r;
    r.url = url_;
    r.body = message.dump(-1, ' ', false, json::error_handler_t::replace);
    r.timeout_ms = timeout_ms;
    r.connect_timeout_ms = std::min<std::int64_t>(timeout_ms, 10'000);
    r.headers = {"Content-Type: application/json", "Accept: application/json, text/event-stream"};
    if (!session_id_.empty()) r.headers.push_back("Mcp-Session-Id: " + session_id_);
    if (!version_.empty()) r.headers.push_back("MCP-Protocol-Version: " + version_);
    if (!token_.empty()) r.headers.push_back("Authorization: Bearer " + token_);
    body_reader reader;
    bool stop = false;
    bool too_large = false;
    r.on_data = [&](std::string_view piece) {
      if (!reader.take(piece)) {
        too_large = true;
        return false;
      }
      for (auto& m : reader.take_messages())
        if (on_message && !stop && !on_message(std::move(m))) stop = true;
      return !stop;
    };
    auto sent = llm::http_post(r);
    if (!sent) {
      auto text = sent.error().message;
      if (auto at = text.find(": "); at != std::string::npos) text = text.substr(at + 2);  // not "the model"
      return make_error(sent.error().code, describe() + ": " + (sent.error().code == errc::timeout ? "no answer in time: " : "") + text);
    }
    if (too_large) return make_error(errc::too_large, describe() + ": its answer is over " + std::to_string(message_bytes_max) + " bytes");
    if (sent->status == 401 || sent->status == 403)
      return make_error(errc::denied, describe() + ": refused keel (HTTP " + std::to_string(sent->status) + "): check its token_file");
    if (sent->status == 404 && !session_id_.empty())
      return make_error(errc::unavailable, describe() + ": the session ended on the server (HTTP 404)");
    if (sent->status >= 300)
      return make_error(errc::unavailable, describe() + ": HTTP " + std::to_string(sent->status) + ": " +
                                             sandbox::sanitize_utf8(sandbox::escape_controls(sent->body.substr(0, 500))));
    if (auto id = sent->headers.find("mcp-session-id"); id != sent->headers.end() && session_id_.empty()) {
      // Visible ASCII only (it is sent back in a header).
      bool ok = !id->second.empty() && id->second.size() <= 256;
      for (unsigned char c : id->second) ok = ok && c >= 0x21 && c <= 0x7e;
      if (!ok) return make_error(errc::malformed, describe() + ": its session id is not visible ASCII of at most 256 bytes");
      session_id_ = id->second;
    }
    if (!stop) {
      reader.finish();
      for (auto& m : reader.take_messages())
        if (on_message && !stop && !on_message(std::move(m))) stop = true;
    }
    return success();
  }

  std::string name_, url_, token_;
  std::string session_id_, version_;
};

} // namespace

result<std::unique_ptr<transport>> connect_http(const config::mcp_server& server) {
  std::string token;
  if (!server.token_file.empty()) {
    // The first line of the file is the token.
    std::ifstream in(server.token_file);
    if (!in) return make_error(errc::config, "MCP server " + server.name + ": cannot read its token_file " + server.token_file);
    std::getline(in, token);
    if (!token.empty() && token.back() == '\r') token.pop_back();
    for (unsigned char c : token)
      if (c < 0x20 || c == 0x7f) return make_error(errc::config, "MCP server " + server.name + ": its token holds a control character");
  }
  return std::unique_ptr<transport>(new http_transport(server, std::move(token)));
}

} // namespace keel::mcp
