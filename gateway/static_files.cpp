#include "gateway/static_files.hpp"

#include "gateway/dashboard_files.hpp"

namespace keel::gateway {

namespace {

std::string content_type_of(std::string_view path) {
  auto ends = [&](std::string_view tail) { return path.size() >= tail.size() && path.substr(path.size() - tail.size()) == tail; };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

const embedded_file* find(std::string_view path) {
  for (const auto& f : dashboard_files())
    if (f.path == path) return &f;
  return nullptr;
}

// The addresses the page itself draws.
bool is_page(const std::string& path) {
  if (path == "/" || path == "/runs" || path == "/agents" || path == "/nodes" || path == "/approvals" || path == "/schedules" || path == "/queues") return true;
  if (path.rfind("/runs/", 0) != 0) return false;
  // /runs/<id> or /runs/<id>/steps/<step>: names only, nothing else.
  return path.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-/") == std::string::npos &&
         path.find("//") == std::string::npos;
}

} // namespace

void page_headers(http_response& r) {
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                         "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
}

std::optional<http_response> dashboard_response(const std::string& path) {
  const embedded_file* file = nullptr;
  if (is_page(path)) file = find("/index.html");
  else if (path.rfind("/assets/", 0) == 0) file = find(path.substr(7));
  if (!file) return std::nullopt;
  http_response r;
  r.content_type = content_type_of(file->path);
  r.body = std::string(file->bytes);
  page_headers(r);
  r.headers.emplace_back("Cache-Control", "no-cache");
  return r;
}

} // namespace keel::gateway
