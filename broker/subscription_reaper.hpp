// For the broker folder's own files only: how a nats.c subscription is destroyed.
//
// nats.c 3.4 (Debian 12's) looks up the subscription an incoming message is for under its
// connection's lock, lets go of that lock, and only then locks the subscription: a subscription
// unsubscribed and destroyed in between is freed memory that the connection's reading thread then
// locks and writes (fixed in later nats.c, which holds a reference across that gap). So a
// subscription is destroyed only once that thread can no longer hold it: after a round trip to the
// server (PING, PONG) sent after it was unsubscribed has come back, since the reading thread handles
// what arrives in order and so has finished any message it looked the subscription up for; or once
// the connection is closed and nats.c has joined its threads. The round trips are made on a thread
// of the reaper's own, one per connection for everything retired since the last, so that nobody who
// destroys a subscription waits on the broker (which may be slow, paused or away).
#pragma once

#include <nats/nats.h>

#include <memory>

namespace keel::broker {

// The subscriptions of one connection that wait to be destroyed: made before the connection (its
// closed callback refers to it), told the connection once made and when it has closed.
class retired_subscriptions;

std::shared_ptr<retired_subscriptions> make_retired_subscriptions();
void connection_made(const std::shared_ptr<retired_subscriptions>& on, natsConnection* nc);

// Unsubscribes `sub` (if it still is subscribed) and destroys it once no thread of nats.c can reach
// it. `sub` is its caller's no more.
void retire(const std::shared_ptr<retired_subscriptions>& on, natsSubscription* sub);

// The connection has closed and nats.c has joined its threads (its closed callback ran): what it
// retired, and retires from now on, is destroyed at once.
void connection_closed(const std::shared_ptr<retired_subscriptions>& on);

} // namespace keel::broker
