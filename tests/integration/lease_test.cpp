// The leases that say which orchestrator serves which runs (actors/lease_keeper), against a real
// nats-server: a lease counts for its holder only while no other can have taken it.
#include "actors/lease_keeper.hpp"
#include "broker/connection.hpp"
#include "broker/key_value.hpp"
#include "broker/work_queue.hpp"
#include "runtime/clock.hpp"
#include "tests/support/test_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>

using namespace keel;
using keel::actors::lease_keeper;
using keel::testing::nats_server;

namespace {
std::shared_ptr<broker::connection> connect(const std::string& url) {
  broker::connection_options o;
  o.servers = {url};
  o.reconnect_wait_ms = 50;
  auto c = broker::connection::connect(o);
  REQUIRE(c.ok());
  return *c;
}

// One orchestrator's view of the lease bucket: its own connection and bucket.
struct member {
  std::shared_ptr<broker::connection> nats;
  std::unique_ptr<broker::jetstream> js;
  std::unique_ptr<broker::key_value> bucket;
  explicit member(const std::string& url) : nats(connect(url)) {
    auto j = broker::jetstream::open(nats);
    REQUIRE(j.ok());
    js = std::move(*j);
    auto b = broker::key_value::open(*js, {"LEASES", 1, 0});
    REQUIRE(b.ok());
    bucket = std::move(*b);
  }
};
} // namespace

TEST_CASE("leases: a lease taken over had stopped counting for its old holder before the taker claimed it",
          "[actors][integration]") {
  nats_server server;
  member a_side(server.url()), b_side(server.url());
  constexpr std::int64_t lease_ms = 1000;
  auto a = lease_keeper::start(*a_side.bucket, "a", lease_ms, {});
  REQUIRE(a.ok());
  auto now = steady_ms();
  CHECK((*a)->valid("a", now));
  CHECK_FALSE((*a)->valid("a", now + lease_ms));  // never a whole lease ahead
  CHECK_FALSE((*a)->valid("b", now));             // not held

  std::mutex m;
  std::string taken;
  std::atomic<std::int64_t> claimed_at{0};
  lease_keeper::hooks on_b;
  on_b.take_over = [&](const std::string& domain, std::uint64_t) {
    claimed_at = steady_ms();
    std::lock_guard lock{m};
    taken = domain;
  };
  auto b = lease_keeper::start(*b_side.bucket, "b", lease_ms, on_b);
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
  CHECK_FALSE((*a)->valid("a", claimed_at));
  CHECK((*b)->holds("a"));
  CHECK((*b)->valid("a", steady_ms()));
  CHECK((*b)->epoch_of("a") == 2);
  // a, started again, finds its runs taken: it must rejoin as a new member.
  auto again = lease_keeper::start(*a_side.bucket, "a", lease_ms, {});
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == errc::conflict);
  CHECK(again.error().message.find("taken over by b") != std::string::npos);
}

TEST_CASE("leases: a holder that cannot reach the bucket stops counting its lease within a lease, and counts again once renewed",
          "[actors][integration]") {
  nats_server server;
  member a_side(server.url());
  constexpr std::int64_t lease_ms = 1000;
  auto a = lease_keeper::start(*a_side.bucket, "a", lease_ms, {});
  REQUIRE(a.ok());
  CHECK((*a)->valid("a", steady_ms()));
  server.kill();
  auto killed = steady_ms();
  // Whatever renewal was under way was sent before the kill: none counts a lease past it.
  CHECK_FALSE((*a)->valid("a", killed + lease_ms));
  REQUIRE_EVENTUALLY(5'000, !(*a)->valid("a", steady_ms()));
  CHECK((*a)->holds("a"));  // not lost: nobody took it
  server.restart();
  REQUIRE_EVENTUALLY(30'000, (*a)->valid("a", steady_ms()));
}
