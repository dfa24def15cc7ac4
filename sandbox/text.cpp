#include "sandbox/text.hpp"

#include "runtime/clock.hpp"
#include "runtime/wire.hpp"

#include <algorithm>
#include <cassert>
#include <vector>

namespace keel::sandbox {

std::string strip_ansi(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c != '\x1b') {
      out += c;
      continue;
    }
    if (i + 1 >= text.size()) break;
    char kind = text[i + 1];
    if (kind == '[') {  // CSI: parameters, then one final byte in 0x40..0x7e
      std::size_t j = i + 2;
      while (j < text.size() && !(text[j] >= 0x40 && text[j] <= 0x7e)) ++j;
      i = j;
    } else if (kind == ']') {  // OSC: up to BEL or ESC backslash
      std::size_t j = i + 2;
      while (j < text.size() && text[j] != '\x07' &&
             !(text[j] == '\x1b' && j + 1 < text.size() && text[j + 1] == '\\'))
        ++j;
      i = (j < text.size() && text[j] == '\x1b') ? j + 1 : j;
    } else {
      i += 1;  // a two-byte escape
    }
  }
  return out;
}

std::string sanitize_utf8(std::string_view text) { return wire::repaired_utf8(text); }

head_tail_buffer::head_tail_buffer(std::size_t chars_max)
  : head_max_(chars_max / 5), tail_max_(chars_max - chars_max / 5) {}

void head_tail_buffer::append(std::string_view data) {
  total_ += data.size();
  if (head_.size() < head_max_) {
    auto take = std::min(head_max_ - head_.size(), data.size());
    head_.append(data.substr(0, take));
    data.remove_prefix(take);
  }
  if (tail_max_ == 0) return;
  if (data.size() >= tail_max_) {
    tail_.assign(data.substr(data.size() - tail_max_));
    tail_start_ = 0;
    return;
  }
  for (char c : data) {
    if (tail_.size() < tail_max_) {
      tail_ += c;
    } else {
      tail_[tail_start_] = c;
      tail_start_ = (tail_start_ + 1) % tail_max_;
    }
  }
}

std::size_t head_tail_buffer::cut() const { return total_ - head_.size() - tail_.size(); }

std::string head_tail_buffer::text() const {
  std::string out = head_;
  if (cut() > 0)
    out += "\n[... " + std::to_string(cut()) + " characters cut ...]\n";
  out.append(tail_, tail_start_, std::string::npos);
  out.append(tail_, 0, tail_start_);
  return out;
}

std::optional<std::vector<std::size_t>> find_occurrences(std::string_view text, std::string_view pattern,
                                                         std::size_t count_max, std::int64_t deadline_ms) {
  std::vector<std::size_t> found;
  if (pattern.empty() || pattern.size() > text.size() || count_max == 0) return found;
  // failure[i]: the length of the longest proper prefix of pattern[0..i] that is also its suffix.
  std::vector<std::size_t> failure(pattern.size(), 0);
  for (std::size_t i = 1, k = 0; i < pattern.size(); ++i) {
    while (k > 0 && pattern[i] != pattern[k]) k = failure[k - 1];
    if (pattern[i] == pattern[k]) ++k;
    failure[i] = k;
  }
  constexpr std::size_t clock_every = 1 << 20;
  for (std::size_t i = 0, k = 0; i < text.size(); ++i) {
    if (deadline_ms > 0 && i % clock_every == 0 && steady_ms() >= deadline_ms) return std::nullopt;
    while (k > 0 && text[i] != pattern[k]) k = failure[k - 1];
    if (text[i] == pattern[k]) ++k;
    if (k == pattern.size()) {
      found.push_back(i + 1 - pattern.size());
      if (found.size() >= count_max) break;
      k = failure[k - 1];
    }
  }
  return found;
}

namespace {
std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}
std::size_t line_of(const std::string& text, std::size_t offset) {
  return static_cast<std::size_t>(std::count(text.begin(), text.begin() + offset, '\n'));
}
} // namespace

std::string edit_diff(const std::string& path, const std::string& before, std::size_t offset,
                      const std::string& old_text, const std::string& new_text) {
  assert(offset + old_text.size() <= before.size());
  std::string after = before.substr(0, offset) + new_text + before.substr(offset + old_text.size());
  auto old_lines = split_lines(before);
  auto new_lines = split_lines(after);
  // The changed lines are those from the first line the edit touches to the last.
  std::size_t first = line_of(before, offset);
  std::size_t old_last = line_of(before, offset + old_text.size());
  std::size_t new_last = line_of(after, offset + new_text.size());
  old_last = std::min(old_last, old_lines.empty() ? 0 : old_lines.size() - 1);
  new_last = std::min(new_last, new_lines.empty() ? 0 : new_lines.size() - 1);
  constexpr std::size_t context = 3;
  std::size_t from = first > context ? first - context : 0;
  std::size_t old_to = std::min(old_lines.size(), old_last + 1 + context);
  std::size_t new_to = std::min(new_lines.size(), new_last + 1 + context);
  std::string out = "--- a/" + path + "\n+++ b/" + path + "\n";
  out += "@@ -" + std::to_string(from + 1) + "," + std::to_string(old_to - from) + " +" +
         std::to_string(from + 1) + "," + std::to_string(new_to - from) + " @@\n";
  for (std::size_t i = from; i < first && i < old_lines.size(); ++i) out += " " + old_lines[i] + "\n";
  for (std::size_t i = first; i <= old_last && i < old_lines.size(); ++i) out += "-" + old_lines[i] + "\n";
  for (std::size_t i = first; i <= new_last && i < new_lines.size(); ++i) out += "+" + new_lines[i] + "\n";
  for (std::size_t i = new_last + 1; i < new_to; ++i) out += " " + new_lines[i] + "\n";
  return out;
}

bool is_hidden_code_point(std::uint32_t c) {
  if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return true;            // C0, DEL, C1
  if (c == 0x00a0 || c == 0x00ad || c == 0x034f || c == 0x061c) return true;  // nbsp, soft hyphen, CGJ, ALM
  if (c == 0x115f || c == 0x1160 || c == 0x3164 || c == 0xffa0) return true;  // Hangul fillers
  if (c == 0x1680 || c == 0x180e || c == 0x17b4 || c == 0x17b5) return true;
  if (c >= 0x2000 && c <= 0x200f) return true;  // spaces of other widths, zero width, LRM, RLM
  if (c >= 0x2028 && c <= 0x202f) return true;  // line and paragraph separators, bidi embeddings
  if (c >= 0x205f && c <= 0x206f) return true;  // word joiner, invisible operators, bidi isolates
  if (c == 0x2800 || c == 0x3000 || c == 0xfeff) return true;  // braille blank, ideographic space, BOM
  if (c >= 0xfe00 && c <= 0xfe0f) return true;  // variation selectors
  if (c >= 0xfff9 && c <= 0xfffb) return true;  // interlinear annotations
  if (c == 0x110bd || c == 0x110cd || (c >= 0x1d173 && c <= 0x1d17a)) return true;
  if (c >= 0xe0000 && c <= 0xe0fff) return true;  // tags, variation selectors supplement
  return false;
}

std::string escape_controls(std::string_view raw) {
  std::string text = sanitize_utf8(raw);
  std::string out;
  out.reserve(text.size());
  static const char digits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < text.size();) {
    auto byte = static_cast<unsigned char>(text[i]);
    std::size_t length = byte < 0x80 ? 1 : (byte >> 5) == 0x6 ? 2 : (byte >> 4) == 0xE ? 3 : 4;
    std::uint32_t code = length == 1 ? byte : byte & (0xFFu >> (length + 1));
    for (std::size_t k = 1; k < length; ++k) code = (code << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3Fu);
    if (code == '\n') out += "\\n";
    else if (code == '\r') out += "\\r";
    else if (code == '\t') out += "\\t";
    else if (!is_hidden_code_point(code)) out.append(text, i, length);
    else if (code < 0x80) {
      out += "\\x";
      out += digits[code >> 4];
      out += digits[code & 15];
    } else {
      // \u and four hex digits, or \U and eight past the basic plane.
      out += code > 0xffff ? "\\U" : "\\u";
      for (int shift = code > 0xffff ? 28 : 12; shift >= 0; shift -= 4) out += digits[(code >> shift) & 15];
    }
    i += length;
  }
  return out;
}

std::string shown_field(std::string_view raw, std::size_t chars_max) {
  std::string escaped = escape_controls(raw);
  // A long run of spaces (or of one character) hides what follows it: shown by its count.
  std::string out;
  out.reserve(escaped.size());
  constexpr std::size_t run_shown_max = 8;
  for (std::size_t i = 0; i < escaped.size();) {
    std::size_t j = i;
    while (j < escaped.size() && escaped[j] == escaped[i] && static_cast<unsigned char>(escaped[i]) < 0x80) ++j;
    if (j - i > run_shown_max && (escaped[i] == ' ')) {
      out += "[" + std::to_string(j - i) + " spaces]";
      i = j;
    } else {
      out.append(escaped, i, std::max<std::size_t>(j - i, 1));
      i = std::max(j, i + 1);
    }
  }
  if (out.size() <= chars_max) return out;
  // The start and the end always show; what is between is counted.
  std::size_t head = chars_max / 2, tail = chars_max - head;
  while (head > 0 && (static_cast<unsigned char>(out[head]) & 0xC0) == 0x80) --head;
  std::size_t tail_from = out.size() - tail;
  while (tail_from < out.size() && (static_cast<unsigned char>(out[tail_from]) & 0xC0) == 0x80) ++tail_from;
  return out.substr(0, head) + " [... " + std::to_string(tail_from - head) + " characters not shown ...] " +
         out.substr(tail_from);
}

} // namespace keel::sandbox
