#include "actors/lease_keeper.hpp"

#include "runtime/clock.hpp"
#include "runtime/log.hpp"
#include "runtime/wire.hpp"

#include <pthread.h>
#include <thread>
#include <spdlog/spdlog.h>

namespace keel::actors {

namespace {
std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("actors");
  return l;
}
} // namespace

std::string lease_keeper::encode(const std::string& holder, std::uint64_t epoch) {
  return wire::pack(wire::value{{"holder", holder}, {"epoch", epoch}});
}

result<std::pair<std::string, std::uint64_t>> lease_keeper::decode(const std::string& bytes) {
  auto v = wire::unpack(bytes);
  if (!v || !v->is_object() || !v->value("holder", wire::value()).is_string() ||
      !v->value("epoch", wire::value()).is_number_unsigned())
    return make_error(errc::malformed, "a lease could not be read");
  return std::pair<std::string, std::uint64_t>{(*v)["holder"].get<std::string>(), (*v)["epoch"].get<std::uint64_t>()};
}

lease_keeper::lease_keeper(broker::key_value& bucket, std::string me, std::int64_t lease_ms, hooks on)
  : bucket_(bucket), me_(std::move(me)), lease_ms_(lease_ms), on_(std::move(on)) {}

result<std::unique_ptr<lease_keeper>> lease_keeper::start(broker::key_value& bucket, std::string me,
                                                          std::int64_t lease_ms, hooks on) {
  std::unique_ptr<lease_keeper> k(new lease_keeper(bucket, me, lease_ms, std::move(on)));
  // Our own lease: new, or ours again in the next epoch; held by another, we were taken over.
  // A bucket just made on a new cluster answers once its leader is elected: asked again, 30 s.
  auto deadline = steady_ms() + 30'000;
  for (int tries = 0;; ++tries) {
    auto current = bucket.get_entry(me);
    if (!current && current.error().code != errc::conflict && steady_ms() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      continue;
    }
    if (!current) return current.error();
    if (!*current) {
      auto sent = steady_ms();
      auto made = bucket.create(me, encode(me, 1));
      if (made) {
        k->held_[me] = {1, *made, k->valid_until(sent)};
        break;
      }
      if (made.error().code != errc::conflict && steady_ms() < deadline) continue;
      if (made.error().code != errc::conflict || tries > 3) return made.error();
      continue;  // another wrote it in between: read it again
    }
    auto lease = decode((*current)->value);
    if (!lease) return lease.error();
    if (lease->first != me)
      return make_error(errc::conflict, "the runs of node " + me + " were taken over by " + lease->first +
                                          " (epoch " + std::to_string(lease->second) + ")");
    auto sent = steady_ms();
    auto renewed = bucket.update(me, encode(me, lease->second + 1), (*current)->revision);
    if (renewed) {
      k->held_[me] = {lease->second + 1, *renewed, k->valid_until(sent)};
      break;
    }
    if (renewed.error().code != errc::conflict && steady_ms() < deadline) continue;
    if (renewed.error().code != errc::conflict || tries > 3) return renewed.error();
  }
  // Leases of other nodes this one held when it stopped: held again, if still ours.
  auto keys = bucket.keys();
  if (!keys) return keys.error();
  for (const auto& key : *keys) {
    if (key == me) continue;
    auto current = bucket.get_entry(key);
    if (!current || !*current) continue;
    auto lease = decode((*current)->value);
    if (!lease || lease->first != me) continue;
    auto sent = steady_ms();
    auto renewed = bucket.update(key, encode(me, lease->second + 1), (*current)->revision);
    if (renewed) k->held_[key] = {lease->second + 1, *renewed, k->valid_until(sent)};
  }
  k->thread_ = std::thread([raw = k.get()] {
    pthread_setname_np(pthread_self(), "keel lease");
    raw->loop(true);
  });
  k->watcher_ = std::thread([raw = k.get()] {
    pthread_setname_np(pthread_self(), "keel leases");
    raw->loop(false);
  });
  return k;
}

lease_keeper::~lease_keeper() { stop(); }

void lease_keeper::stop() {
  {
    std::lock_guard lock{mutex_};
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (watcher_.joinable()) watcher_.join();
  for (auto& t : takeovers_)
    if (t.joinable()) t.join();
}

bool lease_keeper::holds(const std::string& domain) const {
  std::lock_guard lock{mutex_};
  return held_.count(domain) > 0;
}

std::vector<std::string> lease_keeper::domains() const {
  std::lock_guard lock{mutex_};
  std::vector<std::string> out;
  for (const auto& [domain, lease] : held_) out.push_back(domain);
  return out;
}

void lease_keeper::take_over_again() {
  if (!on_.take_over) return;
  std::lock_guard lock{mutex_};
  for (const auto& [domain, lease] : held_) {
    if (domain == me_) continue;
    takeovers_.emplace_back([this, domain = domain, epoch = lease.epoch] {
      pthread_setname_np(pthread_self(), "keel takeover");
      on_.take_over(domain, epoch);
    });
  }
}

bool lease_keeper::valid(const std::string& domain, std::int64_t now_ms) const {
  std::lock_guard lock{mutex_};
  auto it = held_.find(domain);
  return it != held_.end() && now_ms < it->second.valid_until_ms;
}

std::uint64_t lease_keeper::epoch_of(const std::string& domain) const {
  std::lock_guard lock{mutex_};
  auto it = held_.find(domain);
  return it == held_.end() ? 0 : it->second.epoch;
}

void lease_keeper::loop(bool renewing) {
  // Renewing and watching on threads of their own: a watch slowed by the broker (a request
  // waiting out its timeout while a server is lost) never delays a renewal.
  auto every = std::chrono::milliseconds(std::max<std::int64_t>(100, lease_ms_ / 4));
  while (true) {
    {
      std::unique_lock lock{mutex_};
      if (wake_.wait_for(lock, every, [this] { return stopping_; })) return;
    }
    auto round = steady_ms();
    if (renewing) renew();
    else watch();
    // A slow renewal leaves this node's leases close to lapsing (its writes stop counting).
    if (auto took = steady_ms() - round; renewing && took > lease_ms_ / 2)
      logger()->warn("renewing the leases took {} ms (a lease lasts {} ms)", took, lease_ms_);
  }
}

void lease_keeper::renew() {
  std::map<std::string, held_lease> now;
  {
    std::lock_guard lock{mutex_};
    now = held_;
  }
  for (const auto& [domain, lease] : now) {
    auto sent = steady_ms();
    auto renewed = bucket_.update(domain, encode(me_, lease.epoch), lease.revision);
    if (renewed) {
      std::lock_guard lock{mutex_};
      if (auto it = held_.find(domain); it != held_.end()) {
        it->second.revision = *renewed;
        it->second.valid_until_ms = valid_until(sent);
      }
      continue;
    }
    if (renewed.error().code != errc::conflict) {
      logger()->warn("the lease on the runs of {} was not renewed: {}", domain, renewed.error().message);
      continue;
    }
    // Refused: the key moved on. A renewal that timed out may have been written all the same
    // (then the key holds this lease as it was, at a newer revision): still ours.
    if (auto current = bucket_.get_entry(domain); current && *current) {
      if (auto value = decode((*current)->value); value && value->first == me_ && value->second == lease.epoch) {
        std::lock_guard lock{mutex_};
        if (auto it = held_.find(domain); it != held_.end()) it->second.revision = (*current)->revision;
        continue;
      }
    } else if (!current) {
      logger()->warn("the lease on the runs of {} was refused and cannot be read: {}", domain, current.error().message);
      continue;  // asked again at the next renewal
    }
    {
      std::lock_guard lock{mutex_};
      held_.erase(domain);
    }
    if (on_.lost) on_.lost(domain, "its lease was taken by another orchestrator");
  }
}

void lease_keeper::watch() {
  // A lease's silence counts only while this node could see the bucket: when the bucket was out
  // of reach (a nats-server lost, its streams electing a leader), nobody could renew, and every
  // lease's clock starts again once it is back.
  auto keys = bucket_.keys();
  if (!keys) {
    blind_ = true;
    return;
  }
  auto now = steady_ms();
  if (blind_) {
    for (auto& [key, seen] : seen_) seen.since_ms = now;
    blind_ = false;
  }
  for (const auto& key : *keys) {
    if (holds(key)) continue;
    auto current = bucket_.get_entry(key);
    if (!current) {
      blind_ = true;
      return;
    }
    if (!*current) continue;
    auto& seen = seen_[key];
    if (seen.revision != (*current)->revision) {
      seen = {(*current)->revision, now};
      continue;
    }
    if (now - seen.since_ms < lease_ms_) continue;
    auto lease = decode((*current)->value);
    if (!lease) continue;
    // Unchanged for a whole lease: its holder is gone. One of the orchestrators that see it
    // wins this write; the others are refused.
    auto epoch = lease->second + 1;
    auto sent = steady_ms();
    auto claimed = bucket_.update(key, encode(me_, epoch), (*current)->revision);
    if (!claimed) {
      seen.since_ms = now;
      continue;
    }
    logger()->warn("node {} (lease held by {}) has not renewed its lease for {} ms: taking its runs over (epoch {})",
                   key, lease->first, now - seen.since_ms, epoch);
    {
      std::lock_guard lock{mutex_};
      held_[key] = {epoch, *claimed, valid_until(sent)};
    }
    seen_.erase(key);
    if (on_.take_over) {
      std::lock_guard lock{mutex_};
      takeovers_.emplace_back([this, key, epoch] {
        pthread_setname_np(pthread_self(), "keel takeover");
        on_.take_over(key, epoch);
      });
    }
  }
}

} // namespace keel::actors
