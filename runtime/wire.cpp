#include "runtime/wire.hpp"

#include "runtime/ids.hpp"
#include "runtime/wire_msgpack.hpp"

#include <msgpack.hpp>

#include <algorithm>

namespace keel::wire {

namespace {

// Field access with the checks every message needs; each failure names the field.
class reader {
public:
  explicit reader(const value& map) : map_(map) {}

  const value* find(const char* key) const {
    auto it = map_.find(key);
    return it == map_.end() || it->is_null() ? nullptr : &*it;
  }

  error missing(const char* key) const {
    return make_error(errc::malformed, std::string("missing field '") + key + "'");
  }
  error wrong(const char* key, const char* expected) const {
    return make_error(errc::malformed,
                      std::string("field '") + key + "' must be " + expected);
  }

  result<std::string> str(const char* key, bool required) const {
    const value* v = find(key);
    if (!v) return required ? result<std::string>(missing(key)) : std::string{};
    if (!v->is_string()) return wrong(key, "a string");
    return v->get<std::string>();
  }
  result<std::string> nonempty(const char* key) const {
    auto s = str(key, true);
    if (s && s->empty()) return wrong(key, "a non-empty string");
    return s;
  }
  result<bool> boolean(const char* key, bool required, bool fallback = false) const {
    const value* v = find(key);
    if (!v) return required ? result<bool>(missing(key)) : fallback;
    if (!v->is_boolean()) return wrong(key, "a boolean");
    return v->get<bool>();
  }
  result<std::int64_t> integer(const char* key, bool required) const {
    const value* v = find(key);
    if (!v) return required ? result<std::int64_t>(missing(key)) : std::int64_t{0};
    if (!v->is_number_integer()) return wrong(key, "an integer");
    if (v->is_number_unsigned() && v->get<std::uint64_t>() > INT64_MAX)
      return wrong(key, "an integer below 2^63");
    return v->get<std::int64_t>();
  }
  result<std::uint64_t> unsigned_integer(const char* key, bool required) const {
    const value* v = find(key);
    if (!v) return required ? result<std::uint64_t>(missing(key)) : std::uint64_t{0};
    if (!v->is_number_unsigned()) return wrong(key, "a non-negative integer");
    return v->get<std::uint64_t>();
  }
  result<std::vector<std::string>> strings(const char* key) const {
    const value* v = find(key);
    std::vector<std::string> out;
    if (!v) return out;
    if (!v->is_array()) return wrong(key, "an array of strings");
    for (const auto& element : *v) {
      if (!element.is_string()) return wrong(key, "an array of strings");
      out.push_back(element.get<std::string>());
    }
    return out;
  }
  value any(const char* key) const {
    auto it = map_.find(key);
    return it == map_.end() ? value(nullptr) : *it;
  }
  // The task id every task message carries: run_id, step, attempt (from 1).
  result<void> task_id(std::string& run_id, std::uint64_t& step, std::uint32_t& attempt) const {
    auto run = nonempty("run_id");
    if (!run) return run.error();
    auto s = unsigned_integer("step", true);
    if (!s) return s.error();
    auto a = unsigned_integer("attempt", true);
    if (!a) return a.error();
    if (*a == 0 || *a > UINT32_MAX) return wrong("attempt", "from 1 to 2^32-1");
    run_id = std::move(*run);
    step = *s;
    attempt = static_cast<std::uint32_t>(*a);
    return success();
  }
  // An `error` map: {code, message}; an unknown code reads as internal.
  result<void> error_map(const char* key, keel::error& out) const {
    const value* e = find(key);
    if (!e || !e->is_object()) return wrong(key, "a map with code and message");
    reader er(*e);
    auto code_name = er.str("code", true);
    if (!code_name) return code_name.error();
    auto message = er.str("message", false);
    if (!message) return message.error();
    errc code = errc::internal;
    if (!from_string(*code_name, code)) code = errc::internal;
    out = make_error(code, *message);
    return success();
  }

private:
  const value& map_;
};

// Unwraps a result into `target`, or returns its error from the enclosing function.
#define KEEL_TRY(target, expression)            \
  do {                                          \
    auto keel_try_result = (expression);        \
    if (!keel_try_result) return keel_try_result.error(); \
    target = std::move(*keel_try_result);       \
  } while (false)

value envelope(const char* type) {
  return value{{"v", protocol_version}, {"type", type}};
}

// Decodes and checks `v` and `type`; an error message decodes to its error.
result<value> check_envelope(result<value> decoded, const char* type) {
  if (!decoded) return decoded;
  value& map = *decoded;
  if (!map.is_object()) return make_error(errc::malformed, "a message must be a map");
  reader r(map);
  std::int64_t version = 0;
  KEEL_TRY(version, r.integer("v", true));
  if (version != protocol_version)
    return make_error(errc::unsupported_version,
                      "protocol version " + std::to_string(version) + " is not supported (this "
                      "node speaks version " + std::to_string(protocol_version) + ")");
  std::string actual;
  KEEL_TRY(actual, r.nonempty("type"));
  if (actual == "error" && std::string_view(type) != "error") {
    keel::error carried;
    if (auto read = r.error_map("error", carried); !read) return read.error();
    return carried;
  }
  if (actual != type)
    return make_error(errc::malformed, "expected a message of type '" + std::string(type) +
                                         "', got '" + actual + "'");
  return decoded;
}

result<value> open_envelope(std::string_view bytes, const limits& bounds, const char* type) {
  return check_envelope(unpack(bytes, bounds), type);
}

} // namespace

result<value> open_request(std::string_view bytes, const char* type, const limits& bounds) {
  return check_envelope(unpack(bytes, bounds), type);
}

namespace {

// Moves a field out of a decoded map that is not needed afterwards (a payload can be a whole
// conversation: copying it cost as much as decoding it).
value take(value& map, const char* key) {
  auto it = map.find(key);
  return it == map.end() ? value(nullptr) : std::move(*it);
}

result<task_kind> kind_from(const std::string& s) {
  if (s == "llm") return task_kind::llm;
  if (s == "tool") return task_kind::tool;
  return make_error(errc::malformed, "field 'kind' must be \"llm\" or \"tool\"");
}

} // namespace


std::string_view to_string(task_kind k) { return k == task_kind::llm ? "llm" : "tool"; }

// ---- encoders -------------------------------------------------------------------------------

std::string encode(const invoke_request& m) {
  value v = envelope("invoke");
  v["agent"] = m.agent;
  v["input"] = m.input;
  if (!m.idempotency_key.empty()) v["idempotency_key"] = m.idempotency_key;
  if (!m.session_id.empty()) v["session_id"] = m.session_id;
  if (!m.provider.empty()) v["provider"] = m.provider;
  if (!m.model.empty()) v["model"] = m.model;
  if (m.parent.is_object()) v["parent"] = m.parent;
  if (!m.concurrency_key.empty()) v["concurrency_key"] = m.concurrency_key;
  return pack(v);
}

std::string encode(const invoke_reply& m) {
  value v = envelope("invoke_reply");
  v["run_id"] = m.run_id;
  v["created"] = m.created;
  return pack(v);
}

std::string encode(const resume_request& m) {
  value v = envelope("resume");
  if (!m.run_id.empty()) v["run_id"] = m.run_id;
  v["step_key"] = m.step_key;
  value data{{"approved", m.approved}};
  if (!m.feedback.empty()) data["feedback"] = m.feedback;
  if (m.always_allow) data["always_allow"] = true;
  if (!m.always.empty()) data["always"] = m.always;
  if (!m.always_scope.empty()) data["always_scope"] = m.always_scope;
  if (!m.by.empty()) data["by"] = m.by;
  v["data"] = std::move(data);
  return pack(v);
}

std::string encode(const resume_reply& m) {
  value v = envelope("resume_reply");
  v["run_id"] = m.run_id;
  v["step_key"] = m.step_key;
  v["duplicate"] = m.duplicate;
  return pack(v);
}

value to_value(const event& m) {
  value v = envelope("event");
  v["run_id"] = m.run_id;
  v["seq"] = m.seq;
  v["event_type"] = m.event_type;
  v["time_ms"] = m.time_ms;
  v["data"] = m.data;
  return v;
}

// The messages that carry a large part (a conversation, a tool's output) are packed field by
// field, without copying that part into a JSON map first; the bytes are the same as pack()'s.
std::string encode(const event& m) {
  value fields[] = {protocol_version, "event", m.run_id, m.seq, m.event_type, m.time_ms};
  return pack_fields({{"v", &fields[0]}, {"type", &fields[1]}, {"run_id", &fields[2]}, {"seq", &fields[3]},
                      {"event_type", &fields[4]}, {"time_ms", &fields[5]}, {"data", &m.data}});
}

std::string encode(const task& m) {
  value fields[] = {protocol_version, "task", m.run_id, m.step, m.attempt,
                    to_string(m.kind), m.agent, m.reply_to, m.lease_ms};
  std::vector<std::pair<std::string_view, const value*>> top = {
    {"v", &fields[0]},     {"type", &fields[1]},  {"run_id", &fields[2]},   {"step", &fields[3]},
    {"attempt", &fields[4]}, {"kind", &fields[5]}, {"agent", &fields[6]}, {"reply_to", &fields[7]},
    {"lease_ms", &fields[8]}};
  value queue = m.queue;
  if (!m.queue.empty()) top.emplace_back("queue", &queue);
  value epoch = m.epoch;
  if (m.epoch != 0) top.emplace_back("epoch", &epoch);
  if (m.payload_messages.empty()) {
    top.emplace_back("payload", &m.payload);
    return pack_fields(std::move(top));
  }
  std::vector<std::pair<std::string_view, const value*>> payload;
  if (m.payload.is_object())
    for (auto it = m.payload.begin(); it != m.payload.end(); ++it)
      if (it.key() != "messages") payload.emplace_back(it.key(), &it.value());
  return pack_fields(std::move(top), {{"payload", pack_fields(std::move(payload), {{"messages", m.payload_messages}})}});
}

std::string encode(const task_result& m) {
  value fields[] = {protocol_version, "task_result", m.run_id, m.step, m.attempt, m.worker, m.ok, nullptr};
  std::vector<std::pair<std::string_view, const value*>> all = {
    {"v", &fields[0]},      {"type", &fields[1]},   {"run_id", &fields[2]}, {"step", &fields[3]},
    {"attempt", &fields[4]}, {"worker", &fields[5]}, {"ok", &fields[6]},     {"payload", &m.payload}};
  if (m.failure) {
    fields[7] = value{{"code", to_string(m.failure->code)}, {"message", m.failure->message}};
    all.emplace_back("error", &fields[7]);
  }
  value epoch = m.epoch;
  if (m.epoch != 0) all.emplace_back("epoch", &epoch);
  return pack_fields(std::move(all));
}

std::string encode(const heartbeat& m) {
  value v = envelope("heartbeat");
  v["node_id"] = m.node_id;
  v["roles"] = m.roles;
  v["agents"] = m.agents;
  v["queues"] = m.queues;
  v["state"] = m.state;
  v["started_ms"] = m.started_ms;
  v["time_ms"] = m.time_ms;
  v["pid"] = m.pid;
  v["host"] = m.host;
  v["version"] = m.version;
  v["interval_ms"] = m.interval_ms;
  v["runs_in_memory"] = m.runs_in_memory;
  v["slots"] = m.slots;
  v["slots_busy"] = m.slots_busy;
  return pack(v);
}

std::string encode_error(const keel::error& e) {
  value v = envelope("error");
  v["error"] = value{{"code", to_string(e.code)}, {"message", e.message}};
  return pack(v);
}

// ---- decoders -------------------------------------------------------------------------------

namespace {
// The value of `key` in a MessagePack map, or none.
const msgpack::object* field(const msgpack::object& map, std::string_view key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR && std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key)
      return &kv.val;
  }
  return nullptr;
}

// The top-level "v", "type", "run_id" and "step" of a message, from msgpack's own objects: no JSON
// value is built, so a large message costs little more than its parse.
result<task_ref> peek_fields(std::string_view bytes, const limits& bounds, bool want_task) {
  auto handle = unpack_object(bytes, bounds);
  if (!handle) return handle.error();
  const msgpack::object& map = handle->get();
  if (map.type != msgpack::type::MAP) return make_error(errc::malformed, "a message must be a map");
  const msgpack::object* version = field(map, "v");
  const msgpack::object* type = field(map, "type");
  const msgpack::object* run_id = field(map, "run_id");
  const msgpack::object* step = field(map, "step");
  if (!version) return make_error(errc::malformed, "missing field 'v'");
  if (version->type != msgpack::type::POSITIVE_INTEGER || version->via.u64 != static_cast<std::uint64_t>(protocol_version))
    return make_error(errc::unsupported_version, "protocol version is not supported (this node speaks version " +
                                                   std::to_string(protocol_version) + ")");
  if (!type) return make_error(errc::malformed, "missing field 'type'");
  if (type->type != msgpack::type::STR || type->via.str.size == 0)
    return make_error(errc::malformed, "field 'type' must be a non-empty string");
  task_ref ref;
  ref.type.assign(type->via.str.ptr, type->via.str.size);
  if (!want_task) return ref;
  if (!run_id) return make_error(errc::malformed, "missing field 'run_id'");
  if (run_id->type != msgpack::type::STR || run_id->via.str.size == 0)
    return make_error(errc::malformed, "field 'run_id' must be a non-empty string");
  if (!step) return make_error(errc::malformed, "missing field 'step'");
  if (step->type != msgpack::type::POSITIVE_INTEGER)
    return make_error(errc::malformed, "field 'step' must be a non-negative integer");
  ref.run_id.assign(run_id->via.str.ptr, run_id->via.str.size);
  ref.step = step->via.u64;
  if (const msgpack::object* epoch = field(map, "epoch")) {
    if (epoch->type != msgpack::type::POSITIVE_INTEGER)
      return make_error(errc::malformed, "field 'epoch' must be a non-negative integer");
    ref.epoch = epoch->via.u64;
  }
  return ref;
}
} // namespace

result<std::string> peek_type(std::string_view bytes, const limits& bounds) {
  auto ref = peek_fields(bytes, bounds, false);
  if (!ref) return ref.error();
  return std::move(ref->type);
}

result<task_ref> peek_task_ref(std::string_view bytes, const limits& bounds) {
  return peek_fields(bytes, bounds, true);
}

template <>
result<invoke_request> decode<invoke_request>(std::string_view bytes, const limits& bounds) {
  auto map = open_envelope(bytes, bounds, "invoke");
  if (!map) return map.error();
  reader r(*map);
  invoke_request m;
  KEEL_TRY(m.agent, r.nonempty("agent"));
  m.input = take(*map, "input");
  KEEL_TRY(m.idempotency_key, r.str("idempotency_key", false));
  KEEL_TRY(m.session_id, r.str("session_id", false));
  if (!m.session_id.empty() && !is_valid_session_id(m.session_id))
    return make_error(errc::invalid_argument,
                      "field 'session_id' must be 1 to 128 letters, digits, '_', '-' or '.', not starting with '.'");
  KEEL_TRY(m.provider, r.str("provider", false));
  KEEL_TRY(m.model, r.str("model", false));
  if (!m.provider.empty() && m.provider != "scripted" && m.provider != "anthropic" && m.provider != "openai")
    return make_error(errc::invalid_argument, "field 'provider' must be one of scripted, anthropic, openai");
  if (const value* parent = r.find("parent")) {
    if (!parent->is_object()) return r.wrong("parent", "a map");
    m.parent = *parent;
  }
  KEEL_TRY(m.concurrency_key, r.str("concurrency_key", false));
  if (m.concurrency_key.size() > 128)
    return make_error(errc::invalid_argument, "field 'concurrency_key' is " + std::to_string(m.concurrency_key.size()) +
                                                " bytes; at most 128");
  return m;
}

template <>
result<invoke_reply> decode<invoke_reply>(std::string_view bytes, const limits& bounds) {
  auto map = open_envelope(bytes, bounds, "invoke_reply");
  if (!map) return map.error();
  reader r(*map);
  invoke_reply m;
  KEEL_TRY(m.run_id, r.nonempty("run_id"));
  KEEL_TRY(m.created, r.boolean("created", false, true));
  return m;
}

template <>
result<resume_request> decode<resume_request>(std::string_view bytes, const limits& bounds) {
  auto map = open_envelope(bytes, bounds, "resume");
  if (!map) return map.error();
  reader r(*map);
  resume_request m;
  KEEL_TRY(m.run_id, r.str("run_id", false));
  KEEL_TRY(m.step_key, r.nonempty("step_key"));
  const value* data = r.find("data");
  if (!data) return r.missing("data");
  if (!data->is_object()) return r.wrong("data", "a map with 'approved'");
  reader d(*data);
  KEEL_TRY(m.approved, d.boolean("approved", true));
  KEEL_TRY(m.feedback, d.str("feedback", false));
  KEEL_TRY(m.always_allow, d.boolean("always_allow", false));
  KEEL_TRY(m.always, d.str("always", false));
  KEEL_TRY(m.always_scope, d.str("always_scope", false));
  KEEL_TRY(m.by, d.str("by", false));
  if (m.by.size() > resume_by_bytes_max) return d.wrong("by", "a string of at most 128 bytes");
  if (m.always.empty() && m.always_allow) m.always = "exact";
  if (!m.always.empty() && m.always != "exact" && m.always != "prefix")
    return d.wrong("always", "\"exact\" or \"prefix\"");
  if (!m.always_scope.empty() && m.always_scope != "run" && m.always_scope != "session")
    return d.wrong("always_scope", "\"run\" or \"session\"");
  return m;
}

template <>
result<resume_reply> decode<resume_reply>(std::string_view bytes, const limits& bounds) {
  auto map = open_envelope(bytes, bounds, "resume_reply");
  if (!map) return map.error();
  reader r(*map);
  resume_reply m;
  KEEL_TRY(m.run_id, r.nonempty("run_id"));
  KEEL_TRY(m.step_key, r.nonempty("step_key"));
  KEEL_TRY(m.duplicate, r.boolean("duplicate", false));
  return m;
}

result<event> event_from_value(const value& map) {
  if (!map.is_object()) return make_error(errc::malformed, "an event must be a map");
  reader r(map);
  event m;
  KEEL_TRY(m.run_id, r.nonempty("run_id"));
  KEEL_TRY(m.seq, r.unsigned_integer("seq", true));
  KEEL_TRY(m.event_type, r.nonempty("event_type"));
  KEEL_TRY(m.time_ms, r.integer("time_ms", false));
  m.data = r.any("data");
  return m;
}

template <>
result<event> decode<event>(std::string_view bytes, const limits& bounds) {
  auto map = open_envelope(bytes, bounds, "event");
  if (!map) return map.error();
  return event_from_value(*map);
}

namespace {
result<task> task_from(result<value> map) {
  if (!map) return map.error();
  reader r(*map);
  task m;
  std::string kind;
  if (auto id = r.task_id(m.run_id, m.step, m.attempt); !id) return id.error();
  KEEL_TRY(kind, r.nonempty("kind"));
  KEEL_TRY(m.kind, kind_from(kind));
  KEEL_TRY(m.agent, r.nonempty("agent"));
  KEEL_TRY(m.reply_to, r.nonempty("reply_to"));
  KEEL_TRY(m.lease_ms, r.integer("lease_ms", false));
  KEEL_TRY(m.queue, r.str("queue", false));
  KEEL_TRY(m.epoch, r.unsigned_integer("epoch", false));
  m.payload = take(*map, "payload");
  return m;
}
} // namespace

template <>
result<task> decode<task>(std::string_view bytes, const limits& bounds) {
  return task_from(open_envelope(bytes, bounds, "task"));
}

namespace {

// The end of the MessagePack value that starts at `at`, without building anything; nullptr if the
// bytes end first or hold a byte no value starts with. Containers are counted, not recursed into.
const unsigned char* skip_value(const unsigned char* at, const unsigned char* end) {
  auto big_endian = [](const unsigned char* p, int n) {
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
    return v;
  };
  std::uint64_t left = 1;  // values still to skip
  while (left > 0) {
    if (at >= end) return nullptr;
    unsigned char b = *at++;
    left -= 1;
    std::uint64_t skip = 0, items = 0;
    int size_bytes = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
    } else if (b <= 0x8f) {
      items = 2 * (b & 0x0fu);
    } else if (b <= 0x9f) {
      items = b & 0x0fu;
    } else if (b <= 0xbf) {
      skip = b & 0x1fu;
    } else {
      switch (b) {
        case 0xc4: case 0xd9: size_bytes = 1; break;                   // bin8, str8
        case 0xc5: case 0xda: size_bytes = 2; break;                   // bin16, str16
        case 0xc6: case 0xdb: size_bytes = 4; break;                   // bin32, str32
        case 0xc7: size_bytes = 1; skip = 1; break;                    // ext8 (+ type)
        case 0xc8: size_bytes = 2; skip = 1; break;                    // ext16
        case 0xc9: size_bytes = 4; skip = 1; break;                    // ext32
        case 0xca: skip = 4; break;
        case 0xcb: skip = 8; break;
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xce: case 0xd2: skip = 4; break;
        case 0xcf: case 0xd3: skip = 8; break;
        case 0xd4: skip = 2; break;
        case 0xd5: skip = 3; break;
        case 0xd6: skip = 5; break;
        case 0xd7: skip = 9; break;
        case 0xd8: skip = 17; break;
        case 0xdc: case 0xdd: case 0xde: case 0xdf: {                  // array16/32, map16/32
          int n = (b == 0xdc || b == 0xde) ? 2 : 4;
          if (end - at < n) return nullptr;
          items = big_endian(at, n) * (b >= 0xde ? 2 : 1);
          at += n;
          break;
        }
        default: return nullptr;  // 0xc1: never used
      }
    }
    if (size_bytes > 0) {
      if (end - at < size_bytes) return nullptr;
      skip += big_endian(at, size_bytes);
      at += size_bytes;
    }
    if (skip > static_cast<std::uint64_t>(end - at)) return nullptr;
    at += skip;
    // Every value takes at least a byte: more of them than bytes left is a lie.
    if (items > static_cast<std::uint64_t>(end - at)) return nullptr;
    left += items;
  }
  return at;
}

// A string key at `at` (advanced past it), or nullopt.
std::optional<std::string_view> read_key(const unsigned char*& at, const unsigned char* end) {
  if (at >= end) return std::nullopt;
  unsigned char b = *at;
  std::uint64_t n = 0;
  int header = 1;
  if (b >= 0xa0 && b <= 0xbf) n = b & 0x1fu;
  else if (b == 0xd9 && end - at >= 2) { n = at[1]; header = 2; }
  else if (b == 0xda && end - at >= 3) { n = (std::uint64_t(at[1]) << 8) | at[2]; header = 3; }
  else return std::nullopt;
  if (n > static_cast<std::uint64_t>(end - at - header)) return std::nullopt;
  std::string_view key(reinterpret_cast<const char*>(at + header), n);
  at += header + n;
  return key;
}

// The number of entries of the map at `at` (advanced past its header), or nullopt.
std::optional<std::uint64_t> read_map_header(const unsigned char*& at, const unsigned char* end) {
  if (at >= end) return std::nullopt;
  unsigned char b = *at;
  if (b >= 0x80 && b <= 0x8f) { ++at; return b & 0x0fu; }
  if (b == 0xde && end - at >= 3) { std::uint64_t n = (std::uint64_t(at[1]) << 8) | at[2]; at += 3; return n; }
  if (b == 0xdf && end - at >= 5) {
    std::uint64_t n = (std::uint64_t(at[1]) << 24) | (std::uint64_t(at[2]) << 16) | (std::uint64_t(at[3]) << 8) | at[4];
    at += 5;
    return n;
  }
  return std::nullopt;
}

// Where the value of payload.messages lies in a task's bytes, found by skipping over the rest.
std::optional<std::pair<std::size_t, std::size_t>> find_messages(std::string_view bytes) {
  const auto* begin = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto* end = begin + bytes.size();
  const auto* at = begin;
  auto fields = read_map_header(at, end);
  if (!fields) return std::nullopt;
  for (std::uint64_t i = 0; i < *fields; ++i) {
    auto key = read_key(at, end);
    if (!key) return std::nullopt;
    if (*key != "payload") {
      if (!(at = skip_value(at, end))) return std::nullopt;
      continue;
    }
    auto entries = read_map_header(at, end);
    if (!entries) return std::nullopt;
    for (std::uint64_t k = 0; k < *entries; ++k) {
      auto name = read_key(at, end);
      if (!name) return std::nullopt;
      const auto* value_end = skip_value(at, end);
      if (!value_end) return std::nullopt;
      if (*name == "messages")
        return std::pair<std::size_t, std::size_t>(at - begin, value_end - begin);
      at = value_end;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

} // namespace

result<task> decode_task_keeping_conversation(std::string_view bytes, const limits& bounds) {
  // The task from decoded bytes, with its payload's "messages" left out; `messages` says where
  // that value was.
  auto without_messages = [](const msgpack::object& root, const msgpack::object*& messages) {
    messages = nullptr;
    if (const auto* payload = field(root, "payload")) messages = field(*payload, "messages");
    return task_from(check_envelope(to_value(root, messages), "task"));
  };
  const msgpack::object* messages = nullptr;
  // The conversation, most of an LLM task's bytes, is taken as it came: the rest is decoded
  // with a nil in its place. Anything the quick look cannot place goes the long way below, which
  // also gives the precise error.
  if (bytes.size() <= bounds.message_bytes_max) {
    if (auto range = find_messages(bytes)) {
      std::string rest;
      rest.reserve(bytes.size() - (range->second - range->first) + 1);
      rest.append(bytes.substr(0, range->first)).push_back('\xc0');
      rest.append(bytes.substr(range->second));
      if (auto handle = unpack_object(rest, bounds)) {
        if (auto t = without_messages(handle->get(), messages)) {
          t->payload_messages.assign(bytes.substr(range->first, range->second - range->first));
          return t;
        }
      }
    }
  }
  auto handle = unpack_object(bytes, bounds);
  if (!handle) return handle.error();
  auto t = without_messages(handle->get(), messages);
  if (!t || !messages) return t;
  msgpack::sbuffer packed;
  msgpack::pack(packed, *messages);
  t->payload_messages.assign(packed.data(), packed.size());
  return t;
}

template <>
result<task_result> decode<task_result>(std::string_view bytes, const limits& bounds) {
  auto map = open_envelope(bytes, bounds, "task_result");
  if (!map) return map.error();
  reader r(*map);
  task_result m;
  if (auto id = r.task_id(m.run_id, m.step, m.attempt); !id) return id.error();
  KEEL_TRY(m.worker, r.str("worker", false));
  KEEL_TRY(m.ok, r.boolean("ok", true));
  KEEL_TRY(m.epoch, r.unsigned_integer("epoch", false));
  m.payload = take(*map, "payload");
  if (r.find("error")) {
    keel::error failure;
    if (auto read = r.error_map("error", failure); !read) return read.error();
    m.failure = failure;
  }
  if (!m.ok && !m.failure) return r.missing("error");
  return m;
}

template <>
result<heartbeat> decode<heartbeat>(std::string_view bytes, const limits& bounds) {
  auto map = open_envelope(bytes, bounds, "heartbeat");
  if (!map) return map.error();
  reader r(*map);
  heartbeat m;
  KEEL_TRY(m.node_id, r.nonempty("node_id"));
  KEEL_TRY(m.roles, r.strings("roles"));
  KEEL_TRY(m.agents, r.strings("agents"));
  KEEL_TRY(m.queues, r.strings("queues"));
  KEEL_TRY(m.state, r.str("state", false));
  if (m.state.empty()) m.state = "up";
  KEEL_TRY(m.started_ms, r.integer("started_ms", false));
  KEEL_TRY(m.time_ms, r.integer("time_ms", false));
  KEEL_TRY(m.pid, r.integer("pid", false));
  KEEL_TRY(m.host, r.str("host", false));
  KEEL_TRY(m.version, r.str("version", false));
  KEEL_TRY(m.interval_ms, r.integer("interval_ms", false));
  KEEL_TRY(m.runs_in_memory, r.integer("runs_in_memory", false));
  KEEL_TRY(m.slots, r.integer("slots", false));
  KEEL_TRY(m.slots_busy, r.integer("slots_busy", false));
  return m;
}

} // namespace keel::wire
