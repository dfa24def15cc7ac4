#include "broker/subscription_reaper.hpp"

#include <pthread.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace keel::broker {

class retired_subscriptions {
public:
  // Set once the connection is made, before anything is subscribed; kept alive by each of its
  // subscriptions (nats.c counts them), so only used while one waits here.
  natsConnection* nc = nullptr;
  std::mutex mutex;
  std::vector<natsSubscription*> waiting;  // unsubscribed, maybe still held by the reading thread
  bool closed = false;                     // nats.c's threads of this connection are joined
  bool queued = false;                     // the reaper has it on its list
};

namespace {

using clock = std::chrono::steady_clock;

// How long one round trip may take before it is tried again, and how soon: a connection that is
// away (reconnecting) keeps what it retired until it is back or closed.
constexpr std::int64_t round_trip_timeout_ms = 2'000;
constexpr auto retry_after = std::chrono::milliseconds(200);

void destroy_all(std::vector<natsSubscription*>& subs) {
  for (auto* s : subs) natsSubscription_Destroy(s);
  subs.clear();
}

// One thread for the process, started with the first subscription retired; it is never stopped
// (a process ends with it blocked on its condition variable, owning nothing that needs closing).
class reaper {
public:
  static reaper& instance() {
    static auto* r = new reaper();  // never destroyed: its thread may outlive static destructors
    return *r;
  }

  void enqueue(std::shared_ptr<retired_subscriptions> on, clock::time_point not_before) {
    std::lock_guard lock{mutex_};
    due_.emplace_back(not_before, std::move(on));
    wake_.notify_one();
  }

private:
  reaper() {
    std::thread([this] { run(); }).detach();
  }

  void run() {
    pthread_setname_np(pthread_self(), "nats reaper");
    std::unique_lock lock{mutex_};
    for (;;) {
      wake_.wait(lock, [this] { return !due_.empty(); });
      auto now = clock::now();
      std::vector<std::shared_ptr<retired_subscriptions>> ready;
      auto earliest = clock::time_point::max();
      for (auto it = due_.begin(); it != due_.end();) {
        if (it->first <= now) {
          ready.push_back(std::move(it->second));
          it = due_.erase(it);
        } else {
          earliest = std::min(earliest, it->first);
          ++it;
        }
      }
      if (ready.empty()) {
        wake_.wait_until(lock, earliest);
        continue;
      }
      lock.unlock();
      for (auto& on : ready) reap(on);
      lock.lock();
    }
  }

  // Destroys what `on` retired before a round trip that has come back; anything the round trip
  // cannot vouch for waits for the next one.
  void reap(const std::shared_ptr<retired_subscriptions>& on) {
    std::vector<natsSubscription*> batch;
    bool closed = false;
    {
      std::lock_guard lock{on->mutex};
      batch.swap(on->waiting);
      closed = on->closed;
      if (closed || batch.empty()) on->queued = false;
    }
    if (closed || batch.empty()) {
      destroy_all(batch);
      return;
    }
    // Every subscription in the batch was unsubscribed (taken off the connection's table) before
    // this PING is sent.
    natsStatus s = natsConnection_FlushTimeout(on->nc, round_trip_timeout_ms);
    if (s == NATS_OK) {
      destroy_all(batch);
    } else {
      // Disconnected, timed out, or closing (nats.c says closed before it joins its threads):
      // kept, and tried again.
      std::lock_guard lock{on->mutex};
      on->waiting.insert(on->waiting.begin(), batch.begin(), batch.end());
    }
    bool again = false;
    {
      std::lock_guard lock{on->mutex};
      again = !on->waiting.empty();
      on->queued = again;
    }
    if (again) enqueue(on, clock::now() + (s == NATS_OK ? std::chrono::milliseconds(0) : retry_after));
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::pair<clock::time_point, std::shared_ptr<retired_subscriptions>>> due_;
};

} // namespace

std::shared_ptr<retired_subscriptions> make_retired_subscriptions() {
  return std::make_shared<retired_subscriptions>();
}

void connection_made(const std::shared_ptr<retired_subscriptions>& on, natsConnection* nc) {
  std::lock_guard lock{on->mutex};
  on->nc = nc;
}

void retire(const std::shared_ptr<retired_subscriptions>& on, natsSubscription* sub) {
  if (!sub) return;
  // Off the connection's table first (a subscription already off it, or of a closed connection,
  // says so: either is fine).
  natsSubscription_Unsubscribe(sub);
  bool closed = false, queue = false;
  {
    std::lock_guard lock{on->mutex};
    closed = on->closed;
    if (!closed) {
      on->waiting.push_back(sub);
      queue = !on->queued;
      on->queued = true;
    }
  }
  if (closed) natsSubscription_Destroy(sub);
  else if (queue) reaper::instance().enqueue(on, clock::now());
}

void connection_closed(const std::shared_ptr<retired_subscriptions>& on) {
  std::vector<natsSubscription*> batch;
  {
    std::lock_guard lock{on->mutex};
    on->closed = true;
    batch.swap(on->waiting);
  }
  destroy_all(batch);
}

} // namespace keel::broker
