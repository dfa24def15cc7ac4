#include "sandbox/matching.hpp"

#include <re2/re2.h>

#include <vector>

namespace keel::sandbox {

namespace {
constexpr std::int64_t regex_memory_bytes_max = 64 << 20;

std::string quote(char c) {
  std::string out;
  if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
        (static_cast<unsigned char>(c) >= 0x80)))
    out += '\\';
  if (c == '\0') return "\\x00";
  out += c;
  return out;
}
} // namespace

result<glob_pattern> glob_pattern::compile(std::string_view pattern) {
  if (pattern.size() > pattern_chars_max)
    return make_error(errc::invalid_argument, "the pattern has " + std::to_string(pattern.size()) +
                                                " characters, over the limit of " + std::to_string(pattern_chars_max));
  std::string translated;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '*' && i + 1 < pattern.size() && pattern[i + 1] == '*') {
      while (i + 1 < pattern.size() && pattern[i + 1] == '*') ++i;  // "***" is "**"
      if (i + 1 < pattern.size() && pattern[i + 1] == '/') {
        translated += "(?:.*/)?";
        ++i;
      } else {
        translated += ".*";
      }
    } else if (c == '*') {
      translated += "[^/]*";
    } else if (c == '?') {
      translated += "[^/]";
    } else {
      translated += quote(c);
    }
  }
  RE2::Options options;
  options.set_encoding(RE2::Options::EncodingLatin1);  // names are bytes, not always UTF-8
  options.set_dot_nl(true);
  options.set_log_errors(false);
  options.set_max_mem(regex_memory_bytes_max);
  auto expression = std::make_shared<const RE2>(translated, options);
  if (!expression->ok()) return make_error(errc::invalid_argument, "not a usable glob pattern: " + expression->error());
  glob_pattern out;
  out.expression_ = std::move(expression);
  return out;
}

bool glob_pattern::matches(std::string_view path) const {
  return RE2::FullMatch(re2::StringPiece(path.data(), path.size()), *expression_);
}

result<regex> regex::compile(std::string_view pattern, bool ignore_case) {
  if (pattern.size() > pattern_chars_max)
    return make_error(errc::invalid_argument, "the regular expression has " + std::to_string(pattern.size()) +
                                                " characters, over the limit of " + std::to_string(pattern_chars_max));
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(regex_memory_bytes_max);
  options.set_case_sensitive(!ignore_case);
  auto expression = std::make_shared<const RE2>(re2::StringPiece(pattern.data(), pattern.size()), options);
  if (!expression->ok())
    return make_error(errc::invalid_argument, "not a valid regular expression (RE2 syntax): " + expression->error());
  regex out;
  out.expression_ = std::move(expression);
  return out;
}

bool regex::found_in(std::string_view text) const {
  return RE2::PartialMatch(re2::StringPiece(text.data(), text.size()), *expression_);
}

bool wildcard_match(std::string_view pattern, std::string_view text) {
  // Greedy with one backtrack point (the last star): each text position is revisited at most
  // once per pattern position, so the work is bounded by pattern.size() * text.size().
  std::size_t p = 0, t = 0;
  std::size_t star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    // A star is a star first, also where the text has one (taken as a literal there, it could
    // not stretch over what follows).
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

} // namespace keel::sandbox
