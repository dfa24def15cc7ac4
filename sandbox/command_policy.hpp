// What decides whether a command runs without asking: simple commands (plain words, no shell
// syntax), remembered approvals ("always": the exact command, or simple commands starting with
// the same words), the agent's allowlist, and which environment variables a call may set.
#pragma once

#include "runtime/result.hpp"

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace keel::sandbox {

// Plain words separated by spaces: letters, digits and _ - . / , : = + @ % only. Anything a
// shell treats specially (; & | $ ` ( ) < > quotes, globs, escapes, newlines, ...) makes a
// command not simple, and a command that is not simple never matches a pattern or a prefix.
bool is_simple_command(std::string_view command);
std::vector<std::string> command_words(std::string_view command);

enum class allow_kind { exact, prefix };

// A remembered approval. exact: the command byte for byte. prefix: a simple command whose
// words start with `command`'s words.
struct allow_rule {
  allow_kind kind = allow_kind::exact;
  std::string command;
};

std::string_view to_string(allow_kind k);
bool rule_allows(const allow_rule& rule, std::string_view command);
// An allowlist pattern ('*' and '?' wildcards) over a simple command.
bool pattern_allows(std::string_view pattern, std::string_view command);

inline constexpr std::size_t env_entries_max = 64;
inline constexpr std::size_t env_value_bytes_max = 32 * 1024;

// Variables a call may set without approval: they change no program that runs, nor how one is
// found or loaded. Never LD_*, GIT_*, PATH, or anything that names code or configuration.
const std::vector<std::string>& env_names_safe();
bool env_name_is_safe(std::string_view name);

// A call's env: names of [A-Za-z_][A-Za-z0-9_]*, no KEEL_ prefix (keel sets those), values
// without NUL, bounded in count and size. The first problem, as a message for the model.
result<void> check_call_env(const std::map<std::string, std::string>& env);

} // namespace keel::sandbox
