// The gateway's HTTP API (docs/HTTP.md): JSON over HTTP in front, the wire protocol over NATS
// behind. It keeps no state: every answer comes from the orchestrators.
#pragma once

#include "broker/connection.hpp"
#include "gateway/http_server.hpp"
#include "runtime/wire.hpp"

#include <memory>
#include <string>
#include <vector>

namespace keel::gateway {

struct api_options {
  broker::subjects subjects;
  std::string token;                   // empty: no token asked (loopback only)
  std::int64_t request_timeout_ms = 5000;
  std::int64_t list_wait_ms = 300;     // how long a listing collects the orchestrators' answers
};

class api {
public:
  api(std::shared_ptr<broker::connection> nats, api_options options);
  void handle(http_request request, const responder& respond);

private:
  result<std::vector<wire::value>> collect(const std::string& subject, const wire::value& body);
  std::shared_ptr<broker::connection> nats_;
  api_options options_;
};

// The HTTP status for an error code of the protocol.
int status_of(errc code);

} // namespace keel::gateway
