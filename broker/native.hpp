// For the broker folder's own files only: the nats.c handle behind a connection.
#pragma once

#include <nats/nats.h>

namespace keel::broker {
class connection;
natsConnection* native_connection(connection& c);
} // namespace keel::broker
