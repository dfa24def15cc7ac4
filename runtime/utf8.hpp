// UTF-8 as keel takes it from outside: whether bytes are valid text (no overlong forms, no
// surrogates, nothing past U+10FFFF), and the repair that puts U+FFFD for each byte that is not.
#pragma once

#include <string>
#include <string_view>

namespace keel::wire {

bool is_valid_utf8(std::string_view text);
std::string repaired_utf8(std::string_view text);

} // namespace keel::wire
