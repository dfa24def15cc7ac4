#include "llm/conversation.hpp"
#include "runtime/error_reply.hpp"

#include "runtime/wire_msgpack.hpp"

#include <type_traits>

namespace keel::llm {

using wire::value;

wire::value to_value(const message& m) {
  value v{{"role", m.role}, {"text", m.text}};
  if (!m.tool_calls.empty()) {
    value calls = value::array();
    for (const auto& c : m.tool_calls)
      calls.push_back({{"id", c.id}, {"name", c.name}, {"arguments", c.arguments}});
    v["tool_calls"] = std::move(calls);
  }
  if (m.role == "tool") {
    v["tool_call_id"] = m.tool_call_id;
    v["tool_name"] = m.tool_name;
    v["is_error"] = m.is_error;
  }
  return v;
}

namespace {
// The string at `key`, or empty; moved out when the caller gave the value up.
template <class V>
std::string string_at(V&& v, const char* key) {
  auto it = v.find(key);
  if (it == v.end() || !it->is_string()) return {};
  if constexpr (std::is_const_v<std::remove_reference_t<V>>) return it->template get<std::string>();
  else return std::move(it->template get_ref<std::string&>());
}

template <class V>
result<std::vector<tool_call>> calls_from(V&& v) {
  std::vector<tool_call> out;
  if (v.is_null()) return out;
  if (!v.is_array()) return make_error(errc::malformed, "tool_calls must be an array");
  for (auto&& c : v) {
    if (!c.is_object() || !c.contains("name") || !c["name"].is_string())
      return make_error(errc::malformed, "a tool call needs a name");
    tool_call call;
    call.id = string_at(c, "id");
    call.name = string_at(c, "name");
    auto a = c.find("arguments");
    if (a == c.end()) call.arguments = value::object();
    else if constexpr (std::is_const_v<std::remove_reference_t<decltype(c)>>) call.arguments = *a;
    else call.arguments = std::move(*a);
    out.push_back(std::move(call));
  }
  return out;
}

template <class V>
result<message> message_from(V&& v) {
  if (!v.is_object() || !v.contains("role") || !v["role"].is_string())
    return make_error(errc::malformed, "a message needs a role");
  message m;
  m.role = string_at(v, "role");
  m.text = string_at(v, "text");
  if (auto calls = v.find("tool_calls"); calls != v.end()) {
    auto read = calls_from(*calls);
    if (!read) return read.error();
    m.tool_calls = std::move(*read);
  }
  m.tool_call_id = string_at(v, "tool_call_id");
  m.tool_name = string_at(v, "tool_name");
  // A field of the wrong type reads as absent (a damaged message is not an exception).
  if (auto flag = v.find("is_error"); flag != v.end() && flag->is_boolean()) m.is_error = flag->template get<bool>();
  return m;
}

template <class V>
result<std::vector<message>> messages_from(V&& v) {
  if (!v.is_array()) return make_error(errc::malformed, "messages must be an array");
  std::vector<message> out;
  out.reserve(v.size());
  for (auto&& element : v) {
    auto m = message_from(element);
    if (!m) return m.error();
    out.push_back(std::move(*m));
  }
  return out;
}
} // namespace

namespace {
std::string_view key_of(const msgpack::object_kv& kv) {
  return kv.key.type == msgpack::type::STR ? std::string_view(kv.key.via.str.ptr, kv.key.via.str.size)
                                           : std::string_view();
}
std::string string_of(const msgpack::object& o) {
  return o.type == msgpack::type::STR ? std::string(o.via.str.ptr, o.via.str.size) : std::string();
}

// As message_from() reads a message, from MessagePack's objects.
result<message> message_from_packed(const msgpack::object& o) {
  if (o.type != msgpack::type::MAP) return make_error(errc::malformed, "a message needs a role");
  message m;
  bool has_role = false;
  for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    auto key = key_of(kv);
    if (key == "role" && kv.val.type == msgpack::type::STR) {
      m.role = string_of(kv.val);
      has_role = true;
    } else if (key == "text") {
      m.text = string_of(kv.val);
    } else if (key == "tool_call_id") {
      m.tool_call_id = string_of(kv.val);
    } else if (key == "tool_name") {
      m.tool_name = string_of(kv.val);
    } else if (key == "is_error" && kv.val.type == msgpack::type::BOOLEAN) {
      m.is_error = kv.val.via.boolean;
    } else if (key == "tool_calls" && kv.val.type != msgpack::type::NIL) {
      if (kv.val.type != msgpack::type::ARRAY) return make_error(errc::malformed, "tool_calls must be an array");
      for (std::uint32_t c = 0; c < kv.val.via.array.size; ++c) {
        const auto& call_object = kv.val.via.array.ptr[c];
        tool_call call;
        bool has_name = false;
        call.arguments = value::object();
        if (call_object.type == msgpack::type::MAP) {
          for (std::uint32_t f = 0; f < call_object.via.map.size; ++f) {
            const auto& field = call_object.via.map.ptr[f];
            auto name = key_of(field);
            if (name == "id") call.id = string_of(field.val);
            if (name == "name" && field.val.type == msgpack::type::STR) {
              call.name = string_of(field.val);
              has_name = true;
            }
            if (name == "arguments") {
              auto arguments = wire::to_value(field.val);
              if (!arguments) return arguments.error();
              call.arguments = std::move(*arguments);
            }
          }
        }
        if (!has_name) return make_error(errc::malformed, "a tool call needs a name");
        m.tool_calls.push_back(std::move(call));
      }
    }
  }
  if (!has_role) return make_error(errc::malformed, "a message needs a role");
  return m;
}
} // namespace

result<std::vector<message>> messages_from_packed(std::string_view packed, const wire::limits& bounds) {
  auto handle = wire::unpack_object(packed, bounds);
  if (!handle) return handle.error();
  const msgpack::object& list = handle->get();
  if (list.type != msgpack::type::ARRAY) return make_error(errc::malformed, "messages must be an array");
  std::vector<message> out;
  out.reserve(list.via.array.size);
  for (std::uint32_t i = 0; i < list.via.array.size; ++i) {
    auto m = message_from_packed(list.via.array.ptr[i]);
    if (!m) return m.error();
    out.push_back(std::move(*m));
  }
  return out;
}

result<message> message_from_value(const wire::value& v) { return message_from(v); }
result<std::vector<message>> messages_from_value(const wire::value& v) { return messages_from(v); }
result<std::vector<message>> messages_from_value(wire::value&& v) { return messages_from(v); }

wire::value to_value(const std::vector<message>& messages) {
  value out = value::array();
  for (const auto& m : messages) out.push_back(to_value(m));
  return out;
}

wire::value to_value(const usage& u) {
  return value{{"input_tokens", u.input_tokens}, {"output_tokens", u.output_tokens},
               {"cache_read_tokens", u.cache_read_tokens}, {"cache_write_tokens", u.cache_write_tokens}};
}

usage usage_from_value(const wire::value& v) {
  usage u;
  if (!v.is_object()) return u;
  u.input_tokens = v.value("input_tokens", std::int64_t{0});
  u.output_tokens = v.value("output_tokens", std::int64_t{0});
  u.cache_read_tokens = v.value("cache_read_tokens", std::int64_t{0});
  u.cache_write_tokens = v.value("cache_write_tokens", std::int64_t{0});
  return u;
}

wire::value to_value(const completion& c) {
  message m{"assistant", c.text, c.tool_calls, {}, {}, false};
  value v = to_value(m);
  v["usage"] = to_value(c.used);
  v["stop_reason"] = c.stop_reason;
  return v;
}

result<completion> completion_from_value(const wire::value& v) {
  auto m = message_from_value(v);
  if (!m) return m.error();
  completion c;
  c.text = m->text;
  c.tool_calls = std::move(m->tool_calls);
  c.used = usage_from_value(v.contains("usage") ? v["usage"] : value());
  c.stop_reason = v.value("stop_reason", std::string{});
  return c;
}

namespace {
// Fields of a tool's result, read as the types they should be: a result is outside input (a
// worker's answer), and a field of another type reads as absent, never as an exception.
std::int64_t integer_field(const wire::value& v, const char* key) {
  auto it = v.find(key);
  return it != v.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}
bool flag_field(const wire::value& v, const char* key) {
  auto it = v.find(key);
  return it != v.end() && it->is_boolean() && it->get<bool>();
}
std::string dumped(const wire::value& v) { return v.dump(-1, ' ', false, wire::value::error_handler_t::replace); }
} // namespace

std::string tool_result_text(const std::string& tool, const wire::value& result, bool is_error, bool declared) {
  (void)is_error;
  if (!result.is_object()) return dumped(result);
  if (result.contains("error") && result["error"].is_string()) return "Error: " + result["error"].get<std::string>();
  // A declared tool's result is its worker's, shown as it came: only keel's own tools have shapes
  // of their own (and only keel writes a person's rejection).
  if (declared) return dumped(result);
  if (result.contains("rejected")) {
    auto message = text_field(result, "message");
    return message.empty() ? std::string("The person rejected this call.") : message;
  }
  // exec, and command tools, whose results have its shape.
  if (tool == "exec" || (result.contains("exit_code") && result.contains("stdout") && result.contains("stderr"))) {
    std::string out = "exit code " + std::to_string(integer_field(result, "exit_code"));
    if (flag_field(result, "timed_out")) out += " (timed out; the command was killed)";
    out += "\nstdout:\n" + text_field(result, "stdout");
    out += "\nstderr:\n" + text_field(result, "stderr");
    return out;
  }
  if (tool == "read") return text_field(result, "content");
  // A sub-agent's call (agent__<id>): what its child run answered, or why it did not.
  if (tool.rfind("agent__", 0) == 0 && result.contains("status") && result.contains("run_id")) {
    auto status = text_field(result, "status");
    if (status == "completed") return "Agent " + text_field(result, "agent") + " answered: " + text_field(result, "output");
    return "Agent " + text_field(result, "agent") + " did not finish (run " + status + "): " + text_field(result, "error");
  }
  // An MCP server's tool (<server>__<tool>): its content as text, and its structured content.
  if (tool.find("__") != std::string::npos && result.contains("content") && result["content"].is_string()) {
    std::string out = text_field(result, "content");
    // Structured content is told only when there is no text (servers also send it as text).
    if (out.empty() && result.contains("structured_content")) out = "structured content: " + dumped(result["structured_content"]);
    return out.empty() ? std::string("(no content)") : out;
  }
  if (tool == "grep") {
    auto matches = text_field(result, "matches");
    return matches.empty() ? std::string("No matches.") : matches;
  }
  if (tool == "glob") {
    std::string out;
    if (auto files = result.find("files"); files != result.end() && files->is_array())
      for (const auto& f : *files)
        if (f.is_string()) out += f.get<std::string>() + "\n";
    return out.empty() ? std::string("No files matched.") : out;
  }
  if (tool == "write") return "Wrote " + std::to_string(integer_field(result, "bytes")) + " bytes to " + text_field(result, "path");
  if (tool == "edit") return "Edited " + text_field(result, "path") + ":\n" + text_field(result, "diff");
  return dumped(result);
}

} // namespace keel::llm
