// The replicated run log (broker/run_log) against real nats-servers: entries whole and in order,
// a write from a stale position refused, reads whole or failed while servers are lost.
#include "tests/support/broker_connect.hpp"
#include "broker/connection.hpp"
#include "broker/key_value.hpp"
#include "broker/native.hpp"
#include "broker/run_log.hpp"
#include "broker/run_log_messages.hpp"
#include "broker/work_queue.hpp"
#include "tests/support/test_support.hpp"
#include "runtime/clock.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace keel;
using keel::testing::nats_server;
using keel::testing::connect;

namespace {



} // namespace

TEST_CASE("run log: entries read back whole and in order, and a write from a stale position is refused",
          "[broker][integration]") {
  nats_server server;
  auto nats = connect(server.url());
  broker::run_log_options o{"KEEL_RUNS_test", "t.log.>", 1, 64 * 1024, 5000};
  auto log = broker::run_log::open(nats, o);
  REQUIRE(log.ok());
  auto& l = **log;
  // Three runs of node a, one of node b; one entry of 200 KB (four parts).
  std::string big(200 * 1024, 'x');
  for (std::size_t i = 0; i < big.size(); i += 97) big[i] = static_cast<char>('a' + i % 26);
  auto first = l.append({{"t.log.a.r1", "one", 0, "n1"}, {"t.log.a.r2", big, 0, "n1"}, {"t.log.b.r9", "other", 0, "n1"}});
  REQUIRE(first.size() == 3);
  for (const auto& r : first) REQUIRE(r.ok());
  auto second = l.append({{"t.log.a.r1", "two", static_cast<std::int64_t>(*first[0]), "n1"}});
  REQUIRE(second[0].ok());
  CHECK(*l.last_sequence("t.log.a.r1") == *second[0]);
  CHECK(*l.last_sequence("t.log.a.r2") == *first[1]);
  CHECK(*l.last_sequence("t.log.a.none") == 0);
  std::vector<std::pair<std::string, std::string>> read;
  REQUIRE(l.read("t.log.a.>", [&](const std::string& subject, std::uint64_t, std::string data) {
    read.push_back({subject, std::move(data)});
  }).ok());
  REQUIRE(read.size() == 3);
  CHECK(read[0] == std::pair<std::string, std::string>{"t.log.a.r1", "one"});
  CHECK(read[1].first == "t.log.a.r2");
  CHECK(read[1].second == big);
  CHECK(read[2] == std::pair<std::string, std::string>{"t.log.a.r1", "two"});
  std::size_t nothing = 0;
  REQUIRE(l.read("t.log.c.>", [&](const std::string&, std::uint64_t, std::string) { ++nothing; }).ok());
  CHECK(nothing == 0);
  // Read from the stream's leader alone, as a read does once its consumer stalls (a replica that
  // lacks what the leader has): the same entries, whole, in the same order, with their positions.
  {
    auto leader_only_options = o;
    leader_only_options.stall_ms = 0;
    auto leader_only = broker::run_log::open(nats, leader_only_options);
    REQUIRE(leader_only.ok());
    std::vector<std::pair<std::string, std::string>> from_leader;
    std::vector<std::uint64_t> positions, consumer_positions;
    REQUIRE((*leader_only)->read("t.log.a.>", [&](const std::string& subject, std::uint64_t seq, std::string data) {
      from_leader.push_back({subject, std::move(data)});
      positions.push_back(seq);
    }).ok());
    REQUIRE(l.read("t.log.a.>", [&](const std::string&, std::uint64_t seq, std::string) { consumer_positions.push_back(seq); }).ok());
    CHECK(from_leader == read);
    CHECK(positions == consumer_positions);
    std::size_t none = 0;
    REQUIRE((*leader_only)->read("t.log.c.>", [&](const std::string&, std::uint64_t, std::string) { ++none; }).ok());
    CHECK(none == 0);
  }

  SECTION("a first entry (expected at 0) on a subject that has one already is refused, whole or in parts, sent or appended") {
    for (const auto& data : {std::string("first again"), big}) {
      auto refused = l.append({{"t.log.a.r1", data, 0, "n2"}});
      REQUIRE_FALSE(refused[0].ok());
      CHECK(refused[0].error().code == errc::conflict);
    }
    auto ticket = l.send({"t.log.a.r1", "first again", 0, "n3"});
    REQUIRE(ticket.ok());
    auto sent = l.wait(*ticket);
    REQUIRE_FALSE(sent.ok());
    CHECK(sent.error().code == errc::conflict);
    CHECK(*l.last_sequence("t.log.a.r1") == *second[0]);
    // On an empty subject it is taken.
    auto fresh = l.append({{"t.log.a.r3", "first", 0, "n2"}});
    CHECK(fresh[0].ok());
  }
  SECTION("a stale position, or one ahead, is refused, and the log is unchanged") {
    for (std::int64_t wrong : {static_cast<std::int64_t>(*first[0]), static_cast<std::int64_t>(*second[0] + 5)}) {
      auto refused = l.append({{"t.log.a.r1", "late", wrong, "n1"}});
      REQUIRE_FALSE(refused[0].ok());
      CHECK(refused[0].error().code == errc::conflict);
    }
    CHECK(*l.last_sequence("t.log.a.r1") == *second[0]);
  }
  SECTION("two writers from the same position: exactly one is taken") {
    auto other_nats = connect(server.url());
    auto other = broker::run_log::open(other_nats, o);
    REQUIRE(other.ok());
    std::atomic<int> taken{0}, refused{0}, conflicts{0};
    std::vector<std::thread> writers;
    for (int w = 0; w < 8; ++w)
      writers.emplace_back([&, w] {
        auto& log_of = w % 2 ? **other : l;
        auto r = log_of.append({{"t.log.a.r1", "writer " + std::to_string(w), static_cast<std::int64_t>(*second[0]), "w" + std::to_string(w)}});
        (r[0].ok() ? taken : refused) += 1;
        if (!r[0].ok() && r[0].error().code == errc::conflict) ++conflicts;
      });
    for (auto& t : writers) t.join();
    CHECK(taken == 1);
    CHECK(refused == 7);
    CHECK(conflicts == 7);  // each refused as a conflict
  }
  SECTION("an entry sent again by its writer is stored once, another writer's at the same position is refused") {
    broker::run_log::entry e{"t.log.a.r1", "three", static_cast<std::int64_t>(*second[0]), "n1"};
    auto ticket = l.send(e);  // without waiting
    REQUIRE(ticket.ok());
    auto again = l.append({e});  // a repeat (say, its confirmation was lost)
    auto sent = l.wait(*ticket);
    REQUIRE(sent.ok());
    REQUIRE(again[0].ok());
    CHECK(*again[0] == *sent);
    CHECK(*l.last_sequence("t.log.a.r1") == *sent);
    auto other = l.append({{"t.log.a.r1", "three", static_cast<std::int64_t>(*second[0]), "n2"}});
    REQUIRE_FALSE(other[0].ok());
    CHECK(other[0].error().code == errc::conflict);
    CHECK_FALSE(l.wait(*ticket).ok());  // a ticket is answered once
  }
  SECTION("a long entry from a stale position is refused at its first part") {
    auto fence = l.append({{"t.log.a.r2", "fence", static_cast<std::int64_t>(*first[1]), "n2"}});
    REQUIRE(fence[0].ok());
    auto stale = l.append({{"t.log.a.r2", big, static_cast<std::int64_t>(*first[1]), "n1"}});
    REQUIRE_FALSE(stale[0].ok());
    CHECK(stale[0].error().code == errc::conflict);
  }
}

namespace {
// The run log of three replicas, opened once the cluster can make it: a cluster just started
// elects its JetStream leader first, which takes seconds on a loaded machine (a sanitized build
// with other tests at once). Asked again for up to 60 s.
result<std::unique_ptr<broker::run_log>> open_on_cluster(std::shared_ptr<broker::connection> nats, const broker::run_log_options& o) {
  for (auto deadline = steady_ms() + 60'000;;) {
    auto opened = broker::run_log::open(nats, o);
    if (opened || steady_ms() >= deadline) return opened;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

// The run log opened through each server of the cluster, on a connection of its own.
std::vector<std::unique_ptr<broker::run_log>> logs_through_each(testing::nats_cluster& cluster, const broker::run_log_options& o) {
  std::vector<std::unique_ptr<broker::run_log>> logs;
  for (std::size_t i = 0; i < cluster.size(); ++i) {
    auto opened = open_on_cluster(connect(cluster.url(i)), o);
    INFO((opened ? std::string() : opened.error().message));
    REQUIRE(opened.ok());
    logs.push_back(std::move(opened.value()));
  }
  return logs;
}
} // namespace

// A read gives every entry under its filter or an error, never fewer: a takeover that read none
// of a node's runs would serve them as if there were none. nats-server 2.9's new consumers can
// report nothing pending while about to deliver (seen with reads made at once on a cluster: 1 to
// 6 in 200 came back empty). Variants: 200 filters read at once from 16 threads through three
// servers, four rounds; filters that match nothing; one run's subject alone; an entry in parts.
TEST_CASE("run log: 200 nodes' runs read at once through three servers: each read whole, none empty, nothing made up",
          "[broker][integration]") {
  testing::nats_cluster cluster;
  auto nats = connect(cluster.url(0));
  broker::run_log_options o{"KEEL_RUNS_reads", "t.log.>", 3, 64 * 1024, 5000};
  auto log = open_on_cluster(nats, o);
  INFO((log ? std::string() : log.error().message));
  REQUIRE(log.ok());
  constexpr int domains = 200, runs = 5;
  std::string big(150 * 1024, 'b');  // three parts
  for (int d = 0; d < domains; ++d) {
    std::vector<broker::run_log::entry> es;
    for (int r = 0; r < runs; ++r) {
      broker::run_log::entry e;
      e.subject = "t.log.d" + std::to_string(d) + ".r" + std::to_string(r);
      e.data = "e" + std::to_string(r);
      if (r == 0 && d % 50 == 0) e.data = big;
      es.push_back(std::move(e));
    }
    for (auto& x : (*log)->append(es)) REQUIRE(x.ok());
  }
  auto logs = logs_through_each(cluster, o);
  for (int round = 0; round < 4; ++round) {
    // A read that fails (a timeout on a loaded machine) is asked again, as a takeover does; one
    // that succeeds must be whole.
    std::vector<int> got(domains), wrong(domains), shorter(domains), failures(domains);
    std::vector<std::string> errors(domains);
    std::vector<std::thread> readers;
    for (int t = 0; t < 16; ++t)
      readers.emplace_back([&, t] {
        for (int d = t; d < domains; d += 16) {
          auto at = static_cast<std::size_t>(d);
          auto prefix = "t.log.d" + std::to_string(d) + ".";
          for (int attempt = 0; attempt < 3; ++attempt) {
            int n = 0, bad = 0;
            auto r = logs[at % 3]->read(prefix + ">", [&](const std::string& subject, std::uint64_t, std::string data) {
              auto run = subject.substr(prefix.size());
              std::string want = "e" + run.substr(1);
              if (run == "r0" && d % 50 == 0) want = big;
              ++n;
              if (data != want) ++bad;
            });
            if (!r) {
              ++failures[at];
              errors[at] = r.error().message;
              continue;
            }
            got[at] = n;
            wrong[at] = bad;
            if (n != runs) ++shorter[at];
            break;
          }
        }
      });
    for (auto& t : readers) t.join();
    for (int d = 0; d < domains; ++d) {
      auto at = static_cast<std::size_t>(d);
      INFO("round " << round << ", node d" << d << ": " << failures[at] << " failed reads (" << errors[at] << ")");
      CHECK(shorter[at] == 0);
      CHECK(got[at] == runs);
      CHECK(wrong[at] == 0);
    }
  }
  // Nothing under a filter: an empty read, at once. One run alone: its entry.
  std::vector<std::string> none, one;
  REQUIRE(logs[1]->read("t.log.nobody.>", [&](const std::string& subject, std::uint64_t, std::string) { none.push_back(subject); }).ok());
  CHECK(none.empty());
  REQUIRE(logs[2]->read("t.log.d7.r3", [&](const std::string&, std::uint64_t, std::string data) { one.push_back(std::move(data)); }).ok());
  CHECK(one == std::vector<std::string>{"e3"});
}

// The same while a server is killed: the stream may have no leader for a while, and a replica
// may answer from what it has. Each read through the servers left is whole or an error, never
// short; once the server is back, reads are whole again. Variants: each of the three servers
// killed in turn (one of them leads the stream), reads through both others, at once.
// Class: a read that decides it is done from a count the server keeps. Counts by subject drift
// from what a stream holds once entries are purged (a finished run's log is cut to its last
// entry), and a reading consumer's own count can be 0 while it is about to deliver. Variants:
// runs cut to one entry, some in parts, among runs that are not; other nodes' runs written
// meanwhile; a read while the domain is still written to; a domain with nothing left but cuts.
TEST_CASE("run log: a read after many runs were cut to their last entry is whole and ends at once",
          "[broker][integration]") {
  nats_server server;
  auto nats = connect(server.url());
  broker::run_log_options o{"KEEL_RUNS_test", "t.log.>", 1, 64 * 1024, 5000};
  auto log = broker::run_log::open(nats, o);
  REQUIRE(log.ok());
  auto& l = **log;
  std::string big(150 * 1024, 'y');  // three parts
  for (std::size_t i = 0; i < big.size(); i += 89) big[i] = static_cast<char>('a' + i % 26);
  // 40 runs of node a, 6 entries each (every third in parts); node b's runs written between.
  std::map<std::string, std::vector<std::string>> written;
  std::map<std::string, std::uint64_t> last;
  for (int step = 0; step < 6; ++step) {
    for (int r = 0; r < 40; ++r) {
      std::string run = "t.log.a.r" + std::to_string(r);
      std::string data = (r % 3 == 0 && step % 2 == 1) ? big + std::to_string(step) : "run " + std::to_string(r) + " step " + std::to_string(step);
      auto put = l.append({{run, data, static_cast<std::int64_t>(last[run]), "n1"}});
      REQUIRE(put[0].ok());
      last[run] = *put[0];
      written[run].push_back(data);
      REQUIRE(l.append({{"t.log.b.r" + std::to_string(step * 40 + r), "other", 0, "n2"}})[0].ok());
    }
  }
  // Every other run finished: its log cut to its last entry.
  for (int r = 0; r < 40; r += 2) {
    std::string run = "t.log.a.r" + std::to_string(r);
    REQUIRE(l.purge_before(run, last[run]).ok());
    written[run].erase(written[run].begin(), written[run].end() - 1);
  }
  // Node c: every run cut, so that what it holds is only last entries.
  for (int r = 0; r < 10; ++r) {
    std::string run = "t.log.c.r" + std::to_string(r);
    auto a = l.append({{run, "c one", 0, "n3"}});
    auto b = l.append({{run, "c two", static_cast<std::int64_t>(*a[0]), "n3"}});
    REQUIRE(b[0].ok());
    REQUIRE(l.purge_before(run, *b[0]).ok());
  }
  auto read_domain = [&](const std::string& filter) {
    std::map<std::string, std::vector<std::string>> got;
    auto started = steady_ms();
    auto r = l.read(filter, [&](const std::string& subject, std::uint64_t, std::string data) { got[subject].push_back(std::move(data)); });
    INFO("reading " << filter << ": " << (r ? std::string("ok") : r.error().message));
    REQUIRE(r.ok());
    // Ends when the log has nothing more: not at a deadline.
    CHECK(steady_ms() - started < 10'000);
    return got;
  };
  for (int round = 0; round < 3; ++round) {
    auto a = read_domain("t.log.a.>");
    REQUIRE(a.size() == 40);
    for (const auto& [run, entries] : written) CHECK(a[run] == entries);
    auto c = read_domain("t.log.c.>");
    REQUIRE(c.size() == 10);
    for (const auto& [run, entries] : c) CHECK(entries == std::vector<std::string>{"c two"});
  }

  SECTION("a read while the domain is written to ends, each run a whole prefix of what was written") {
    std::atomic<bool> writing{true};
    std::thread writer([&] {
      std::uint64_t at = last["t.log.a.r1"];
      for (int i = 0; writing && i < 2000; ++i) {
        auto put = l.append({{"t.log.a.r1", "more " + std::to_string(i), static_cast<std::int64_t>(at), "n1"}});
        if (!put[0]) break;
        at = *put[0];
      }
    });
    for (int i = 0; i < 5; ++i) {
      auto a = read_domain("t.log.a.>");
      auto& r1 = a["t.log.a.r1"];
      REQUIRE(r1.size() >= written["t.log.a.r1"].size());
      for (std::size_t k = 0; k < r1.size(); ++k) {
        if (k < written["t.log.a.r1"].size()) CHECK(r1[k] == written["t.log.a.r1"][k]);
        else CHECK(r1[k] == "more " + std::to_string(k - written["t.log.a.r1"].size()));
      }
    }
    writing = false;
    writer.join();
  }
}

TEST_CASE("run log: reads while a server is killed are whole or fail, never short", "[broker][integration]") {
  testing::nats_cluster cluster;
  broker::run_log_options o{"KEEL_RUNS_lost", "t.log.>", 3, 64 * 1024, 2000};
  auto logs = logs_through_each(cluster, o);
  constexpr int runs = 60;
  std::vector<broker::run_log::entry> es;
  for (int r = 0; r < runs; ++r) es.push_back({"t.log.n.r" + std::to_string(r), "e" + std::to_string(r), -1, ""});
  for (auto& x : logs[0]->append(es)) REQUIRE(x.ok());
  for (std::size_t down = 0; down < 3; ++down) {
    cluster.kill(down);
    // Until both servers left have given a whole read (the two are a majority: they go on).
    int whole = 0, failed = 0, shorter = 0;
    std::set<std::size_t> whole_via;
    std::set<std::string> errors;
    for (auto until = steady_ms() + 30'000; steady_ms() < until && whole_via.size() < 2;) {
      for (std::size_t via = 0; via < 3; ++via) {
        if (via == down) continue;
        int n = 0;
        auto r = logs[via]->read("t.log.n.>", [&](const std::string&, std::uint64_t, std::string) { ++n; });
        if (!r) ++failed, errors.insert(r.error().message);
        else if (n == runs) ++whole, whole_via.insert(via);
        else ++shorter;
      }
    }
    INFO("server " << down << " down: " << whole << " whole, " << failed << " failed, " << shorter << " short; errors: "
                   << [&] { std::string all; for (const auto& e : errors) all += e + "; "; return all; }());
    CHECK(shorter == 0);
    CHECK(whole_via.size() == 2);
    cluster.restart(down);
    REQUIRE_EVENTUALLY(30'000, [&] {
      int n = 0;
      auto r = logs[(down + 1) % 3]->read("t.log.n.>", [&](const std::string&, std::uint64_t, std::string) { ++n; });
      return r.ok() && n == runs;
    }());
  }
}

// nats-server 2.9 confirms two appends sent at once to one position of a replicated stream
// (tests/nats_server/concurrent_cas.mjs: 260 of 300 pairs); an owner's write and a taker's fence
// would both stand, the fence no longer last. Through the run log exactly one of each pair
// counts: the other is refused (errc::conflict) whether the server refused it or confirmed it
// second; a read hands only what counts, in order; the writer that won appends on after it (past
// the write that does not count), and so does one sent the send()/wait() way. Also entries in
// parts sent at once: one whole entry counts.
TEST_CASE("run log: on three replicas, two appends at once to one position: exactly one counts, and the log goes on after it",
          "[broker][integration][cluster]") {
  testing::nats_cluster cluster;
  broker::run_log_options o{"KEEL_RUNS_race", "race.log.>", 3, 64 * 1024, 5000};
  auto logs = logs_through_each(cluster, o);
  REQUIRE(logs.size() == 3);
  int rounds = 40, doubled = 0, none = 0;
  std::string big_a(150 * 1024, 'a'), big_b(150 * 1024, 'b');
  for (int round = 0; round < rounds; ++round) {
    auto subject = "race.log.o1.r" + std::to_string(round);
    auto first = logs[0]->append({{subject, "first", 0, "o1"}});
    REQUIRE(first.front().ok());
    bool parts = round % 4 == 3;  // entries of three parts each
    std::atomic<int> ready{0};
    std::vector<result<std::uint64_t>> a, b;
    auto write = [&](broker::run_log& l, std::vector<result<std::uint64_t>>& out, const std::string& data, const char* who) {
      ++ready;
      while (ready < 2) {}
      out = l.append({{subject, data, static_cast<std::int64_t>(*first.front()), who}});
    };
    std::thread ta([&] { write(*logs[1], a, parts ? big_a : "from o1", "o1"); });
    std::thread tb([&] { write(*logs[2], b, parts ? big_b : "fence by o2", "o2"); });
    ta.join();
    tb.join();
    INFO(subject << ": " << (a.front() ? "counts" : a.front().error().message) << " / "
                 << (b.front() ? "counts" : b.front().error().message));
    int counted = static_cast<int>(a.front().ok()) + static_cast<int>(b.front().ok());
    doubled += counted == 2;
    none += counted == 0;
    if (counted != 1) continue;
    CHECK((a.front().ok() ? b : a).front().error().code == errc::conflict);
    auto winner = a.front().ok() ? *a.front() : *b.front();
    std::string won = a.front().ok() ? (parts ? big_a : "from o1") : (parts ? big_b : "fence by o2");
    // The winner goes on after its own write; one more the send()/wait() way.
    auto& winner_log = a.front().ok() ? *logs[1] : *logs[2];
    auto next = winner_log.append({{subject, "next", static_cast<std::int64_t>(winner), "w"}});
    REQUIRE(next.front().ok());
    auto ticket = winner_log.send({subject, "last", static_cast<std::int64_t>(*next.front()), "w"});
    REQUIRE(ticket.ok());
    auto last = winner_log.wait(*ticket);
    if (!last && last.error().code == errc::conflict)  // sent where a write that does not count is last
      last = winner_log.append({{subject, "last", static_cast<std::int64_t>(*next.front()), "w"}}).front();
    REQUIRE(last.ok());
    // Read through every server: first, the winner, next, last; nothing else.
    for (auto& l : logs) {
      std::vector<std::pair<std::uint64_t, std::string>> read;
      REQUIRE(l->read(subject, [&](const std::string&, std::uint64_t seq, std::string data) { read.emplace_back(seq, std::move(data)); }).ok());
      REQUIRE(read.size() == 4);
      CHECK(read[0].second == "first");
      CHECK(read[1] == std::make_pair(winner, won));
      CHECK(read[2] == std::make_pair(*next.front(), std::string("next")));
      CHECK(read[3] == std::make_pair(*last, std::string("last")));
      auto end = l->last_sequence(subject);
      REQUIRE(end.ok());
      CHECK(*end == *last);
    }
  }
  CHECK(doubled == 0);
  CHECK(none == 0);
}

// A writer whose position was cut away meanwhile (a stale owner: the new owner wrote on, then cut
// the subject to its own last entry) is refused, not sent after what is there: a write after a
// cut that names a position before the cut would not count for any reader while its writer took
// it as written. And a read during which a message it depends on goes missing fails (to be read
// again), never hands on a history with a hole.
TEST_CASE("run log: on three replicas, a write from a position cut away is refused, and every reader agrees with every writer",
          "[broker][integration][cluster]") {
  testing::nats_cluster cluster;
  broker::run_log_options o{"KEEL_RUNS_cut", "cut.log.>", 3, 64 * 1024, 5000};
  auto logs = logs_through_each(cluster, o);
  auto subject = std::string("cut.log.o1.r1");
  auto a = logs[0]->append({{subject, "a", 0, "o1"}}).front();
  REQUIRE(a.ok());
  auto b = logs[0]->append({{subject, "b", static_cast<std::int64_t>(*a), "o1"}}).front();
  REQUIRE(b.ok());
  // The new owner writes on and cuts the subject to its last entry.
  auto c = logs[1]->append({{subject, "fence by o2", static_cast<std::int64_t>(*b), "o2"}}).front();
  REQUIRE(c.ok());
  auto d = logs[1]->append({{subject, "d by o2", static_cast<std::int64_t>(*c), "o2"}}).front();
  REQUIRE(d.ok());
  REQUIRE(logs[1]->purge_before(subject, *d).ok());
  // The old owner, which knew the subject at b, writes: refused as a conflict, by every log.
  for (auto& l : logs) {
    auto stale = l->append({{subject, "late by o1", static_cast<std::int64_t>(*b), "o1"}}).front();
    REQUIRE_FALSE(stale.ok());
    CHECK(stale.error().code == errc::conflict);
    auto stale_first = l->append({{subject, "first again by o1", 0, "o1"}}).front();
    REQUIRE_FALSE(stale_first.ok());
    CHECK(stale_first.error().code == errc::conflict);
  }
  // What every server hands: d alone; the subject ends at d; the new owner writes on.
  for (auto& l : logs) {
    std::vector<std::string> read;
    REQUIRE(l->read(subject, [&](const std::string&, std::uint64_t, std::string data) { read.push_back(std::move(data)); }).ok());
    CHECK(read == std::vector<std::string>{"d by o2"});
    auto end = l->last_sequence(subject);
    REQUIRE(end.ok());
    CHECK(*end == *d);
  }
  auto e = logs[2]->append({{subject, "e by o2", static_cast<std::int64_t>(*d), "o2"}}).front();
  REQUIRE(e.ok());
}

// The readers' rule on its own: which messages of a subject count, read in order.
TEST_CASE("run log: a message counts when it follows the last one that counted, and one following a message the read never saw is a gap",
          "[broker]") {
  using broker::run_log_messages::chain_filter;
  using verdict = chain_filter::verdict;
  chain_filter chain;
  CHECK(chain.see("s", 10, 7) == verdict::counts);   // the first read (a cut left it): counts whatever it follows
  CHECK(chain.see("s", 11, 10) == verdict::counts);
  CHECK(chain.see("s", 12, 10) == verdict::skipped);  // stored second of two sent at once after 10
  CHECK(chain.see("s", 13, 12) == verdict::skipped);  // written after that one by a writer that took it for its own
  CHECK(chain.see("s", 14, 7) == verdict::skipped);   // follows a message cut away
  CHECK(chain.see("s", 15, 11) == verdict::counts);   // the next that follows what counts
  CHECK(chain.see("s", 17, 16) == verdict::gap);      // 16 was never read: the read is not whole
  CHECK(chain.see("s", 18, std::nullopt) == verdict::counts);  // written without a check
  CHECK(chain.last("s") == 18);
  CHECK(chain.see("t", 20, 0) == verdict::counts);    // subjects apart
  CHECK(chain.see("t", 21, 0) == verdict::skipped);
  CHECK(chain.last("t") == 20);
  CHECK(chain.last("u") == 0);
}

TEST_CASE("run log: a message following one its subject never held is not taken to count: the read fails, to be made again",
          "[broker][integration]") {
  // A copy that lacks a message its replicas agreed on is read past by asking the stream's leader
  // for it; a message the leader lacks too is not made up: what follows it does not count, and
  // the read says it is not whole, whatever it follows (a message of another subject here).
  nats_server server;
  auto nats = connect(server.url());
  auto log = broker::run_log::open(nats, {"KEEL_RUNS_test", "t.log.>", 1, 64 * 1024, 5000});
  REQUIRE(log.ok());
  auto& l = **log;
  auto first = l.append({{"t.log.a.r1", "one", 0, "n1"}});
  REQUIRE(first[0].ok());
  // Written as the log's writers write (a raw message with its Keel-Prev), following sequence 2,
  // a message of another subject.
  auto* nc = broker::native_connection(*nats);
  auto publish = [&](const std::string& subject, const std::string& data, std::optional<std::uint64_t> prev) {
    natsMsg* msg = nullptr;
    REQUIRE(natsMsg_Create(&msg, subject.c_str(), nullptr, data.data(), static_cast<int>(data.size())) == NATS_OK);
    if (prev) REQUIRE(natsMsgHeader_Set(msg, broker::run_log_messages::prev_header, std::to_string(*prev).c_str()) == NATS_OK);
    natsMsg* ack = nullptr;
    REQUIRE(natsConnection_RequestMsg(&ack, nc, msg, 5000) == NATS_OK);  // the stream's acknowledgement
    natsMsg_Destroy(ack);
    natsMsg_Destroy(msg);
  };
  publish("t.log.a.other", "another subject", std::nullopt);  // sequence 2
  publish("t.log.a.r1", "two", 2);                            // sequence 3
  std::size_t handed = 0;
  auto whole = l.read("t.log.a.r1", [&](const std::string&, std::uint64_t, std::string) { ++handed; });
  REQUIRE_FALSE(whole.ok());
  CHECK(whole.error().code == errc::unavailable);
  CHECK(whole.error().message.find("follows a message this read did not see") != std::string::npos);
}
