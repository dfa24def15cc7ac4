// Who serves which orchestrator's runs, with the replicated run log on. Each orchestrator holds a
// lease on its own runs: a key (its node id) in a replicated key-value bucket whose value names
// the holder and an epoch, rewritten with a revision check four times per lease_ms. An
// orchestrator whose lease has not changed for lease_ms is taken to be gone: the first other
// orchestrator to rewrite the key (revision check: one wins) holds its runs from then on. A key
// held on another's behalf is written once, when claimed, and counts while its holder's own lease
// does: a node renews one key however many domains it took over (a node that restarts often
// leaves a domain each time). Once a holder's own lease is taken, the keys it held for others
// are claimed in turn. A holder whose own rewrite is refused has lost everything it held.
#pragma once

#include "replication/environment.hpp"
#include "replication/lease_bucket.hpp"
#include "runtime/result.hpp"

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace keel::replication {

class lease_keeper {
public:
  // The hooks must not stop or destroy the keeper (they run on its threads, which stop() joins).
  struct hooks {
    // Runs on a thread of its own once the domain (a node id) is held: take its runs over.
    std::function<void(const std::string& domain, std::uint64_t epoch)> take_over;
    // The domain was taken by another: stop acting for its runs. On the keeper's threads, or on
    // the thread that called confirm().
    std::function<void(const std::string& domain, const std::string& why)> lost;
  };
  // Takes this node's own lease, and back every lease this node held before it stopped.
  // errc::conflict when its own runs were taken over meanwhile: it must rejoin as a new member.
  // Its clock, sleeps and threads are `env`'s; `env` and `bucket` outlive it.
  static result<std::unique_ptr<lease_keeper>> start(environment& env, lease_bucket& bucket, std::string me,
                                                     std::int64_t lease_ms, hooks on);
  ~lease_keeper();
  lease_keeper(const lease_keeper&) = delete;
  lease_keeper& operator=(const lease_keeper&) = delete;

  // Takes over again, each on a thread of its own, every other node's domain held again at
  // start: a takeover cut short by this node's stop is done whole (read, fence, serve).
  void take_over_again();

  bool holds(const std::string& domain) const;
  bool stopping() const;  // stop() was called: a takeover under way gives up
  // Whether the lease on `domain` is certainly still this node's now (the environment's clock): held,
  // and the last renewal of this node's own lease was sent less than a lease ago (less a margin). Another orchestrator
  // takes a lease over only after seeing it unchanged for a whole lease from the moment it saw
  // the renewal, so a write the broker confirmed while this holds landed before any takeover
  // read the log. A node acknowledges a write only if this held once it was confirmed.
  bool valid(const std::string& domain) const;
  bool valid_at(const std::string& domain, std::int64_t now_ms) const;  // at a time of the environment's clock
  std::vector<std::string> domains() const;  // every domain held
  std::uint64_t epoch_of(const std::string& domain) const;  // 0 when not held
  // A message (a worker's question or result) named epoch `epoch` of `domain`: whether this node
  // may answer it, and in which epoch. Above the epoch this node holds the domain in, another node
  // may have taken it over while this one's clock said its lease held (a pause, a clock that did
  // not count a sleep); the message alone is not believed (any broker client can name an epoch):
  // the answer is `unsure` (the sender is told to ask again), and the watcher reads the lease on
  // its next round. A lease that names another holder in this node's epoch or any holder in a
  // newer one drops the domain (`lost`, on the watcher's thread). One that names this node in its
  // epoch shows the epoch named to be false: it is logged, and messages naming it stay `unsure`
  // (no answer of this node is worth acting on to a sender that believes a newer owner exists;
  // only an orchestrator's credentials can send such an epoch). Never blocks: no read is made on
  // the caller's thread, and at most one per held domain per watcher round.
  enum class verdict { held, lost, unsure };
  std::pair<verdict, std::uint64_t> named(const std::string& domain, std::uint64_t epoch);
  void stop();

  // The value of a lease: who holds it, in which epoch.
  static std::string encode(const std::string& holder, std::uint64_t epoch);
  static result<std::pair<std::string, std::uint64_t>> decode(const std::string& bytes);

private:
  lease_keeper(environment& env, lease_bucket& bucket, std::string me, std::int64_t lease_ms, hooks on);
  void loop(bool renewing);  // renewing, or watching the others
  bool renew();  // false: not renewed (tried again soon)
  void watch();
  // What this node last read of another's lease (the watching thread only).
  struct known_lease {
    std::string holder;
    std::uint64_t epoch = 0;
    std::uint64_t revision = 0;
    // When the read that found this revision returned: the revision was written before then. A
    // time taken before the read (when the round began) could be before the write, and a lease
    // would be claimed while its holder still counted it valid.
    std::int64_t read_ms = 0;
    // A claim of it was refused: read again next round. Until then its holder is taken as still
    // holding it (not knowing who holds a lease is not knowing that nobody does).
    bool stale = false;
  };
  // Records what a read of `key` found (and takes over a lease found to be this node's).
  result<std::pair<std::string, std::uint64_t>> learned(const std::string& key, const lease_bucket::entry& entry);
  // Claims `key` over what was read of it; false when another wrote it first.
  bool claim(const std::string& key, const known_lease& was, const std::string& why);
  void start_takeover(const std::string& domain, std::uint64_t epoch);  // mutex_ held

  struct held_lease {
    std::uint64_t epoch = 0;
    std::uint64_t revision = 0;
    std::int64_t valid_until_ms = 0;  // steady time; see valid()
  };
  std::int64_t valid_until(std::int64_t sent_ms) const { return sent_ms + lease_ms_ - lease_ms_ / 10; }
  std::int64_t own_renewal_sent_ms() const;  // when this node's last renewal that went through was sent
  struct seen_lease {
    std::uint64_t revision = 0;
    std::int64_t since_ms = 0;  // when the read that first found the revision returned
  };
  environment& env_;
  lease_bucket& bucket_;
  std::string me_;
  std::int64_t lease_ms_;
  hooks on_;
  mutable std::mutex mutex_;
  // Every domain held; only this node's own entry has a meaningful valid_until_ms (the others
  // count while it does).
  std::map<std::string, held_lease> held_;
  // named()'s bookkeeping (mutex_): the newest epoch named per domain, not yet checked against
  // its lease; and per domain the newest its lease was read to disprove (not read again for it).
  std::map<std::string, std::uint64_t> suspects_;
  std::map<std::string, std::uint64_t> disproved_;
  void check_suspects();  // the watcher's thread
  std::map<std::string, seen_lease> seen_;    // the watching thread only
  std::map<std::string, known_lease> known_;  // the watching thread only
  bool blind_ = false;                      // the bucket was out of reach (the watching thread only)
  std::uint64_t rounds_ = 0;                // watching rounds (the watching thread only)
  // Reads back the keys held for others; false when the bucket could not be read.
  bool check_held();
  std::atomic<bool> stopping_{false};
  // Started under a name whose lease was already this node's (a restart, or a second copy while
  // the first is only paused): no lease counts before then (guarded by mutex_ once started).
  std::int64_t not_before_ms_ = 0;
  struct takeover {
    std::uint64_t id = 0;
    std::unique_ptr<joinable> thread;
  };
  std::uint64_t takeovers_started_ = 0;
  std::vector<takeover> takeovers_;
  std::vector<std::uint64_t> takeovers_done_;  // ended, to be joined by the watching thread
  std::unique_ptr<joinable> renewer_;  // renews
  std::unique_ptr<joinable> watcher_;  // watches the others' leases
};

} // namespace keel::replication
