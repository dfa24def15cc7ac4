// The dashboard's files, built into the binary (cmake/embed_files.cmake) from dashboard/.
#pragma once

#include <string_view>
#include <vector>

namespace keel::gateway {

struct embedded_file {
  std::string_view path;   // "/index.html", "/app.js", ...
  std::string_view bytes;
};

const std::vector<embedded_file>& dashboard_files();

} // namespace keel::gateway
