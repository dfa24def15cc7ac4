#include "sandbox/text.hpp"

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

std::string sanitize_utf8(std::string_view text) {
  static constexpr std::string_view replacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    auto byte = static_cast<unsigned char>(text[i]);
    std::size_t length = byte < 0x80 ? 1 : (byte >> 5) == 0x6 ? 2 : (byte >> 4) == 0xE ? 3
                         : (byte >> 3) == 0x1E ? 4 : 0;
    bool valid = length > 0 && i + length <= text.size();
    for (std::size_t k = 1; valid && k < length; ++k)
      valid = (static_cast<unsigned char>(text[i + k]) >> 6) == 0x2;
    if (valid && length > 1) {
      // Reject overlong forms, surrogates and code points past U+10FFFF.
      unsigned code = byte & (0xFF >> (length + 1));
      for (std::size_t k = 1; k < length; ++k) code = (code << 6) | (text[i + k] & 0x3F);
      static constexpr unsigned minimum[] = {0, 0, 0x80, 0x800, 0x10000};
      valid = code >= minimum[length] && code <= 0x10FFFF && !(code >= 0xD800 && code <= 0xDFFF);
    }
    if (valid) {
      out.append(text.substr(i, length));
      i += length;
    } else {
      out.append(replacement);
      i += 1;
    }
  }
  return out;
}

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

std::string escape_controls(std::string_view raw) {
  std::string text = sanitize_utf8(raw);
  std::string out;
  out.reserve(text.size());
  static const char digits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 15];
    } else if (c == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      auto d = static_cast<unsigned char>(text[++i]);  // a C1 control, U+0080 to U+009F
      out += "\\u00";
      out += digits[d >> 4];
      out += digits[d & 15];
    } else if (c == 0xe2 && i + 2 < text.size() && static_cast<unsigned char>(text[i + 1]) == 0x80 &&
               ((static_cast<unsigned char>(text[i + 2]) >= 0xaa && static_cast<unsigned char>(text[i + 2]) <= 0xae) ||
                static_cast<unsigned char>(text[i + 2]) == 0x8b || static_cast<unsigned char>(text[i + 2]) == 0x8e ||
                static_cast<unsigned char>(text[i + 2]) == 0x8f)) {
      // Bidirectional overrides and invisible marks (U+202A..U+202E, U+200B, U+200E, U+200F):
      // they make text read otherwise than it runs.
      auto d = static_cast<unsigned char>(text[i + 2]);
      i += 2;
      out += "\\u20";
      unsigned code = 0x2000u + ((0x80u - 0x80u) << 6) + (d - 0x80u);
      out += digits[(code >> 4) & 15];
      out += digits[code & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

} // namespace keel::sandbox
