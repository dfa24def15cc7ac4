#include "runtime/wire.hpp"

#include <catch2/catch.hpp>

#include <random>

using namespace keel;
using wire::value;

namespace {

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string unhex(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i + 1 < text.size(); i += 2)
    out += static_cast<char>(std::stoi(std::string(text.substr(i, 2)), nullptr, 16));
  return out;
}

// Re-encodes a map after `edit`: the way to build a malformed message from a good one.
template <class Edit>
std::string edited(const std::string& bytes, Edit edit) {
  auto v = wire::unpack(bytes);
  REQUIRE(v.ok());
  edit(*v);
  return wire::pack(*v);
}

} // namespace

TEST_CASE("wire: golden bytes of invoke, resume, invoke_reply and error stay the same",
          "[runtime][wire]") {
  wire::invoke_request invoke{"coder", value{{"task", "hi"}}, "", ""};
  CHECK(hex(wire::encode(invoke)) ==
        "84a56167656e74a5636f646572a5696e70757481a47461736ba26869a474797065a6696e766f6b65a17601");
  wire::resume_request resume;
  resume.step_key = "s1";
  resume.approved = true;
  CHECK(hex(wire::encode(resume)) ==
        "84a46461746181a8617070726f766564c3a8737465705f6b6579a27331a474797065a6726573756d65a17601");
  CHECK(hex(wire::encode(wire::invoke_reply{"r1", true})) ==
        "84a763726561746564c3a672756e5f6964a27231a474797065ac696e766f6b655f7265706c79a17601");
  CHECK(hex(wire::encode_error(make_error(errc::not_found, "no run"))) ==
        "83a56572726f7282a4636f6465a96e6f745f666f756e64a76d657373616765a66e6f2072756ea474797065a5"
        "6572726f72a17601");
}

// Floats are always sent as float64; 0.1 has no exact float32 form, so both encoders agree.
TEST_CASE("wire: msgpack-c and an independent encoder agree byte for byte", "[runtime][wire]") {
  value v = {{"s", std::string(300, 'x')}, {"i", -129}, {"u", 70000}, {"f", 0.1},
             {"a", {1, "two", nullptr, false}}, {"m", {{"k", value::object()}}},
             {"b", value::binary({1, 2, 3})}, {"big", 5'000'000'000LL}};
  auto ours = wire::pack(v);
  auto theirs = value::to_msgpack(v);
  CHECK(hex(ours) == hex(std::string(theirs.begin(), theirs.end())));
  auto back = wire::unpack(ours);
  REQUIRE(back.ok());
  CHECK(*back == v);
}

TEST_CASE("wire: every message survives a round trip", "[runtime][wire]") {
  SECTION("invoke") {
    wire::invoke_request m{"coder", value{{"input", "make hello.js"}, {"n", 3}}, "key-1", "sess"};
    auto back = wire::decode<wire::invoke_request>(wire::encode(m));
    REQUIRE(back.ok());
    CHECK(back->agent == "coder");
    CHECK(back->input == m.input);
    CHECK(back->idempotency_key == "key-1");
    CHECK(back->session_id == "sess");
  }
  SECTION("invoke_reply") {
    auto back = wire::decode<wire::invoke_reply>(wire::encode(wire::invoke_reply{"r9", false}));
    REQUIRE(back.ok());
    CHECK(back->run_id == "r9");
    CHECK_FALSE(back->created);
  }
  SECTION("resume") {
    wire::resume_request m{"r1", "step-4", false, "use python instead", true, "", "", "ana@box (keel)"};
    auto back = wire::decode<wire::resume_request>(wire::encode(m));
    REQUIRE(back.ok());
    CHECK(back->run_id == "r1");
    CHECK(back->step_key == "step-4");
    CHECK_FALSE(back->approved);
    CHECK(back->feedback == "use python instead");
    CHECK(back->always_allow);
    CHECK(back->by == "ana@box (keel)");
    // Who answered is shown, never trusted: text of at most 128 bytes, else refused.
    auto long_by = m;
    long_by.by = std::string(129, 'b');
    CHECK(wire::decode<wire::resume_request>(wire::encode(long_by)).error().code == errc::malformed);
  }
  SECTION("resume_reply") {
    auto back = wire::decode<wire::resume_reply>(wire::encode(wire::resume_reply{"r1", "s", true}));
    REQUIRE(back.ok());
    CHECK(back->duplicate);
  }
  SECTION("event") {
    wire::event m{"r1", 42, "suspend", 1700000000000, value{{"step_key", "s3"}}};
    auto back = wire::decode<wire::event>(wire::encode(m));
    REQUIRE(back.ok());
    CHECK(back->seq == 42);
    CHECK(back->event_type == "suspend");
    CHECK(back->time_ms == 1700000000000);
    CHECK(back->data == m.data);
  }
  SECTION("task") {
    wire::task m{"r1", 7, 2, wire::task_kind::tool, "coder", "keel.default.nodes.n.results",
                 30000, value{{"tool", "exec"}, {"arguments", {{"command", "ls"}}}}, {}, {}};
    auto back = wire::decode<wire::task>(wire::encode(m));
    REQUIRE(back.ok());
    CHECK(back->step == 7);
    CHECK(back->attempt == 2);
    CHECK(back->kind == wire::task_kind::tool);
    CHECK(back->reply_to == m.reply_to);
    CHECK(back->lease_ms == 30000);
    CHECK(back->payload == m.payload);
  }
  SECTION("task_result, success and failure") {
    wire::task_result ok{"r1", 7, 1, "w1", true, value{{"stdout", "hi\n"}}, std::nullopt};
    auto back = wire::decode<wire::task_result>(wire::encode(ok));
    REQUIRE(back.ok());
    CHECK(back->ok);
    CHECK(back->payload == ok.payload);
    CHECK_FALSE(back->failure);
    wire::task_result failed{"r1", 7, 1, "w1", false, nullptr,
                             make_error(errc::timeout, "model did not answer")};
    auto back_failed = wire::decode<wire::task_result>(wire::encode(failed));
    REQUIRE(back_failed.ok());
    REQUIRE(back_failed->failure);
    CHECK(back_failed->failure->code == errc::timeout);
    CHECK(back_failed->failure->message == "model did not answer");
  }
  SECTION("heartbeat") {
    wire::heartbeat m;
    m.node_id = "n1";
    m.roles = {"worker"};
    m.agents = {"coder"};
    m.queues = {"coder"};
    m.state = "stopping";
    m.pid = 77;
    auto back = wire::decode<wire::heartbeat>(wire::encode(m));
    REQUIRE(back.ok());
    CHECK(back->node_id == "n1");
    CHECK(back->roles == m.roles);
    CHECK(back->agents == m.agents);
    CHECK(back->state == "stopping");
    CHECK(back->pid == 77);
  }
}

TEST_CASE("wire: an error reply decodes to its error whatever message was expected",
          "[runtime][wire]") {
  auto bytes = wire::encode_error(make_error(errc::conflict, "step s2 is not waiting"));
  auto r = wire::decode<wire::resume_reply>(bytes);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == errc::conflict);
  CHECK(r.error().message == "step s2 is not waiting");
  CHECK(*wire::peek_type(bytes) == "error");
}

TEST_CASE("wire: peek_type reads the type without decoding the body, and says what is wrong",
          "[runtime][wire]") {
  auto good = wire::encode(wire::resume_reply{"r1-node", "s1", false});
  CHECK(*wire::peek_type(good) == "resume_reply");
  auto big = wire::task_result{};
  big.run_id = "r1-node";
  big.payload = value{{"text", std::string(100'000, 'x')}};
  CHECK(*wire::peek_type(wire::encode(big)) == "task_result");
  auto code_of = [](const std::string& bytes) { return wire::peek_type(bytes).error().code; };
  CHECK(code_of("") == errc::malformed);
  CHECK(code_of(good.substr(0, good.size() / 2)) == errc::malformed);  // truncated
  CHECK(code_of(wire::pack(value::array({1, 2}))) == errc::malformed);  // not a map
  CHECK(code_of(edited(good, [](value& v) { v.erase("type"); })) == errc::malformed);
  CHECK(code_of(edited(good, [](value& v) { v["type"] = 7; })) == errc::malformed);
  CHECK(code_of(edited(good, [](value& v) { v.erase("v"); })) == errc::malformed);
  CHECK(code_of(edited(good, [](value& v) { v["v"] = 99; })) == errc::unsupported_version);
  wire::limits small;
  small.message_bytes_max = 16;
  CHECK(wire::peek_type(good, small).error().code == errc::too_large);
}

TEST_CASE("wire: peek_task_ref reads the run and step a result is about, and says what is wrong",
          "[runtime][wire]") {
  wire::task_result r;
  r.run_id = "r1-node";
  r.step = 7;
  r.payload = value{{"text", std::string(10'000, 'x')}};
  auto good = wire::encode(r);
  auto ref = wire::peek_task_ref(good);
  REQUIRE(ref.ok());
  CHECK(ref->type == "task_result");
  CHECK(ref->run_id == "r1-node");
  CHECK(ref->step == 7);
  auto message_of = [](const std::string& bytes) { return wire::peek_task_ref(bytes).error().message; };
  CHECK(message_of(edited(good, [](value& v) { v.erase("run_id"); })) == "missing field 'run_id'");
  CHECK(message_of(edited(good, [](value& v) { v["run_id"] = ""; })) == "field 'run_id' must be a non-empty string");
  CHECK(message_of(edited(good, [](value& v) { v["step"] = -1; })) == "field 'step' must be a non-negative integer");
  CHECK(message_of(edited(good, [](value& v) { v.erase("step"); })) == "missing field 'step'");
  CHECK(ref->epoch == 0);  // none named
  r.epoch = 9;
  CHECK(wire::peek_task_ref(wire::encode(r))->epoch == 9);
  CHECK(message_of(edited(good, [](value& v) { v["epoch"] = -1; })) == "field 'epoch' must be a non-negative integer");
  CHECK(message_of(edited(good, [](value& v) { v["epoch"] = "9"; })) == "field 'epoch' must be a non-negative integer");
  // The same checks as a full decode: trailing bytes and truncation are refused too.
  CHECK(message_of(good + "\xc0") == "1 bytes after the end of the message");
  CHECK(message_of(good.substr(0, good.size() - 1)) == "truncated message");
}

TEST_CASE("wire: a task and its result carry the owner's epoch when there is one, and a wrong one is refused",
          "[runtime][wire]") {
  wire::task t{"r1", 7, 2, wire::task_kind::tool, "coder", "keel.default.nodes.n.results", 30000, value{{"tool", "exec"}}, {}, {}};
  CHECK(wire::unpack(wire::encode(t))->contains("epoch") == false);  // none: not written
  CHECK(wire::decode<wire::task>(wire::encode(t))->epoch == 0);
  t.epoch = 12;
  CHECK(wire::decode<wire::task>(wire::encode(t))->epoch == 12);
  CHECK(wire::decode_task_keeping_conversation(wire::encode(t))->epoch == 12);
  wire::task_result r{"r1", 7, 2, "w1", true, value{{"ok", 1}}, std::nullopt};
  CHECK(wire::decode<wire::task_result>(wire::encode(r))->epoch == 0);
  r.epoch = 13;
  CHECK(wire::decode<wire::task_result>(wire::encode(r))->epoch == 13);
  auto bad = edited(wire::encode(t), [](value& v) { v["epoch"] = "12"; });
  CHECK(wire::decode<wire::task>(bad).error().code == errc::malformed);
  CHECK(wire::decode<wire::task_result>(edited(wire::encode(r), [](value& v) { v["epoch"] = -2; })).error().code ==
        errc::malformed);
}

TEST_CASE("wire: unknown fields are ignored", "[runtime][wire]") {
  auto bytes = edited(wire::encode(wire::invoke_request{"coder", "x", "", ""}),
                      [](value& v) { v["from_the_future"] = {1, 2, 3}; });
  auto r = wire::decode<wire::invoke_request>(bytes);
  REQUIRE(r.ok());
  CHECK(r->agent == "coder");
}

TEST_CASE("wire: malformed messages are rejected with an error that says why", "[runtime][wire]") {
  auto good = wire::encode(wire::invoke_request{"coder", value{{"task", "hi"}}, "", ""});

  SECTION("truncated at every length") {
    for (std::size_t n = 0; n < good.size(); ++n) {
      auto r = wire::decode<wire::invoke_request>(std::string_view(good).substr(0, n));
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == errc::malformed);
    }
    CHECK(wire::decode<wire::invoke_request>(good.substr(0, 10)).error().message == "truncated message");
  }
  SECTION("trailing bytes") {
    auto r = wire::decode<wire::invoke_request>(good + "x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message == "1 bytes after the end of the message");
  }
  SECTION("missing fields") {
    auto r = wire::decode<wire::invoke_request>(edited(good, [](value& v) { v.erase("agent"); }));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message == "missing field 'agent'");
    auto no_version = wire::decode<wire::invoke_request>(edited(good, [](value& v) { v.erase("v"); }));
    CHECK(no_version.error().message == "missing field 'v'");
    auto no_type = wire::decode<wire::invoke_request>(edited(good, [](value& v) { v.erase("type"); }));
    CHECK(no_type.error().message == "missing field 'type'");
    wire::resume_request resume{"r", "s", true, "", false, "", "", ""};
    auto no_approved = wire::decode<wire::resume_request>(
      edited(wire::encode(resume), [](value& v) { v["data"].erase("approved"); }));
    CHECK(no_approved.error().message == "missing field 'approved'");
  }
  SECTION("wrong types") {
    auto r = wire::decode<wire::invoke_request>(edited(good, [](value& v) { v["agent"] = 5; }));
    CHECK(r.error().message == "field 'agent' must be a string");
    auto empty = wire::decode<wire::invoke_request>(edited(good, [](value& v) { v["agent"] = ""; }));
    CHECK(empty.error().message == "field 'agent' must be a non-empty string");
    auto version = wire::decode<wire::invoke_request>(edited(good, [](value& v) { v["v"] = "1"; }));
    CHECK(version.error().message == "field 'v' must be an integer");
    wire::resume_request resume{"r", "s", true, "", false, "", "", ""};
    auto approved = wire::decode<wire::resume_request>(
      edited(wire::encode(resume), [](value& v) { v["data"]["approved"] = "yes"; }));
    CHECK(approved.error().message == "field 'approved' must be a boolean");
    auto data = wire::decode<wire::resume_request>(
      edited(wire::encode(resume), [](value& v) { v["data"] = "approve"; }));
    CHECK(data.error().message == "field 'data' must be a map with 'approved'");
    auto not_a_map = wire::decode<wire::invoke_request>(wire::pack(value{1, 2}));
    CHECK(not_a_map.error().message == "a message must be a map");
  }
  SECTION("another message type or protocol version") {
    auto r = wire::decode<wire::resume_request>(good);
    CHECK(r.error().message == "expected a message of type 'resume', got 'invoke'");
    auto v2 = wire::decode<wire::invoke_request>(edited(good, [](value& v) { v["v"] = 2; }));
    CHECK(v2.error().code == errc::unsupported_version);
  }
  SECTION("oversized") {
    wire::limits small;
    small.message_bytes_max = 64;
    auto big = wire::encode(wire::invoke_request{"coder", std::string(100, 'x'), "", ""});
    auto r = wire::decode<wire::invoke_request>(big, small);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::too_large);
    CHECK(r.error().message.find("over the limit of 64") != std::string::npos);
  }
  SECTION("a claimed length far beyond the bytes present") {
    // A map header claiming 2^32-1 entries, then nothing.
    auto r = wire::decode<wire::invoke_request>(unhex("dfffffffff"));
    REQUIRE_FALSE(r.ok());
  }
  SECTION("nesting deeper than the limit") {
    std::string deep(100, '\x91');  // 100 nested one-element arrays
    deep += '\x01';
    auto r = wire::unpack(deep);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::too_large);
  }
  SECTION("a map with a non-string key") {
    auto r = wire::unpack(unhex("810102"));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message == "a map key is not a string");
  }
}

TEST_CASE("wire: random bytes never crash the decoder", "[runtime][wire]") {
  std::mt19937_64 random(20261126);
  auto good = wire::encode(wire::task{"r1", 7, 2, wire::task_kind::tool, "coder", "x", 1,
                                      value{{"a", {1, 2, 3}}}, {}, {}});
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes;
    if (i % 2 == 0) {
      bytes.resize(random() % 64);
      for (auto& c : bytes) c = static_cast<char>(random());
    } else {
      bytes = good;  // a good message with a few bytes flipped
      for (int flips = 0; flips < 3; ++flips) bytes[random() % bytes.size()] = static_cast<char>(random());
    }
    auto r = wire::decode<wire::task>(bytes);
    if (r.ok()) ++accepted;
    else CHECK_FALSE(r.error().message.empty());
  }
  // Some flipped messages are still valid tasks (a flipped letter inside a string); most are not.
  CHECK(accepted < 20000 / 2);
}

TEST_CASE("wire: messages packed field by field are byte for byte the map they stand for", "[runtime][wire]") {
  // Events, tasks and results are packed without building a map (their payload can be large);
  // what goes on the wire must be exactly what packing the map gives: keys sorted, all present.
  value payload{{"role", "assistant"}, {"text", "hello"}, {"tool_calls", value::array({{{"id", "c1"}}})}};
  wire::event ev{"r1", 7, "llm_step_completed", 1234, payload};
  CHECK(wire::encode(ev) == wire::pack(value{{"v", wire::protocol_version}, {"type", "event"}, {"run_id", "r1"},
                                             {"seq", 7}, {"event_type", "llm_step_completed"},
                                             {"time_ms", 1234}, {"data", payload}}));
  wire::task_result ok{"r1", 3, 2, "w1", true, payload, {}};
  CHECK(wire::encode(ok) == wire::pack(value{{"v", wire::protocol_version}, {"type", "task_result"},
                                             {"run_id", "r1"}, {"step", 3}, {"attempt", 2}, {"worker", "w1"},
                                             {"ok", true}, {"payload", payload}}));
  wire::task_result failed{"r1", 3, 2, "w1", false, nullptr, make_error(errc::timeout, "too slow")};
  CHECK(wire::encode(failed) == wire::pack(value{{"v", wire::protocol_version}, {"type", "task_result"},
                                                 {"run_id", "r1"}, {"step", 3}, {"attempt", 2}, {"worker", "w1"},
                                                 {"ok", false}, {"payload", nullptr},
                                                 {"error", {{"code", "timeout"}, {"message", "too slow"}}}}));
  auto back = wire::decode<wire::task_result>(wire::encode(failed));
  REQUIRE(back.ok());
  CHECK(back->failure->code == errc::timeout);
}

TEST_CASE("wire: a task whose conversation comes packed is the same message as one whose payload holds it",
          "[runtime][wire]") {
  value messages = value::array({{{"role", "user"}, {"text", "make it"}},
                                 {{"role", "assistant"}, {"text", "ok"}, {"tool_calls", value::array()}}});
  value small{{"model", "m"}, {"system_prompt", "be brief"}, {"tools", value::array({"read"})}};
  value whole = small;
  whole["messages"] = messages;
  wire::task plain{"r1", 3, 1, wire::task_kind::llm, "coder", "results", 120000, whole, {}, {}};
  wire::task packed{"r1", 3, 1, wire::task_kind::llm, "coder", "results", 120000, small,
                    wire::pack_list({wire::pack(messages[0]), wire::pack(messages[1])}), {}};
  CHECK(wire::encode(packed) == wire::encode(plain));
  auto back = wire::decode<wire::task>(wire::encode(packed));
  REQUIRE(back.ok());
  CHECK(back->payload == whole);
  CHECK(back->payload_messages.empty());  // decoded, the conversation is in the payload
  CHECK(wire::pack_list({}) == wire::pack(value::array()));
}

TEST_CASE("wire: a task decoded keeping its conversation packed is otherwise the task decode gives", "[runtime][wire]") {
  value messages = value::array({{{"role", "user"}, {"text", "make it"}},
                                 {{"role", "assistant"}, {"text", "ok"}, {"tool_calls", value::array()}}});
  value whole{{"model", "m"}, {"messages", messages}, {"tools", value::array({"read"})}};
  wire::task sent{"r1", 3, 1, wire::task_kind::llm, "coder", "results", 120000, whole, {}, {}};
  auto bytes = wire::encode(sent);
  auto plain = wire::decode<wire::task>(bytes);
  auto kept = wire::decode_task_keeping_conversation(bytes);
  REQUIRE(plain.ok());
  REQUIRE(kept.ok());
  CHECK(kept->run_id == "r1");
  CHECK(kept->step == 3);
  CHECK(kept->reply_to == "results");
  CHECK(kept->payload == value{{"model", "m"}, {"tools", value::array({"read"})}});
  CHECK(kept->payload_messages == wire::pack(messages));
  CHECK(plain->payload == whole);
  // A tool task has no conversation: both decodes agree.
  wire::task tool{"r1", 4, 1, wire::task_kind::tool, "coder", "results", 1000, value{{"tool", "read"}}, {}, {}};
  auto kept_tool = wire::decode_task_keeping_conversation(wire::encode(tool));
  REQUIRE(kept_tool.ok());
  CHECK(kept_tool->payload == tool.payload);
  CHECK(kept_tool->payload_messages.empty());
  // Bad input gets the same errors.
  CHECK(wire::decode_task_keeping_conversation("\x93garbage").error().code == errc::malformed);
  auto no_kind = edited(bytes, [](value& v) { v.erase("kind"); });
  CHECK(wire::decode_task_keeping_conversation(no_kind).error().message ==
        wire::decode<wire::task>(no_kind).error().message);
}

TEST_CASE("wire: the conversation is found past values of every MessagePack kind, and cut bytes are errors",
          "[runtime][wire]") {
  value many = value::array();
  for (int i = 0; i < 40; ++i) many.push_back(i * 1000);  // array16, ints of several widths
  value wide = value::object();
  for (int i = 0; i < 20; ++i) wide["k" + std::to_string(i)] = -i * 70000;  // map16, negative ints
  value payload{{"a_small", 5},
                {"b_negative", -3},
                {"c_float", 2.5},
                {"d_big", std::uint64_t{1} << 40},
                {"e_bin", value::binary(std::vector<std::uint8_t>(300, 7))},
                {"f_str8", std::string(200, 's')},
                {"g_str16", std::string(70'000, 't')},
                {"h_many", many},
                {"i_wide", wide},
                {"j_flags", {true, false, nullptr}},
                {"messages", value::array({{{"role", "user"}, {"text", std::string(40'000, 'u')}}})},
                {"z_after", {{"nested", {{"deeper", value::array({1, "two", 3.0})}}}}}};
  wire::limits roomy;
  roomy.message_bytes_max = 1 << 22;
  wire::task sent{"r1", 3, 1, wire::task_kind::llm, "coder", "results", 120000, payload, {}, {}};
  auto bytes = wire::encode(sent);
  auto kept = wire::decode_task_keeping_conversation(bytes, roomy);
  REQUIRE(kept.ok());
  CHECK(kept->payload_messages == wire::pack(payload["messages"]));
  value rest = payload;
  rest.erase("messages");
  CHECK(kept->payload == rest);
  // Cut short anywhere: the error the full decode gives, never a task.
  for (std::size_t cut : {std::size_t{1}, std::size_t{10}, bytes.size() / 2, bytes.size() - 1}) {
    auto shorter = bytes.substr(0, cut);
    auto got = wire::decode_task_keeping_conversation(shorter, roomy);
    REQUIRE_FALSE(got.ok());
    CHECK(got.error().message == wire::decode<wire::task>(shorter, roomy).error().message);
  }
  // A byte no MessagePack value starts with, inside the payload: an error, as the full decode says.
  auto bad = bytes;
  auto at = bad.find("a_small");
  REQUIRE(at != std::string::npos);
  bad[at + 7] = '\xc1';
  auto got = wire::decode_task_keeping_conversation(bad, roomy);
  REQUIRE_FALSE(got.ok());
  CHECK(got.error().message == wire::decode<wire::task>(bad, roomy).error().message);
}

TEST_CASE("wire: a message with bytes that are not UTF-8, in any string or key, is refused at the door",
          "[runtime][wire]") {
  const std::vector<std::string> bad = {"\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "ok\x80ok"};
  for (const auto& bytes : bad) {
    INFO(hex(bytes));
    CHECK_FALSE(wire::is_valid_utf8(bytes));
    // In the input, deep in it, in a key, in the agent's name: each a clear error, no run.
    std::vector<std::string> messages;
    messages.push_back(wire::encode(wire::invoke_request("coder", value{{"text", bytes}})));
    messages.push_back(wire::encode(wire::invoke_request("coder", value{{"a", value::array({value{{"b", bytes}}})}})));
    messages.push_back(wire::encode(wire::invoke_request("coder", value{{bytes, "x"}})));
    messages.push_back(wire::encode(wire::invoke_request("coder" + bytes, value{{"text", "x"}})));
    for (const auto& message : messages) {
      auto decoded = wire::decode<wire::invoke_request>(message);
      REQUIRE_FALSE(decoded.ok());
      CHECK(decoded.error().code == errc::malformed);
      CHECK(decoded.error().message.find("not valid UTF-8") != std::string::npos);
    }
    // What keel sends itself is repaired instead: U+FFFD for each bad byte, the rest kept.
    value v{{"files", value::array({"x" + bytes})}, {bytes, "k"}};
    wire::repair_utf8(v);
    CHECK(wire::is_valid_utf8(v.dump()));
    CHECK(wire::decode<wire::invoke_request>(wire::encode(wire::invoke_request("coder", v))).ok());
  }
  for (const std::string good : {"", "plain", "héllo", "日本", "\xf0\x9f\x98\x80", "\u2066x\u2069"})
    CHECK(wire::is_valid_utf8(good));
  CHECK(wire::repaired_utf8("a\xff" "b") == "a\xef\xbf\xbd" "b");
}
