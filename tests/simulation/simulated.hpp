// The replication layer's interfaces in a simulated world (tests/simulation/world.hpp): a node's
// environment (its clock, sleeps and threads) and a lease bucket whose calls take time, are
// sometimes slow, sometimes lose their answer (done or not), and fail while the broker is out.
#pragma once

#include "replication/environment.hpp"
#include "replication/lease_bucket.hpp"
#include "tests/simulation/world.hpp"

#include <climits>
#include <functional>
#include <map>
#include <vector>

namespace keel::simulation {

class simulated_thread final : public replication::joinable {
public:
  simulated_thread(world& w, int id) : world_(w), id_(id) {}
  void join() override { world_.join(id_); }

private:
  world& world_;
  int id_;
};

// A node's environment. Its clock starts at an origin of its own (machines boot at different
// times); `clock_stops_while_suspended` is CLOCK_MONOTONIC's behaviour (std::steady_clock), the
// alternative is CLOCK_BOOTTIME's, which keel uses.
class simulated_environment final : public replication::environment {
public:
  // `rate`: how fast this machine's clock runs against the world's (crystals differ by parts per
  // million; a margin of a few percent covers far worse).
  simulated_environment(world& w, int node, std::int64_t origin_ms, bool clock_stops_while_suspended, double rate = 1.0)
    : world_(w), node_(node), origin_ms_(origin_ms), stops_(clock_stops_while_suspended), rate_(rate) {}
  std::int64_t now_ms() override {
    auto elapsed = world_.now_ms() - (stops_ ? world_.suspended_ms(node_) : 0);
    return origin_ms_ + static_cast<std::int64_t>(static_cast<double>(elapsed) * rate_);
  }
  void sleep_ms(std::int64_t ms, const std::atomic<bool>&) override {
    world_.sleep(static_cast<std::int64_t>(static_cast<double>(ms) / rate_ + 0.999));
  }
  std::unique_ptr<replication::joinable> spawn(const std::string& name, std::function<void()> body) override {
    return std::make_unique<simulated_thread>(world_, world_.spawn(node_, name, std::move(body)));
  }

private:
  world& world_;
  int node_;
  std::int64_t origin_ms_;
  bool stops_;
  double rate_;
};

struct bucket_faults {
  std::int64_t delay_ms_max = 5;        // each way, usually
  double slow = 0.05;                   // an answer that takes long (a slow server)
  std::int64_t slow_ms_max = 600;
  double lost_answer = 0.02;            // the write is made or not; the caller hears a timeout
  std::int64_t timeout_ms = 2000;       // how long a caller waits for an answer
  std::int64_t until_ms = INT64_MAX;    // slow and lost answers stop then (outages are asked for)
  // A read answered by a replica behind the stream's leader (a direct get may be served by any
  // replica): what the bucket held up to `stale_ms_max` earlier. Writes are the leader's.
  double stale_read = 0;
  std::int64_t stale_ms_max = 0;
};

// One bucket the whole world shares: a write checked against a revision is atomic at one
// instant, between a delay to reach it and a delay for the answer.
class simulated_bucket {
public:
  simulated_bucket(world& w, bucket_faults faults) : world_(w), faults_(faults) {}
  // Says what a value holds, for the trace of every write (empty: writes are not traced).
  std::function<std::string(const std::string&)> describe;
  // The broker answers nothing until then (a server lost, a leader being elected).
  void out_until(std::int64_t ms) { out_until_ms_ = std::max(out_until_ms_, ms); }
  // The broker answers reads but takes no write until then (the stream's leader paused): a
  // write times out, and some are made once it is back, after their caller was told "timeout".
  void writes_out_until(std::int64_t ms) { writes_out_until_ms_ = std::max(writes_out_until_ms_, ms); }

  result<std::optional<replication::lease_bucket::entry>> get_entry(const std::string& key) {
    return call<std::optional<replication::lease_bucket::entry>>(false, [&]() -> result<std::optional<replication::lease_bucket::entry>> {
      if (auto behind = lag_ms()) {
        stale_reads_ += 1;
        return as_of(key, world_.now_ms() - behind);
      }
      auto it = data_.find(key);
      if (it == data_.end()) return std::optional<replication::lease_bucket::entry>{};
      return std::optional<replication::lease_bucket::entry>(it->second);
    });
  }
  // Reads answered by a replica behind, so far.
  std::int64_t stale_reads() const { return stale_reads_; }
  result<std::uint64_t> create(const std::string& key, const std::string& value) {
    return call<std::uint64_t>(true, [this, key, value]() -> result<std::uint64_t> {
      if (data_.count(key)) return make_error(errc::conflict, "the key exists");
      data_[key] = {value, ++revision_};
      remember(key);
      traced(key, value);
      return revision_;
    });
  }
  result<std::uint64_t> update(const std::string& key, const std::string& value, std::uint64_t revision) {
    return call<std::uint64_t>(true, [this, key, value, revision]() -> result<std::uint64_t> {
      auto it = data_.find(key);
      if (it == data_.end() || it->second.revision != revision) return make_error(errc::conflict, "wrong last sequence");
      it->second = {value, ++revision_};
      remember(key);
      traced(key, value);
      return revision_;
    });
  }
  result<std::vector<std::string>> keys() {
    return call<std::vector<std::string>>(false, [&]() -> result<std::vector<std::string>> {
      auto behind = lag_ms();
      std::vector<std::string> out;
      for (const auto& [k, v] : data_)
        if (!behind || as_of(k, world_.now_ms() - behind)) out.push_back(k);
      return out;
    });
  }
  std::optional<replication::lease_bucket::entry> peek(const std::string& key) const {
    auto it = data_.find(key);
    if (it == data_.end()) return std::nullopt;
    return it->second;
  }

private:
  // How far behind the replica answering a read is (0: the leader answers).
  std::int64_t lag_ms() {
    if (faults_.stale_read <= 0 || world_.now_ms() >= faults_.until_ms || !world_.chance(faults_.stale_read)) return 0;
    return world_.uniform(1, faults_.stale_ms_max);
  }
  void remember(const std::string& key) {
    auto& versions = history_[key];
    versions.emplace_back(world_.now_ms(), data_[key]);
    // Only what a replica could still be behind on is kept (and the version before it).
    while (versions.size() > 1 && versions[1].first < world_.now_ms() - faults_.stale_ms_max)
      versions.erase(versions.begin());
  }
  // The key as the leader held it at `at_ms`.
  std::optional<replication::lease_bucket::entry> as_of(const std::string& key, std::int64_t at_ms) const {
    auto it = history_.find(key);
    if (it == history_.end()) return std::nullopt;
    std::optional<replication::lease_bucket::entry> held;
    for (const auto& [when, version] : it->second)
      if (when <= at_ms) held = version;
    return held;
  }
  void traced(const std::string& key, const std::string& value) {
    if (describe) world_.note("bucket: " + key + " := " + describe(value) + " (revision " + std::to_string(revision_) + ")");
  }
  template <typename T, typename F>
  result<T> call(bool write, F apply) {
    // On its way to the server (half the time at once: nothing else happens in between).
    if (world_.chance(0.5)) world_.sleep(world_.uniform(1, faults_.delay_ms_max));
    if (world_.now_ms() < out_until_ms_) {
      world_.sleep(faults_.timeout_ms);
      return make_error(errc::unavailable, "no responders (simulated outage)");
    }
    if (write && world_.now_ms() < writes_out_until_ms_) {
      if (world_.chance(0.3)) apply_later(apply, writes_out_until_ms_ - world_.now_ms() + world_.uniform(0, 500));
      world_.sleep(faults_.timeout_ms);
      return make_error(errc::timeout, "no answer (simulated: writes are not taken)");
    }
    bool faulty = world_.now_ms() < faults_.until_ms;
    if (faulty && world_.chance(faults_.lost_answer)) {
      // Made at once, made after the caller gave up, or not made at all.
      if (write) {
        if (world_.chance(0.4)) (void)apply();
        else if (world_.chance(0.3)) apply_later(apply, world_.uniform(faults_.timeout_ms / 2, 2 * faults_.timeout_ms));
      }
      world_.sleep(faults_.timeout_ms);
      return make_error(errc::timeout, "no answer (simulated)");
    }
    auto out = apply();
    world_.sleep(faulty && world_.chance(faults_.slow) ? world_.uniform(faults_.delay_ms_max, faults_.slow_ms_max)
                                             : world_.uniform(1, faults_.delay_ms_max));
    return out;
  }
  template <typename F>
  void apply_later(F apply, std::int64_t after_ms) {
    world_.spawn(-1, "a late write", [this, apply, after_ms] {
      world_.sleep(after_ms);
      (void)apply();
    });
  }
  world& world_;
  bucket_faults faults_;
  std::int64_t out_until_ms_ = 0;
  std::int64_t writes_out_until_ms_ = 0;
  std::map<std::string, replication::lease_bucket::entry> data_;
  std::map<std::string, std::vector<std::pair<std::int64_t, replication::lease_bucket::entry>>> history_;
  std::uint64_t revision_ = 0;
  std::int64_t stale_reads_ = 0;
};

// A node's handle on the shared bucket.
class bucket_view final : public replication::lease_bucket {
public:
  explicit bucket_view(simulated_bucket& b) : bucket_(b) {}
  result<std::optional<entry>> get_entry(const std::string& key) override { return bucket_.get_entry(key); }
  result<std::uint64_t> create(const std::string& key, const std::string& value) override { return bucket_.create(key, value); }
  result<std::uint64_t> update(const std::string& key, const std::string& value, std::uint64_t revision) override {
    return bucket_.update(key, value, revision);
  }
  result<std::vector<std::string>> keys() override { return bucket_.keys(); }

private:
  simulated_bucket& bucket_;
};

} // namespace keel::simulation
