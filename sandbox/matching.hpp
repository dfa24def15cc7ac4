// Matching over untrusted input in linear time: glob patterns over file paths (compiled to RE2,
// whose automata never backtrack), wildcard patterns over commands (a two-pointer match with a
// proven O(n*m) bound and no recursion), and regular expressions for grep (RE2, with a memory
// budget). Nothing here recurses on its input, so no input can exhaust the stack.
#pragma once

#include "runtime/result.hpp"

#include <memory>
#include <string>
#include <string_view>

namespace re2 { class RE2; }

namespace keel::sandbox {

inline constexpr std::size_t pattern_chars_max = 4096;

// '*' any run of characters except '/', '?' one character except '/', '**' any run including
// '/', and "**/" any number of whole directories (none included). Everything else is literal.
class glob_pattern {
public:
  static result<glob_pattern> compile(std::string_view pattern);
  bool matches(std::string_view path) const;

private:
  std::shared_ptr<const re2::RE2> expression_;
};

// A regular expression in RE2's syntax.
class regex {
public:
  static result<regex> compile(std::string_view pattern, bool ignore_case);
  bool found_in(std::string_view text) const;

private:
  std::shared_ptr<const re2::RE2> expression_;
};

// '*' matches any run of characters, '?' one; nothing else is special.
bool wildcard_match(std::string_view pattern, std::string_view text);

} // namespace keel::sandbox
