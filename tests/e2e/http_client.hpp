// HTTP for the end-to-end tests (libcurl): one call and its answer, or the status of a GET while
// nothing may listen yet.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace keel::testing {

struct http_answer {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-cased
  nlohmann::json parsed() const { return nlohmann::json::parse(body, nullptr, false); }
};

// Status 0 when nothing answered, with why in body (parsed() is then discarded). Asserts
// nothing: tests call it from many threads at once, where Catch's assertions are not safe.
http_answer call(const std::string& method, const std::string& url, const std::string& body = "",
                 const std::vector<std::string>& extra_headers = {});
// The Authorization header every call sends unless it names one of its own ("Authorization:"
// alone sends none); empty: none. The end-to-end cluster sets it to the token it made.
void set_default_authorization(const std::string& header);
std::string default_authorization_header();
// A tokens file at `path` with one token named `name`; returns the token.
std::string write_gateway_token(const std::string& path, const std::string& name);
// The status of a GET, or 0 while nothing listens there.
long status_of_get(const std::string& url);

} // namespace keel::testing
