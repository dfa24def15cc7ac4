#include "tests/support/broker_connect.hpp"
#include "broker/connection.hpp"
#include "broker/key_value.hpp"
#include "broker/run_log.hpp"
#include "broker/work_queue.hpp"
#include "runtime/wire.hpp"
#include "tests/support/test_support.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

using namespace keel;
using keel::testing::nats_server;
using keel::testing::connect;

namespace {


// Publishes `n` messages on `subject` once `subscriber` has sent its subscriptions, and waits until
// the server has them all.
void publish_when_subscribed(broker::connection& subscriber, broker::connection& publisher, const std::string& subject, int n) {
  REQUIRE(subscriber.flush(1000).ok());
  for (int i = 0; i < n; ++i) REQUIRE(publisher.publish(subject, "x").ok());
  REQUIRE(publisher.flush(1000).ok());
}

} // namespace

TEST_CASE("broker: a published message reaches every plain subscriber", "[broker][integration]") {
  nats_server server;
  auto a = connect(server.url());
  auto b = connect(server.url());
  std::atomic<int> got_a{0}, got_b{0};
  std::string payload;
  std::mutex mutex;
  auto sa = a->subscribe("t.x", "", [&](broker::message&& m) {
    std::lock_guard lock{mutex};
    payload = m.data;
    ++got_a;
  });
  auto sb = b->subscribe("t.*", "", [&](broker::message&&) { ++got_b; });
  REQUIRE(sa.ok());
  REQUIRE(sb.ok());
  REQUIRE(a->flush(1000).ok());
  REQUIRE(b->flush(1000).ok());
  REQUIRE(b->publish("t.x", std::string("he\0llo", 6)).ok());
  REQUIRE_EVENTUALLY(2000, got_a == 1 && got_b == 1);
  std::lock_guard lock{mutex};
  CHECK(payload == std::string("he\0llo", 6));
}

TEST_CASE("broker: a message may ask for its answer only on an inbox, never on another subject",
          "[broker][integration]") {
  nats_server server;
  auto responder = connect(server.url());
  auto sender = connect(server.url());
  std::mutex mutex;
  std::vector<std::string> replies;  // the reply subject each delivered message carried
  auto sub = responder->subscribe("ask", "", [&](broker::message&& m) {
    std::lock_guard lock{mutex};
    replies.push_back(m.reply);
  });
  REQUIRE(sub.ok());
  REQUIRE(responder->flush(1000).ok());
  // An inbox (its own, or another's under _INBOX.) is kept; anything else is dropped, whatever
  // it looks like: a keel subject, a bucket's key, the JetStream API, a look-alike of an inbox.
  for (const char* reply : {"_INBOX.x.1", "_INBOX.ana.abc", "keel.default.runs.r.events", "$KV.KEEL_KEYS_keel_default.k",
                            "$JS.API.STREAM.DELETE.S", "_INBOXX.1", "_inbox.1", "INBOX.1", "x._INBOX.1"})
    REQUIRE(sender->publish("ask", reply, "x").ok());
  REQUIRE(sender->flush(1000).ok());
  REQUIRE_EVENTUALLY(3000, [&] { std::lock_guard lock{mutex}; return replies.size() == 9; }());
  std::lock_guard lock{mutex};
  CHECK(replies == std::vector<std::string>{"_INBOX.x.1", "_INBOX.ana.abc", "", "", "", "", "", "", ""});
}

TEST_CASE("broker: a queue group delivers each message to exactly one member",
          "[broker][integration]") {
  nats_server server;
  auto publisher = connect(server.url());
  std::vector<std::shared_ptr<broker::connection>> members;
  std::vector<std::unique_ptr<broker::subscription>> subs;
  std::atomic<int> total{0};
  std::vector<std::atomic<int>> per_member(3);
  for (int i = 0; i < 3; ++i) {
    members.push_back(connect(server.url()));
    auto s = members.back()->subscribe("work", "workers", [&, i](broker::message&&) {
      ++per_member[i];
      ++total;
    });
    REQUIRE(s.ok());
    subs.push_back(std::move(*s));
    REQUIRE(members.back()->flush(1000).ok());
  }
  for (int i = 0; i < 300; ++i) REQUIRE(publisher->publish("work", "x").ok());
  REQUIRE_EVENTUALLY(5000, total == 300);
  CHECK(per_member[0] + per_member[1] + per_member[2] == 300);
  // Every member took some share; the server picks members at random.
  for (auto& n : per_member) CHECK(n > 0);
}

TEST_CASE("broker: a request gets its reply, or a timeout, or a no-responders error",
          "[broker][integration]") {
  nats_server server;
  auto responder = connect(server.url());
  auto client = connect(server.url());
  std::atomic<int> unsent{0};  // counted on the subscription's thread, checked below
  auto sub = responder->subscribe("echo", "", [&](broker::message&& m) {
    if (!responder->publish(m.reply, "re:" + m.data).ok()) ++unsent;
  });
  auto silent = responder->subscribe("silent", "", [](broker::message&&) {});
  REQUIRE(sub.ok());
  REQUIRE(silent.ok());
  REQUIRE(responder->flush(1000).ok());
  auto reply = client->request("echo", "ping", 2000);
  REQUIRE(reply.ok());
  CHECK(reply->data == "re:ping");
  CHECK(unsent == 0);
  auto timed_out = client->request("silent", "x", 100);
  REQUIRE_FALSE(timed_out.ok());
  CHECK(timed_out.error().code == errc::timeout);
  auto nobody = client->request("nobody.here", "x", 2000);
  REQUIRE_FALSE(nobody.ok());
  CHECK(nobody.error().code == errc::unavailable);
  CHECK(nobody.error().message == "nobody serves nobody.here");
}

TEST_CASE("broker: a request whose handler throws is answered, not left to time out, and only on an inbox",
          "[broker][integration]") {
  nats_server server;
  auto responder = connect(server.url());
  auto client = connect(server.url());
  // A field of the wrong type read as a string (nlohmann's value() throws), and any other failure.
  auto reads = responder->subscribe("reads", "", [](broker::message&& m) {
    auto body = wire::unpack(m.data);
    (void)body->value("name", std::string{});
  });
  auto fails = responder->subscribe("fails", "", [](broker::message&&) { throw std::runtime_error("out of luck"); });
  auto answers_then_fails = responder->subscribe("answers", "", [&](broker::message&& m) {
    (void)responder->publish(m.reply, "first");
    throw std::runtime_error("after answering");
  });
  std::atomic<int> elsewhere{0};
  auto watch = client->subscribe("evil.place", "", [&](broker::message&&) { ++elsewhere; });
  REQUIRE(reads.ok());
  REQUIRE(fails.ok());
  REQUIRE(answers_then_fails.ok());
  REQUIRE(watch.ok());
  REQUIRE(responder->flush(1000).ok());
  REQUIRE(client->flush(1000).ok());
  for (const char* subject : {"reads", "fails"}) {
    INFO(subject);
    auto reply = client->request(subject, wire::pack(wire::value{{"name", 5}}), 5000);
    REQUIRE(reply.ok());
    auto e = wire::unpack(reply->data);
    REQUIRE(e.ok());
    CHECK((*e)["type"] == "error");
    CHECK((*e)["error"]["code"] == "internal");
    // What went wrong stays in the node's log: nothing of the node's is told the requester.
    CHECK((*e)["error"]["message"] == "the request failed on the node that took it (its log says why); ask again");
  }
  // A handler that answered before it failed: its answer, and nothing after it.
  auto answered = client->request("answers", "x", 5000);
  REQUIRE(answered.ok());
  CHECK(answered->data == "first");
  // A message naming a place that is not an inbox for its answer: nothing is published there (the
  // node would publish with its own rights wherever a sender pointed it).
  REQUIRE(client->publish("fails", "evil.place", "x").ok());
  REQUIRE(client->flush(1000).ok());
  REQUIRE(client->request("fails", "y", 5000).ok());  // handled after the one before
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(elsewhere == 0);
}

TEST_CASE("broker: connecting to an absent server is a clear error", "[broker][integration]") {
  auto port = free_loopback_port();
  REQUIRE(port.ok());
  broker::connection_options o;
  o.servers = {"nats://127.0.0.1:" + std::to_string(*port)};
  o.connect_timeout_ms = 200;
  auto c = broker::connection::connect(o);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == errc::unavailable);
  CHECK(c.error().message.find("cannot connect to NATS at nats://127.0.0.1:") == 0);
  CHECK(c.error().message.find("is nats-server running?") != std::string::npos);
}

TEST_CASE("broker: a connection lists several servers and uses one that is up",
          "[broker][integration]") {
  nats_server server;
  auto dead_port = free_loopback_port();
  REQUIRE(dead_port.ok());
  broker::connection_options o;
  o.servers = {"nats://127.0.0.1:" + std::to_string(*dead_port), server.url()};
  auto c = broker::connection::connect(o);
  REQUIRE(c.ok());
  CHECK((*c)->connected_url() == server.url());
}

TEST_CASE("broker: subscriptions come back after nats-server is killed and restarted",
          "[broker][integration]") {
  nats_server server;
  auto sub_side = connect(server.url());
  auto pub_side = connect(server.url());
  std::atomic<int> got{0};
  auto sub = sub_side->subscribe("after.restart", "", [&](broker::message&&) { ++got; });
  REQUIRE(sub.ok());
  REQUIRE(sub_side->flush(1000).ok());
  server.kill();
  REQUIRE_EVENTUALLY(5000, !sub_side->connected());
  server.restart();
  REQUIRE_EVENTUALLY(10000, sub_side->connected() && pub_side->connected());
  // The subscription was replayed on reconnect: a new message reaches it.
  REQUIRE_EVENTUALLY(5000, (pub_side->publish("after.restart", "x").ok(), got > 0));
}

TEST_CASE("broker: drain lets a running handler finish before the connection closes",
          "[broker][integration]") {
  nats_server server;
  auto c = connect(server.url());
  auto publisher = connect(server.url());
  std::atomic<int> finished{0};
  auto sub = c->subscribe("slow", "", [&](broker::message&&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ++finished;
  });
  REQUIRE(sub.ok());
  publish_when_subscribed(*c, *publisher, "slow", 3);
  REQUIRE_EVENTUALLY(2000, finished >= 1);
  REQUIRE(c->drain(5000).ok());
  CHECK(finished == 3);
  CHECK_FALSE(c->connected());
}

// A handler refers to its owner (a gateway's list of live nodes, an orchestrator's state): once the
// subscription is destroyed, the owner may be. Class: a callback running on or after what it
// refers to is freed. Variants: a callback running when the subscription goes; messages still
// queued behind it; a subscription destroyed from inside its own callback; 50 subscriptions
// destroyed while messages pour in, each owner freed right after (AddressSanitizer sees any late
// callback as a use after free).
TEST_CASE("broker: a destroyed subscription runs no callback after its destructor returns",
          "[broker][integration]") {
  nats_server server;
  auto c = connect(server.url());
  auto publisher = connect(server.url());

  SECTION("a callback running when it is destroyed has returned, and those queued never run") {
    std::atomic<int> started{0}, finished{0};
    auto sub = c->subscribe("slow", "", [&](broker::message&&) {
      ++started;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      ++finished;
    });
    REQUIRE(sub.ok());
    publish_when_subscribed(*c, *publisher, "slow", 5);
    REQUIRE_EVENTUALLY(2000, started >= 1);
    sub->reset();
    int at_return = finished.load();
    CHECK(at_return == started.load());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    CHECK(started.load() == at_return);
    CHECK(finished.load() == at_return);
    CHECK(at_return < 5);
  }

  SECTION("destroyed from inside its own callback, it does not wait for itself") {
    std::unique_ptr<broker::subscription> self;
    std::mutex self_mutex;
    std::atomic<bool> done{false};
    auto sub = c->subscribe("self", "", [&](broker::message&&) {
      std::unique_ptr<broker::subscription> mine;
      {
        std::lock_guard lock{self_mutex};
        mine = std::move(self);
      }
      mine.reset();
      done = true;
    });
    REQUIRE(sub.ok());
    {
      std::lock_guard lock{self_mutex};
      self = std::move(*sub);
    }
    publish_when_subscribed(*c, *publisher, "self", 1);
    REQUIRE_EVENTUALLY(2000, done.load());
  }

  SECTION("50 subscriptions destroyed while messages pour in, each owner freed right after") {
    struct owner {
      std::vector<std::string> seen;
      std::atomic<int> calls{0};
    };
    std::atomic<bool> pouring{true};
    std::thread pour([&] {
      while (pouring) {
        for (int i = 0; i < 50; ++i) (void)publisher->publish("pour." + std::to_string(i), std::string(64, 'x'));
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
    int with_calls = 0;
    for (int round = 0; round < 3; ++round) {
      std::vector<std::unique_ptr<owner>> owners;
      std::vector<std::unique_ptr<broker::subscription>> subs;
      for (int i = 0; i < 50; ++i) {
        owners.push_back(std::make_unique<owner>());
        auto* o = owners.back().get();
        auto sub = c->subscribe("pour." + std::to_string(i), "", [o](broker::message&& m) {
          o->seen.push_back(std::move(m.data));
          if (o->seen.size() > 100) o->seen.clear();
          ++o->calls;
        });
        REQUIRE(sub.ok());
        subs.push_back(std::move(*sub));
      }
      REQUIRE(c->flush(1000).ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      for (int i = 0; i < 50; ++i) {
        with_calls += owners[i]->calls > 0 ? 1 : 0;
        subs[i].reset();
        owners[i].reset();
      }
    }
    pouring = false;
    pour.join();
    CHECK(with_calls > 0);
  }

  // nats.c 3.4's reading thread looks a subscription up, lets go of the connection's lock, then
  // locks the subscription: one destroyed in that gap is freed memory it locks. Subscriptions on a
  // subject that never stops, each destroyed as soon as it has a message (so that the reading
  // thread is as likely as can be between the two), on a plain, a pull and a queue subscription;
  // then the connection closed while one is being destroyed. ThreadSanitizer and AddressSanitizer
  // report any lock of freed memory.
  SECTION("subscriptions destroyed while their messages arrive are not used after they are freed") {
    std::atomic<bool> pouring{true};
    std::thread pour([&] {
      while (pouring) {
        for (int i = 0; i < 20; ++i) (void)publisher->publish("hot", "x");
        std::this_thread::yield();
      }
    });
    for (int round = 0; round < 300; ++round) {
      std::atomic<int> calls{0};
      auto sub = c->subscribe("hot", round % 3 == 2 ? "q" : "", [&](broker::message&&) { ++calls; });
      REQUIRE(sub.ok());
      if (round % 3 == 1) {
        auto pull = c->subscribe_pull("hot", "");
        REQUIRE(pull.ok());
        (void)(*pull)->next(50);
      }
      for (int wait = 0; wait < 100 && calls == 0; ++wait) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      sub->reset();
    }
    auto last = connect(server.url());
    auto sub = last->subscribe("hot", "", [](broker::message&&) {});
    REQUIRE(sub.ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::thread closer([&] { last.reset(); });
    sub->reset();
    closer.join();
    pouring = false;
    pour.join();
    CHECK(c->connected());
  }
}

// Several threads may wait on one pull subscription; each message reaches exactly one of them.
// (nats.c wakes one waiter when messages arrive, not one per message: spreading work over
// threads is the caller's job, as the worker's leader/followers intake does.)
TEST_CASE("broker: a pull subscription gives each message to exactly one of the threads waiting on it",
          "[broker][integration]") {
  nats_server server;
  auto worker = connect(server.url());
  auto client = connect(server.url());
  auto sub = worker->subscribe_pull("t.pull", "workers");
  REQUIRE(sub.ok());
  REQUIRE(worker->flush(1000).ok());

  // Nothing yet: an empty answer after the timeout, not an error.
  auto none = (*sub)->next(20);
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());

  constexpr int messages = 400;
  std::mutex mutex;
  std::multiset<std::string> seen;
  std::atomic<int> stopped{0}, cancelled{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, s = *sub] {
      while (true) {
        auto next = s->next(5000);
        if (!next) {
          if (next.error().code == errc::cancelled) ++cancelled;  // what unsubscribe gives a waiting thread
          ++stopped;
          return;
        }
        if (!*next) continue;
        std::this_thread::sleep_for(std::chrono::microseconds(200));  // a task takes a while
        std::lock_guard lock{mutex};
        seen.insert((*next)->data);
      }
    });
  }
  for (int i = 0; i < messages; ++i) REQUIRE(client->publish("t.pull", std::to_string(i)).ok());
  REQUIRE_EVENTUALLY(10000, ([&] {
    std::lock_guard lock{mutex};
    return seen.size() == messages;
  }()));
  {
    std::lock_guard lock{mutex};
    for (int i = 0; i < messages; ++i) CHECK(seen.count(std::to_string(i)) == 1);  // each once
  }
  REQUIRE((*sub)->unsubscribe().ok());
  for (auto& t : threads) t.join();
  CHECK(stopped == 4);
  CHECK(cancelled == 4);
}

namespace {
broker::consumer_options consumer_for(const std::string& stream, std::int64_t ack_wait_ms) {
  broker::consumer_options o;
  o.stream = stream;
  o.durable = "workers_q";
  o.filter_subject = "t.q.>";
  o.ack_wait_ms = ack_wait_ms;
  return o;
}
} // namespace

TEST_CASE("work queue: a task waits until asked for, goes to one taker, and comes again only when its taker is silent",
          "[broker][integration]") {
  nats_server server;
  auto js = broker::jetstream::open(connect(server.url()));
  REQUIRE(js.ok());
  REQUIRE((*js)->ensure_work_queue({"TASKS", {"t.>"}, 1 << 20, 1, 120'000}).ok());
  REQUIRE((*js)->ensure_work_queue({"TASKS", {"t.>"}, 1 << 20, 1, 120'000}).ok());  // again: the same stream
  for (int i = 0; i < 5; ++i) REQUIRE((*js)->publish("t.q.run." + std::to_string(i), "task " + std::to_string(i), "id-" + std::to_string(i)).ok());
  // The same id again within the window: stored once.
  REQUIRE((*js)->publish("t.q.run.0", "task 0", "id-0").ok());
  CHECK(*(*js)->stored_messages("TASKS") == 5);
  CHECK(*(*js)->holds("TASKS", "t.q.run.3"));
  CHECK_FALSE(*(*js)->holds("TASKS", "t.q.run.9"));

  auto worker = (*js)->subscribe(consumer_for("TASKS", 1000));
  REQUIRE(worker.ok());
  // Asked for two: two, no more (back-pressure is the taker's).
  auto two = (*worker)->fetch(2, 2000);
  REQUIRE(two.ok());
  REQUIRE(two->size() == 2);
  CHECK((*two)[0]->times_delivered() == 1);
  // One is acknowledged; the other is kept alive for three ack waits by "in progress".
  REQUIRE((*two)[0]->ack().ok());
  for (int i = 0; i < 6; ++i) {
    REQUIRE((*two)[1]->in_progress().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the ack wait is the thing under test
  }
  // Meanwhile another taker gets only the three never handed out.
  REQUIRE((*two)[1]->in_progress().ok());
  auto other = (*js)->subscribe(consumer_for("TASKS", 1000));
  REQUIRE(other.ok());
  auto rest = (*other)->fetch(3, 500);
  REQUIRE(rest.ok());
  CHECK(rest->size() == 3);
  for (auto& d : *rest) REQUIRE(d->ack().ok());
  // Silent now: after the ack wait, the held one comes again, counted.
  auto again = (*other)->fetch(1, 3000);
  REQUIRE(again.ok());
  REQUIRE(again->size() == 1);
  CHECK(again->front()->body().data == (*two)[1]->body().data);
  CHECK(again->front()->times_delivered() == 2);
  REQUIRE(again->front()->ack().ok());
  // An acknowledgement is a message of its own: the broker removes the task once it has it.
  REQUIRE_EVENTUALLY(5000, *(*js)->stored_messages("TASKS") == 0);
  CHECK_FALSE(*(*js)->holds("TASKS", "t.q.run.1"));
}

TEST_CASE("work queue: tasks fetched before their consumer is destroyed are still acknowledged, kept alive and handed back",
          "[broker][integration]") {
  // A worker that stops drops its consumer while tasks it fetched still run: their
  // acknowledgements go through the subscription they came from.
  nats_server server;
  auto js = broker::jetstream::open(connect(server.url()));
  REQUIRE(js.ok());
  REQUIRE((*js)->ensure_work_queue({"TASKS", {"t.>"}, 1 << 20, 1, 120'000}).ok());
  for (int i = 0; i < 3; ++i) REQUIRE((*js)->publish("t.q.run." + std::to_string(i), "task " + std::to_string(i), "id-" + std::to_string(i)).ok());
  std::vector<std::unique_ptr<broker::delivery>> held;
  {
    auto worker = (*js)->subscribe(consumer_for("TASKS", 1000));
    REQUIRE(worker.ok());
    auto three = (*worker)->fetch(3, 2000);
    REQUIRE(three.ok());
    REQUIRE(three->size() == 3);
    held = std::move(*three);
  }  // the consumer is gone; its three deliveries are not
  REQUIRE(held[0]->ack().ok());
  REQUIRE(held[1]->nak(0).ok());
  for (int i = 0; i < 4; ++i) {
    REQUIRE(held[2]->in_progress().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  REQUIRE(held[2]->ack().ok());
  // What came back is the one handed back, once; the acknowledged ones are gone.
  auto other = (*js)->subscribe(consumer_for("TASKS", 1000));
  REQUIRE(other.ok());
  auto again = (*other)->fetch(3, 1500);
  REQUIRE(again.ok());
  REQUIRE(again->size() == 1);
  CHECK(again->front()->body().data == "task 1");
  REQUIRE(again->front()->ack().ok());
  held.clear();
  REQUIRE_EVENTUALLY(5000, *(*js)->stored_messages("TASKS") == 0);
}

TEST_CASE("work queue: a message the broker does not confirm is reported with its id", "[broker][integration]") {
  nats_server server;
  std::mutex mutex;
  std::vector<broker::publish_failure> failed;
  auto js = broker::jetstream::open(connect(server.url()), 2000, [&](broker::publish_failure&& f) {
    std::lock_guard lock{mutex};
    failed.push_back(std::move(f));
  });
  REQUIRE(js.ok());
  REQUIRE((*js)->ensure_work_queue({"TASKS", {"t.>"}, 1 << 20, 1, 120'000}).ok());
  REQUIRE((*js)->publish_async("t.q.run.1", "fine", "run/1/1", 2000).ok());
  // Into a subject no stream holds: refused by the broker, reported.
  REQUIRE((*js)->publish_async("nowhere.1", "lost", "run/2/1", 500).ok());
  REQUIRE_EVENTUALLY(5000, [&] {
    std::lock_guard lock{mutex};
    return failed.size() == 1;
  }());
  CHECK(failed[0].id == "run/2/1");
  CHECK(failed[0].subject == "nowhere.1");
  CHECK(failed[0].data == "lost");
  REQUIRE_EVENTUALLY(5000, *(*js)->stored_messages("TASKS") == 1);
}

// The replicated run log: entries come back whole and in order (one larger than a message in
// parts), and an append that names a subject's last sequence wrongly is refused: the fence
// against an owner that lost its runs. Variants: a stale sequence, a sequence from the future,
// eight writers racing from the same sequence (one wins), a long entry from a stale position.
TEST_CASE("key-value: keys lists every key written, create and update check revisions, and a bucket opened twice is one",
          "[broker][integration]") {
  nats_server server;
  auto js = broker::jetstream::open(connect(server.url()));
  REQUIRE(js.ok());
  auto kv = broker::key_value::open(**js, {"KV_TEST", 1, 0});
  REQUIRE(kv.ok());
  auto none = (*kv)->keys();
  REQUIRE(none.ok());
  CHECK(none->empty());
  auto first = (*kv)->create("a", "1");
  REQUIRE(first.ok());
  CHECK((*kv)->create("a", "again").error().code == errc::conflict);
  REQUIRE((*kv)->create("b.c", "2").ok());
  auto moved = (*kv)->update("a", "3", *first);
  REQUIRE(moved.ok());
  CHECK((*kv)->update("a", "4", *first).error().code == errc::conflict);  // a stale revision
  auto other = broker::key_value::open(**js, {"KV_TEST", 1, 0});
  REQUIRE(other.ok());
  auto keys = (*other)->keys();
  REQUIRE(keys.ok());
  CHECK(std::set<std::string>(keys->begin(), keys->end()) == std::set<std::string>{"a", "b.c"});
  auto a = (*other)->get_entry("a");
  REQUIRE(a.ok());
  REQUIRE(a->has_value());
  CHECK((*a)->value == "3");
  CHECK((*a)->revision == *moved);
  // 500 keys: all listed, in one request.
  for (int i = 0; i < 500; ++i) REQUIRE((*kv)->create("k" + std::to_string(i), "v").ok());
  auto many = (*kv)->keys();
  REQUIRE(many.ok());
  CHECK(many->size() == 502);
}

TEST_CASE("work queue: the last message a subject holds is read back, and a subject with none says so", "[broker][integration]") {
  nats_server server;
  auto js = broker::jetstream::open(connect(server.url()));
  REQUIRE(js.ok());
  REQUIRE((*js)->ensure_work_queue({"LAST", {"l.>"}, 1 << 20, 1, 120'000}).ok());
  REQUIRE((*js)->publish("l.q.run.1", "attempt 1", "a1").ok());
  REQUIRE((*js)->publish("l.q.run.1", "attempt 2", "a2").ok());
  auto last = (*js)->last_message("LAST", "l.q.run.1");
  REQUIRE(last.ok());
  CHECK(*last == std::optional<std::string>("attempt 2"));
  auto none = (*js)->last_message("LAST", "l.q.run.2");
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  CHECK_FALSE((*js)->last_message("NO_SUCH_STREAM", "l.q.run.1").ok());
}
