#include "mcp/client.hpp"
#include "runtime/json_bounded.hpp"

namespace keel::mcp {

using nlohmann::json;

namespace {
constexpr std::size_t tools_max = 1000;
constexpr int pages_max = 100;
}

bool is_response_to(const json& message, const json& request) {
  if (!message.contains("id")) return false;
  const json& id = message["id"];
  return (id.is_number_integer() || id.is_number_unsigned()) && !id.is_number_float() &&
         id.get<std::int64_t>() == request["id"].get<std::int64_t>();
}

result<json> parse_message(std::string_view line) {
  auto message = keel::parse_bounded(line);
  if (message.is_discarded()) return make_error(errc::malformed, "the server wrote a line that is not JSON");
  if (!message.is_object() || message.value("jsonrpc", json()) != "2.0")
    return make_error(errc::malformed, "the server wrote JSON that is not a JSON-RPC 2.0 message");
  return message;
}

result<std::unique_ptr<session>> session::open(std::unique_ptr<transport> t, std::int64_t timeout_ms) {
  std::unique_ptr<session> s(new session(std::move(t)));
  auto initialized = s->request("initialize",
                                {{"protocolVersion", protocol_version},
                                 {"capabilities", json::object()},
                                 {"clientInfo", {{"name", "keel"}, {"version", "0.1.0"}}}},
                                timeout_ms);
  if (!initialized) return initialized.error();
  const json& r = *initialized;
  if (!r.is_object() || !r.contains("protocolVersion") || !r["protocolVersion"].is_string())
    return make_error(errc::malformed, s->describe() + ": its answer to initialize has no protocolVersion");
  auto version = r["protocolVersion"].get<std::string>();
  // Versions keel speaks: what it asked for and the two before (tools work alike in each).
  if (version != protocol_version && version != "2025-03-26" && version != "2024-11-05")
    return make_error(errc::unavailable, s->describe() + ": it speaks MCP " + version.substr(0, 40) +
                                           ", which keel does not (" + protocol_version + ", 2025-03-26, 2024-11-05)");
  if (!r.contains("capabilities") || !r["capabilities"].is_object() || !r["capabilities"].contains("tools"))
    return make_error(errc::unavailable, s->describe() + ": it offers no tools");
  if (r.contains("serverInfo") && r["serverInfo"].is_object() && r["serverInfo"].contains("name") &&
      r["serverInfo"]["name"].is_string())
    s->server_name_ = r["serverInfo"]["name"].get<std::string>().substr(0, 200);
  s->transport_->agreed(version);
  if (auto sent = s->transport_->notify({{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}}); !sent) {
    s->broken_ = true;
    return sent.error();
  }
  return s;
}

json session::answer(const json& server_request) {
  if (!server_request.contains("id")) return nullptr;  // a notification: nothing to answer
  const auto method = server_request["method"].is_string() ? server_request["method"].get<std::string>() : std::string();
  json reply = {{"jsonrpc", "2.0"}, {"id", server_request["id"]}};
  if (method == "ping") reply["result"] = json::object();
  else reply["error"] = {{"code", -32601}, {"message", "keel does not offer " + method.substr(0, 100)}};
  return reply;
}

result<json> session::request(const std::string& method, json params, std::int64_t timeout_ms) {
  if (broken_) return make_error(errc::unavailable, describe() + ": the session has failed before");
  json message = {{"jsonrpc", "2.0"}, {"id", next_id_++}, {"method", method}, {"params", std::move(params)}};
  auto response = transport_->exchange(message, timeout_ms, [this](const json& r) {
    // A notification the server sends on the way: its tools changed.
    if (!r.contains("id") && r.contains("method") && r["method"] == "notifications/tools/list_changed") tools_changed_ = true;
    return answer(r);
  });
  if (!response) {
    broken_ = true;
    return response.error();
  }
  const json& r = *response;
  if (r.contains("error")) {
    const json& e = r["error"];
    std::string text = e.is_object() && e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : e.dump();
    return make_error(errc::invalid_argument, describe() + ": " + method + " failed: " + text.substr(0, 2000));
  }
  if (!r.contains("result")) {
    broken_ = true;
    return make_error(errc::malformed, describe() + ": its answer to " + method + " has neither result nor error");
  }
  return r["result"];
}

result<std::vector<tool_info>> session::tools(std::int64_t timeout_ms) {
  if (!tools_changed_) return tools_;
  std::vector<tool_info> found;
  json cursor;
  for (int page = 0; page < pages_max; ++page) {
    json params = json::object();
    if (!cursor.is_null()) params["cursor"] = cursor;
    auto listed = request("tools/list", params, timeout_ms);
    if (!listed) return listed.error();
    const json& r = *listed;
    if (!r.is_object() || !r.contains("tools") || !r["tools"].is_array()) {
      broken_ = true;
      return make_error(errc::malformed, describe() + ": its tools/list answer has no array of tools");
    }
    for (const auto& t : r["tools"]) {
      if (!t.is_object() || !t.contains("name") || !t["name"].is_string()) continue;  // not a tool: not offered
      tool_info info;
      info.name = t["name"].get<std::string>();
      if (t.contains("description") && t["description"].is_string()) info.description = t["description"].get<std::string>();
      info.input_schema = t.contains("inputSchema") && t["inputSchema"].is_object() ? t["inputSchema"] : json{{"type", "object"}};
      found.push_back(std::move(info));
      if (found.size() >= tools_max) break;
    }
    if (found.size() >= tools_max || !r.contains("nextCursor") || !r["nextCursor"].is_string()) break;
    cursor = r["nextCursor"];
  }
  tools_ = std::move(found);
  tools_changed_ = false;
  return tools_;
}

result<call_result> session::call(const std::string& tool, const json& arguments, std::int64_t timeout_ms) {
  auto called = request("tools/call", {{"name", tool}, {"arguments", arguments}}, timeout_ms);
  if (!called) return called.error();
  const json& r = *called;
  if (!r.is_object() || !r.contains("content") || !r["content"].is_array()) {
    broken_ = true;
    return make_error(errc::malformed, describe() + ": its tools/call answer has no array of content");
  }
  call_result out;
  out.content = r["content"];
  if (r.contains("structuredContent")) out.structured = r["structuredContent"];
  // isError that is not a boolean is not taken as success.
  out.is_error = r.contains("isError") && (!r["isError"].is_boolean() || r["isError"].get<bool>());
  return out;
}

} // namespace keel::mcp
