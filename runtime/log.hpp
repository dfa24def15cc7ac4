// One spdlog logger per folder ("runtime", "broker", "actors", ...), configured once per process.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace spdlog { class logger; }

namespace keel::log {

// Sets the level ("trace".."off") and, when `file` is not empty, writes there instead of stderr.
// `format` "json": one JSON object per line (docs/OPERATIONS.md) with the node's id.
void configure(const std::string& level, const std::string& file, const std::string& format = "text",
               const std::string& node = {});
// The node's id for JSON lines, once it is known (after the store is read).
void set_node(const std::string& node);

// The logger named `folder`, created on first use with the configured sinks.
std::shared_ptr<spdlog::logger> get(const std::string& folder);

// A line as log.format = "json" writes it (without the newline): time, level, logger, node,
// message, and the run and step the message names ("run <id>", "task <n>" or "step <n>", as
// keel's lines about a run say them).
std::string json_line(std::string_view time, std::string_view level, std::string_view logger, std::string_view node,
                      std::string_view message);

} // namespace keel::log
