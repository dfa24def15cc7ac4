// The leases that say which orchestrator serves which runs (replication/lease_keeper), against a real
// nats-server: a lease counts for its holder only while no other can have taken it.
#include "tests/support/broker_connect.hpp"
#include "replication/lease_keeper.hpp"
#include "broker/connection.hpp"
#include "broker/key_value.hpp"
#include "broker/work_queue.hpp"
#include "runtime/clock.hpp"
#include "tests/support/test_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>

using namespace keel;
using keel::replication::lease_keeper;

namespace {
keel::replication::environment& env() { return keel::replication::system_environment(); }
std::int64_t clock_ms() { return env().now_ms(); }
} // namespace
using keel::testing::nats_server;
using keel::testing::nats_cluster;
using keel::testing::connect;

namespace {

// One orchestrator's view of the lease bucket: its own connection and bucket.
struct member {
  std::shared_ptr<broker::connection> nats;
  std::unique_ptr<broker::jetstream> js;
  std::unique_ptr<broker::key_value> bucket;
  std::unique_ptr<keel::replication::lease_bucket> leases;
  explicit member(const std::string& url, std::int64_t replicas = 1) : nats(connect(url)) {
    auto j = broker::jetstream::open(nats);
    REQUIRE(j.ok());
    js = std::move(*j);
    auto b = broker::key_value::open(*js, {"LEASES", replicas, 0});
    REQUIRE(b.ok());
    bucket = std::move(*b);
    leases = keel::replication::jetstream_lease_bucket(*bucket);
  }
};
} // namespace

TEST_CASE("leases: a lease taken over had stopped counting for its old holder before the taker claimed it",
          "[replication][integration]") {
  nats_server server;
  member a_side(server.url()), b_side(server.url());
  constexpr std::int64_t lease_ms = 1000;
  auto a = lease_keeper::start(env(), *a_side.leases, "a", lease_ms, {});
  REQUIRE(a.ok());
  auto now = clock_ms();
  CHECK((*a)->valid_at("a", now));
  CHECK_FALSE((*a)->valid_at("a", now + lease_ms));  // never a whole lease ahead
  CHECK_FALSE((*a)->valid_at("b", now));             // not held

  std::mutex m;
  std::string taken;
  std::atomic<std::int64_t> claimed_at{0};
  lease_keeper::hooks on_b;
  on_b.take_over = [&](const std::string& domain, std::uint64_t) {
    claimed_at = clock_ms();
    std::lock_guard lock{m};
    taken = domain;
  };
  auto b = lease_keeper::start(env(), *b_side.leases, "b", lease_ms, on_b);
  REQUIRE(b.ok());
  // While a renews, b takes nothing.
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * lease_ms));
  CHECK(claimed_at == 0);
  CHECK((*a)->holds("a"));
  // a stops renewing (as a paused process does): b claims it after a whole lease of silence, and
  // by then a's lease no longer counted.
  (*a)->stop();
  REQUIRE_EVENTUALLY(10'000, claimed_at != 0);
  {
    std::lock_guard lock{m};
    CHECK(taken == "a");
  }
  CHECK_FALSE((*a)->valid_at("a", claimed_at));
  CHECK((*b)->holds("a"));
  CHECK((*b)->valid_at("a", clock_ms()));
  CHECK((*b)->epoch_of("a") == 2);
  // a, started again, finds its runs taken: it must rejoin as a new member.
  auto again = lease_keeper::start(env(), *a_side.leases, "a", lease_ms, {});
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == errc::conflict);
  CHECK(again.error().message.find("taken over by b") != std::string::npos);
}

TEST_CASE("leases: a holder that cannot reach the bucket stops counting its lease within a lease, and counts again once renewed",
          "[replication][integration]") {
  nats_server server;
  member a_side(server.url());
  constexpr std::int64_t lease_ms = 1000;
  auto a = lease_keeper::start(env(), *a_side.leases, "a", lease_ms, {});
  REQUIRE(a.ok());
  CHECK((*a)->valid_at("a", clock_ms()));
  server.kill();
  auto killed = clock_ms();
  // Whatever renewal was under way was sent before the kill: none counts a lease past it.
  CHECK_FALSE((*a)->valid_at("a", killed + lease_ms));
  REQUIRE_EVENTUALLY(5'000, !(*a)->valid_at("a", clock_ms()));
  CHECK((*a)->holds("a"));  // not lost: nobody took it
  server.restart();
  REQUIRE_EVENTUALLY(30'000, (*a)->valid_at("a", clock_ms()));
}

// A node that took over many others renews one key, not one per domain: the domains it holds for
// others are written once, when claimed, and count while its own lease does. Once its own lease is
// taken, each of them is claimed in turn, once, by a live node; and a chain (the taker dies too)
// ends with everything at the last node standing. Variants: 200 domains held; two watchers racing
// for them; the holder's validity read for a domain while its own lease lapses.
TEST_CASE("leases: 200 domains held for others cost one renewal, follow their holder's lease, and are each claimed once when it goes",
          "[replication][integration]") {
  nats_server server;
  member a_side(server.url()), b_side(server.url()), c_side(server.url());
  constexpr std::int64_t lease_ms = 1000;
  constexpr int domains = 200;
  // Domains a held when it stopped (earlier nodes it had taken over): held again when it starts.
  for (int i = 0; i < domains; ++i)
    REQUIRE(a_side.bucket->create("d" + std::to_string(i), lease_keeper::encode("a", 3)).ok());
  auto a = lease_keeper::start(env(), *a_side.leases, "a", lease_ms, {});
  REQUIRE(a.ok());
  CHECK((*a)->domains().size() == domains + 1);
  CHECK((*a)->epoch_of("d17") == 4);
  auto revision_of = [&](const std::string& key) {
    auto e = a_side.bucket->get_entry(key);
    REQUIRE(e.ok());
    REQUIRE(e->has_value());
    return (**e).revision;
  };
  auto d_revision = revision_of("d17"), a_revision = revision_of("a");

  std::mutex m;
  std::map<std::string, std::vector<std::string>> taken_by;  // domain -> who took it, in order
  std::atomic<std::int64_t> first_claim{0};
  auto hooks_for = [&](const std::string& who) {
    lease_keeper::hooks h;
    h.take_over = [&, who](const std::string& domain, std::uint64_t) {
      std::int64_t zero = 0;
      first_claim.compare_exchange_strong(zero, clock_ms());
      std::lock_guard lock{m};
      taken_by[domain].push_back(who);
    };
    return h;
  };
  auto b = lease_keeper::start(env(), *b_side.leases, "b", lease_ms, hooks_for("b"));
  REQUIRE(b.ok());
  auto c = lease_keeper::start(env(), *c_side.leases, "c", lease_ms, hooks_for("c"));
  REQUIRE(c.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * lease_ms));
  // a renewed its own lease (about 4 times a lease) and wrote none of the others'.
  CHECK(revision_of("a") > a_revision + 8);
  CHECK(revision_of("d17") == d_revision);
  CHECK((*a)->valid_at("d17", clock_ms()));
  CHECK((*a)->valid_at("d199", clock_ms()));
  CHECK_FALSE((*a)->valid_at("b", clock_ms()));
  {
    std::lock_guard lock{m};
    CHECK(taken_by.empty());
  }

  // a stops renewing: its own lease and the 200 it held go, each once, to b or c.
  (*a)->stop();
  auto all_taken = [&](std::size_t want) {
    std::lock_guard lock{m};
    if (taken_by.size() != want) return false;
    for (const auto& [d, who] : taken_by)
      if (who.empty()) return false;
    return true;
  };
  REQUIRE_EVENTUALLY(20'000, all_taken(domains + 1));
  CHECK_FALSE((*a)->valid_at("d17", first_claim));  // no longer counted for a when the first claim came
  CHECK_FALSE((*a)->valid_at("a", first_claim));
  std::this_thread::sleep_for(std::chrono::milliseconds(2 * lease_ms));
  std::set<std::string> b_holds, c_holds;
  {
    std::lock_guard lock{m};
    for (const auto& [d, who] : taken_by) {
      INFO(d);
      CHECK(who.size() == 1);  // claimed once
      (who[0] == "b" ? b_holds : c_holds).insert(d);
    }
  }
  for (const auto& d : b_holds) CHECK((*b)->holds(d));
  for (const auto& d : c_holds) CHECK((*c)->holds(d));
  CHECK((*b)->valid_at("a", clock_ms()) == (b_holds.count("a") > 0));

  // b goes too: c ends with everything (b's own lease, what b took of a's, and a's).
  (*b)->stop();
  REQUIRE_EVENTUALLY(20'000, (*c)->domains().size() == domains + 3);  // c, b, a and the 200
  std::this_thread::sleep_for(std::chrono::milliseconds(2 * lease_ms));
  {
    std::lock_guard lock{m};
    CHECK(taken_by["b"] == std::vector<std::string>{"c"});
    for (const auto& d : b_holds) CHECK(taken_by[d] == std::vector<std::string>{"b", "c"});
    for (const auto& d : c_holds) CHECK(taken_by[d] == std::vector<std::string>{"c"});
  }
  CHECK((*c)->valid_at("d17", clock_ms()));
}

// nats-server 2.9 checks a write's expected revision of its key before its replicas agree on it:
// two writes sent at once at the same revision of a 3-replica bucket were both confirmed in 260 of
// 300 pairs (tests/nats_server/concurrent_cas.mjs), which would let two orchestrators claim the
// same lease at the same epoch. Through keel's bucket exactly one of each pair is written, whether
// both update a revision or both create a key, from two servers of a cluster.
TEST_CASE("leases: on three replicas, two writes at once at the same revision: exactly one is written",
          "[replication][integration][cluster]") {
  nats_cluster cluster;
  member a(cluster.url(0), 3), b(cluster.url(1), 3);
  int rounds = 60, doubled = 0, none = 0;
  for (int round = 0; round < rounds; ++round) {
    auto key = "k" + std::to_string(round);
    auto first = a.bucket->create(key, "first");
    REQUIRE(first.ok());
    for (bool creating : {false, true}) {
      auto target = creating ? key + ".new" : key;
      std::atomic<int> ready{0};
      result<std::uint64_t> from_a = make_error(errc::internal, "not run"), from_b = from_a;
      auto write = [&](member& m, result<std::uint64_t>& out, const char* value) {
        ++ready;
        while (ready < 2) {}
        out = creating ? m.bucket->create(target, value) : m.bucket->update(target, value, *first);
      };
      std::thread ta([&] { write(a, from_a, "a"); }), tb([&] { write(b, from_b, "b"); });
      ta.join();
      tb.join();
      INFO(target << ": " << (from_a ? "written" : from_a.error().message) << " / " << (from_b ? "written" : from_b.error().message));
      int written = static_cast<int>(from_a.ok()) + static_cast<int>(from_b.ok());
      doubled += written == 2;
      none += written == 0;
      // The one refused is refused as a conflict, and the key holds the one written.
      if (written == 1) {
        CHECK((from_a.ok() ? from_b : from_a).error().code == errc::conflict);
        auto now = a.bucket->get_entry(target);
        REQUIRE(now.ok());
        REQUIRE(now->has_value());
        CHECK((*now)->value == (from_a.ok() ? "a" : "b"));
        CHECK((*now)->revision == (from_a.ok() ? *from_a : *from_b));
      }
    }
  }
  CHECK(doubled == 0);
  CHECK(none == 0);
}
