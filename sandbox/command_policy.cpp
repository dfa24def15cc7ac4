#include "sandbox/command_policy.hpp"

#include "sandbox/matching.hpp"

#include <algorithm>

namespace keel::sandbox {

namespace {
bool plain_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.' || c == '/' || c == ',' || c == ':' || c == '=' || c == '+' ||
         c == '@' || c == '%';
}
constexpr std::size_t simple_command_chars_max = 8192;
} // namespace

bool is_simple_command(std::string_view command) {
  if (command.empty() || command.size() > simple_command_chars_max) return false;
  bool any_word = false;
  for (char c : command) {
    if (c == ' ') continue;
    if (!plain_char(c)) return false;
    any_word = true;
  }
  return any_word;
}

std::vector<std::string> command_words(std::string_view command) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < command.size()) {
    while (i < command.size() && command[i] == ' ') ++i;
    auto start = i;
    while (i < command.size() && command[i] != ' ') ++i;
    if (i > start) words.emplace_back(command.substr(start, i - start));
  }
  return words;
}

std::string_view to_string(allow_kind k) { return k == allow_kind::exact ? "exact" : "prefix"; }

bool rule_allows(const allow_rule& rule, std::string_view command) {
  if (rule.kind == allow_kind::exact) return !rule.command.empty() && rule.command == command;
  if (!is_simple_command(command) || !is_simple_command(rule.command)) return false;
  auto want = command_words(rule.command);
  auto have = command_words(command);
  return have.size() >= want.size() && std::equal(want.begin(), want.end(), have.begin());
}

bool pattern_allows(std::string_view pattern, std::string_view command) {
  if (!is_simple_command(command)) return false;
  return wildcard_match(pattern, command);
}

const std::vector<std::string>& env_names_safe() {
  static const std::vector<std::string> names = {
    "CI", "COLUMNS", "FORCE_COLOR", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "LINES",
    "NO_COLOR", "NODE_ENV", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "TERM", "TZ"};
  return names;
}

bool env_name_is_safe(std::string_view name) {
  const auto& safe = env_names_safe();
  return std::find(safe.begin(), safe.end(), name) != safe.end();
}

result<void> check_call_env(const std::map<std::string, std::string>& env) {
  if (env.size() > env_entries_max)
    return make_error(errc::invalid_argument, "env has " + std::to_string(env.size()) +
                                                " variables, over the limit of " + std::to_string(env_entries_max));
  for (const auto& [name, value] : env) {
    bool valid = !name.empty() && name.size() <= 128 && !(name[0] >= '0' && name[0] <= '9');
    for (char c : name)
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
        valid = false;
    if (!valid)
      return make_error(errc::invalid_argument,
                        "env: a variable name must be letters, digits and '_', not starting with a digit, "
                        "at most 128 characters");
    if (name.rfind("KEEL_", 0) == 0)
      return make_error(errc::invalid_argument, "env: " + name + " is set by keel and cannot be given");
    if (value.find('\0') != std::string::npos)
      return make_error(errc::invalid_argument, "env: the value of " + name + " contains a NUL byte");
    if (value.size() > env_value_bytes_max)
      return make_error(errc::invalid_argument, "env: the value of " + name + " is over " +
                                                  std::to_string(env_value_bytes_max) + " bytes");
  }
  return success();
}

} // namespace keel::sandbox
