// The wire protocol: every message is a MessagePack map with string keys, carrying `v` (protocol
// version) and `type`. docs/PROTOCOL.md describes each message; tests hold golden bytes.
// Decoding is strict about what a message needs and ignores fields it does not know.
#pragma once

#include "runtime/utf8.hpp"

#include "runtime/result.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::wire {

// Any MessagePack value: maps, arrays, strings, numbers, booleans, nil, binary.
using value = nlohmann::json;

inline constexpr std::int64_t protocol_version = 1;

struct limits {
  std::size_t message_bytes_max = 1 << 20;
  std::size_t depth_max = 64;
  std::size_t container_elements_max = 100'000;
};

// The decoder refuses a message with any string or key that is not valid UTF-8 (utf8.hpp): bad
// bytes from outside are refused at the door with a clear error, never carried into a run.
// Every invalid sequence in every string and key of `v` replaced by U+FFFD: what keel itself sends (a file name a tool found,
// bytes a command printed) is always text the other side can decode.
void repair_utf8(value& v);

// Raw codec for any value. `unpack` rejects trailing bytes, non-string map keys and extensions.
std::string pack(const value& v);
// Packs a map of the given fields without copying their values (keys are sorted here, as
// `pack` sorts them), for large values such as a run's state or a task's payload.
std::string pack_fields(std::vector<std::pair<std::string_view, const value*>> fields);
// The same, with some fields given already packed (each one MessagePack value), copied as bytes.
std::string pack_fields(std::vector<std::pair<std::string_view, const value*>> fields,
                        const std::vector<std::pair<std::string_view, std::string>>& packed);
// A list of values given already packed (each one MessagePack value), copied as bytes.
std::string pack_list(const std::vector<std::string>& packed);
result<value> unpack(std::string_view bytes, const limits& bounds = {});

struct invoke_request {
  invoke_request(std::string agent_id = {}, value input_value = {}, std::string key = {},
                 std::string session = {}, std::string provider_kind = {}, std::string model_name = {})
    : agent(std::move(agent_id)), input(std::move(input_value)), idempotency_key(std::move(key)),
      session_id(std::move(session)), provider(std::move(provider_kind)), model(std::move(model_name)) {}

  std::string agent;
  value input;
  std::string idempotency_key;  // empty: none
  std::string session_id;       // empty: none
  std::string provider;         // empty: the agent's; else run this run on another provider
  std::string model;            // empty: the agent's
  // Who invoked: the name that ends the invoke's subject, checked by the broker (never read from
  // the body).
  std::string by;
  // A sub-agent's run: the run that started it (run_machine's state.parent). Read only from
  // invokes on the orchestrators' own subject (P.children.invoke), which carry `by` in it.
  value parent;
  // The run's key in its agent's queue ([queues.<name>] key_concurrency: at most that many runs
  // of one key at once); empty: none. At most 128 bytes.
  std::string concurrency_key;
};

struct invoke_reply {
  std::string run_id;
  bool created = true;  // false when an idempotency key named an existing run
};

constexpr std::size_t resume_by_bytes_max = 128;  // wire.cpp says "128" in its error

struct resume_request {
  std::string run_id;  // optional in the body: the subject names the run
  std::string step_key;
  bool approved = false;
  std::string feedback;
  bool always_allow = false;  // remember this approval for the rest of the run (as always = "exact")
  // Remember it: "" (no), "exact" (this command byte for byte) or "prefix" (simple commands that
  // start with the same words); for the "run" or for the whole "session".
  std::string always;
  std::string always_scope;  // "" means "run"
  std::string by;            // who answered: set from the subject by the orchestrator (a body's is ignored)
};

struct resume_reply {
  std::string run_id;
  std::string step_key;
  bool duplicate = false;  // true when this answer had been recorded before
};

struct event {
  std::string run_id;
  std::uint64_t seq = 0;  // per run, from 1, without gaps
  std::string event_type;
  std::int64_t time_ms = 0;
  value data;
};

enum class task_kind { llm, tool };

struct task {
  std::string run_id;
  std::uint64_t step = 0;
  std::uint32_t attempt = 1;
  task_kind kind = task_kind::llm;
  std::string agent;
  std::string reply_to;  // subject the result goes to
  std::int64_t lease_ms = 0;
  value payload;
  // An LLM task's conversation, packed already (pack_list): encode() puts it in the payload as
  // "messages", so the orchestrator need not copy and pack the whole conversation each step.
  // Decoding puts it in the payload like any field.
  std::string payload_messages;
  std::string queue;  // a declared tool's task: the tool worker's queue (empty: the agent's)
  // The epoch in which its owner holds the run's domain (with the replicated log; 0: none). A
  // worker remembers the highest it saw per domain and trusts no owner of an older one
  // (docs/PROTOCOL.md, "Epochs").
  std::uint64_t epoch = 0;
};

struct task_result {
  std::string run_id;
  std::uint64_t step = 0;
  std::uint32_t attempt = 1;
  std::string worker;
  bool ok = true;
  value payload;
  std::optional<keel::error> failure;  // when !ok
  // The highest epoch of the run's domain its worker knows (0: none): an owner that sees one above
  // its own was taken over.
  std::uint64_t epoch = 0;
};

struct heartbeat {
  std::string node_id;
  std::vector<std::string> roles;
  std::vector<std::string> agents;
  std::vector<std::string> queues;
  std::string state = "up";  // "up" or "stopping"
  std::int64_t started_ms = 0;
  std::int64_t time_ms = 0;
  std::int64_t pid = 0;
  std::string host;
  std::string version;
  std::int64_t interval_ms = 0;  // the next heartbeat is due within this
  std::int64_t runs_in_memory = 0;  // orchestrators: run actors alive (suspended runs are not)
  std::int64_t slots = 0;           // workers: tasks it runs at once
  std::int64_t slots_busy = 0;      // workers: tasks it holds now
};

std::string encode(const invoke_request& m);
std::string encode(const invoke_reply& m);
std::string encode(const resume_request& m);
std::string encode(const resume_reply& m);
std::string encode(const event& m);
std::string encode(const task& m);
std::string encode(const task_result& m);
std::string encode(const heartbeat& m);
std::string encode_error(const keel::error& e);

// A reply of type "error" decodes to the error it carries, whatever T was expected.
template <class T>
result<T> decode(std::string_view bytes, const limits& bounds = {});
// A task as decode<task> gives it, except that its payload's "messages" (an LLM task's
// conversation) stays packed, in payload_messages: for a reader that does not want it as JSON.
result<task> decode_task_keeping_conversation(std::string_view bytes, const limits& bounds = {});

// A request's body as a map, after checking its `v` and that its `type` is the one expected: the
// error (malformed, unsupported_version, too_large) is the reply to send. Its fields are the
// caller's to check.
result<value> open_request(std::string_view bytes, const char* type, const limits& bounds = {});

// The `type` of a message, after checking `v`; for dispatch before a typed decode.
result<std::string> peek_type(std::string_view bytes, const limits& bounds = {});
// The type and the task a task_result is about, read the same way: enough to
// route it before (or without) decoding its body.
struct task_ref {
  std::string type;
  std::string run_id;
  std::uint64_t step = 0;
  std::uint64_t epoch = 0;  // its "epoch", when it has one (else 0)
};
result<task_ref> peek_task_ref(std::string_view bytes, const limits& bounds = {});

// Conversions used by the run store and events, which keep the same encoding on disk.
value to_value(const event& m);
result<event> event_from_value(const value& v);

std::string_view to_string(task_kind k);

} // namespace keel::wire
