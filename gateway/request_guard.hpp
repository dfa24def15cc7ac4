// Whether a request is one a browser meant to send to this gateway: the Host it names is one the
// gateway serves (no DNS rebinding), it does not come from another site's page (Origin,
// Sec-Fetch-Site), and a request that changes something carries JSON (which a page of another
// origin cannot send without a preflight that the gateway never answers).
#pragma once

#include "gateway/http_server.hpp"

#include <optional>
#include <string>
#include <vector>

namespace keel::gateway {

struct refusal {
  int status;           // 403, 415
  std::string code;     // the protocol's error code
  std::string message;  // what was refused and why
};

// `hosts`: names served besides localhost (and *.localhost) and IP addresses. `api`: a route under
// /api/ (the pages may be reached by a link from anywhere; the API only from the gateway's own).
std::optional<refusal> check_request(const http_request& request, const std::vector<std::string>& hosts, bool api);

} // namespace keel::gateway
