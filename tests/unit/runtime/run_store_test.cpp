#include "runtime/run_store.hpp"
#include "tests/support/test_support.hpp"

#include <atomic>
#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

using namespace keel;
using namespace keel::store;
using keel::testing::temp_dir;

namespace {

std::unique_ptr<run_store> open_store(const std::string& path, bool fsync = true) {
  auto s = run_store::open({path, fsync});
  REQUIRE(s.ok());
  return std::move(*s);
}

run_transition created(const std::string& id, const std::string& agent, std::int64_t at_ms) {
  run_transition t;
  t.record.run_id = id;
  t.record.agent = agent;
  t.record.status = run_status::pending;
  t.record.created_ms = at_ms;
  t.record.updated_ms = at_ms;
  t.record.state = wire::value{{"step", 0}};
  return t;
}

// Advances `t` to `status`, adding one journal entry and one event.
void advance(run_transition& t, run_status status, const std::string& what) {
  t.record.status = status;
  t.record.last_journal_seq += 1;
  t.record.last_event_seq += 1;
  t.journal = {{t.record.last_journal_seq, what, 1, wire::value{{"what", what}}}};
  t.events = {{t.record.run_id, t.record.last_event_seq, what, 1, wire::value{{"what", what}}}};
}

// A journal entry written on its own (as a result is, before its run applies it).
run_transition entry_only(const std::string& id, std::uint64_t seq, const std::string& what) {
  run_transition t;
  t.entries_only = true;
  t.record.run_id = id;
  t.journal = {{seq, what, 1, wire::value{{"what", what}}}};
  return t;
}

} // namespace

TEST_CASE("run store: a run reads back as it was written", "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  auto t = created("r1", "coder", 1000);
  t.record.session_id = "s1";
  t.record.state = wire::value{{"messages", {"a", "b"}}};
  REQUIRE(store->apply(t).ok());
  auto got = store->get("r1");
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  const run_record& r = **got;
  CHECK(r.agent == "coder");
  CHECK(r.session_id == "s1");
  CHECK(r.status == run_status::pending);
  CHECK(r.state == t.record.state);
  auto none = store->get("nope");
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
}

TEST_CASE("run store: a reopened store returns the journal and events it was given",
          "[runtime][store]") {
  temp_dir dir;
  {
    auto store = open_store(dir.path());
    auto t = created("r1", "coder", 1000);
    REQUIRE(store->apply(t).ok());
    for (int i = 0; i < 5; ++i) {
      advance(t, run_status::running, "step-" + std::to_string(i));
      REQUIRE(store->apply(t).ok());
      // A full transition's entries are in its snapshot: not kept. Entries on their own are.
      REQUIRE(store->apply(entry_only("r1", static_cast<std::uint64_t>(i) + 1, "step-" + std::to_string(i))).ok());
    }
  }
  auto store = open_store(dir.path());
  auto journal = store->journal("r1");
  REQUIRE(journal.ok());
  REQUIRE(journal->size() == 5);
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK((*journal)[i].seq == i + 1);
    CHECK((*journal)[i].kind == "step-" + std::to_string(i));
  }
  auto events = store->events("r1", 3);
  REQUIRE(events.ok());
  REQUIRE(events->size() == 3);
  CHECK((*events)[0].seq == 3);
  CHECK((*events)[2].event_type == "step-4");
  CHECK(store->events("r1", 1, 2)->size() == 2);
  CHECK(store->events("other")->empty());
}

TEST_CASE("run store: runs are listed by status, agent and time as their status changes",
          "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  auto a = created("ra", "coder", 1000);
  auto b = created("rb", "coder", 2000);
  auto c = created("rc", "ops", 3000);
  REQUIRE(store->apply({a, b, c}).ok());
  CHECK(*store->list_by_status(run_status::pending) == std::vector<std::string>{"ra", "rb", "rc"});
  advance(b, run_status::suspended, "suspend");
  advance(c, run_status::completed, "done");
  REQUIRE(store->apply({b, c}).ok());
  CHECK(*store->list_by_status(run_status::pending) == std::vector<std::string>{"ra"});
  CHECK(*store->list_by_status(run_status::suspended) == std::vector<std::string>{"rb"});
  CHECK(*store->list_by_status(run_status::completed) == std::vector<std::string>{"rc"});
  CHECK(store->list_by_status(run_status::failed)->empty());
  CHECK(*store->list_by_agent("coder") == std::vector<std::string>{"ra", "rb"});
  CHECK(*store->list_recent(2) == std::vector<std::string>{"rc", "rb"});
  CHECK(*store->list_recent(10) == std::vector<std::string>{"rc", "rb", "ra"});
}

TEST_CASE("run store: two transitions of one run in one batch keep the indexes right",
          "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  auto t = created("r1", "coder", 1000);
  auto first = t;
  advance(t, run_status::running, "started");
  auto second = t;
  advance(t, run_status::suspended, "suspend");
  REQUIRE(store->apply({first, second, t}).ok());
  CHECK(store->list_by_status(run_status::pending)->empty());
  CHECK(store->list_by_status(run_status::running)->empty());
  CHECK(*store->list_by_status(run_status::suspended) == std::vector<std::string>{"r1"});
  CHECK(store->journal("r1")->empty());  // the snapshot holds what the entries said
}

TEST_CASE("run store: a transition that names the stored status keeps the indexes right without reading",
          "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  auto t = created("r1", "coder", 1000);
  REQUIRE(store->apply(t).ok());
  // Same status, named: the header stays as it is; the rest of the transition is written.
  advance(t, run_status::pending, "noted");
  t.stored_status = run_status::pending;
  REQUIRE(store->apply(t).ok());
  CHECK(*store->list_by_status(run_status::pending) == std::vector<std::string>{"r1"});
  CHECK(store->events("r1")->size() == 1);
  // A change, named: the old status index goes, the new one comes, the header follows.
  advance(t, run_status::running, "started");
  t.stored_status = run_status::pending;
  REQUIRE(store->apply(t).ok());
  CHECK(store->list_by_status(run_status::pending)->empty());
  CHECK(*store->list_by_status(run_status::running) == std::vector<std::string>{"r1"});
  // Two of them in one batch, each naming what the one before it left.
  auto suspended = t;
  advance(suspended, run_status::suspended, "suspend");
  suspended.stored_status = run_status::running;
  auto completed = suspended;
  advance(completed, run_status::completed, "done");
  completed.stored_status = run_status::suspended;
  REQUIRE(store->apply({suspended, completed}).ok());
  CHECK(store->list_by_status(run_status::running)->empty());
  CHECK(store->list_by_status(run_status::suspended)->empty());
  CHECK(*store->list_by_status(run_status::completed) == std::vector<std::string>{"r1"});
  CHECK(*store->list_by_agent("coder") == std::vector<std::string>{"r1"});
  // Read back after a reopen: the header written last says completed.
  store.reset();
  store = open_store(dir.path());
  auto got = store->get("r1");
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  CHECK((*got)->status == run_status::completed);
  auto again = t;
  again.stored_status.reset();  // not named: read from disk (completed)
  advance(again, run_status::failed, "late");
  REQUIRE(store->apply(again).ok());
  CHECK(store->list_by_status(run_status::completed)->empty());
  CHECK(*store->list_by_status(run_status::failed) == std::vector<std::string>{"r1"});
  // A named status is taken at its word, not checked against the disk (that is the read it
  // saves): named wrongly, the index of the status on disk stays. Only a run's actor, which
  // knows, names it.
  auto trusted = again;
  advance(trusted, run_status::cancelled, "cancel");
  trusted.stored_status = run_status::suspended;  // on disk: failed
  REQUIRE(store->apply(trusted).ok());
  CHECK(*store->list_by_status(run_status::failed) == std::vector<std::string>{"r1"});
  CHECK(*store->list_by_status(run_status::cancelled) == std::vector<std::string>{"r1"});
}

TEST_CASE("run store: idempotency keys find the run they created", "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  auto t = created("r1", "coder", 1000);
  t.record.idempotency_key = "order-17";
  REQUIRE(store->apply(t).ok());
  CHECK(**store->find_by_idempotency_key("coder", "order-17") == "r1");
  CHECK_FALSE(store->find_by_idempotency_key("ops", "order-17")->has_value());
  CHECK_FALSE(store->find_by_idempotency_key("coder", "order-18")->has_value());
}

TEST_CASE("run store: the journal can be cut below a snapshot", "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  auto t = created("r1", "coder", 1000);
  for (int i = 0; i < 6; ++i) {
    advance(t, run_status::running, "s" + std::to_string(i));
    REQUIRE(store->apply(t).ok());
    REQUIRE(store->apply(entry_only("r1", static_cast<std::uint64_t>(i) + 1, "s" + std::to_string(i))).ok());
  }
  t.journal.clear();
  t.events.clear();
  t.journal_truncate_through = 4;
  REQUIRE(store->apply(t).ok());
  auto journal = store->journal("r1");
  REQUIRE(journal->size() == 2);
  CHECK((*journal)[0].seq == 5);
  CHECK(store->events("r1")->size() == 6);  // events are history and stay
}

TEST_CASE("run store: a long run's cuts leave nothing readable behind, and its end leaves no journal or conversation",
          "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  auto t = created("long", "coder", 1000);
  // 300 entries at once (more than a cut looks below itself), then a cut through them all.
  for (std::uint64_t seq = 1; seq <= 300; ++seq) REQUIRE(store->apply(entry_only("long", seq, "e")).ok());
  t.record.last_journal_seq = 300;
  t.journal_truncate_through = 300;
  REQUIRE(store->apply(t).ok());
  CHECK(store->journal("long", 301)->empty());  // what recovery reads: nothing past the cut
  // Then step after step, each cut right after its entries: nothing piles up within the window.
  for (std::uint64_t seq = 301; seq <= 3300; ++seq) {
    REQUIRE(store->apply(entry_only("long", seq, "e")).ok());
    t.record.last_journal_seq = seq;
    t.journal_truncate_through = seq;
    REQUIRE(store->apply(t).ok());
  }
  CHECK(store->journal("long", 237)->empty());
  t.record.status = run_status::completed;
  t.journal_truncate_through = 0;
  REQUIRE(store->apply(t).ok());
  CHECK(store->journal("long")->empty());  // the end removes the rest, below any window too
}

TEST_CASE("run store: synced transitions survive a SIGKILL of the writer", "[runtime][store]") {
  temp_dir dir;
  constexpr int runs = 50;
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The writer: acknowledged (synced) transitions, then death without any cleanup.
    auto opened = run_store::open({dir.path(), true});
    if (!opened) ::_exit(3);
    for (int i = 0; i < runs; ++i) {
      auto t = created("r" + std::to_string(i), "coder", 1000 + i);
      advance(t, run_status::suspended, "suspend");
      if (!(*opened)->apply(t)) ::_exit(4);
    }
    ::kill(::getpid(), SIGKILL);
    ::_exit(5);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
  auto store = open_store(dir.path());
  auto suspended = store->list_by_status(run_status::suspended);
  REQUIRE(suspended.ok());
  CHECK(suspended->size() == runs);
  for (int i = 0; i < runs; ++i) {
    auto r = store->get("r" + std::to_string(i));
    REQUIRE(r.ok());
    REQUIRE(r->has_value());
    CHECK((*r)->status == run_status::suspended);
    CHECK(store->events("r" + std::to_string(i))->size() == 1);
  }
}

TEST_CASE("run store: metadata persists across reopen", "[runtime][store]") {
  temp_dir dir;
  {
    auto store = open_store(dir.path(), false);
    REQUIRE(store->put_meta("node_id", "orch-7").ok());
  }
  auto store = open_store(dir.path(), false);
  CHECK(**store->get_meta("node_id") == "orch-7");
  CHECK_FALSE(store->get_meta("other")->has_value());
}

TEST_CASE("run store: a path that cannot hold a database is a clear error", "[runtime][store]") {
  temp_dir dir;
  keel::testing::write_file(dir.file("file"), "not a directory");
  auto s = run_store::open({dir.file("file") + "/db", true});
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code == errc::io);
  CHECK(s.error().message.find("cannot open the run store at") == 0);
}

TEST_CASE("run store: the conversation is written a message at a time and read back whole",
          "[runtime][store]") {
  temp_dir dir;
  auto message = [](int i) { return wire::value{{"role", "user"}, {"text", std::string(1000, 'a' + i % 26)}}; };
  {
    auto store = open_store(dir.file("db"));
    auto t = created("r1", "coder", 1);
    t.record.state["messages"] = wire::value::array({message(0), message(1)});
    REQUIRE(store->apply(t).ok());  // from the record's state: messages 0 and 1
    // Later transitions carry only their new messages, packed, as the run machine sends them.
    for (int i = 2; i < 40; ++i) {
      run_transition next;
      next.record = t.record;
      next.record.state = wire::value{{"step", i}};  // what the snapshot holds besides messages
      next.record.state["messages"] = wire::value::array();
      for (int k = 0; k <= i; ++k) next.record.state["messages"].push_back(message(k));
      next.snapshot = pack_record(next.record);
      next.messages_from = static_cast<std::uint64_t>(i);
      next.messages = {wire::pack(message(i))};
      REQUIRE(store->apply(next).ok());
      // The snapshot does not grow with the conversation: it holds the count, not the messages.
      CHECK(next.snapshot.size() < 200);
    }
  }
  auto store = open_store(dir.file("db"));  // read back after a reopen
  auto r = store->get("r1");
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  const auto& messages = (**r).state["messages"];
  REQUIRE(messages.size() == 40);
  for (int i = 0; i < 40; ++i) CHECK(messages[static_cast<std::size_t>(i)] == message(i));
  CHECK((**r).messages_on_disk == 40);
  CHECK((**r).state["step"] == 39);
  CHECK_FALSE((**r).state.contains("messages_count"));
  // Listing needs no conversation.
  auto light = store->get("r1", false);
  REQUIRE(light.ok());
  CHECK_FALSE((**light).state.contains("messages"));
  CHECK((**light).state["step"] == 39);
}

TEST_CASE("run store: a snapshot that counts more messages than are stored is an error, not a short conversation",
          "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.file("db"));
  auto t = created("r1", "coder", 1);
  t.record.state["messages"] = wire::value::array({wire::value{{"text", "one"}}});
  REQUIRE(store->apply(t).ok());
  run_transition next;
  next.record = t.record;
  next.record.state["messages"].push_back(wire::value{{"text", "two"}});
  next.snapshot = pack_record(next.record);  // counts two...
  next.messages_from = 1;
  next.messages = {};                        // ...but the second is not written
  next.record.state = wire::value{{"step", 0}};  // so apply() has nothing to take them from
  REQUIRE(store->apply(next).ok());
  auto r = store->get("r1");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == errc::malformed);
  CHECK(r.error().message.find("1 of its 2 messages") != std::string::npos);
}

TEST_CASE("run store: an entries-only transition writes its entries and nothing else", "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.file("db"));
  auto t = created("r1", "coder", 1);
  advance(t, run_status::running, "started");
  REQUIRE(store->apply(t).ok());
  run_transition alone;
  alone.entries_only = true;
  alone.record.run_id = "r1";
  alone.record.status = run_status::completed;  // ignored: only the journal is written
  alone.journal.push_back({2, "result", 5, wire::value{{"step", 1}}});
  alone.events.push_back({"r1", 2, "ignored", 5, wire::value::object()});
  REQUIRE(store->apply(alone).ok());
  auto r = store->get("r1");
  REQUIRE(r.ok());
  CHECK((**r).status == run_status::running);
  CHECK((**r).last_journal_seq == 1);  // the snapshot does not know the entry yet: a replay will
  auto journal = store->journal("r1", 2);
  REQUIRE(journal.ok());
  REQUIRE(journal->size() == 1);
  CHECK((*journal)[0].kind == "result");
  CHECK(store->events("r1")->size() == 1);
  CHECK(store->list_by_status(run_status::running)->size() == 1);
  CHECK(store->list_by_status(run_status::completed)->empty());
}

TEST_CASE("run store: received results are kept per run in order of arrival until removed", "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.file("db"));
  auto t = created("r1", "coder", 1);
  REQUIRE(store->apply(t).ok());
  CHECK(store->received("r1")->empty());
  CHECK(store->runs_with_received()->empty());

  // Orders compare as numbers, not as text (256 after 255, 2^40 after both).
  auto arrive = [&](const std::string& run, std::uint64_t order, const std::string& message) {
    run_transition x;
    x.entries_only = true;
    x.record.run_id = run;
    x.received.push_back({order, message});
    REQUIRE(store->apply(x).ok());
  };
  arrive("r1", 256, "second");
  arrive("r1", 255, "first");
  arrive("r1", (1ULL << 40) + 1, "third");
  arrive("r10", 7, "other run");  // a run whose id starts with the other's
  auto r1 = store->received("r1");
  REQUIRE(r1.ok());
  REQUIRE(r1->size() == 3);
  CHECK((*r1)[0].order == 255);
  CHECK((*r1)[0].message == "first");
  CHECK((*r1)[1].message == "second");
  CHECK((*r1)[2].order == (1ULL << 40) + 1);
  CHECK(*store->runs_with_received() == std::vector<std::string>{"r1", "r10"});
  // Nothing else of the run changed.
  CHECK((**store->get("r1")).last_journal_seq == t.record.last_journal_seq);

  // A full transition removes what it applied, in the same atomic write as the rest.
  run_transition next = t;
  advance(next, run_status::running, "applied");
  next.received_done = {255, 256};
  REQUIRE(store->apply(next).ok());
  r1 = store->received("r1");
  REQUIRE(r1->size() == 1);
  CHECK((*r1)[0].message == "third");
  CHECK((**store->get("r1")).status == run_status::running);

  run_transition drop;
  drop.entries_only = true;
  drop.record.run_id = "r1";
  drop.received_done = {(1ULL << 40) + 1, 999};  // removing what is not there is no error
  REQUIRE(store->apply(drop).ok());
  CHECK(store->received("r1")->empty());
  CHECK(*store->runs_with_received() == std::vector<std::string>{"r10"});
}

TEST_CASE("run store: a batch waits for a sync unless none of its transitions needs one", "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.file("db"));
  auto t = created("r1", "coder", 1);
  REQUIRE(store->apply(t).ok());
  CHECK(store->synced_writes() == 1);

  run_transition follows = t;  // what follows from a received result: written, not synced
  advance(follows, run_status::running, "applied");
  follows.sync = false;
  REQUIRE(store->apply(follows).ok());
  CHECK(store->synced_writes() == 1);
  CHECK((**store->get("r1")).status == run_status::running);  // written all the same

  // One transition that needs a sync makes the whole batch wait for it.
  run_transition received;
  received.entries_only = true;
  received.record.run_id = "r1";
  received.received.push_back({1, "result"});
  run_transition next = follows;
  advance(next, run_status::running, "more");
  next.sync = false;
  REQUIRE(store->apply(std::vector<run_transition>{next, received}).ok());
  CHECK(store->synced_writes() == 2);

  // With fsync off, nothing waits.
  auto unsynced = open_store(dir.file("db2"), false);
  REQUIRE(unsynced->apply(created("r2", "coder", 1)).ok());
  CHECK(unsynced->synced_writes() == 0);
}

TEST_CASE("run store: a run that completes keeps its history and conversation (unless told not to) and drops its journal, "
          "a failed one keeps both",
          "[runtime][store]") {
  for (bool keep : {true, false}) {
  temp_dir dir;
  store_options options;
  options.path = dir.path() + "/runs";
  options.fsync = false;
  options.keep_conversations = keep;
  auto opened = run_store::open(options);
  REQUIRE(opened.ok());
  auto store = std::move(*opened);
  for (auto [id, end] : {std::pair<std::string, run_status>{"done", run_status::completed}, {"broken", run_status::failed},
                         {"stopped", run_status::cancelled}}) {
    auto t = created(id, "coder", 1000);
    t.record.state = wire::value{{"messages", {"a", "b", "c"}}};
    REQUIRE(store->apply(t).ok());
    REQUIRE(store->apply(entry_only(id, 1, "result")).ok());
    auto before = store->bytes_written();
    advance(t, end, "end");
    REQUIRE(store->apply(t).ok());
    CHECK(store->bytes_written() > before);
    auto kept = store->get(id);
    REQUIRE(kept.ok());
    REQUIRE(kept->has_value());
    CHECK((*kept)->status == end);
    CHECK(store->events(id)->size() == 1);
    bool goes_on = end == run_status::failed;
    CHECK(store->messages(id, 0, 3, 1 << 20)->size() == (goes_on || keep ? 3u : 0u));
    CHECK(store->journal(id)->size() == (goes_on ? 1u : 0u));
  }
  CHECK(store->compact().ok());
  }
}

TEST_CASE("run store: a run read without its conversation says how long it is", "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.path());
  auto t = created("r1", "coder", 1000);
  t.record.state = wire::value{{"messages", {"a", "b"}}, {"steps", 2}};
  REQUIRE(store->apply(t).ok());
  auto light = store->get("r1", false);
  REQUIRE(light.ok());
  CHECK((**light).state["messages_count"] == 2);
  CHECK_FALSE((**light).state.contains("messages"));
  CHECK((**light).messages_on_disk == 2);
  // Written again from that state (as a run's actor does), the count stays.
  run_transition again;
  again.record = **light;
  again.record.state["steps"] = 3;
  REQUIRE(store->apply(again).ok());
  CHECK((*store->get("r1", false))->state["messages_count"] == 2);
  CHECK((*store->get("r1"))->state["messages"].size() == 2);
}

// Several store writers (one per lane) apply at once. Each run is one writer's, but a list (the
// approvals remembered for a session) may be appended to by runs of any lane: no append is lost.
TEST_CASE("run store: writers on 4 threads at once lose no run and no append to a shared list", "[runtime][store]") {
  temp_dir dir;
  auto store = open_store(dir.file("db"), false);
  constexpr int threads = 4, per_thread = 150;
  std::vector<std::thread> writers;
  std::atomic<int> failed{0};
  for (int w = 0; w < threads; ++w)
    writers.emplace_back([&, w] {
      for (int i = 0; i < per_thread; ++i) {
        auto id = "run-" + std::to_string(w) + "-" + std::to_string(i);
        auto t = created(id, "agent", 1000 + i);
        t.list_appends.push_back({"session/s1", wire::pack(wire::value(id))});
        // Two at once, as a group commit writes them.
        auto other = created(id + "b", "agent", 1000 + i);
        if (!store->apply(std::vector<run_transition>{t, other}).ok()) ++failed;
      }
    });
  for (auto& t : writers) t.join();
  REQUIRE(failed == 0);
  auto list = store->get_list("session/s1");
  REQUIRE(list.ok());
  CHECK(list->size() == threads * per_thread);
  for (int w = 0; w < threads; ++w)
    for (int i = 0; i < per_thread; i += 37) {
      auto id = "run-" + std::to_string(w) + "-" + std::to_string(i);
      auto got = store->get(id, false);
      REQUIRE(got.ok());
      CHECK(got->has_value());
      CHECK(store->get(id + "b", false)->has_value());
    }
}

// What the replicated log carries: transitions encoded on one node and applied on another store
// give that store the same run (header, snapshot, conversation, events, results received).
TEST_CASE("run store: transitions encoded and applied to another store give the same run", "[runtime][store]") {
  temp_dir dir;
  auto a = open_store(dir.file("a"), false);
  auto b = open_store(dir.file("b"), false);
  auto t1 = created("r-1", "agent", 1000);
  t1.record.state = wire::value{{"step", 1}, {"messages", wire::value::array({wire::value{{"role", "user"}, {"content", "hi"}}})}};
  t1.record.idempotency_key = "key-1";
  advance(t1, run_status::running, "started");
  run_transition r;
  r.entries_only = true;
  r.record.run_id = "r-1";
  r.received.push_back({7, std::string("\x00\x01result", 8)});
  auto t2 = t1;
  t2.record.state["messages"].push_back(wire::value{{"role", "assistant"}, {"content", "done"}});
  t2.messages_from = 1;
  t2.received.clear();
  t2.received_done = {7};
  t2.stored_status = run_status::running;
  advance(t2, run_status::completed, "completed");
  std::vector<run_transition> all{t1, r, t2};
  for (std::size_t i = 0; i < all.size(); ++i) {
    REQUIRE(a->apply(all[i]).ok());
    auto bytes = encode_transitions({&all[i]});
    auto decoded = decode_transitions(bytes);
    REQUIRE(decoded.ok());
    REQUIRE(b->apply(*decoded).ok());
    // After the result was received (and before it is applied), both hold it.
    if (i == 1) CHECK(b->received("r-1")->size() == 1);
  }
  auto from_a = a->get("r-1", false), from_b = b->get("r-1", false);
  REQUIRE(from_a.ok());
  REQUIRE(from_b.ok());
  CHECK(pack_record(**from_a) == pack_record(**from_b));
  CHECK(b->received("r-1")->empty());
  CHECK(b->events("r-1")->size() == a->events("r-1")->size());
  CHECK(*b->find_by_idempotency_key("agent", "key-1") == std::optional<std::string>("r-1"));
  CHECK(b->list_by_status(run_status::completed)->size() == 1);
  CHECK(b->list_by_status(run_status::running)->empty());
  // Damaged bytes are an error, never a crash or a half-applied run.
  for (std::string bad : {std::string(), std::string("\x81\xa3xyz\x01", 6), encode_transitions({&all[0]}).substr(0, 20)}) {
    auto decoded = decode_transitions(bad);
    CHECK_FALSE(decoded.ok());
  }
}

TEST_CASE("run store: under its disk reserve a store refuses new runs and writes with 'disk full', and reads go on",
          "[runtime][store]") {
  temp_dir dir;
  {
    auto store = open_store(dir.path());
    REQUIRE(store->apply(created("r1", "coder", 1000)).ok());
  }
  // A reserve larger than any disk: the store is under it from the start.
  store_options options;
  options.path = dir.path();
  options.reserve_bytes = std::uint64_t{1} << 60;
  auto opened = run_store::open(options);
  REQUIRE(opened.ok());
  auto& store = **opened;
  CHECK(store.free_bytes() > 0);
  auto admitted = store.admits_new_run();
  REQUIRE_FALSE(admitted.ok());
  CHECK(admitted.error().code == errc::unavailable);
  CHECK(admitted.error().message.rfind("disk full: the run store at " + dir.path(), 0) == 0);
  CHECK(admitted.error().message.find("durability.disk_reserve_bytes") != std::string::npos);
  // Writes of any size are not made, and nothing is half written.
  auto t = created("r1", "coder", 1000);
  advance(t, run_status::running, "started");
  t.stored_status = run_status::pending;
  auto written = store.apply(t);
  REQUIRE_FALSE(written.ok());
  CHECK(written.error().code == errc::unavailable);
  CHECK(written.error().message.find("disk full") == 0);
  CHECK_FALSE(store.apply(entry_only("r1", 1, "x")).ok());
  CHECK_FALSE(store.recover().ok());
  // Reads are served.
  auto got = store.get("r1");
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  CHECK((*got)->status == run_status::pending);
  CHECK(store.events("r1")->empty());
  auto listed = store.list_by_status(run_status::pending);
  REQUIRE(listed.ok());
  CHECK(listed->size() == 1);
}

TEST_CASE("run store: with a reserve the disk holds, writes go and recovery is a no-op", "[runtime][store]") {
  temp_dir dir;
  store_options options;
  options.path = dir.path();
  options.reserve_bytes = 1 << 20;
  auto opened = run_store::open(options);
  REQUIRE(opened.ok());
  auto& store = **opened;
  CHECK(store.admits_new_run().ok());
  CHECK(store.apply(created("r1", "coder", 1000)).ok());
  CHECK(store.recover().ok());
}
