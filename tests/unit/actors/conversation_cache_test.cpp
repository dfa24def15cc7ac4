// The worker's conversations: taken out and put back whole (no copies), measured once per
// message, bounded in bytes with the least recently used runs forgotten first.
#include "actors/conversation_cache.hpp"

#include <catch2/catch.hpp>

using namespace keel;
using keel::actors::conversation_cache;

namespace {

std::vector<llm::message> messages(std::size_t n, std::size_t text_bytes = 100) {
  std::vector<llm::message> out;
  for (std::size_t i = 0; i < n; ++i) {
    llm::message m;
    m.role = i % 2 ? "assistant" : "user";
    m.text = std::string(text_bytes, static_cast<char>('a' + i % 26));
    if (i % 2) m.tool_calls.push_back({"call-" + std::to_string(i), "read", wire::value{{"path", "f" + std::to_string(i)}}});
    out.push_back(std::move(m));
  }
  return out;
}

std::size_t measured(const std::vector<llm::message>& all) {
  std::size_t n = 0;
  for (const auto& m : all) n += conversation_cache::size_of(m);
  return n;
}

} // namespace

TEST_CASE("conversations: a run's messages are taken out whole and put back with the new ones, counted once", "[conversations]") {
  conversation_cache cache(1 << 20);
  CHECK_FALSE(cache.take("r1"));
  cache.put("r1", messages(10));
  auto held = cache.take("r1");
  REQUIRE(held);
  CHECK(held->messages.size() == 10);
  CHECK(held->bytes == measured(held->messages));
  CHECK(cache.bytes() == 0);        // taken out: a second step of the run at once finds none
  CHECK_FALSE(cache.take("r1"));
  const auto* first = held->messages.data();
  auto all = std::move(held->messages);
  CHECK(all.data() == first);       // moved, not copied
  auto more = messages(4, 300);
  for (auto& m : more) all.push_back(std::move(m));
  cache.put("r1", std::move(all), 10, held->bytes);
  auto again = cache.take("r1");
  REQUIRE(again);
  CHECK(again->messages.size() == 14);
  CHECK(again->bytes == measured(again->messages));  // only the new four were measured, same total
}

TEST_CASE("conversations: a count that does not fit what is put back is measured again", "[conversations]") {
  conversation_cache cache(1 << 20);
  auto few = messages(3);
  auto right = measured(few);
  cache.put("r1", std::move(few), 7, 12345);  // counted beyond the messages: ignored
  auto held = cache.take("r1");
  REQUIRE(held);
  CHECK(held->bytes == right);
}

TEST_CASE("conversations: the bound holds, the least recently used runs go first, and one too large is not kept", "[conversations]") {
  auto one = measured(messages(20)) + 512 + 4;
  conversation_cache cache(3 * one);
  cache.put("r1", messages(20));
  cache.put("r2", messages(20));
  cache.put("r3", messages(20));
  CHECK(cache.bytes() <= 3 * one);
  // r1 used again: r2 is now the oldest.
  auto r1 = cache.take("r1");
  REQUIRE(r1);
  cache.put("r1", std::move(r1->messages), 20, r1->bytes);
  cache.put("r4", messages(20));
  CHECK(cache.bytes() <= 3 * one);
  CHECK_FALSE(cache.take("r2"));
  CHECK(cache.take("r1"));
  CHECK(cache.take("r3"));
  CHECK(cache.take("r4"));
  CHECK(cache.bytes() == 0);
  cache.put("huge", messages(2000));
  CHECK_FALSE(cache.take("huge"));
  CHECK(cache.bytes() == 0);
  cache.put("r5", messages(2));
  cache.erase("r5");
  CHECK(cache.bytes() == 0);
  CHECK_FALSE(cache.take("r5"));
}
