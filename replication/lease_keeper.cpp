#include "replication/lease_keeper.hpp"
#include "replication/replication_log.hpp"

#include <climits>

#include "runtime/log.hpp"
#include "runtime/wire.hpp"

#include <spdlog/spdlog.h>

namespace keel::replication {

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

lease_keeper::lease_keeper(environment& env, lease_bucket& bucket, std::string me, std::int64_t lease_ms, hooks on)
  : env_(env), bucket_(bucket), me_(std::move(me)), lease_ms_(lease_ms), on_(std::move(on)) {}

result<std::unique_ptr<lease_keeper>> lease_keeper::start(environment& env, lease_bucket& bucket, std::string me,
                                                          std::int64_t lease_ms, hooks on) {
  std::unique_ptr<lease_keeper> k(new lease_keeper(env, bucket, me, lease_ms, std::move(on)));
  const std::atomic<bool> never{false};
  // Our own lease: new, or ours again in the next epoch; held by another, we were taken over.
  // A bucket just made on a new cluster answers once its leader is elected: asked again, 30 s.
  auto deadline = env.now_ms() + 30'000;
  for (int tries = 0;; ++tries) {
    auto current = bucket.get_entry(me);
    if (!current && current.error().code != errc::conflict && env.now_ms() < deadline) {
      env.sleep_ms(250, never);
      continue;
    }
    if (!current) return current.error();
    if (!*current) {
      auto sent = env.now_ms();
      auto made = bucket.create(me, encode(me, 1));
      if (made) {
        k->held_[me] = {1, *made, k->valid_until(sent)};
        break;
      }
      if (made.error().code != errc::conflict && env.now_ms() < deadline) {
        env.sleep_ms(250, never);
        continue;
      }
      if (made.error().code != errc::conflict || tries > 3) return made.error();
      continue;  // another wrote it in between: read it again
    }
    auto lease = decode((*current)->value);
    if (!lease) return lease.error();
    if (lease->first != me)
      return make_error(errc::conflict, "the runs of node " + me + " were taken over by " + lease->first +
                                          " (epoch " + std::to_string(lease->second) + ")");
    // Ours already: an earlier run of this node, dead, or only paused (a second copy started
    // under the same name). A paused one still counts its lease valid until a lease after its
    // last renewal, which was before this read returned: this node counts none of its leases
    // valid until a whole lease after that. (Its write in the next epoch makes the other's next
    // renewal fail: it stops.)
    k->not_before_ms_ = env.now_ms() + lease_ms;
    auto sent = env.now_ms();
    auto renewed = bucket.update(me, encode(me, lease->second + 1), (*current)->revision);
    if (renewed) {
      k->held_[me] = {lease->second + 1, *renewed, k->valid_until(sent)};
      break;
    }
    if (renewed.error().code != errc::conflict && env.now_ms() < deadline) {
      env.sleep_ms(250, never);
      continue;
    }
    if (renewed.error().code != errc::conflict || tries > 3) return renewed.error();
  }
  // Leases of other nodes this one held when it stopped: held again (in a new epoch), if still
  // ours. They count while this node's own lease does.
  // A broker that cannot answer for a moment does not stop the node's start: asked again, 30 s.
  deadline = env.now_ms() + 30'000;
  auto keys = bucket.keys();
  while (!keys && env.now_ms() < deadline) {
    env.sleep_ms(250, never);
    keys = bucket.keys();
  }
  if (!keys) return keys.error();
  // Each such key is held again or found taken, never skipped on an error: a key naming this node
  // counts while this node's lease does, so one left out would be served by nobody, ever.
  for (const auto& key : *keys) {
    if (key == me) continue;
    while (true) {
      auto current = bucket.get_entry(key);
      if (!current) {
        if (env.now_ms() >= deadline) return current.error();
        env.sleep_ms(250, never);
        continue;
      }
      if (!*current) break;
      auto lease = decode((**current).value);
      if (!lease || lease->first != me) break;
      auto renewed = bucket.update(key, encode(me, lease->second + 1), (**current).revision);
      if (renewed) {
        k->held_[key] = {lease->second + 1, *renewed, 0};
        break;
      }
      if (renewed.error().code != errc::conflict) {
        if (env.now_ms() >= deadline) return renewed.error();
        env.sleep_ms(250, never);
      }
    }
  }
  k->renewer_ = env.spawn("keel lease", [raw = k.get()] { raw->loop(true); });
  k->watcher_ = env.spawn("keel leases", [raw = k.get()] { raw->loop(false); });
  return k;
}

lease_keeper::~lease_keeper() { stop(); }

void lease_keeper::stop() {
  if (stopping_.exchange(true)) return;
  if (renewer_) renewer_->join();
  if (watcher_) watcher_->join();
  std::vector<takeover> left;
  {
    std::lock_guard lock{mutex_};
    left = std::move(takeovers_);
  }
  for (auto& t : left) t.thread->join();
}

bool lease_keeper::stopping() const { return stopping_.load(); }

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
  for (const auto& [domain, lease] : held_)
    if (domain != me_) start_takeover(domain, lease.epoch);
}

std::int64_t lease_keeper::own_renewal_sent_ms() const {
  std::lock_guard lock{mutex_};
  auto own = held_.find(me_);
  if (own == held_.end() || own->second.valid_until_ms == 0) return INT64_MIN / 2;
  return own->second.valid_until_ms - (lease_ms_ - lease_ms_ / 10);  // see valid_until()
}

bool lease_keeper::valid(const std::string& domain) const { return valid_at(domain, env_.now_ms()); }

bool lease_keeper::valid_at(const std::string& domain, std::int64_t now_ms) const {
  std::lock_guard lock{mutex_};
  auto own = held_.find(me_);
  return held_.count(domain) > 0 && own != held_.end() && now_ms < own->second.valid_until_ms && now_ms >= not_before_ms_;
}

std::uint64_t lease_keeper::epoch_of(const std::string& domain) const {
  std::lock_guard lock{mutex_};
  auto it = held_.find(domain);
  return it == held_.end() ? 0 : it->second.epoch;
}

std::pair<lease_keeper::verdict, std::uint64_t> lease_keeper::named(const std::string& domain, std::uint64_t epoch) {
  std::lock_guard lock{mutex_};
  auto it = held_.find(domain);
  if (it == held_.end() || stopping_) return {verdict::lost, 0};
  auto mine = it->second.epoch;
  if (epoch <= mine) return {verdict::held, mine};
  if (auto d = disproved_.find(domain); d == disproved_.end() || epoch > d->second) {
    auto& suspect = suspects_[domain];
    suspect = std::max(suspect, epoch);
  }
  return {verdict::unsure, mine};
}

void lease_keeper::check_suspects() {
  std::map<std::string, std::uint64_t> suspects;
  {
    std::lock_guard lock{mutex_};
    suspects.swap(suspects_);
  }
  for (const auto& [domain, named_epoch] : suspects) {
    auto current = bucket_.get_entry(domain);
    std::uint64_t mine = 0;
    {
      std::lock_guard lock{mutex_};
      auto it = held_.find(domain);
      if (it == held_.end()) continue;
      mine = it->second.epoch;
      if (!current) {  // not read: asked again next round
        auto& again = suspects_[domain];
        again = std::max(again, named_epoch);
        continue;
      }
    }
    auto lease = *current ? decode((**current).value) : result<std::pair<std::string, std::uint64_t>>(make_error(errc::not_found, "none"));
    // Taken only when the lease says so for certain: a newer epoch, or this one held by another.
    // An older epoch (a replica that has not caught up) or no readable lease takes nothing.
    bool taken = lease && (lease->second > mine || (lease->second == mine && lease->first != me_));
    if (!taken) {
      if (lease && lease->first == me_ && lease->second == mine) {
        {
          std::lock_guard lock{mutex_};
          auto& d = disproved_[domain];
          d = std::max(d, named_epoch);
        }
        logger()->warn("node {}: a message named epoch {} of it; its lease names this node in epoch {}: not believed "
                       "(such messages are told to ask again)", domain, named_epoch, mine);
      }
      continue;
    }
    std::vector<std::string> gone;
    {
      std::lock_guard lock{mutex_};
      if (domain == me_) {  // its own lease taken: every domain goes with it, as in renew()
        for (const auto& [d, l] : held_) gone.push_back(d);
        held_.clear();
      } else if (held_.erase(domain)) {
        gone.push_back(domain);
      }
      for (const auto& d : gone) disproved_.erase(d);
    }
    auto who = lease->first + " (epoch " + std::to_string(lease->second) + ")";
    logger()->warn("node {}: a message named epoch {} of it, above this node's {}; its lease names {}: its runs are no "
                   "longer this node's", domain, named_epoch, mine, who);
    if (on_.lost)
      for (const auto& d : gone) on_.lost(d, "a message named epoch " + std::to_string(named_epoch) + " of " + domain +
                                               " and its lease names " + who + " now");
  }
}

void lease_keeper::loop(bool renewing) {
  // Renewing and watching on threads of their own: a watch slowed by the broker (a request
  // waiting out its timeout while a server is lost) never delays a renewal.
  // A renewal that did not go through is tried again soon, not a quarter of a lease later: a
  // broker back from a short outage must find every live holder renewing.
  auto every = std::max<std::int64_t>(100, lease_ms_ / 4);
  auto soon = std::max<std::int64_t>(10, lease_ms_ / 50);
  auto wait = every;
  while (true) {
    env_.sleep_ms(wait, stopping_);
    if (stopping_) return;
    auto round = env_.now_ms();
    wait = every;
    if (renewing) {
      if (!renew()) wait = soon;
    } else {
      watch();
    }
    // A slow renewal leaves this node's leases close to lapsing (its writes stop counting).
    if (auto took = env_.now_ms() - round; renewing && took > lease_ms_ / 2)
      logger()->warn("renewing the lease took {} ms (a lease lasts {} ms)", took, lease_ms_);
  }
}

bool lease_keeper::renew() {
  // One write, however many domains this node holds: the others follow its own lease.
  held_lease own;
  {
    std::lock_guard lock{mutex_};
    auto it = held_.find(me_);
    if (it == held_.end()) return true;  // lost already
    own = it->second;
  }
  auto sent = env_.now_ms();
  auto renewed = bucket_.update(me_, encode(me_, own.epoch), own.revision);
  if (renewed) {
    std::lock_guard lock{mutex_};
    if (auto it = held_.find(me_); it != held_.end()) {
      it->second.revision = *renewed;
      it->second.valid_until_ms = valid_until(sent);
    }
    return true;
  }
  if (renewed.error().code != errc::conflict) {
    logger()->warn("the lease of {} was not renewed: {}", me_, renewed.error().message);
    return false;
  }
  // Refused: the key moved on. A renewal that timed out may have been written all the same
  // (then the key holds this lease as it was, at a newer revision): still ours, though it counts
  // from the next renewal only (when it was written is not known).
  auto current = bucket_.get_entry(me_);
  if (!current) {
    logger()->warn("the lease of {} was refused and cannot be read: {}", me_, current.error().message);
    return false;  // asked again at the next renewal
  }
  if (*current) {
    if (auto value = decode((**current).value); value && value->first == me_ && value->second == own.epoch) {
      std::lock_guard lock{mutex_};
      if (auto it = held_.find(me_); it != held_.end()) it->second.revision = (**current).revision;
      return false;  // renewed again at once: this write's time is not known
    }
  }
  // Taken: every domain this node held goes with its own lease.
  std::vector<std::string> gone;
  {
    std::lock_guard lock{mutex_};
    for (const auto& [domain, lease] : held_) gone.push_back(domain);
    held_.clear();
  }
  if (on_.lost)
    for (const auto& domain : gone) on_.lost(domain, "its lease was taken by another orchestrator");
  return true;
}

bool lease_keeper::check_held() {
  for (const auto& domain : domains()) {
    if (domain == me_) continue;
    auto current = bucket_.get_entry(domain);
    if (!current) {
      blind_ = true;
      return false;
    }
    auto epoch = epoch_of(domain);
    auto lease = *current ? decode((**current).value) : result<std::pair<std::string, std::uint64_t>>(
                                                           make_error(errc::not_found, "no lease"));
    if (lease && lease->first == me_ && lease->second >= epoch) continue;
    if (!lease && *current) continue;  // unreadable: not known to be another's
    auto who = lease ? lease->first + " (epoch " + std::to_string(lease->second) + ")" : std::string("nobody");
    {
      std::lock_guard lock{mutex_};
      if (!held_.erase(domain)) continue;
    }
    logger()->warn("node {}: its lease names {} now, not this node (epoch {}): its runs are no longer this node's", domain,
                   who, epoch);
    if (on_.lost) on_.lost(domain, "its lease names " + who + " now");
  }
  return true;
}

result<std::pair<std::string, std::uint64_t>> lease_keeper::learned(const std::string& key, const lease_bucket::entry& entry) {
  auto lease = decode(entry.value);
  if (!lease) return lease;
  known_[key] = {lease->first, lease->second, entry.revision, env_.now_ms()};
  // Held by this node, which did not know: a claim whose answer was lost was made all the same.
  // Its runs are taken over now (left alone, nobody would ever serve them: the others see them
  // held by a live node).
  if (lease->first == me_ && key != me_) {
    std::lock_guard lock{mutex_};
    if (held_.count(me_) && !held_.count(key)) {
      logger()->warn("node {}: a claim of its lease whose answer was lost was made; taking its runs over (epoch {})", key,
                     lease->second);
      held_[key] = {lease->second, entry.revision, 0};
      start_takeover(key, lease->second);
    }
  }
  return lease;
}

bool lease_keeper::claim(const std::string& key, const known_lease& was, const std::string& why) {
  auto epoch = was.epoch + 1;
  auto claimed = bucket_.update(key, encode(me_, epoch), was.revision);
  if (!claimed) {
    known_[key].stale = true;  // read again: another claimed it, or it changed
    return false;
  }
  logger()->warn("node {} (lease held by {}) {}: taking its runs over (epoch {})", key, was.holder, why, epoch);
  known_[key] = {me_, epoch, *claimed, env_.now_ms()};
  seen_.erase(key);
  std::lock_guard lock{mutex_};
  if (!held_.count(me_)) return false;  // lost its own meanwhile: the claim goes with it
  held_[key] = {epoch, *claimed, 0};
  start_takeover(key, epoch);
  return true;
}

void lease_keeper::start_takeover(const std::string& domain, std::uint64_t epoch) {
  disproved_.erase(domain);  // a new tenure: what was disproved in an older one says nothing now
  if (!on_.take_over) return;
  auto id = ++takeovers_started_;
  takeovers_.push_back({id, env_.spawn("keel takeover", [this, domain, epoch, id] {
    // Said done however the takeover ends (an error ends it as a return would).
    struct done_guard {
      lease_keeper* self;
      std::uint64_t id;
      ~done_guard() {
        std::lock_guard lock{self->mutex_};
        self->takeovers_done_.push_back(id);
      }
    } done{this, id};
    on_.take_over(domain, epoch);
  })});
}

void lease_keeper::watch() {
  // A node whose own lease is gone claims nothing (it is stopping: a domain it took now would be
  // one it never learns it lost).
  if (!holds(me_)) return;
  // A lease's silence counts only while this node could see the bucket and write to it: when the
  // bucket was out of reach, or took no writes (a nats-server lost, its streams electing a leader,
  // the meta leader paused), nobody could renew, and every lease's clock starts again once it is
  // back. A node whose own renewals do not go through (its own lease not valid) takes the others'
  // silence for the broker's: a broker that cannot answer for a while never makes the nodes take
  // each other's runs (and stop, each finding its own taken).
  if (!valid(me_)) {
    blind_ = true;
    return;
  }
  check_suspects();
  auto keys = bucket_.keys();
  if (!keys) {
    blind_ = true;
    return;
  }
  auto now = env_.now_ms();
  if (blind_) {
    for (auto& [key, seen] : seen_) seen.since_ms = now;
    blind_ = false;
  }
  // Every fourth round, the keys held for others are read back: one that names another holder
  // (or an older epoch of this one: the bucket lost a write) is no longer this node's.
  if (++rounds_ % 4 == 0 && !check_held()) return;
  // Read: keys not seen before, and every node's own lease (it changes at each renewal). A key
  // held on another's behalf is written once, when claimed: read again only when a claim of it
  // is refused. So a round costs one read per node that holds its own lease, however many
  // domains there are.
  for (const auto& key : *keys) {
    if (holds(key)) continue;
    auto it = known_.find(key);
    if (it != known_.end() && it->second.holder != key && !it->second.stale) continue;
    auto current = bucket_.get_entry(key);
    if (!current) {
      blind_ = true;
      return;
    }
    if (!*current) {
      known_.erase(key);
      continue;
    }
    (void)learned(key, **current);
  }
  for (auto it = known_.begin(); it != known_.end();) {
    const auto key = it->first;
    const auto was = it->second;
    ++it;  // claim() may erase the entry
    if (holds(key) || was.holder == me_ || was.stale) continue;
    if (was.holder == key) {
      // A node's own lease: gone once unchanged for a whole lease from when this node saw it.
      auto& seen = seen_[key];
      if (seen.revision != was.revision) {
        seen = {was.revision, was.read_ms};
        continue;
      }
      auto silent_ms = env_.now_ms() - seen.since_ms;
      if (silent_ms < lease_ms_) continue;
      // Its silence is its own only if the broker took this node's writes meanwhile: a renewal of
      // this node's own lease sent well inside that silence went through. Otherwise the broker
      // may have taken nobody's writes (a paused leader that applies them all once it wakes,
      // this claim among them): the other would lose its runs for the broker's fault.
      if (own_renewal_sent_ms() < seen.since_ms + lease_ms_ / 2) continue;
      claim(key, was, "has not renewed its lease for " + std::to_string(silent_ms) + " ms");
      continue;
    }
    // Held on behalf of another: it counts while its holder's own lease does. Once that lease
    // moved to someone else, its holder is gone (taken over only after a whole lease of silence).
    auto holder = known_.find(was.holder);
    if (holder != known_.end() && holder->second.holder == was.holder) continue;
    if (holder == known_.end() || holder->second.stale) {
      // Not read this round (its key was made after the round listed the keys: a new member
      // that claimed at once) or read before a refused claim: read now, not taken as gone.
      auto current = bucket_.get_entry(was.holder);
      if (!current) {
        blind_ = true;
        return;
      }
      if (*current) {
        auto lease = learned(was.holder, **current);
        if (!lease || lease->first == was.holder) continue;  // unreadable is not known to be gone
      }
    }
    claim(key, was, "is held for " + was.holder + ", whose own lease was taken over");
  }
  // Takeovers that ended are joined (a node may take over many in its life).
  std::vector<takeover> ended;
  {
    std::lock_guard lock{mutex_};
    for (auto done : takeovers_done_)
      for (auto t = takeovers_.begin(); t != takeovers_.end(); ++t)
        if (t->id == done) {
          ended.push_back(std::move(*t));
          takeovers_.erase(t);
          break;
        }
    takeovers_done_.clear();
  }
  for (auto& t : ended) t.thread->join();
}

} // namespace keel::replication
