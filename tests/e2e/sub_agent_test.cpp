// Sub-agents end to end (built keel-node and keel, a real nats-server): an agent hands a task to
// another as a tool; the child is a run of its own, linked to its parent both ways; its approval
// waits in the same inbox with the chain; cancel cascades; tokens roll up; a chain stops at its
// depth; a crash while the child waits loses nothing and repeats no model call.
#include "tests/e2e/cluster.hpp"
#include "tests/e2e/http_client.hpp"

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

const char* agents = R"(
[agents.lead]
script = "{dir}/lead.json"
script_log = "{dir}/lead-calls.log"
tools = ["read"]
sub_agents = ["helper"]
[agents.lead.sandbox]
workspace = "{dir}/ws"

[agents.helper]
description = "Writes reports into the workspace"
script = "{dir}/helper.json"
script_log = "{dir}/helper-calls.log"
tools = ["write"]
[agents.helper.sandbox]
workspace = "{dir}/ws"

[agents.loop]
script = "{dir}/loop.json"
tools = []
sub_agents = ["loop"]
[agents.loop.sandbox]
workspace = "{dir}/ws"
)";

const std::vector<std::pair<std::string, std::string>> scripts = {
  {"lead.json", R"({"turns": [
    {"text": "Asking the helper.", "tool_calls": [{"name": "agent__helper", "arguments": {"task": "Write report.txt saying all is well"}}]},
    {"text": "Lead done: {{last_tool_result}}"}
  ]})"},
  {"helper.json", R"({"turns": [
    {"text": "Writing.", "tool_calls": [{"name": "write", "arguments": {"path": "report.txt", "content": "all is well\n"}}]},
    {"text": "Report written"}
  ]})"},
  {"loop.json", R"({"turns": [
    {"text": "Deeper.", "tool_calls": [{"name": "agent__loop", "arguments": {"task": "go deeper"}}]},
    {"text": "Back up: {{last_tool_result}}"}
  ]})"}};

std::string child_of(cluster& c, const std::string& parent) {
  std::string child;
  REQUIRE_EVENTUALLY(20'000, [&] {
    auto shown = c.show(parent);
    if (!shown.contains("children") || shown["children"].empty()) return false;
    child = shown["children"][0]["run_id"].get<std::string>();
    return true;
  }());
  return child;
}

int lines_of_file(const std::string& path) { return static_cast<int>(lines_of(read_file(path)).size()); }

} // namespace

TEST_CASE("sub-agents: a child run does the task, asks the same person, and reports to its parent", "[e2e][integration][threads]") {
  cluster c(agents, scripts, cluster_options{.gateway = true});
  auto lead = c.invoke("lead", "Get the report written.");
  auto child = child_of(c, lead);
  auto step = c.await_suspend(child);
  // Linked both ways; the child's approval is in the same inbox, with the chain above it.
  auto shown = c.show(child);
  CHECK(shown["agent"] == "helper");
  CHECK(shown["parent"]["run_id"] == lead);
  CHECK(shown["chain"] == json::array({lead}));
  CHECK(shown["waiting"]["form"]["tool"] == "write");
  CHECK(c.status(lead) == "running");  // the parent waits for its child, not for a person
  CHECK(c.has_event(lead, "sub_agent_started"));
  auto inbox = call("GET", c.gateway_url() + "/api/v1/approvals").parsed();
  INFO(inbox.dump());
  REQUIRE(inbox["approvals"].size() == 1);
  CHECK(inbox["approvals"][0]["run_id"] == child);
  CHECK(inbox["approvals"][0]["chain"] == json::array({lead}));
  CHECK(inbox["approvals"][0]["parent"]["agent"] == "lead");
  CHECK(c.keel({"approve", child, step}).exit_code == 0);
  c.await_status(child, "completed");
  c.await_status(lead, "completed");
  auto done = c.show(lead);
  CHECK(done["output"].get<std::string>().find("Report written") != std::string::npos);
  CHECK(read_file(c.dir().file("ws/runs/" + child + "/report.txt")) == "all is well\n");
  // Tokens: the lead's total holds the helper's.
  auto helper = c.show(child);
  CHECK(done["total_usage"]["input_tokens"].get<std::int64_t>() ==
        done["usage"]["input_tokens"].get<std::int64_t>() + helper["total_usage"]["input_tokens"].get<std::int64_t>());
  CHECK(helper["usage"]["input_tokens"].get<std::int64_t>() > 0);
  // Each model turn was paid for once.
  CHECK(lines_of_file(c.dir().file("lead-calls.log")) == 2);
  CHECK(lines_of_file(c.dir().file("helper-calls.log")) == 2);
}

TEST_CASE("sub-agents: no client can claim a child's key, or name a parent, before the parent does", "[e2e][integration]") {
  cluster c(agents, scripts, cluster_options{.gateway = true});
  auto lead = c.invoke("lead", "Get the report written.");
  auto child = child_of(c, lead);
  // The key a child of the lead's next call would take, and the child's own: both refused.
  for (const auto& key : {"keel-child/" + lead + "/9", "keel-child/" + lead + "/2"}) {
    auto squat = c.keel({"invoke", "helper", "injected task", "--idempotency-key", key});
    CHECK(squat.exit_code != 0);
    CHECK(squat.err.find("keel's own") != std::string::npos);
    auto over_http = call("POST", c.gateway_url() + "/api/v1/runs",
                          json{{"agent", "helper"}, {"input", "injected"}, {"idempotency_key", key}}.dump());
    CHECK(over_http.status == 400);
  }
  auto forged = call("POST", c.gateway_url() + "/api/v1/runs",
                     json{{"agent", "helper"}, {"input", "x"}, {"parent", {{"run_id", lead}}}}.dump());
  CHECK(c.show(child)["input"] == "Write report.txt saying all is well");
  if (forged.status == 201) CHECK_FALSE(c.show(forged.parsed()["run_id"].get<std::string>()).contains("parent"));
}

TEST_CASE("sub-agents: cancelling the parent cancels the child", "[e2e][integration]") {
  cluster c(agents, scripts);
  auto lead = c.invoke("lead", "Get the report written.");
  auto child = child_of(c, lead);
  c.await_suspend(child);
  CHECK(c.keel({"cancel", lead}).exit_code == 0);
  c.await_status(lead, "cancelled");
  c.await_status(child, "cancelled");
}

TEST_CASE("sub-agents: a chain stops at four runs deep, and every run above it ends", "[e2e][integration]") {
  cluster c(agents, scripts);
  auto root = c.invoke("loop", "Go as deep as you may.");
  c.await_status(root, "completed", 60'000);
  auto output = c.show(root)["output"].get<std::string>();
  INFO(output);
  CHECK(output.find("nest at most 4 runs deep") != std::string::npos);
  // root -> 1 -> 2 -> 3: three children below the root, each with the chain above it.
  std::string run = root;
  for (int depth = 1; depth <= 3; ++depth) {
    auto next = child_of(c, run);
    CHECK(c.show(next)["chain"].size() == static_cast<std::size_t>(depth));
    run = next;
  }
  CHECK_FALSE(c.show(run).contains("children"));
}

TEST_CASE("sub-agents: SIGKILL while the child waits for a person: after a restart both finish, no call repeated", "[e2e][integration]") {
  cluster c(agents, scripts);
  auto lead = c.invoke("lead", "Get the report written.");
  auto child = child_of(c, lead);
  auto step = c.await_suspend(child);
  c.kill_node();
  c.start_node();
  CHECK(c.keel({"approve", child, step}).exit_code == 0);
  c.await_status(lead, "completed", 60'000);
  CHECK(c.show(lead)["output"].get<std::string>().find("Report written") != std::string::npos);
  CHECK(lines_of_file(c.dir().file("lead-calls.log")) == 2);
  CHECK(lines_of_file(c.dir().file("helper-calls.log")) == 2);
  CHECK(c.show(lead)["children"].size() == 1);  // the call went again after the restart: the same child
}
