#include "telemetry/trace_ids.hpp"

#include <cstdint>

namespace keel::telemetry {

namespace {

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

std::uint64_t hash(std::string_view text, std::uint64_t seed) {
  std::uint64_t h = 0xcbf29ce484222325ULL ^ mix(seed);
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return mix(h ^ text.size());
}

std::string hex(std::uint64_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = digits[v & 15];
  return out;
}

bool is_hex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

} // namespace

std::string trace_id_of(std::string_view root_run_id) {
  auto a = hash(root_run_id, 1), b = hash(root_run_id, 2);
  if (a == 0 && b == 0) b = 1;
  return hex(a) + hex(b);
}

std::string span_id_of(std::string_view key) {
  auto v = hash(key, 3);
  return hex(v == 0 ? 1 : v);
}

std::string run_span_id(std::string_view run_id) { return span_id_of(std::string("run/") + std::string(run_id)); }

std::string traceparent(std::string_view trace_id, std::string_view span_id) {
  return "00-" + std::string(trace_id) + "-" + std::string(span_id) + "-01";
}

std::optional<span_context> parse_traceparent(std::string_view text) {
  // version(2)-trace(32)-span(16)-flags(2)
  if (text.size() != 55 || text[2] != '-' || text[35] != '-' || text[52] != '-') return std::nullopt;
  auto version = text.substr(0, 2), trace = text.substr(3, 32), span = text.substr(36, 16), flags = text.substr(53, 2);
  if (version != "00" || !is_hex(trace) || !is_hex(span) || !is_hex(flags)) return std::nullopt;
  if (trace == std::string(32, '0') || span == std::string(16, '0')) return std::nullopt;
  return span_context{std::string(trace), std::string(span)};
}

} // namespace keel::telemetry
