// libFuzzer target: what a model service sends back, which keel reads as it comes: the
// server-sent event stream (split into events however the bytes arrive) and whole responses of
// the Anthropic and OpenAI formats. Any bytes give events, a completion or an error, never a
// crash. Invariant: the events are the same whether the stream comes at once or in pieces.
#include "llm/network_provider.hpp"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

using namespace keel;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::size_t piece = 1 + data[0] % 17;
  using events = std::vector<std::pair<std::string, std::string>>;
  auto collect = [](events& into) {
    return [&into](const std::string& event, const std::string& body) {
      into.emplace_back(event, body);
      return true;
    };
  };
  events whole, pieces;
  llm::sse_parser at_once, in_pieces;
  at_once.feed(input, collect(whole));
  for (std::size_t i = 0; i < input.size(); i += piece) in_pieces.feed(input.substr(i, piece), collect(pieces));
  if (whole != pieces) __builtin_trap();
  std::string body(input);
  (void)llm::anthropic_provider::parse_response(body);
  (void)llm::openai_provider::parse_response(body);
  return 0;
}
