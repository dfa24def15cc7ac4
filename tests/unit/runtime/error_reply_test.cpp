// A peer's error reply read without trusting its shape: every field missing or of another type
// reads as absent, never as an exception on the thread that asked.
#include "runtime/error_reply.hpp"

#include <catch2/catch.hpp>

using namespace keel;
using json = nlohmann::json;

TEST_CASE("error replies: a well-formed one gives its code and message", "[wire]") {
  json reply{{"type", "error"}, {"error", {{"code", "not_found"}, {"message", "no run r1"}}}};
  CHECK(text_field(reply, "type") == "error");
  CHECK(error_code_of(reply) == "not_found");
  CHECK(error_message_of(reply) == "no run r1");
  auto e = error_of(reply);
  CHECK(e.code == errc::not_found);
  CHECK(e.message == "no run r1");
}

TEST_CASE("error replies: fields of the wrong type, or missing, read as absent and throw nothing", "[wire]") {
  for (const auto& reply : {json{{"type", 5}, {"error", {{"code", 5}, {"message", json::array()}}}},
                            json{{"type", "error"}, {"error", "a string, not an object"}},
                            json{{"type", "error"}, {"error", nullptr}},
                            json{{"type", "error"}},
                            json::array({1, 2}),
                            json("text"),
                            json()}) {
    INFO(reply.dump());
    CHECK_NOTHROW(text_field(reply, "type"));
    CHECK(error_code_of(reply).empty());
    CHECK(error_message_of(reply, "fallback") == "fallback");
    auto e = error_of(reply, errc::unavailable, "the owner could not say");
    CHECK(e.code == errc::unavailable);
    CHECK(e.message == "the owner could not say");
  }
  // A code keel does not know keeps the fallback code.
  CHECK(error_of(json{{"error", {{"code", "no-such-code"}, {"message", "m"}}}}, errc::io).code == errc::io);
}
