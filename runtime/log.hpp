// One spdlog logger per folder ("runtime", "broker", "actors", ...), configured once per process.
#pragma once

#include <memory>
#include <string>

namespace spdlog { class logger; }

namespace keel::log {

// Sets the level ("trace".."off") and, when `file` is not empty, writes there instead of stderr.
void configure(const std::string& level, const std::string& file);

// The logger named `folder`, created on first use with the configured sinks.
std::shared_ptr<spdlog::logger> get(const std::string& folder);

} // namespace keel::log
