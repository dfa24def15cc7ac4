// The broker knows who is talking: a nats-server with the users `keel credentials` makes, an
// orchestrator and a worker each on its own user, people on theirs. Anonymous and wrong
// credentials are refused; each role can publish only what it is for; a person acts only under
// its own name, and that name is what the run records.
#include "tests/e2e/authorized_broker.hpp"
#include "broker/authorization.hpp"
#include "broker/connection.hpp"
#include "runtime/wire.hpp"
#include "tests/support/test_support.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <atomic>
#include <csignal>
#include <thread>

using namespace keel;
using namespace keel::testing;

namespace {


// How many messages on `subject` published by `from` reach `reader` (which may read it).
int delivered(broker::connection& reader, broker::connection& from, const std::string& subject) {
  auto count = std::make_shared<std::atomic<int>>(0);
  auto sub = reader.subscribe(subject, "", [count](broker::message&&) { ++*count; });
  REQUIRE(sub.ok());
  REQUIRE(reader.flush(2000).ok());
  (void)from.publish(subject, "forged");
  (void)from.flush(2000);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  return count->load();
}

} // namespace

TEST_CASE("broker authorization: no credentials, wrong ones and others' files are refused", "[e2e][integration]") {
  authorized_broker b;
  auto anonymous = b.as("");
  REQUIRE_FALSE(anonymous.ok());
  CHECK(anonymous.error().code == errc::denied);
  CHECK(anonymous.error().message.find("refused a connection without credentials") != std::string::npos);
  auto wrong = b.as("ana", "not-her-password");
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.error().code == errc::denied);
  // Every credentials file is the owner's only, and the server's file holds no password.
  struct stat st{};
  REQUIRE(::stat(b.creds("worker").c_str(), &st) == 0);
  CHECK((st.st_mode & 077) == 0);
  auto conf = read_file(b.dir.file("creds/nats-auth.conf"));
  CHECK(conf.find(broker::read_credentials(b.creds("ana"))->password) == std::string::npos);
  // A node whose credentials file others may read does not start, and says why.
  ::chmod(b.creds("worker").c_str(), 0644);
  write_file(b.dir.file("w.toml"), "[node]\nroles = [\"worker\"]\n[nats]\nservers = [\"" + b.url + "\"]\ncredentials_file = \"" +
                                     b.creds("worker") + "\"\n");
  auto refused = run_command({KEEL_NODE_BINARY, "--config", b.dir.file("w.toml")}, 10'000);
  CHECK(refused.exit_code != 0);
  CHECK(refused.err.find("others may read these credentials") != std::string::npos);
}

TEST_CASE("broker authorization: a worker, a person and a gateway each publish only what their role is for",
          "[e2e][integration]") {
  authorized_broker b;
  auto orchestrator = b.as("orchestrator");
  auto worker = b.as("worker");
  auto ana = b.as("ana");
  INFO((orchestrator ? std::string() : orchestrator.error().message));
  REQUIRE(orchestrator.ok());
  REQUIRE(worker.ok());
  REQUIRE(ana.ok());
  auto& o = **orchestrator;
  const std::string run = "0000000000000000-n1";
  // A worker answers tasks; it cannot make events, resumes, cancels or invokes.
  CHECK(delivered(o, **worker, "keel.default.nodes.n1.results") == 1);
  CHECK(delivered(o, **worker, "keel.default.runs." + run + ".events") == 0);
  CHECK(delivered(o, **worker, "keel.default.runs." + run + ".resume.worker") == 0);
  CHECK(delivered(o, **worker, "keel.default.runs." + run + ".cancel.worker") == 0);
  CHECK(delivered(o, **worker, "keel.default.invoke.worker") == 0);
  // It reads the task stream and takes from it; it changes no stream: the broker refuses, and
  // the request says so (denied) instead of a plain timeout.
  const std::string tasks = "KEEL_TASKS_keel_default";
  CHECK((*worker)->request("$JS.API.STREAM.INFO." + tasks, "", 3000).ok());  // answered (the stream is not made yet)
  for (const std::string& change : std::vector<std::string>{"$JS.API.STREAM.UPDATE." + tasks, "$JS.API.STREAM.CREATE." + tasks,
                                    "$JS.API.STREAM.DELETE." + tasks, "$JS.API.STREAM.PURGE." + tasks,
                                    "$JS.API.CONSUMER.DELETE." + tasks + ".workers_coder", "$JS.API.STREAM.DELETE.KEEL_RUNS_keel_default"}) {
    INFO(change);
    auto refused = (*worker)->request(change, "{}", 1000);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == errc::denied);
  }
  // A person acts under its own name only, and cannot hand in a task result, an event or a task.
  CHECK(delivered(o, **ana, "keel.default.runs." + run + ".resume.ana") == 1);
  CHECK(delivered(o, **ana, "keel.default.runs." + run + ".resume.bob") == 0);
  CHECK(delivered(o, **ana, "keel.default.invoke.bob") == 0);
  CHECK(delivered(o, **ana, "keel.default.nodes.n1.results") == 0);
  CHECK(delivered(o, **ana, "keel.default.runs." + run + ".events") == 0);
  CHECK(delivered(o, **ana, "keel.default.tasks.coder." + run + ".1") == 0);
  CHECK(delivered(o, **ana, "$JS.API.STREAM.DELETE.KEEL_RUNS_keel_default") == 0);
  // A request it may not send is refused at once, and says so.
  auto forged = (*ana)->request("keel.default.runs." + run + ".resume.bob", "{}", 2000);
  REQUIRE_FALSE(forged.ok());
  CHECK(forged.error().code == errc::denied);
  // Nobody reads another's replies: ana's subscription to bob's inbox gets nothing.
  auto bob = b.as("bob");
  REQUIRE(bob.ok());
  CHECK(delivered(**ana, o, "_INBOX.bob.x") == 0);
  CHECK(delivered(**ana, o, "_INBOX.ana.x") == 1);
  // The gateway may act for any person (it checked their token), not as a worker.
  auto gateway = b.as("gateway");
  REQUIRE(gateway.ok());
  CHECK(delivered(o, **gateway, "keel.default.runs." + run + ".resume.bob") == 1);
  CHECK(delivered(o, **gateway, "keel.default.nodes.n1.results") == 0);
}

TEST_CASE("broker authorization: a worker given queues takes only their tasks, by consumers whose filter the broker checks",
          "[e2e][integration]") {
  authorized_broker b;
  auto added = run_command({KEEL_BINARY, "credentials", "add", "tickets-worker", "--role", "worker", "--queues", "tickets",
                            "--dir", b.dir.file("creds")});
  INFO(added.out << added.err);
  REQUIRE(added.exit_code == 0);
  CHECK(run_command({KEEL_BINARY, "credentials", "add", "p2", "--queues", "x", "--dir", b.dir.file("creds")}).exit_code != 0);
  CHECK(run_command({KEEL_BINARY, "credentials", "add", "w9", "--role", "worker", "--queues", "a b", "--dir", b.dir.file("creds")}).exit_code != 0);
  b.restart();
  auto orchestrator = b.as("orchestrator");
  auto scoped = b.as("tickets-worker");
  REQUIRE(orchestrator.ok());
  REQUIRE(scoped.ok());
  const std::string tasks = "KEEL_TASKS_keel_default";
  auto stream = nlohmann::json{{"name", tasks}, {"subjects", {"keel.default.tasks.>"}}, {"retention", "workqueue"}, {"storage", "file"}};
  REQUIRE((*orchestrator)->request("$JS.API.STREAM.CREATE." + tasks, stream.dump(), 5000).ok());
  auto consumer = [&](const std::string& queue) {
    return nlohmann::json{{"stream_name", tasks}, {"config", {{"durable_name", "workers_" + queue}, {"ack_policy", "explicit"},
                                                                {"filter_subject", "keel.default.tasks." + queue + ".>"}}}}.dump();
  };
  // Its own queue: created (filter named in the subject), read, asked about.
  auto own = (*scoped)->request("$JS.API.CONSUMER.CREATE." + tasks + ".workers_tickets.keel.default.tasks.tickets.>", consumer("tickets"), 5000);
  REQUIRE(own.ok());
  CHECK(own->data.find("\"error\"") == std::string::npos);
  CHECK((*scoped)->request("$JS.API.CONSUMER.INFO." + tasks + ".workers_tickets", "", 5000).ok());
  // Another queue (an agent's: its model steps and conversations), by every way a consumer is
  // made or read: refused by the broker.
  REQUIRE((*orchestrator)->request("$JS.API.CONSUMER.CREATE." + tasks + ".workers_coder.keel.default.tasks.coder.>", consumer("coder"), 5000).ok());
  for (const auto& [subject, body] : std::vector<std::pair<std::string, std::string>>{
         {"$JS.API.CONSUMER.CREATE." + tasks + ".workers_coder.keel.default.tasks.coder.>", consumer("coder")},
         {"$JS.API.CONSUMER.CREATE." + tasks + ".workers_tickets.keel.default.tasks.>", consumer("tickets")},
         {"$JS.API.CONSUMER.DURABLE.CREATE." + tasks + ".workers_tickets", consumer("coder")},
         {"$JS.API.CONSUMER.CREATE." + tasks, consumer("coder")},
         {"$JS.API.CONSUMER.MSG.NEXT." + tasks + ".workers_coder", "{\"batch\": 1}"},
         {"$JS.API.CONSUMER.INFO." + tasks + ".workers_coder", ""}}) {
    INFO(subject);
    auto refused = (*scoped)->request(subject, body, 1000);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == errc::denied);
  }
}

TEST_CASE("broker authorization: an orchestrator and a worker on their own users run a run, and who started and approved it is the person",
          "[e2e][integration]") {
  authorized_broker b;
  write_file(b.dir.file("coder.json"),
             R"({"turns": [{"text": "Running.", "tool_calls": [{"name": "exec", "arguments": {"command": "echo ran > ran.txt"}}]}, {"text": "Done."}]})");
  auto agents = "[agents.coder]\nscript = \"" + b.dir.file("coder.json") + "\"\n[agents.coder.sandbox]\nworkspace = \"" +
                b.dir.file("ws") + "\"\n";
  write_file(b.dir.file("o.toml"), "[node]\nname = \"n1\"\nroles = [\"orchestrator\"]\ndata_dir = \"" + b.dir.file("data") +
                                     "\"\n[nats]\nservers = [\"" + b.url + "\"]\ncredentials_file = \"" + b.creds("orchestrator") +
                                     "\"\n" + agents);
  write_file(b.dir.file("w.toml"), "[node]\nname = \"w1\"\nroles = [\"worker\"]\n[nats]\nservers = [\"" + b.url +
                                     "\"]\ncredentials_file = \"" + b.creds("worker") + "\"\n" + agents);
  auto o = start_command({KEEL_NODE_BINARY, "--config", b.dir.file("o.toml")}, b.dir, "o");
  auto w = start_command({KEEL_NODE_BINARY, "--config", b.dir.file("w.toml")}, b.dir, "w");
  std::vector<std::string> env = {"KEEL_HOME=" + b.dir.file("home"), "KEEL_NATS_URL=" + b.url,
                                  "KEEL_NATS_CREDENTIALS=" + b.creds("ana")};
  REQUIRE_EVENTUALLY(15'000, run_command({KEEL_BINARY, "agents"}, 10'000, env).out.find("coder") != std::string::npos);
  auto ran = run_command({KEEL_BINARY, "run", "coder", "go", "--yes"}, 60'000, env);
  INFO(ran.out << ran.err << read_file(b.dir.file("o.err")) << read_file(b.dir.file("w.err")));
  REQUIRE(ran.exit_code == 0);
  CHECK(ran.out.find("started by ana") != std::string::npos);
  CHECK(ran.out.find("Approved by ana") != std::string::npos);
  // Neither node was refused anything on the way.
  CHECK(read_file(b.dir.file("o.err")).find("the broker refused") == std::string::npos);
  CHECK(read_file(b.dir.file("w.err")).find("the broker refused") == std::string::npos);
  CHECK(read_file(b.dir.file("nats.err")).find("Violation") == std::string::npos);
  // A person cannot have the orchestrator answer, with its rights, on a subject the person may
  // not publish on: an event, a bucket's key, a task, a result. Its own inbox gets the answer.
  auto orchestrator = b.as("orchestrator");
  auto ana = b.as("ana");
  REQUIRE(orchestrator.ok());
  REQUIRE(ana.ok());
  auto landed = std::make_shared<std::atomic<int>>(0);
  std::vector<std::unique_ptr<broker::subscription>> watching;
  const std::vector<std::string> targets = {"keel.default.runs.0000000000000000-n1.events", "$KV.KEEL_KEYS_keel_default.coder.k1",
                                            "keel.default.tasks.coder.0000000000000000-n1.7", "keel.default.nodes.n1.results"};
  for (const auto& t : targets) {
    auto s = (*orchestrator)->subscribe(t, "", [landed](broker::message&&) { ++*landed; });
    REQUIRE(s.ok());
    watching.push_back(std::move(*s));
  }
  REQUIRE((*orchestrator)->flush(2000).ok());
  auto list = wire::pack(wire::value{{"v", 1}, {"type", "list_runs"}, {"limit", 1}});
  for (const auto& t : targets) REQUIRE((*ana)->publish("keel.default.runs.list", t, list).ok());
  REQUIRE((*ana)->publish("keel.default.runs.list", "not-a-subject-of-anyone", "\x93junk").ok());
  REQUIRE((*ana)->flush(2000).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  CHECK(landed->load() == 0);
  CHECK((*ana)->request("keel.default.runs.list", list, 5000).ok());
}
