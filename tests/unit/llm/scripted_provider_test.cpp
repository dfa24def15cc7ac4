#include "llm/scripted_provider.hpp"
#include "tests/support/test_support.hpp"

using namespace keel;
using namespace keel::llm;
using keel::testing::read_file;
using keel::testing::temp_dir;
using keel::testing::write_file;

namespace {
std::unique_ptr<scripted_provider> load(const temp_dir& dir, const std::string& script,
                                        const std::string& log = "") {
  write_file(dir.file("s.json"), script);
  auto p = scripted_provider::load(dir.file("s.json"), log);
  REQUIRE(p.ok());
  return std::move(*p);
}
} // namespace

TEST_CASE("scripted model: turn n answers a conversation with n assistant messages", "[llm]") {
  temp_dir dir;
  auto p = load(dir, R"({"turns": [
    {"text": "t1", "tool_calls": [{"name": "exec", "arguments": {"command": "echo {{input}}"}}]},
    {"text": "saw: {{last_tool_result}}"}]})", dir.file("calls.log"));
  completion_request r;
  r.task_id = "run/1/1";
  r.messages = {{"user", "hi", {}, {}, {}, false}};
  auto first = p->complete(r);
  REQUIRE(first.ok());
  CHECK(first->text == "t1");
  REQUIRE(first->tool_calls.size() == 1);
  CHECK(first->tool_calls[0].id == "call_1_1");
  CHECK(first->tool_calls[0].arguments["command"] == "echo hi");
  CHECK(first->stop_reason == "tool_use");
  CHECK(first->used.input_tokens > 0);
  // The same conversation again gives the same answer (a repeated step is deterministic).
  CHECK(p->complete(r)->tool_calls[0].arguments == first->tool_calls[0].arguments);

  r.messages.push_back({"assistant", "t1", first->tool_calls, {}, {}, false});
  r.messages.push_back({"tool", "exit code 0", {}, "call_1_1", "exec", false});
  r.task_id = "run/3/1";
  auto second = p->complete(r);
  CHECK(second->text == "saw: exit code 0");
  CHECK(second->stop_reason == "end_turn");
  r.messages.push_back({"assistant", "done", {}, {}, {}, false});
  CHECK(p->complete(r)->text == "The script has no turn 3; stopping here.");
  // One line per call: the task, the turn, the model asked for ("-": none named).
  CHECK(read_file(dir.file("calls.log")) == "run/1/1 1 -\nrun/1/1 1 -\nrun/3/1 2 -\nrun/3/1 3 -\n");
}

TEST_CASE("scripted model: a bad script is a config error naming the file and turn", "[llm]") {
  temp_dir dir;
  write_file(dir.file("bad.json"), R"({"turns": [{"text": 5}]})");
  auto bad = scripted_provider::load(dir.file("bad.json"), "");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message == dir.file("bad.json") + ": turn 1: text must be a string");
  write_file(dir.file("worse.json"), "{not json");
  CHECK(scripted_provider::load(dir.file("worse.json"), "").error().message.find("not valid JSON") != std::string::npos);
  CHECK(scripted_provider::load(dir.file("none.json"), "").error().message == dir.file("none.json") + ": cannot read the script");
  CHECK(scripted_provider::load("", "").error().code == errc::config);
}

TEST_CASE("conversation: messages and completions round trip through values", "[llm]") {
  message m{"assistant", "t", {{"c1", "exec", {{"command", "ls"}}}}, {}, {}, false};
  auto back = message_from_value(to_value(m));
  REQUIRE(back.ok());
  CHECK(back->tool_calls[0].arguments["command"] == "ls");
  CHECK(tool_result_text("exec", {{"exit_code", 2}, {"stdout", "o"}, {"stderr", "e"}}, true) ==
        "exit code 2\nstdout:\no\nstderr:\ne");
  CHECK(tool_result_text("read", {{"error", "no such file"}}, true) == "Error: no such file");
  CHECK_FALSE(message_from_value(wire::value{{"text", "no role"}}).ok());
}

TEST_CASE("conversation: messages read from a value given up are the same as from a copy", "[llm]") {
  wire::value conversation = wire::value::array(
    {{{"role", "user"}, {"text", "make it"}},
     {{"role", "assistant"}, {"text", "writing"},
      {"tool_calls", wire::value::array({{{"id", "c1"}, {"name", "write"}, {"arguments", {{"path", "a"}}}}})}},
     {{"role", "tool"}, {"text", "ok"}, {"tool_call_id", "c1"}, {"tool_name", "write"}, {"is_error", true}}});
  auto copied = llm::messages_from_value(conversation);
  REQUIRE(copied.ok());
  wire::value given = conversation;
  auto moved = llm::messages_from_value(std::move(given));
  REQUIRE(moved.ok());
  REQUIRE(moved->size() == 3);
  CHECK(llm::to_value(*moved) == llm::to_value(*copied));
  CHECK(llm::to_value(*moved) == conversation);
  CHECK((*moved)[1].tool_calls[0].arguments == wire::value{{"path", "a"}});
  CHECK((*moved)[2].is_error);
  // Bad input is refused the same way.
  CHECK_FALSE(llm::messages_from_value(wire::value{{"role", "user"}}).ok());
  CHECK_FALSE(llm::messages_from_value(wire::value::array({{{"text", "no role"}}})).ok());
}

TEST_CASE("conversation: messages read from packed bytes are the same as from JSON", "[llm]") {
  wire::value conversation = wire::value::array(
    {{{"role", "user"}, {"text", "make it"}},
     {{"role", "assistant"}, {"text", "writing"},
      {"tool_calls", wire::value::array({{{"id", "c1"}, {"name", "write"}, {"arguments", {{"path", "a"}, {"n", 2}}}}})}},
     {{"role", "tool"}, {"text", "ok"}, {"tool_call_id", "c1"}, {"tool_name", "write"}, {"is_error", true}}});
  auto from_json = llm::messages_from_value(conversation);
  auto from_packed = llm::messages_from_packed(wire::pack(conversation));
  REQUIRE(from_json.ok());
  REQUIRE(from_packed.ok());
  CHECK(llm::to_value(*from_packed) == llm::to_value(*from_json));
  CHECK((*from_packed)[1].tool_calls[0].arguments == wire::value{{"path", "a"}, {"n", 2}});
  // Bad input is refused as the JSON reading refuses it.
  auto refused = [](const wire::value& v) {
    auto a = llm::messages_from_value(v);
    auto b = llm::messages_from_packed(wire::pack(v));
    REQUIRE_FALSE(a.ok());
    REQUIRE_FALSE(b.ok());
    CHECK(a.error().message == b.error().message);
  };
  refused(wire::value{{"role", "user"}});                                     // not a list
  refused(wire::value::array({{{"text", "no role"}}}));                      // no role
  refused(wire::value::array({{{"role", "assistant"}, {"tool_calls", 3}}}));  // calls not a list
  refused(wire::value::array({{{"role", "assistant"}, {"tool_calls", wire::value::array({{{"id", "x"}}})}}}));
  CHECK_FALSE(llm::messages_from_packed("\xc1").ok());  // not MessagePack
}
