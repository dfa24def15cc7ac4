// libFuzzer target: the matching a model's tool calls reach with strings of its choosing: glob
// patterns over paths, wildcard patterns over commands (approval rules), regular expressions
// for grep. Input: pattern, a zero byte, the text. Linear time and no crash on any of it.
#include "sandbox/matching.hpp"

#include <cstdint>
#include <string_view>

using namespace keel;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto split = input.find('\0');
  auto pattern = input.substr(0, split);
  auto text = split == std::string_view::npos ? std::string_view() : input.substr(split + 1);
  if (auto glob = sandbox::glob_pattern::compile(pattern)) (void)glob->matches(text);
  (void)sandbox::wildcard_match(pattern, text);
  // '*' against itself always matches; a pattern without wildcards matches only itself.
  if (!sandbox::wildcard_match("*", text)) __builtin_trap();
  if (pattern.find_first_of("*?") == std::string_view::npos && sandbox::wildcard_match(pattern, text) != (pattern == text))
    __builtin_trap();
  for (bool ignore_case : {false, true})
    if (auto re = sandbox::regex::compile(pattern, ignore_case)) (void)re->found_in(text);
  return 0;
}
