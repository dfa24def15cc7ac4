// The failover tests' cluster: three routed nats-servers, three orchestrators with the replicated
// run log (3 replicas, 2-s leases), a worker, and the requests the tests send to them by hand.
#pragma once

#include "tests/e2e/multi_node.hpp"

namespace keel::testing::e2e {

// A run's status as shown; empty when its owner did not answer (a null).
inline std::string status_of(const json& shown) { return shown.is_object() ? shown.value("status", std::string()) : std::string(); }

// Three orchestrators with the run log on (3 replicas, 2-s leases), a worker, agents "auto" (a
// 1.5-s model step, a command, a model step: unattended) and "ops" (a command a person approves).
struct failover_cluster : multi_node {
  // 2-s leases here; KEEL_FAILOVER_LEASE_MS=5000 measures the takeover with the default. Nodes of
  // another build (KEEL_TEST_NODE_BINARY: ThreadSanitizer's, several times slower, on two cores
  // shared with the sanitized tests that drive them) get 4 s, so that a node starved of the CPU
  // for 2 s while it takes 60 invokes is not taken over before the test's own faults begin.
  static std::int64_t lease_ms() {
    const char* given = std::getenv("KEEL_FAILOVER_LEASE_MS");
    if (given && std::atoll(given) > 0) return std::atoll(given);
    const char* other_build = std::getenv("KEEL_TEST_NODE_BINARY");
    return other_build && *other_build ? 4000 : 2000;
  }
  static std::string log_settings() {
    return "[durability]\nlog_replicas = 3\nlease_ms = " + std::to_string(lease_ms()) + "\n";
  }
  std::string agents() {
    return "[agents.auto]\nscript = \"" + dir.file("auto.json") + "\"\nscript_log = \"" + dir.file("model-calls.log") +
           "\"\n[agents.auto.sandbox]\nworkspace = \"" + dir.file("ws") +
           "\"\nscope = \"agent\"\nexec_security = \"allow-always\"\nfile_approval = false\n";
  }
  // `extra` is TOML for more agents, on every node.
  void start_all(const std::string& extra = "") {
    write_file(dir.file("auto.json"), R"({"turns": [
        {"delay_ms": 1500, "text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "echo $KEEL_TASK_ID >> auto-calls.txt"}}]},
        {"delay_ms": 300, "text": "done"}
      ]})");
    write_file(dir.file("ops.json"), R"({"turns": [
        {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "echo $KEEL_TASK_ID >> ops-calls.txt"}}]},
        {"text": "done"}
      ]})");
    std::string log = log_settings();
    start("o1", "\"orchestrator\"", {0, 1, 2}, log + agents() + extra);
    start("o2", "\"orchestrator\"", {1, 2, 0}, log + agents() + extra);
    start("o3", "\"orchestrator\"", {2, 0, 1}, log + agents() + extra);
    start("w1", "\"worker\"", {1, 0, 2}, "[worker]\nslots = 128\n" + agents() + extra);
    auto all_up = [&] {
      auto listed = keel({"nodes", "--wait-ms", "300"}, 1).out;
      for (const char* n : {"o1", "o2", "o3", "w1"})
        if (listed.find(n) == std::string::npos) return false;
      return true;
    };
    auto deadline = steady_ms() + 60'000;
    while (!all_up() && steady_ms() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (!all_up()) FAIL("the nodes did not all come up:\n" << logs());
    connect_clients();
  }
  // An orchestrator that found its runs taken over restarts its role in place as a new member, the
  // process going on (its other roles with it): its log says so, it still runs, and it is listed
  // under its new id (<name>-<4 characters>).
  void await_rejoined(const std::string& name) {
    REQUIRE_EVENTUALLY(30'000, read_file(dir.file(name + ".err")).find("orchestrator role restarted as " + name + "-") !=
                                 std::string::npos);
    CHECK(read_file(dir.file(name + ".err")).find("are no longer this node's") != std::string::npos);
    CHECK(read_file(dir.file(name + ".err")).find("rejoins as a new member") != std::string::npos);
    CHECK(nodes[name].running());
    REQUIRE_EVENTUALLY(30'000, keel({"nodes", "--wait-ms", "300"}, 1).out.find(name + "-") != std::string::npos);
  }
  // An invoke for one orchestrator, by its own subject.
  // Told "ask again" (the node's lease not certain for a moment, on a loaded machine), it asks
  // again for up to 30 s, as a client does.
  std::string invoke_on(const std::string& node, const std::string& agent, const std::string& input, std::size_t server) {
    for (auto deadline = steady_ms() + 30'000;;) {
      auto reply = clients.at(server)->request("keel.default.nodes." + node + ".invoke.tester",
                                               wire::encode(wire::invoke_request{agent, input, "", ""}), 10'000);
      REQUIRE(reply.ok());
      if (auto made = wire::decode<wire::invoke_reply>(reply->data)) return made->run_id;
      auto answer = wire::unpack(reply->data);
      bool again = answer && answer->is_object() && answer->contains("error") && (*answer)["error"].is_object() &&
                   (*answer)["error"].value("code", std::string{}) == "unavailable";
      INFO("the invoke's answer: " << (answer ? answer->dump() : std::string("unreadable")));
      REQUIRE((again && steady_ms() < deadline));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  // An invoke with an idempotency key, sent to one orchestrator (`node`) or to any (empty).
  result<wire::invoke_reply> invoke_key(const std::string& node, const std::string& agent, const std::string& input,
                                        const std::string& key, std::size_t server) {
    auto subject = node.empty() ? std::string("keel.default.invoke.tester") : "keel.default.nodes." + node + ".invoke.tester";
    auto reply = clients.at(server)->request(subject, wire::encode(wire::invoke_request{agent, input, key, ""}), 10'000);
    if (!reply) return reply.error();
    return wire::decode<wire::invoke_reply>(reply->data);
  }
  // The run as its owner (whoever serves it now) shows it; empty when nobody answers.
  json show(const std::string& run, std::size_t server) {
    auto reply = clients.at(server)->request("keel.default.runs." + run + ".get", wire::pack(wire::value{{"v", 1}, {"type", "get_run"}}), 3000);
    if (!reply) return json();
    auto v = wire::unpack(reply->data);
    if (!v || !v->contains("run")) return json();
    return (*v)["run"];
  }
  std::vector<std::uint64_t> event_seqs(const std::string& run, std::size_t server) {
    std::vector<std::uint64_t> out;
    for (std::uint64_t from = 1;;) {
      auto reply = clients.at(server)->request("keel.default.runs." + run + ".history",
                                               wire::pack(wire::value{{"v", 1}, {"type", "get_history"}, {"from_seq", from}}), 5000);
      if (!reply) return out;
      auto v = wire::unpack(reply->data);
      if (!v || !v->contains("events")) return out;
      for (const auto& e : (*v)["events"]) out.push_back(e["seq"].get<std::uint64_t>());
      if (!v->value("more", false) || out.empty()) return out;
      from = out.back() + 1;
    }
  }
  void await_completed(const std::string& run) {
    auto deadline = steady_ms() + 60'000;
    json shown;
    // Unanswered (its owner's lease lapsing for a moment, a takeover under way): asked again.
    auto status = [](const json& j) { return j.is_object() ? j.value("status", std::string()) : std::string(); };
    while (steady_ms() < deadline && status(shown = show(run, 0)) != "completed")
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (status(shown) != "completed")
      FAIL("run " << run << " did not complete: " << shown.dump() << "\nits model calls: "
                  << [&] { std::string out; for (const auto& l : lines_of(read_file(dir.file("model-calls.log")))) if (l.find(run) != std::string::npos) out += l + "; "; return out; }()
                  << "\n" << logs() << "\n--- w1 (end)\n"
                  << read_file(dir.file("w1.err")).substr(read_file(dir.file("w1.err")).size() > 6000 ? read_file(dir.file("w1.err")).size() - 6000 : 0));
  }
  // Empty when the answer was taken; else what went wrong.
  std::string approve(const std::string& run, const std::string& step, std::size_t server) {
    auto reply = clients.at(server)->request("keel.default.runs." + run + ".resume.tester",
                                             wire::pack(wire::value{{"v", 1}, {"type", "resume"}, {"step_key", step},
                                                                    {"data", {{"approved", true}}}}), 5000);
    if (!reply) return reply.error().message;
    auto v = wire::unpack(reply->data);
    if (!v) return "an unreadable answer";
    return v->value("type", std::string{}) == "error" ? v->dump() : "";
  }
};

} // namespace keel::testing::e2e
