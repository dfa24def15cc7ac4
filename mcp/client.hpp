// A Model Context Protocol client: one session with one server (JSON-RPC 2.0 over a transport:
// a stdio server's pipes, or streamable HTTP), what keel needs of it: initialize, tools/list and
// tools/call, with a bound on time and size for each, and an answer to whatever the server asks
// of the client (ping; anything else is "method not found": keel offers no sampling, roots or
// elicitation). A server that dies, hangs or writes garbage fails the call and breaks the session
// (its owner starts a new one), never the process.
#pragma once

#include "runtime/result.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace keel::mcp {

constexpr const char* protocol_version = "2025-06-18";
constexpr std::size_t message_bytes_max = 16 << 20;

// Carries JSON-RPC messages. `exchange` sends a request and returns its response, answering on
// the way any request the server makes (with `answer`); an error leaves the transport broken.
class transport {
public:
  virtual ~transport() = default;
  using answer_fn = std::function<nlohmann::json(const nlohmann::json& server_request)>;
  virtual result<nlohmann::json> exchange(const nlohmann::json& request, std::int64_t timeout_ms, const answer_fn& answer) = 0;
  virtual result<void> notify(const nlohmann::json& notification) = 0;
  // After initialize: the protocol version agreed, which an HTTP transport sends on every request.
  virtual void agreed(const std::string& version) { (void)version; }
  virtual std::string describe() const = 0;
};

struct tool_info {
  std::string name;
  std::string description;
  nlohmann::json input_schema;
};

struct call_result {
  nlohmann::json content = nlohmann::json::array();  // the server's content blocks
  nlohmann::json structured;                          // structuredContent, or null
  bool is_error = false;
};

class session {
public:
  // Starts the session: initialize, then notifications/initialized.
  static result<std::unique_ptr<session>> open(std::unique_ptr<transport> t, std::int64_t timeout_ms);

  // Every tool the server lists (all pages, at most 1,000 tools), kept until it says they changed.
  result<std::vector<tool_info>> tools(std::int64_t timeout_ms);
  result<call_result> call(const std::string& tool, const nlohmann::json& arguments, std::int64_t timeout_ms);

  bool broken() const { return broken_; }
  const std::string& server_name() const { return server_name_; }
  std::string describe() const { return transport_->describe(); }

private:
  explicit session(std::unique_ptr<transport> t) : transport_(std::move(t)) {}
  result<nlohmann::json> request(const std::string& method, nlohmann::json params, std::int64_t timeout_ms);
  nlohmann::json answer(const nlohmann::json& server_request);

  std::unique_ptr<transport> transport_;
  std::int64_t next_id_ = 1;
  bool broken_ = false;
  bool tools_changed_ = true;
  std::vector<tool_info> tools_;
  std::string server_name_;
};

// Whether a response's id is the one keel sent (an integer, compared as one: 3.0 and "3" are not 3).
bool is_response_to(const nlohmann::json& message, const nlohmann::json& request);

// What a stdio transport makes of a line, for its owner: the message, or why it is not one.
result<nlohmann::json> parse_message(std::string_view line);

} // namespace keel::mcp
