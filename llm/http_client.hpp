// One HTTP POST over libcurl, with a connect timeout and a whole-call timeout, an optional
// callback for a body that streams (server-sent events), and the headers a retry needs.
#pragma once

#include "runtime/result.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace keel::llm {

struct http_request {
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;
  std::int64_t connect_timeout_ms = 10'000;
  std::int64_t timeout_ms = 600'000;
  // Called with each piece of the body as it arrives; return false to stop.
  std::function<bool(std::string_view)> on_data;
};

struct http_response {
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // empty when on_data took it
};

// errc::timeout or errc::unavailable for a network failure; HTTP errors are responses.
result<http_response> http_post(const http_request& request);

} // namespace keel::llm
