// How events and approval requests look in a terminal.
#pragma once

#include "runtime/wire.hpp"

#include <string>

namespace keel::cli {

// One or more lines for an event, or empty for events not worth a line.
// A wall-clock time (ms) as RFC 3339, UTC, to the second; "-" for none (0).
std::string rfc3339_text(std::int64_t ms);
std::string render_event(const wire::event& e);
// The approval box of a suspend event, as the guide shows it, ending with the question.
std::string render_approval(const wire::value& suspend_data);
std::string render_summary(const wire::value& run);

} // namespace keel::cli
