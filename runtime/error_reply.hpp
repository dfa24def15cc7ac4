// What a peer's error reply says ({"type": "error", "error": {"code", "message"}}), read without
// trusting its shape: a field that is missing or of another type reads as absent, never as an
// exception on the thread that asked (nlohmann's value() throws on a field of the wrong type).
#pragma once

#include "runtime/result.hpp"

#include <nlohmann/json.hpp>

#include <string>

namespace keel {

// A string field of an object, or `fallback`.
inline std::string text_field(const nlohmann::json& object, const char* key, std::string fallback = {}) {
  if (!object.is_object()) return fallback;
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// The reply's error code ("not_found", "unavailable", ...), or empty.
inline std::string error_code_of(const nlohmann::json& reply) {
  if (!reply.is_object()) return {};
  auto it = reply.find("error");
  return it == reply.end() ? std::string() : text_field(*it, "code");
}

inline std::string error_message_of(const nlohmann::json& reply, std::string fallback = {}) {
  if (!reply.is_object()) return fallback;
  auto it = reply.find("error");
  return it == reply.end() ? fallback : text_field(*it, "message", std::move(fallback));
}

// The reply's error as keel's: its code when it names one keel knows, else `fallback`.
inline error error_of(const nlohmann::json& reply, errc fallback = errc::internal, std::string fallback_message = "error") {
  errc code = fallback;
  (void)from_string(error_code_of(reply), code);
  return error{code, error_message_of(reply, std::move(fallback_message))};
}

} // namespace keel
