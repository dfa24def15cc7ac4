// For the broker folder's own files only: the nats.c handle behind a connection.
#pragma once

#include <nats/nats.h>

namespace keel::broker {
class connection;
class jetstream;
natsConnection* native_connection(connection& c);
jsCtx* native_jetstream(jetstream& js);
} // namespace keel::broker
