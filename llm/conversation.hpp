// What a model sees and says: the conversation, tool calls, usage, and the request and answer of
// one model step. Stored in runs as wire values; providers translate to their own formats.
#pragma once

#include "runtime/result.hpp"
#include "runtime/wire.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace keel::llm {

struct tool_call {
  std::string id;
  std::string name;
  wire::value arguments;
};

struct message {
  std::string role;  // "user", "assistant" or "tool"
  std::string text;
  std::vector<tool_call> tool_calls;  // assistant
  std::string tool_call_id;           // tool
  std::string tool_name;              // tool
  bool is_error = false;              // tool
};

struct usage {
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
  std::int64_t cache_read_tokens = 0;
  std::int64_t cache_write_tokens = 0;
  std::int64_t total() const { return input_tokens + output_tokens; }
};

struct completion {
  std::string text;
  std::vector<tool_call> tool_calls;
  usage used;
  std::string stop_reason;  // "end_turn", "tool_use", "max_tokens", ...
};

struct completion_request {
  std::string model;
  std::string system_prompt;
  std::vector<message> messages;
  // sandbox::tool_definition values, made once per agent and shared by its requests.
  std::shared_ptr<const std::vector<wire::value>> tools;
  std::int64_t max_tokens = 4096;
  std::string task_id;             // <run>/<step>: one id per model call across attempts
  // Streaming providers call this with each piece of text as it arrives.
  std::function<void(const std::string&)> on_text_delta;
  // ... and this when a stream broke off and is asked again from the start: the text sent so far
  // for this step is to be forgotten.
  std::function<void()> on_stream_restart;
};

wire::value to_value(const message& m);
result<message> message_from_value(const wire::value& v);
wire::value to_value(const std::vector<message>& messages);
result<std::vector<message>> messages_from_value(const wire::value& v);
// The same from a value the caller gives up: its strings and arguments are moved, not copied.
result<std::vector<message>> messages_from_value(wire::value&& v);
// The same read straight from the packed list a task carries (wire::task::payload_messages),
// without building JSON for it.
result<std::vector<message>> messages_from_packed(std::string_view packed, const wire::limits& bounds = {});
wire::value to_value(const completion& c);
result<completion> completion_from_value(const wire::value& v);
wire::value to_value(const usage& u);
usage usage_from_value(const wire::value& v);

// The text a model reads as a tool's result.
// `declared`: a tool worker's result (docs/PROTOCOL.md, tool workers), shown as it came; keel's
// own tools' results have shapes of their own. Fields of the wrong type read as absent.
std::string tool_result_text(const std::string& tool, const wire::value& result, bool is_error, bool declared = false);

} // namespace keel::llm
