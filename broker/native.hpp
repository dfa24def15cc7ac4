// For the broker folder's own files only: the nats.c handle behind a connection.
#pragma once

#include "runtime/result.hpp"

#include <nats/nats.h>

#include <memory>
#include <string>

namespace keel::broker {
class connection;
class jetstream;
natsConnection* native_connection(connection& c);
// Where a subscription of `c` goes to be destroyed (subscription_reaper.hpp).
class retired_subscriptions;
std::shared_ptr<retired_subscriptions> retired_subscriptions_of(connection& c);
jsCtx* native_jetstream(jetstream& js);
// A nats.c or JetStream failure as keel's error: a timeout, a payload too large, a bad argument,
// a write refused at a stale position (errc::conflict), else unavailable.
keel::error js_error(natsStatus s, int code, const std::string& what);
} // namespace keel::broker
