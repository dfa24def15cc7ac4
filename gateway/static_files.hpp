// The dashboard's pages over HTTP: its files as built into the binary, and index.html for every
// page address (/runs/..., /agents, /nodes), which the page's script then draws.
#pragma once

#include "gateway/http_server.hpp"

#include <optional>
#include <string>

namespace keel::gateway {

// The answer for a GET of `path` outside /api/, or nothing when no page or file has that path.
std::optional<http_response> dashboard_response(const std::string& path);

// Headers that every page and file carries: no framing, no sniffing, scripts and styles from
// this origin only, no inline script.
void page_headers(http_response& r);

} // namespace keel::gateway
