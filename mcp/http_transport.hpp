// MCP over streamable HTTP: each message is a POST to the server's one endpoint; its answer is
// one JSON message or a stream of server-sent events that ends with it. The session id the
// server gives at initialize is sent with every later request, with the protocol version agreed.
// A token (from token_file) goes as a bearer token. Bodies are bounded (16 MiB).
#pragma once

#include "mcp/client.hpp"
#include "runtime/config.hpp"

namespace keel::mcp {

result<std::unique_ptr<transport>> connect_http(const config::mcp_server& server);

} // namespace keel::mcp
