// The gateway's reading of a request: target (path and query, percent-decoding), the path's
// parts, the JSON body, counts in the query and the token check, on any bytes. Checked: nothing
// throws or crashes, a path never holds the query, no part holds a slash, a count is a count.
#include "gateway/request.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace keel::gateway;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  // The first line is the target, the rest the body.
  auto newline = input.find('\n');
  std::string raw = input.substr(0, newline);
  http_request request;
  request.method = "POST";
  request.target = raw;
  request.body = newline == std::string::npos ? "" : input.substr(newline + 1);

  auto t = parse_target(raw);
  if (t.path.find('?') != std::string::npos) std::abort();
  for (const auto& part : parts_of(t.path))
    if (part.find('/') != std::string::npos) std::abort();
  for (const char* name : {"limit", "after", "last_event_id"}) {
    auto n = count_param(t, name, 7);
    if (n && !t.query.count(name) && *n != 7) std::abort();
    if (!n && n.error().code != keel::errc::invalid_argument) std::abort();
  }
  auto body = json_body(request);
  if (body && !body->is_object()) std::abort();
  if (!body && body.error().code != keel::errc::malformed) std::abort();
  auto decoded = decode_percent(request.body);
  if (decoded.size() > request.body.size()) std::abort();
  // The token check: equal strings only, whatever their lengths (an empty token included).
  if (same_secret(raw, request.body) != (raw == request.body)) std::abort();
  return 0;
}
