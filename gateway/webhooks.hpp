// Webhook triggers (docs/WORKFLOWS.md): POST /hooks/<name> starts a run of the hook's agent from
// the request's body. A request is taken only when it proves it knows the hook's secret (an
// HMAC-SHA256 of the exact body, "sha256=<hex>" in the hook's signature header) or carries its
// token (Authorization: Bearer), compared in constant time, and names its delivery in the
// idempotency header (a sender's retry then gets the same run). The secret and token files are
// read at each request, so they can be rotated without a restart.
#pragma once

#include "gateway/http_server.hpp"
#include "runtime/config.hpp"
#include "runtime/result.hpp"
#include "runtime/wire.hpp"

#include <string>
#include <vector>

namespace keel::gateway {

// A webhook's runs have the idempotency key keel-webhook/<name>/<delivery>; orchestrators take such
// a key only from the sender webhook-<name> (the gateway, which may send as any name).
constexpr const char* webhook_key_prefix = "keel-webhook/";

struct webhook_invoke {
  std::string agent;
  wire::value input;
  std::string idempotency_key;  // keel-webhook/<name>/<delivery>
  std::string who;              // the sender's name on the invoke subject: webhook-<name>
};

// What the request asks for, once checked; an error with the status it gets (not_found: no such
// hook; denied: the signature or token is wrong or missing; invalid_argument: no delivery id, or
// a body that is not text).
result<webhook_invoke> check_webhook(const std::vector<config::webhook_config>& hooks, const std::string& name,
                                     const http_request& request);

// "sha256=" + the hex HMAC-SHA256 of `body` under `secret` (what a sender puts in the header).
std::string webhook_signature(const std::string& secret, const std::string& body);

} // namespace keel::gateway
