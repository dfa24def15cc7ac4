#include "gateway/request_guard.hpp"

#include <algorithm>
#include <arpa/inet.h>

namespace keel::gateway {

namespace {

std::string lower(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string trimmed(const std::string& text) {
  auto first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

const std::string* header(const http_request& r, const char* name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? nullptr : &it->second;
}

// The host part of a Host header (no port), lower-cased; IPv6 literals lose their brackets.
// Empty when the value is not `host[:port]` (RFC 9110): a name of letters, digits, '.', '-' (or
// a bracketed IPv6 literal), then at most a port of 1 to 5 digits up to 65535.
std::string host_name(const std::string& value) {
  std::string v = lower(trimmed(value));
  std::string host;
  std::string::size_type rest = 0;  // where ":port" may start
  if (!v.empty() && v.front() == '[') {
    auto close = v.find(']');
    if (close == std::string::npos) return {};
    host = v.substr(1, close - 1);
    rest = close + 1;
    if (host.find_first_not_of("0123456789abcdef:.") != std::string::npos) return {};
  } else {
    rest = std::min(v.find(':'), v.size());
    host = v.substr(0, rest);
    if (host.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-") != std::string::npos) return {};
  }
  if (rest < v.size()) {
    auto port = v.substr(rest);  // ":digits"
    if (port.size() < 2 || port.size() > 6 || port[0] != ':' || port.find_first_not_of("0123456789", 1) != std::string::npos ||
        std::stol(port.substr(1)) > 65535)
      return {};
  }
  return host;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buffer[16];
  return ::inet_pton(AF_INET, host.c_str(), buffer) == 1 || ::inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

bool served(const std::string& host, const std::vector<std::string>& hosts) {
  if (host.empty()) return false;
  if (host == "localhost" || (host.size() > 10 && host.compare(host.size() - 10, 10, ".localhost") == 0)) return true;
  if (is_ip_literal(host)) return true;  // a rebinding page names a host, never an address
  return std::any_of(hosts.begin(), hosts.end(), [&](const std::string& h) { return lower(h) == host; });
}

bool changes_state(const std::string& method) { return method != "GET" && method != "HEAD" && method != "OPTIONS"; }

} // namespace

std::optional<refusal> check_request(const http_request& r, const std::vector<std::string>& hosts, bool api) {
  const std::string* host = header(r, "host");
  std::string name = host ? host_name(*host) : std::string{};
  if (host && name.empty())
    return refusal{400, "malformed", "the Host header is not host[:port]"};
  if (host && !served(name, hosts))
    return refusal{403, "denied", "the Host '" + name + "' is not a name this gateway serves (add it to gateway.hosts if it is)"};
  const std::string* site = header(r, "sec-fetch-site");
  std::string where = site ? lower(trimmed(*site)) : std::string{};
  // Only what a browser sends for its own pages' requests, or for a typed address, counts as
  // from here; anything else (another site, a list of values, an unknown one) does not.
  bool from_elsewhere = site && where != "same-origin" && where != "none";
  if (from_elsewhere) {
    const std::string* mode = header(r, "sec-fetch-mode");
    bool navigation = mode && lower(trimmed(*mode)) == "navigate" && !changes_state(r.method);
    if (api || !navigation) return refusal{403, "denied", "a request from another site's page (Sec-Fetch-Site: " + where + ")"};
  }
  if (api) {
    if (const std::string* origin = header(r, "origin")) {
      std::string own = host ? "http://" + lower(trimmed(*host)) : std::string{};
      if (lower(trimmed(*origin)) != own)
        return refusal{403, "denied", "a request from the page of another origin (" + trimmed(*origin) + ")"};
    }
    if (changes_state(r.method)) {
      const std::string* type = header(r, "content-type");
      std::string media = type ? lower(trimmed(type->substr(0, type->find(';')))) : std::string{};
      if (media != "application/json")
        return refusal{415, "malformed", "a request that changes something carries a JSON body (Content-Type: application/json), got " +
                                             (type ? "'" + trimmed(*type) + "'" : std::string("none"))};
    }
  }
  return std::nullopt;
}

} // namespace keel::gateway
