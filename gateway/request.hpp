// What the gateway reads from an HTTP request before anything goes to the cluster: the target's
// path and query, the path's parts, a JSON body, a count in the query, the token. Every byte of
// it comes from a client: none of these throws or reads out of bounds, whatever it is given
// (fuzzed: tests/fuzz/gateway_fuzz.cpp).
#pragma once

#include "gateway/http_server.hpp"
#include "runtime/wire.hpp"

#include <map>
#include <string>
#include <vector>

namespace keel::gateway {

// The path and the query's fields (percent-decoding of the values only).
struct target {
  std::string path;
  std::map<std::string, std::string> query;
};
target parse_target(const std::string& raw);
std::string decode_percent(const std::string& text);
// The path's parts between slashes (no empty last part).
std::vector<std::string> parts_of(const std::string& path);
// The body as a JSON object (an empty body is an empty object); errc::malformed otherwise.
result<wire::value> json_body(const http_request& r);
// The query's `name` as an unsigned integer, `fallback` when absent; errc::invalid_argument when
// it is not one.
result<std::uint64_t> count_param(const target& t, const char* name, std::uint64_t fallback);
// Compares without stopping at the first difference, so that timing tells nothing of the token.
bool same_secret(const std::string& given, const std::string& expected);

} // namespace keel::gateway
