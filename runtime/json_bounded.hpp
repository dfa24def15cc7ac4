// JSON from outside (HTTP bodies, model services, MCP servers, the model's tool arguments) is
// parsed only when it nests at most `depth_max` levels: nlohmann's values copy and compare by
// recursion, so a document nested 100,000 deep would end the process on its stack. Deeper text
// parses as discarded, as text that is not JSON does.
#pragma once

#include <nlohmann/json.hpp>

#include <string_view>

namespace keel {

// Under the wire's own bound (wire::limits::depth_max, 64), with room for the messages that carry it.
inline constexpr std::size_t json_depth_max = 48;

// Whether `text` nests arrays and objects at most `depth_max` deep (strings are skipped, with
// their escapes); a cheap scan, before any parse.
inline bool json_nesting_within(std::string_view text, std::size_t depth_max = json_depth_max) {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > depth_max) return false;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return true;
}

// json::parse(text, nullptr, false), or discarded when the text nests deeper than `depth_max`.
inline nlohmann::json parse_bounded(std::string_view text, std::size_t depth_max = json_depth_max) {
  if (!json_nesting_within(text, depth_max)) return nlohmann::json(nlohmann::json::value_t::discarded);
  return nlohmann::json::parse(text, nullptr, false);
}

} // namespace keel
