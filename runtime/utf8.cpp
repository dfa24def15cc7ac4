#include "runtime/utf8.hpp"

#include <cstdint>
#include <cstring>

namespace keel::wire {

namespace {
// The length of the valid UTF-8 sequence at `i`, or 0 (no overlong forms, no surrogates, nothing
// past U+10FFFF).
std::size_t utf8_length_at(std::string_view text, std::size_t i) {
  auto byte = static_cast<unsigned char>(text[i]);
  if (byte < 0x80) return 1;
  std::size_t length = (byte >> 5) == 0x6 ? 2 : (byte >> 4) == 0xE ? 3 : (byte >> 3) == 0x1E ? 4 : 0;
  if (length == 0 || i + length > text.size()) return 0;
  unsigned code = byte & (0xFF >> (length + 1));
  for (std::size_t k = 1; k < length; ++k) {
    auto next = static_cast<unsigned char>(text[i + k]);
    if ((next >> 6) != 0x2) return 0;
    code = (code << 6) | (next & 0x3F);
  }
  static constexpr unsigned minimum[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code < minimum[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
  return length;
}
} // namespace

bool is_valid_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    // Runs of ASCII, eight bytes at a time: most text on the wire is.
    while (i + 8 <= text.size()) {
      std::uint64_t word;
      std::memcpy(&word, text.data() + i, 8);
      if (word & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= text.size()) break;
    auto length = utf8_length_at(text, i);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

std::string repaired_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    auto length = utf8_length_at(text, i);
    if (length == 0) {
      out.append("\xEF\xBF\xBD");
      i += 1;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

} // namespace keel::wire
