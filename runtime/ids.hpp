// Distinct id types, so a run id is never passed where a node id belongs. A run id names the node
// that owns it: `<16 sortable chars>-<node id>`.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace keel {

struct node_id {
  std::string value;
  auto operator<=>(const node_id&) const = default;
};

struct run_id {
  std::string value;
  auto operator<=>(const run_id&) const = default;
  // The owner's node id, or empty when the id is not of keel's form. A view into the id; of a
  // temporary id (`auto o = run_id{x}.owner()`) a copy, which outlives it.
  std::string_view owner() const&;
  std::string owner() const&& { return std::string(static_cast<const run_id&>(*this).owner()); }
  // Whether the whole id is of keel's form: 16 of [0-9a-z], '-', a node id. Only such an id may go
  // into a subject (no '.', '*', '>' or space from a client reaches NATS).
  bool valid() const;
};

// Which of `lanes` paths through a node a run takes (node.lanes): the same on every call and in
// every process (FNV-1a of the id), so that a run's writes and messages keep their order.
inline std::size_t lane_of(std::string_view run, std::size_t lanes) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : run) h = (h ^ c) * 1099511628211ull;
  return lanes == 0 ? 0 : static_cast<std::size_t>(h % lanes);
}

// Names one attempt of one step of one run: a repeated task keeps run and step, so a tool can
// tell a repeat; the attempt number says how many times it was sent.
struct task_id {
  std::string run;
  std::uint64_t step = 0;
  std::uint32_t attempt = 0;
  auto operator<=>(const task_id&) const = default;
  std::string to_string() const;
};

// A new run id owned by `owner`: time-ordered, unique within the process and across restarts.
run_id make_run_id(const node_id& owner);

// Whether `token` can stand as one NATS subject token and a file name: [A-Za-z0-9_-], 1..64.
bool is_valid_name(std::string_view token);

// Names keel's own parts send under (the last token of a request's subject), which no person, token
// or broker user may have: webhook-<name> (the gateway, for a webhook) and keel-join (a child run of
// a fan-out handing its outcome to its parent). Empty when `name` is not one; else why.
inline constexpr const char* join_sender = "keel-join";
std::string reserved_sender_problem(std::string_view name);

// Whether `id` can name a session (and its workspace directory): [A-Za-z0-9_.-], 1..128, not
// starting with '.' (so never "." or "..").
bool is_valid_session_id(std::string_view id);
inline constexpr std::size_t session_id_chars_max = 128;

} // namespace keel
