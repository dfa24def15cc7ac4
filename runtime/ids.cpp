#include "runtime/ids.hpp"

#include "runtime/clock.hpp"

#include <atomic>
#include <random>

namespace keel {

namespace {
constexpr std::size_t unique_part_chars = 16;
constexpr char base32_alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";

std::uint64_t process_random() {
  static const std::uint64_t value = [] {
    std::random_device device;
    return (std::uint64_t{device()} << 32) ^ device();
  }();
  return value;
}
} // namespace

std::string_view run_id::owner() const& {
  if (value.size() <= unique_part_chars + 1 || value[unique_part_chars] != '-') return {};
  return std::string_view(value).substr(unique_part_chars + 1);
}

bool run_id::valid() const {
  auto who = owner();
  if (who.empty() || !is_valid_name(who)) return false;
  for (std::size_t i = 0; i < unique_part_chars; ++i)
    if (std::string_view(base32_alphabet).find(value[i]) == std::string_view::npos) return false;
  return true;
}

std::string task_id::to_string() const {
  return run + "/" + std::to_string(step) + "/" + std::to_string(attempt);
}

run_id make_run_id(const node_id& owner) {
  // 48 bits of milliseconds keep ids sortable by creation; 32 bits of a per-process counter
  // (started at a random point) keep them unique within one millisecond and across restarts.
  static std::atomic<std::uint32_t> counter{static_cast<std::uint32_t>(process_random())};
  std::uint64_t high = static_cast<std::uint64_t>(wall_ms()) & ((std::uint64_t{1} << 48) - 1);
  std::uint64_t low = counter.fetch_add(1, std::memory_order_relaxed);
  std::string out(unique_part_chars, '0');
  // 10 chars of time (50 bits), 6 chars of counter (30 bits).
  for (int i = 9; i >= 0; --i, high >>= 5) out[i] = base32_alphabet[high & 31];
  for (int i = 15; i >= 10; --i, low >>= 5) out[i] = base32_alphabet[low & 31];
  return run_id{out + "-" + owner.value};
}

std::string reserved_sender_problem(std::string_view name) {
  if (name.rfind("webhook-", 0) == 0) return "names starting with webhook- are the gateway's, for its webhooks";
  if (name == join_sender) return std::string(join_sender) + " is the name child runs of a fan-out send their outcome under";
  return {};
}

bool is_valid_name(std::string_view token) {
  if (token.empty() || token.size() > 64) return false;
  for (char c : token) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool is_valid_session_id(std::string_view id) {
  if (id.empty() || id.size() > session_id_chars_max || id[0] == '.') return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

} // namespace keel
