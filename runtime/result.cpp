#include "runtime/result.hpp"

#include <array>

namespace keel {

namespace {
constexpr std::array<std::string_view, 15> errc_names = {
  "malformed", "invalid_argument", "unsupported_version", "too_large", "not_found",
  "conflict",  "unavailable",      "timeout",             "io",        "config",
  "denied",    "cancelled",        "internal",            "exhausted",
  "unknown",
};
} // namespace

std::string_view to_string(errc code) {
  auto index = static_cast<std::size_t>(code);
  assert(index < errc_names.size());
  return errc_names[index];
}

bool from_string(std::string_view name, errc& code) {
  for (std::size_t i = 0; i < errc_names.size(); ++i) {
    if (errc_names[i] == name) {
      code = static_cast<errc>(i);
      return true;
    }
  }
  return false;
}

} // namespace keel
