// Secrets and the files that hold them: random hex from the kernel, and files only their owner
// may read, written whole or not at all.
#pragma once

#include "runtime/result.hpp"

#include <cstddef>
#include <string>
#include <string_view>

namespace keel {

// 2 * `bytes` hex digits of getrandom.
std::string random_hex(std::size_t bytes);

// Writes `content` to `path` with mode 0600 from the start (through a temporary beside it,
// synced, then renamed over `path`; never following a link), so that nobody else can read it
// at any moment.
result<void> write_private_file(const std::string& path, std::string_view content);

// The name of the account this process runs as, fit for a name (is_valid_name): other
// characters become '_'; "someone" when there is none.
std::string account_name();

} // namespace keel
