// The network providers against local servers that speak each service's wire format, built
// from the services' documented request and response examples.
#include "llm/network_provider.hpp"
#include "sandbox/tools.hpp"
#include "tests/support/fake_service.hpp"
#include "tests/support/test_support.hpp"

using namespace keel;
using namespace keel::llm;
using keel::testing::fake_reply;
using keel::testing::fake_request;
using keel::testing::fake_service;
using keel::testing::sse;
using json = nlohmann::json;

namespace {

network_settings settings(const std::string& kind, const fake_service& service, bool stream = false) {
  network_settings s;
  s.kind = kind;
  s.model = kind == "anthropic" ? "claude-sonnet-4-5" : "gpt-4o";
  s.base_url = service.url() + (kind == "openai" ? "/v1" : "");
  s.api_key = "sk-test-secret";
  s.stream = stream;
  s.retries_max = 2;
  s.retry_base_ms = 10;
  s.timeout_ms = 5000;
  return s;
}

completion_request conversation() {
  completion_request r;
  r.system_prompt = "You are a coding agent.";
  r.messages = {{"user", "List the files.", {}, {}, {}, false}};
  r.tools = std::make_shared<const std::vector<wire::value>>(std::vector<wire::value>{sandbox::tool_definition("exec")});
  return r;
}

json anthropic_message(json content, const std::string& stop) {
  return {{"id", "msg_01XFDUDYJgAACzvnptvVoYEL"}, {"type", "message"}, {"role", "assistant"},
          {"model", "claude-sonnet-4-5"}, {"content", content}, {"stop_reason", stop}, {"stop_sequence", nullptr},
          {"usage", {{"input_tokens", 12}, {"output_tokens", 6}, {"cache_creation_input_tokens", 100},
                     {"cache_read_input_tokens", 50}}}};
}

json openai_completion(json message, const std::string& finish) {
  return {{"id", "chatcmpl-123"}, {"object", "chat.completion"}, {"created", 1677652288}, {"model", "gpt-4o"},
          {"choices", {{{"index", 0}, {"message", message}, {"logprobs", nullptr}, {"finish_reason", finish}}}},
          {"usage", {{"prompt_tokens", 9}, {"completion_tokens", 12}, {"total_tokens", 21},
                     {"prompt_tokens_details", {{"cached_tokens", 4}}}}}};
}

} // namespace

TEST_CASE("anthropic: a plain answer, with the request the Messages API expects", "[llm]") {
  fake_service service([](const fake_request&) {
    return fake_reply{200, anthropic_message({{{"type", "text"}, {"text", "Hello!"}}}, "end_turn").dump()};
  });
  anthropic_provider p(settings("anthropic", service));
  auto c = p.complete(conversation());
  REQUIRE(c.ok());
  CHECK(c->text == "Hello!");
  CHECK(c->stop_reason == "end_turn");
  CHECK(c->used.input_tokens == 12);
  CHECK(c->used.output_tokens == 6);
  CHECK(c->used.cache_write_tokens == 100);
  CHECK(c->used.cache_read_tokens == 50);
  auto sent = service.requests().at(0);
  CHECK(sent.path == "/v1/messages");
  CHECK(sent.headers["x-api-key"] == "sk-test-secret");
  CHECK(sent.headers["anthropic-version"] == "2023-06-01");
  CHECK(sent.body["model"] == "claude-sonnet-4-5");
  CHECK(sent.body["max_tokens"] == 4096);
  CHECK(sent.body["system"][0]["text"] == "You are a coding agent.");
  CHECK(sent.body["system"][0]["cache_control"]["type"] == "ephemeral");
  CHECK(sent.body["tools"][0]["name"] == "exec");
  CHECK(sent.body["tools"][0]["input_schema"]["required"] == json{"command"});
  CHECK(sent.body["tools"].back()["cache_control"]["type"] == "ephemeral");
  CHECK(sent.body["messages"][0] == json{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "List the files."},
                                                                        {"cache_control", {{"type", "ephemeral"}}}}}}});
}

TEST_CASE("anthropic: tool use over several turns", "[llm]") {
  fake_service service([](const fake_request& r) {
    if (r.body["messages"].size() == 1)
      return fake_reply{200, anthropic_message({{{"type", "text"}, {"text", "I'll check."}},
                                                {{"type", "tool_use"}, {"id", "toolu_01A"}, {"name", "exec"},
                                                 {"input", {{"command", "ls"}}}}}, "tool_use").dump()};
    return fake_reply{200, anthropic_message({{{"type", "text"}, {"text", "Two files."}}}, "end_turn").dump()};
  });
  anthropic_provider p(settings("anthropic", service));
  auto request = conversation();
  auto first = p.complete(request);
  REQUIRE(first.ok());
  REQUIRE(first->tool_calls.size() == 1);
  CHECK(first->tool_calls[0].id == "toolu_01A");
  CHECK(first->tool_calls[0].arguments == json{{"command", "ls"}});
  CHECK(first->stop_reason == "tool_use");
  request.messages.push_back({"assistant", first->text, first->tool_calls, {}, {}, false});
  request.messages.push_back({"tool", "a.txt\nb.txt", {}, "toolu_01A", "exec", false});
  request.messages.push_back({"tool", "rejected", {}, "toolu_01B", "exec", true});
  auto second = p.complete(request);
  REQUIRE(second.ok());
  CHECK(second->text == "Two files.");
  auto sent = service.requests().at(1).body["messages"];
  REQUIRE(sent.size() == 3);
  CHECK(sent[1]["content"][1] == json{{"type", "tool_use"}, {"id", "toolu_01A"}, {"name", "exec"}, {"input", {{"command", "ls"}}}});
  // Both results go back in one user message, the failure marked as an error.
  CHECK(sent[2]["role"] == "user");
  CHECK(sent[2]["content"][0] == json{{"type", "tool_result"}, {"tool_use_id", "toolu_01A"}, {"content", "a.txt\nb.txt"}});
  CHECK(sent[2]["content"][1]["is_error"] == true);
  CHECK(sent[2]["content"][1]["cache_control"]["type"] == "ephemeral");
}

TEST_CASE("anthropic: streaming puts text and tool calls together and passes text on", "[llm]") {
  fake_service service([](const fake_request&) {  // on the server's thread: checked below
    return fake_reply{200, "", {
      sse("message_start", {{"type", "message_start"}, {"message", {{"id", "msg_1"}, {"usage", {{"input_tokens", 25}, {"output_tokens", 1}}}}}}),
      sse("content_block_start", {{"type", "content_block_start"}, {"index", 0}, {"content_block", {{"type", "text"}, {"text", ""}}}}),
      sse("ping", {{"type", "ping"}}),
      sse("content_block_delta", {{"type", "content_block_delta"}, {"index", 0}, {"delta", {{"type", "text_delta"}, {"text", "Let me "}}}}),
      sse("content_block_delta", {{"type", "content_block_delta"}, {"index", 0}, {"delta", {{"type", "text_delta"}, {"text", "look."}}}}),
      sse("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}}),
      sse("content_block_start", {{"type", "content_block_start"}, {"index", 1}, {"content_block", {{"type", "tool_use"}, {"id", "toolu_9"}, {"name", "exec"}, {"input", json::object()}}}}),
      sse("content_block_delta", {{"type", "content_block_delta"}, {"index", 1}, {"delta", {{"type", "input_json_delta"}, {"partial_json", "{\"comm"}}}}),
      sse("content_block_delta", {{"type", "content_block_delta"}, {"index", 1}, {"delta", {{"type", "input_json_delta"}, {"partial_json", "and\": \"ls\"}"}}}}),
      sse("content_block_stop", {{"type", "content_block_stop"}, {"index", 1}}),
      sse("message_delta", {{"type", "message_delta"}, {"delta", {{"stop_reason", "tool_use"}, {"stop_sequence", nullptr}}}, {"usage", {{"output_tokens", 89}}}}),
      sse("message_stop", {{"type", "message_stop"}})}};
  });
  anthropic_provider p(settings("anthropic", service, true));
  auto request = conversation();
  std::string streamed;
  request.on_text_delta = [&](const std::string& t) { streamed += t + "|"; };
  auto c = p.complete(request);
  REQUIRE(c.ok());
  REQUIRE(service.requests().size() == 1);
  CHECK(service.requests()[0].body["stream"] == true);
  CHECK(c->text == "Let me look.");
  CHECK(streamed == "Let me |look.|");
  REQUIRE(c->tool_calls.size() == 1);
  CHECK(c->tool_calls[0].arguments == json{{"command", "ls"}});
  CHECK(c->stop_reason == "tool_use");
  CHECK(c->used.input_tokens == 25);
  CHECK(c->used.output_tokens == 89);
}

TEST_CASE("anthropic: overloaded, then success, a 400 fails at once with the service's message", "[llm]") {
  int calls = 0;
  fake_service service([&](const fake_request&) {
    if (++calls == 1)
      return fake_reply{529, json{{"type", "error"}, {"error", {{"type", "overloaded_error"}, {"message", "Overloaded"}}}}.dump(),
                        {}, {{"retry-after", "0"}}};
    return fake_reply{200, anthropic_message({{{"type", "text"}, {"text", "ok"}}}, "end_turn").dump()};
  });
  anthropic_provider p(settings("anthropic", service));
  auto c = p.complete(conversation());
  REQUIRE(c.ok());
  CHECK(c->text == "ok");
  CHECK(calls == 2);

  fake_service bad([](const fake_request&) {
    return fake_reply{400, json{{"type", "error"}, {"error", {{"type", "invalid_request_error"},
                                                              {"message", "max_tokens: Field required"}}}}.dump()};
  });
  anthropic_provider q(settings("anthropic", bad));
  auto failed = q.complete(conversation());
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.error().code == errc::invalid_argument);
  CHECK(failed.error().message == "anthropic answered HTTP 400: invalid_request_error: max_tokens: Field required");
  CHECK(bad.requests().size() == 1);
  CHECK(failed.error().message.find("sk-test-secret") == std::string::npos);
}

TEST_CASE("anthropic: a malformed body is an error, and a hanging service times out", "[llm]") {
  fake_service garbled([](const fake_request&) { return fake_reply{200, "{\"content\": oops"}; });
  anthropic_provider p(settings("anthropic", garbled));
  auto bad = p.complete(conversation());
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == errc::malformed);

  fake_service hanging([](const fake_request&) { return fake_reply{200, "{}", {}, {}, 1500}; });
  auto s = settings("anthropic", hanging);
  s.timeout_ms = 200;
  s.retries_max = 1;
  anthropic_provider slow(s);
  auto started = steady_ms();
  auto timed_out = slow.complete(conversation());
  REQUIRE_FALSE(timed_out.ok());
  CHECK(timed_out.error().code == errc::timeout);
  CHECK(steady_ms() - started < 3000);
  CHECK(hanging.requests().size() == 2);  // tried again once, then gave up
}

TEST_CASE("openai: a plain answer and tool use over several turns", "[llm]") {
  fake_service service([](const fake_request& r) {
    if (r.body["messages"].size() == 2)
      return fake_reply{200, openai_completion({{"role", "assistant"}, {"content", nullptr},
                                                {"tool_calls", {{{"id", "call_abc123"}, {"type", "function"},
                                                                 {"function", {{"name", "exec"}, {"arguments", "{\"command\":\"ls\"}"}}}}}}},
                                               "tool_calls").dump()};
    return fake_reply{200, openai_completion({{"role", "assistant"}, {"content", "Hello there"}, {"refusal", nullptr}}, "stop").dump()};
  });
  openai_provider p(settings("openai", service));
  auto request = conversation();
  auto first = p.complete(request);
  REQUIRE(first.ok());
  REQUIRE(first->tool_calls.size() == 1);
  CHECK(first->tool_calls[0].arguments == json{{"command", "ls"}});
  CHECK(first->stop_reason == "tool_use");
  CHECK(first->used.cache_read_tokens == 4);
  request.messages.push_back({"assistant", "", first->tool_calls, {}, {}, false});
  request.messages.push_back({"tool", "a.txt", {}, "call_abc123", "exec", false});
  auto second = p.complete(request);
  REQUIRE(second.ok());
  CHECK(second->text == "Hello there");
  CHECK(second->stop_reason == "end_turn");
  auto sent = service.requests().at(1);
  CHECK(sent.path == "/v1/chat/completions");
  CHECK(sent.headers["authorization"] == "Bearer sk-test-secret");
  CHECK(sent.body["messages"][0] == json{{"role", "system"}, {"content", "You are a coding agent."}});
  CHECK(sent.body["messages"][2]["tool_calls"][0]["function"]["arguments"] == "{\"command\":\"ls\"}");
  CHECK(sent.body["messages"][3] == json{{"role", "tool"}, {"tool_call_id", "call_abc123"}, {"content", "a.txt"}});
  CHECK(sent.body["tools"][0]["type"] == "function");
  CHECK(sent.body["tools"][0]["function"]["parameters"]["type"] == "object");
}

TEST_CASE("openai: streaming chunks, with tool call arguments in pieces", "[llm]") {
  auto chunk = [](json delta, json finish = nullptr) {
    return "data: " + json{{"id", "chatcmpl-123"}, {"object", "chat.completion.chunk"},
                           {"choices", {{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}}}}.dump() + "\n\n";
  };
  fake_service service([&](const fake_request&) {  // on the server's thread: checked below
    return fake_reply{200, "", {
      chunk({{"role", "assistant"}, {"content", ""}}),
      chunk({{"content", "Run"}}),
      chunk({{"content", "ning."}}),
      chunk({{"tool_calls", {{{"index", 0}, {"id", "call_1"}, {"type", "function"}, {"function", {{"name", "exec"}, {"arguments", ""}}}}}}}),
      chunk({{"tool_calls", {{{"index", 0}, {"function", {{"arguments", "{\"command\""}}}}}}}),
      chunk({{"tool_calls", {{{"index", 0}, {"function", {{"arguments", ": \"ls\"}"}}}}}}}),
      chunk(json::object(), "tool_calls"),
      "data: " + json{{"choices", json::array()}, {"usage", {{"prompt_tokens", 30}, {"completion_tokens", 7}}}}.dump() + "\n\n",
      "data: [DONE]\n\n"}};
  });
  openai_provider p(settings("openai", service, true));
  auto request = conversation();
  std::string streamed;
  request.on_text_delta = [&](const std::string& t) { streamed += t; };
  auto c = p.complete(request);
  REQUIRE(c.ok());
  REQUIRE(service.requests().size() == 1);
  CHECK(service.requests()[0].body["stream_options"]["include_usage"] == true);
  CHECK(c->text == "Running.");
  CHECK(streamed == "Running.");
  REQUIRE(c->tool_calls.size() == 1);
  CHECK(c->tool_calls[0].id == "call_1");
  CHECK(c->tool_calls[0].arguments == json{{"command", "ls"}});
  CHECK(c->stop_reason == "tool_use");
  CHECK(c->used.input_tokens == 30);
}

TEST_CASE("openai: rate limited then success, a 400, and a malformed body", "[llm]") {
  int calls = 0;
  fake_service service([&](const fake_request&) {
    if (++calls == 1) return fake_reply{429, json{{"error", {{"message", "Rate limit reached"}, {"type", "requests"}}}}.dump()};
    return fake_reply{200, openai_completion({{"role", "assistant"}, {"content", "fine"}}, "stop").dump()};
  });
  openai_provider p(settings("openai", service));
  REQUIRE(p.complete(conversation()).ok());
  CHECK(calls == 2);
  fake_service bad([](const fake_request&) {
    return fake_reply{400, json{{"error", {{"message", "Invalid 'messages'"}, {"type", "invalid_request_error"}, {"param", nullptr}, {"code", nullptr}}}}.dump()};
  });
  openai_provider q(settings("openai", bad));
  auto failed = q.complete(conversation());
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.error().message == "openai answered HTTP 400: Invalid 'messages'");
  fake_service garbled([](const fake_request&) { return fake_reply{200, "not json at all"}; });
  openai_provider r(settings("openai", garbled));
  CHECK(r.complete(conversation()).error().code == errc::malformed);
}

TEST_CASE("providers: keys and base URLs come from the environment as the SDKs read them", "[llm]") {
  config::agent_config agent;
  agent.id = "a";
  agent.model = "m";
  ::setenv("ANTHROPIC_API_KEY", "sk-from-env", 1);
  ::setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/", 1);
  auto s = settings_for(agent, "anthropic");
  REQUIRE(s.ok());
  CHECK(s->api_key == "sk-from-env");
  CHECK(s->base_url == "http://127.0.0.1:9");
  ::unsetenv("ANTHROPIC_API_KEY");
  auto missing = settings_for(agent, "anthropic");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().message == "agents.a: no API key: set ANTHROPIC_API_KEY or agents.a.api_key_file");
  ::unsetenv("ANTHROPIC_BASE_URL");
  ::unsetenv("OPENAI_BASE_URL");
  auto openai = settings_for(agent, "openai");  // a local compatible server needs no key
  REQUIRE(openai.ok());
  CHECK(openai->base_url == "https://api.openai.com/v1");
  keel::testing::temp_dir dir;
  keel::testing::write_file(dir.file("key"), "sk-from-file\n");
  agent.api_key_file = dir.file("key");
  CHECK(settings_for(agent, "anthropic")->api_key == "sk-from-file");
}

TEST_CASE("streaming: a stream that breaks off is asked again from the start, and the answer holds each part once",
          "[llm]") {
  SECTION("anthropic") {
    auto event = [](const char* type, json body) { return sse(type, body); };
    std::vector<std::string> whole = {
      event("message_start", {{"type", "message_start"}, {"message", {{"id", "msg_1"}, {"usage", {{"input_tokens", 25}}}}}}),
      event("content_block_start", {{"type", "content_block_start"}, {"index", 0}, {"content_block", {{"type", "text"}, {"text", ""}}}}),
      event("content_block_delta", {{"type", "content_block_delta"}, {"index", 0}, {"delta", {{"type", "text_delta"}, {"text", "Let me "}}}}),
      event("content_block_delta", {{"type", "content_block_delta"}, {"index", 0}, {"delta", {{"type", "text_delta"}, {"text", "look."}}}}),
      event("content_block_start", {{"type", "content_block_start"}, {"index", 1}, {"content_block", {{"type", "tool_use"}, {"id", "toolu_9"}, {"name", "exec"}, {"input", json::object()}}}}),
      event("content_block_delta", {{"type", "content_block_delta"}, {"index", 1}, {"delta", {{"type", "input_json_delta"}, {"partial_json", "{\"command\": \"ls\"}"}}}}),
      event("message_delta", {{"type", "message_delta"}, {"delta", {{"stop_reason", "tool_use"}}}, {"usage", {{"output_tokens", 9}}}}),
      event("message_stop", {{"type", "message_stop"}})};
    int calls = 0;
    fake_service service([&](const fake_request&) {
      // The first two answers break off: after some text, then after a tool call began.
      ++calls;
      if (calls == 1) return fake_reply{200, "", {whole.begin(), whole.begin() + 3}};
      if (calls == 2) return fake_reply{200, "", {whole.begin(), whole.begin() + 6}};
      return fake_reply{200, "", whole};
    });
    anthropic_provider p(settings("anthropic", service, true));
    auto request = conversation();
    std::string streamed;
    int restarts = 0;
    request.on_text_delta = [&](const std::string& t) { streamed += t; };
    request.on_stream_restart = [&] {
      ++restarts;
      streamed.clear();  // as a viewer does
    };
    auto c = p.complete(request);
    REQUIRE(c.ok());
    CHECK(calls == 3);
    CHECK(restarts == 2);
    CHECK(c->text == "Let me look.");
    CHECK(streamed == "Let me look.");
    REQUIRE(c->tool_calls.size() == 1);
    CHECK(c->tool_calls[0].arguments == json{{"command", "ls"}});
    CHECK(c->used.output_tokens == 9);
  }
  SECTION("openai") {
    auto chunk = [](json delta, json finish = nullptr) {
      return "data: " + json{{"id", "chatcmpl-1"}, {"choices", {{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}}}}.dump() + "\n\n";
    };
    std::vector<std::string> whole = {
      chunk({{"content", "Run"}}), chunk({{"content", "ning."}}),
      chunk({{"tool_calls", {{{"index", 0}, {"id", "call_1"}, {"function", {{"name", "exec"}, {"arguments", "{\"command\""}}}}}}}),
      chunk({{"tool_calls", {{{"index", 0}, {"function", {{"arguments", ": \"ls\"}"}}}}}}}),
      chunk(json::object(), "tool_calls"), "data: [DONE]\n\n"};
    int calls = 0;
    fake_service service([&](const fake_request&) {
      ++calls;
      if (calls == 1) return fake_reply{200, "", {whole.begin(), whole.begin() + 3}};
      return fake_reply{200, "", whole};
    });
    openai_provider p(settings("openai", service, true));
    auto request = conversation();
    std::string streamed;
    request.on_text_delta = [&](const std::string& t) { streamed += t; };
    request.on_stream_restart = [&] { streamed.clear(); };
    auto c = p.complete(request);
    REQUIRE(c.ok());
    CHECK(calls == 2);
    CHECK(c->text == "Running.");
    CHECK(streamed == "Running.");
    REQUIRE(c->tool_calls.size() == 1);
    CHECK(c->tool_calls[0].arguments == json{{"command", "ls"}});
  }
  SECTION("a stream that keeps breaking off fails as unavailable once the retries run out") {
    int calls = 0;
    fake_service service([&](const fake_request&) {
      ++calls;
      return fake_reply{200, "", {sse("message_start", {{"type", "message_start"}, {"message", {{"id", "m"}}}})}};
    });
    anthropic_provider p(settings("anthropic", service, true));
    auto c = p.complete(conversation());
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().code == errc::unavailable);
    CHECK(c.error().message.find("ended before message_stop") != std::string::npos);
    CHECK(calls == 3);  // retries_max = 2
  }
}

// Found by the providers fuzzer: an answer of an unexpected shape (a tool call without its
// function, a choice that is no object, a text that is no string) aborted the worker on a
// missing key. Each is now an error or a completion without the missing part, never a crash.
TEST_CASE("providers: answers of unexpected shapes are errors, never a crash", "[llm]") {
  using keel::llm::anthropic_provider;
  using keel::llm::openai_provider;
  for (const char* body : {R"({"choices":[{"message":{"tool_calls":[{"id":"x"}]}}]})",
                           R"({"choices":[1]})", R"({"choices":[{"message":"text"}]})",
                           R"({"choices":[{"message":{"tool_calls":[{"function":7}]}}]})",
                           R"({"choices":[{"message":{"tool_calls":{"a":{"function":{"arguments":5}}}}}]})",
                           R"({"choices":[{"finish_reason":3,"message":{}}],"usage":[]})"}) {
    INFO(body);
    auto parsed = openai_provider::parse_response(body);
    if (parsed) CHECK(parsed->text.empty());
  }
  for (const char* body : {R"({"content":[{"type":"text","text":5}]})", R"({"content":[7]})",
                           R"({"content":[{"type":"tool_use","id":1}]})", R"({"content":[],"stop_reason":[],"usage":3})"}) {
    INFO(body);
    auto parsed = anthropic_provider::parse_response(body);
    if (!parsed) CHECK(parsed.error().code == keel::errc::malformed);
  }
  CHECK_FALSE(openai_provider::parse_response(R"({"choices":[1]})").ok());
  CHECK_FALSE(anthropic_provider::parse_response(R"({"content":[{"type":"text","text":5}]})").ok());
}

TEST_CASE("providers: token counts and stream indexes out of any range are no counts and malformed streams, never undefined behaviour",
          "[llm]") {
  using keel::llm::anthropic_provider;
  using keel::llm::openai_provider;
  // Each is a count a hostile or broken service could send: none is taken, none crashes.
  for (const char* count : {"1e120", "-5", "3.5", "\"12\"", "null", "[]", "18446744073709551615", "-9223372036854775808",
                            "1000000000001"}) {
    INFO(count);
    auto anthropic = anthropic_provider::parse_response(std::string(R"({"content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":)") +
                                                        count + R"(,"output_tokens":7,"cache_read_input_tokens":)" + count + "}}");
    REQUIRE(anthropic.ok());
    CHECK(anthropic->text == "hi");
    CHECK(anthropic->used.input_tokens == 0);
    CHECK(anthropic->used.output_tokens == 7);
    CHECK(anthropic->used.cache_read_tokens == 0);
    auto openai = openai_provider::parse_response(std::string(R"({"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":)") +
                                                  count + R"(,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":)" + count + "}}}");
    REQUIRE(openai.ok());
    CHECK(openai->used.input_tokens == 0);
    CHECK(openai->used.output_tokens == 7);
    CHECK(openai->used.cache_read_tokens == 0);
  }
  // Whole counts up to a trillion are taken as they are, written as integers or as floats.
  auto big = anthropic_provider::parse_response(R"({"content":[],"usage":{"input_tokens":1000000000000,"output_tokens":2.0}})");
  REQUIRE(big.ok());
  CHECK(big->used.input_tokens == 1'000'000'000'000);
  CHECK(big->used.output_tokens == 2);
}

TEST_CASE("streaming: a block or tool call index out of range is a malformed stream", "[llm]") {
  for (const char* index : {"1e120", "-1", "4096", "\"0\"", "2.5"}) {
    INFO(index);
    auto event = json::parse(std::string(R"({"type":"content_block_start","content_block":{"type":"tool_use","id":"t","name":"exec","input":{}},"index":)") + index + "}");
    fake_service anthropic_service([&](const fake_request&) {
      return fake_reply{200, "", {sse("message_start", {{"type", "message_start"}, {"message", {{"id", "m"}}}}),
                                  sse("content_block_start", event), sse("message_stop", {{"type", "message_stop"}})}};
    });
    anthropic_provider a(settings("anthropic", anthropic_service, true));
    auto got = a.complete(conversation());
    REQUIRE_FALSE(got.ok());
    CHECK(got.error().code == keel::errc::malformed);
    auto chunk = json::parse(std::string(R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":)") + index +
                             R"(,"id":"c","function":{"name":"exec","arguments":"{}"}}]}}]})");
    fake_service openai_service([&](const fake_request&) {
      return fake_reply{200, "", {"data: " + chunk.dump() + "\n\n", "data: [DONE]\n\n"}};
    });
    openai_provider o(settings("openai", openai_service, true));
    auto from_openai = o.complete(conversation());
    REQUIRE_FALSE(from_openai.ok());
    CHECK(from_openai.error().code == keel::errc::malformed);
  }
}
