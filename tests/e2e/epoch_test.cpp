// Epochs on a cluster with the replicated run log (docs/PROTOCOL.md, "Epochs"): an owner's answers
// to workers name the epoch in which it holds the run's node, the taker's the next one; a message
// naming an epoch the lease does not bear out (any broker client can send one) neither stops the
// owner nor changes its answers.
#include "tests/e2e/failover_cluster.hpp"

using namespace keel;
using namespace keel::testing;
using namespace keel::testing::e2e;

namespace {

// The owner's answer to a worker's task_wanted (step 1, attempt 1), naming `epoch` when not 0;
// an empty object when nobody answered.
json ask_wanted(failover_cluster& c, const std::string& run, std::uint64_t epoch) {
  wire::value q{{"v", wire::protocol_version}, {"type", "task_wanted"}, {"step", 1}, {"attempt", 1}};
  if (epoch != 0) q["epoch"] = epoch;
  auto reply = c.clients.at(1)->request("keel.default.runs." + run + ".task_wanted", wire::pack(q), 3000);
  if (!reply) return json::object();
  auto v = wire::unpack(reply->data);
  return v && v->is_object() ? *v : json::object();
}

// The answer to a task_result offered to o1's results subject.
json offer(failover_cluster& c, const wire::task_result& r) {
  auto reply = c.clients.at(0)->request("keel.default.nodes.o1.results", wire::encode(r), 5000);
  REQUIRE(reply.ok());
  auto v = wire::unpack(reply->data);
  REQUIRE(v.ok());
  return *v;
}

} // namespace

TEST_CASE("failover: epochs: answers name the owner's epoch and the taker's the next, and an epoch the lease does not bear out "
          "stops nobody",
          "[e2e][integration][cluster][failover]") {
  failover_cluster c;
  c.start_all();
  auto run = c.invoke_on("o1", "ops", "wait", 0);
  REQUIRE_EVENTUALLY(20'000, status_of(c.show(run, 1)) == "suspended");
  on_failure report{[&] { return c.logs(); }};

  auto first = ask_wanted(c, run, 0);
  INFO(first.dump());
  CHECK(first.value("type", "") == "task_wanted");
  CHECK(first.value("wanted", true) == false);  // waiting for a person: no task in flight
  REQUIRE(first.contains("epoch"));
  auto epoch = first["epoch"].get<std::uint64_t>();
  CHECK(epoch >= 1);

  // Named by a client that lies (only an orchestrator's credentials could, on a broker with
  // them): the owner tells it to ask again, reads its lease on its watcher's next round, finds it
  // its own, says so in its log, and goes on answering the others in its own epoch; it never
  // answers the liar (its answer would be refused by a worker that believes a newer owner), and a
  // result naming that epoch is offered again, not taken.
  for (int i = 0; i < 5; ++i) {
    auto lied = ask_wanted(c, run, epoch + 1000 + static_cast<std::uint64_t>(i));
    INFO(lied.dump());
    CHECK(lied.value("type", "") == "error");
    CHECK(lied.dump().find("ask again") != std::string::npos);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  REQUIRE_EVENTUALLY(10'000, read_file(c.dir.file("o1.err")).find("not believed") != std::string::npos);
  auto honest = ask_wanted(c, run, epoch);
  INFO(honest.dump());
  CHECK(honest.value("type", "") == "task_wanted");
  CHECK(honest.value("epoch", std::uint64_t{0}) == epoch);
  wire::task_result late{run, 1, 1, "liar", true, wire::value{{"status", "done"}, {"result", "x"}}, std::nullopt};
  late.epoch = epoch + 5000;
  auto refused = offer(c, late);
  INFO(refused.dump());
  CHECK(refused.value("type", "") == "error");
  CHECK(refused.dump().find("offer it again") != std::string::npos);
  late.epoch = epoch;  // the same result naming the owner's epoch: a late result ("not needed")
  auto answer = offer(c, late);
  INFO(answer.dump());
  CHECK(answer.value("type", "") == "result_recorded");
  CHECK(answer.value("kept", true) == false);
  CHECK(answer.value("epoch", std::uint64_t{0}) == epoch);
  CHECK(read_file(c.dir.file("o1.err")).find("are no longer this node's") == std::string::npos);
  CHECK(c.nodes["o1"].running());

  // Taken over (o1 paused past its lease): the taker answers in a newer epoch.
  c.nodes["o1"].signal(SIGSTOP);
  json after;
  REQUIRE_EVENTUALLY(30'000, (after = ask_wanted(c, run, 0)).value("epoch", std::uint64_t{0}) > epoch);
  CHECK(after.value("wanted", true) == false);
  CHECK(c.approve(run, c.show(run, 1)["waiting"]["step_key"].get<std::string>(), 1) == "");
  c.await_completed(run);
  // o1 wakes and finds its runs gone (its lease watcher, or a worker's newer epoch): its
  // orchestrator role rejoins as a new member.
  c.nodes["o1"].signal(SIGCONT);
  c.await_rejoined("o1");
  CHECK(lines_of(read_file(c.dir.file("ws/ops-calls.txt"))).size() == 1);
}
