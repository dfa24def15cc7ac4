// The guide's coding agent on "Anthropic": a keel-node whose agent uses the anthropic provider,
// pointed at a local server (in this test) that speaks the Messages API.
#include "tests/e2e/cluster.hpp"
#include "tests/support/fake_service.hpp"

#include "broker/connection.hpp"
#include "runtime/wire.hpp"

#include <atomic>
#include <mutex>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

// Answers like Claude would for the guide's task: write hello.js, run it, report the output.
fake_reply claude(const fake_request& r) {
  if (r.headers.count("x-api-key") == 0 || r.headers.at("x-api-key") != "sk-ant-test-key")
    return fake_reply{401, json{{"type", "error"}, {"error", {{"type", "authentication_error"}, {"message", "invalid x-api-key"}}}}.dump()};
  auto assistant_turns = std::count_if(r.body["messages"].begin(), r.body["messages"].end(),
                                       [](const json& m) { return m["role"] == "assistant"; });
  auto message = [](json content, const char* stop) {
    return json{{"id", "msg_1"}, {"type", "message"}, {"role", "assistant"}, {"model", "claude-sonnet-4-5"},
                {"content", content}, {"stop_reason", stop}, {"usage", {{"input_tokens", 100}, {"output_tokens", 20}}}};
  };
  if (assistant_turns == 0)
    return fake_reply{200, message({{{"type", "text"}, {"text", "Creating hello.sh."}},
                                    {{"type", "tool_use"}, {"id", "toolu_1"}, {"name", "write"},
                                     {"input", {{"path", "hello.sh"}, {"content", "echo 'Hello, world!'\n"}}}}}, "tool_use").dump()};
  if (assistant_turns == 1)
    return fake_reply{200, message({{{"type", "tool_use"}, {"id", "toolu_2"}, {"name", "exec"},
                                     {"input", {{"command", "sh hello.sh"}}}}}, "tool_use").dump()};
  // The last user message holds the tool result: report it.
  std::string result = r.body["messages"].back()["content"][0]["content"];
  return fake_reply{200, message({{{"type", "text"}, {"text", "Output:\n" + result}}}, "end_turn").dump()};
}

} // namespace

TEST_CASE("providers: the guide's agent on the anthropic provider runs end to end with approvals",
          "[e2e][integration]") {
  fake_service anthropic(claude);
  cluster c(R"(
[agents.coder]
provider = "anthropic"
model = "claude-sonnet-4-5"
base_url = ")" + anthropic.url() + R"("
api_key_file = "{dir}/anthropic.key"
stream = false
system_prompt = "You are a coding agent."
[agents.coder.sandbox]
workspace = "{dir}/ws"
)", {{"anthropic.key", "sk-ant-test-key\n"}});
  auto run = c.keel({"run", "coder", "Create hello.sh and run it.", "--yes"}, 60'000);
  INFO(run.out << run.err << c.node_log());
  CHECK(run.exit_code == 0);
  CHECK(run.out.find("WRITE APPROVAL REQUIRED") != std::string::npos);
  CHECK(run.out.find("Command:   sh hello.sh") != std::string::npos);
  CHECK(run.out.find("Hello, world!") != std::string::npos);
  auto list = json::parse(c.keel({"runs", "--json"}).out);
  std::string id = list[0]["run_id"];
  auto summary = c.show(id);
  CHECK(summary["usage"]["input_tokens"] == 300);
  CHECK(summary["usage"]["output_tokens"] == 60);
  // The key went to the service and nowhere else: not into events, not into the run.
  CHECK(anthropic.requests().size() == 3);
  auto events = c.keel({"events", id, "--json"}).out;
  CHECK(events.find("sk-ant-test-key") == std::string::npos);
  CHECK(summary.dump().find("sk-ant-test-key") == std::string::npos);
  CHECK(c.node_log().find("sk-ant-test-key") == std::string::npos);
}

TEST_CASE("providers: keel run --provider and --model switch one run to another provider",
          "[e2e][integration]") {
  fake_service openai([&](const fake_request&) {  // on the server's thread: checked below
    return fake_reply{200, json{{"choices", {{{"index", 0}, {"message", {{"role", "assistant"}, {"content", "from the local server"}}},
                                              {"finish_reason", "stop"}}}},
                                {"usage", {{"prompt_tokens", 5}, {"completion_tokens", 3}}}}.dump()};
  });
  cluster c(R"(
[agents.coder]
script = "{dir}/s.json"
base_url = ")" + openai.url() + R"("
stream = false
[agents.coder.sandbox]
workspace = "{dir}/ws"
)", {{"s.json", R"({"turns": [{"text": "from the script"}]})"}});
  auto scripted = c.keel({"run", "coder", "hi"});
  CHECK(scripted.out.find("from the script") != std::string::npos);
  auto switched = c.keel({"run", "coder", "hi", "--provider", "openai", "--model", "local-llama"});
  INFO(switched.out << switched.err << c.node_log());
  CHECK(switched.out.find("from the local server") != std::string::npos);
  auto asked = openai.requests();
  REQUIRE(asked.size() == 1);
  CHECK(asked[0].body["model"] == "local-llama");
  auto bad = c.keel({"invoke", "coder", "hi", "--provider", "oracle"});
  CHECK(bad.exit_code != 0);
}

TEST_CASE("providers: keel run shows streamed text as it comes, once", "[e2e][integration]") {
  fake_service anthropic([](const fake_request&) {  // on the server's thread: checked below
    return fake_reply{200, "", {
      sse("message_start", {{"type", "message_start"}, {"message", {{"id", "m"}, {"usage", {{"input_tokens", 10}, {"output_tokens", 1}}}}}}),
      sse("content_block_start", {{"type", "content_block_start"}, {"index", 0}, {"content_block", {{"type", "text"}, {"text", ""}}}}),
      sse("content_block_delta", {{"type", "content_block_delta"}, {"index", 0}, {"delta", {{"type", "text_delta"}, {"text", "Hello "}}}}),
      sse("content_block_delta", {{"type", "content_block_delta"}, {"index", 0}, {"delta", {{"type", "text_delta"}, {"text", "from the "}}}}),
      sse("content_block_delta", {{"type", "content_block_delta"}, {"index", 0}, {"delta", {{"type", "text_delta"}, {"text", "stream."}}}}),
      sse("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}}),
      sse("message_delta", {{"type", "message_delta"}, {"delta", {{"stop_reason", "end_turn"}}}, {"usage", {{"output_tokens", 7}}}}),
      sse("message_stop", {{"type", "message_stop"}})}};
  });
  cluster c(R"(
[agents.coder]
provider = "anthropic"
model = "claude-sonnet-4-5"
base_url = ")" + anthropic.url() + R"("
api_key_file = "{dir}/anthropic.key"
[agents.coder.sandbox]
workspace = "{dir}/ws"
)", {{"anthropic.key", "sk-ant-test-key\n"}});
  // The worker publishes each piece as it arrives, on the run's deltas subject.
  auto watcher = c.connect_client();
  std::mutex mutex;
  std::vector<std::string> pieces;
  auto sub = watcher->subscribe("keel.default.runs.*.deltas", "", [&](broker::message&& m) {
    auto v = wire::unpack(m.data);
    std::lock_guard lock{mutex};
    if (v && v->value("type", std::string{}) == "llm_delta") pieces.push_back(v->value("text", std::string{}));
  });
  REQUIRE(sub.ok());
  REQUIRE(watcher->flush(1000).ok());
  auto run = c.keel({"run", "coder", "Say hello."}, 60'000);
  INFO(run.out << run.err);
  CHECK(run.exit_code == 0);
  REQUIRE_EVENTUALLY(5000, [&] { std::lock_guard lock{mutex}; return pieces.size() == 3; }());
  CHECK(pieces == std::vector<std::string>{"Hello ", "from the ", "stream."});
  auto first = run.out.find("Hello from the stream.");
  REQUIRE(first != std::string::npos);
  CHECK(run.out.find("Hello from the stream.", first + 1) == std::string::npos);  // printed once
  CHECK(run.out.find("Run completed") != std::string::npos);
  auto asked = anthropic.requests();
  REQUIRE(asked.size() == 1);
  CHECK(asked[0].body["stream"] == true);
}

TEST_CASE("providers: an outage keeps runs waiting with backoff, a run that failed goes on with keel retry",
          "[e2e][integration][threads]") {
  // The service answers 529 (overloaded) while `down` is set, and like Claude otherwise.
  std::atomic<bool> down{true};
  std::atomic<int> refused{0};
  fake_service anthropic([&](const fake_request& r) {
    if (down) {
      ++refused;
      return fake_reply{529, json{{"type", "error"}, {"error", {{"type", "overloaded_error"}, {"message", "Overloaded"}}}}.dump()};
    }
    return claude(r);
  });
  std::string agent = R"(
[agents.coder]
provider = "anthropic"
model = "claude-sonnet-4-5"
base_url = ")" + anthropic.url() + R"("
api_key_file = "{dir}/anthropic.key"
stream = false
retries_max = 1
retry_base_ms = 10
[agents.coder.sandbox]
workspace = "{dir}/ws"
exec_security = "allow-always"
file_approval = false
)";
  SECTION("waiting") {
    cluster c(agent, {{"anthropic.key", "sk-ant-test-key\n"}},
              cluster_options{false, {"limits.retry_backoff_max_ms = 1000"}, {}});
    auto run = c.invoke("coder", "Create hello.sh and run it.");
    // Tried again and again, waiting between tries, shown as waiting on the model.
    REQUIRE_EVENTUALLY(20'000, c.show(run).contains("retrying"));
    auto shown = c.show(run);
    CHECK(shown["status"] == "running");
    CHECK(shown["retrying"]["waiting"].get<std::string>().find("waiting on the model, next try in") == 0);
    CHECK(c.keel({"show", run}).out.find("Retrying: waiting on the model, next try in") != std::string::npos);
    REQUIRE_EVENTUALLY(20'000, refused >= 8);
    down = false;
    c.await_status(run, "completed", 30'000);
    // Each try of the outage was one failed call with its own retry; none was lost or doubled.
    auto events = c.events(run);
    auto retries = std::count_if(events.begin(), events.end(), [](const json& e) { return e["event_type"] == "task_retried"; });
    CHECK(retries >= 4);
    CHECK(anthropic.requests().size() == static_cast<std::size_t>(refused) + 3);  // + the three turns that worked
  }
  SECTION("failed, then retried") {
    cluster c(agent, {{"anthropic.key", "sk-ant-test-key\n"}},
              cluster_options{false, {"limits.retry_backoff_max_ms = 200", "limits.step_retry_ms = 1500"}, {}});
    auto run = c.invoke("coder", "Create hello.sh and run it.");
    c.await_status(run, "failed", 30'000);
    CHECK(c.show(run)["error"].get<std::string>().find("kept failing for") != std::string::npos);
    CHECK(c.keel({"show", run}).out.find("keel retry " + run + " goes on from the step that failed") != std::string::npos);
    // Not retried while the run is not failed; retried from its step once it is.
    down = false;
    auto retried = c.keel({"retry", run});
    INFO(retried.err);
    CHECK(retried.exit_code == 0);
    c.await_status(run, "completed", 30'000);
    CHECK(c.keel({"retry", run}).err.find("only a failed run can be retried") != std::string::npos);
    CHECK(c.show(run)["output"].get<std::string>().find("Hello, world!") != std::string::npos);
  }
}
