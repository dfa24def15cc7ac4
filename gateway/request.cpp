#include "gateway/request.hpp"
#include "runtime/json_bounded.hpp"

#include <cctype>

namespace keel::gateway {

using value = wire::value;

bool same_secret(const std::string& given, const std::string& expected) {
  if (expected.empty()) return given.empty();
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (std::size_t i = 0; i < given.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ expected[i % expected.size()]);
  return diff == 0;
}

std::string decode_percent(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') out += ' ';
    else if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
             std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      out += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else out += text[i];
  }
  return out;
}

target parse_target(const std::string& raw) {
  target t;
  auto q = raw.find('?');
  t.path = raw.substr(0, q);
  if (q == std::string::npos) return t;
  std::string rest = raw.substr(q + 1);
  std::size_t start = 0;
  while (start <= rest.size()) {
    auto end = rest.find('&', start);
    if (end == std::string::npos) end = rest.size();
    auto pair = rest.substr(start, end - start);
    auto eq = pair.find('=');
    if (!pair.empty()) t.query[pair.substr(0, eq)] = eq == std::string::npos ? "" : decode_percent(pair.substr(eq + 1));
    start = end + 1;
  }
  return t;
}

// The path's parts between slashes.
std::vector<std::string> parts_of(const std::string& path) {
  std::vector<std::string> out;
  std::size_t start = 1;
  while (start <= path.size()) {
    auto end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    out.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  if (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

result<value> json_body(const http_request& r) {
  if (r.body.empty()) return value::object();
  auto v = keel::parse_bounded(r.body);
  if (v.is_discarded() || !v.is_object())
    return make_error(errc::malformed, "the body must be a JSON object, nested at most " + std::to_string(keel::json_depth_max) + " deep");
  return v;
}

result<std::uint64_t> count_param(const target& t, const char* name, std::uint64_t fallback) {
  auto it = t.query.find(name);
  if (it == t.query.end()) return fallback;
  const auto& text = it->second;
  if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos)
    return make_error(errc::invalid_argument, std::string(name) + " must be an unsigned integer");
  return std::stoull(text);
}

} // namespace keel::gateway
