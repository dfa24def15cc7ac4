// The run log's messages one at a time, and which of them count (run_log_messages.hpp).
#include "broker/run_log_messages.hpp"

#include "broker/native.hpp"
#include "runtime/clock.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <string_view>

namespace keel::broker::run_log_messages {

namespace {

std::string from_base64(std::string_view text) {
  static const auto table = [] {
    std::array<int, 256> t{};
    t.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = i;
    return t;
  }();
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t bits = 0;
  int count = 0;
  for (char c : text) {
    int v = table[static_cast<unsigned char>(c)];
    if (v < 0) continue;  // padding, line breaks
    bits = (bits << 6) | static_cast<std::uint32_t>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<char>((bits >> count) & 0xff));
    }
  }
  return out;
}

// A header's value in a message's raw header block ("NATS/1.0\r\nName: value\r\n...").
std::string header_in(const std::string& headers, const char* header) {
  std::string name = std::string("\r\n") + header + ":";
  auto at = headers.find(name);
  if (at == std::string::npos) return {};
  auto start = headers.find_first_not_of(' ', at + name.size());
  if (start == std::string::npos) return {};
  auto end = headers.find("\r\n", start);
  return headers.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// The first message of `subject` at or after `from` as the nearest replica has it (a direct get:
// one round trip to the server this node is connected to, when it holds a replica): its sequence
// and Keel-Prev; none when that replica has no such message or cannot say.
std::optional<std::pair<std::uint64_t, std::optional<std::uint64_t>>> nearest(jsCtx* js, const std::string& stream,
                                                                              const std::string& subject, std::uint64_t from) {
  jsDirectGetMsgOptions get;
  jsDirectGetMsgOptions_Init(&get);
  get.Sequence = from;
  get.NextBySubject = subject.c_str();
  natsMsg* msg = nullptr;
  if (js_DirectGetMsg(&msg, js, stream.c_str(), nullptr, &get) != NATS_OK || !msg) return std::nullopt;
  const char* seq_text = nullptr;
  std::uint64_t seq = natsMsgHeader_Get(msg, "Nats-Sequence", &seq_text) == NATS_OK && seq_text ? std::strtoull(seq_text, nullptr, 10) : 0;
  auto prev = prev_of(msg);
  natsMsg_Destroy(msg);
  if (seq < from) return std::nullopt;
  return std::make_pair(seq, prev);
}

} // namespace

std::optional<std::uint64_t> prev_of(natsMsg* msg) {
  const char* text = nullptr;
  if (natsMsgHeader_Get(msg, prev_header, &text) != NATS_OK || !text || !*text) return std::nullopt;
  return std::strtoull(text, nullptr, 10);
}



// The first entry matching `filter` at or after `from`, asked of the stream's leader (nats-server
// answers a stream's message requests from its leader only, and not while it has none); none when
// there is none.
result<std::optional<leader_entry>> entry_from_leader(natsConnection* nc, const std::string& stream,
                                                      const std::string& filter, std::uint64_t from,
                                                      std::int64_t timeout_ms) {
  auto request = nlohmann::json{{"seq", from}, {"next_by_subj", filter}}.dump();
  natsMsg* reply = nullptr;
  natsStatus s = natsConnection_Request(&reply, nc, ("$JS.API.STREAM.MSG.GET." + stream).c_str(), request.data(),
                                        static_cast<int>(request.size()), timeout_ms);
  if (s != NATS_OK) return js_error(s, 0, "asking the run log's leader what follows sequence " + std::to_string(from));
  auto answer = nlohmann::json::parse(natsMsg_GetData(reply), natsMsg_GetData(reply) + natsMsg_GetDataLength(reply),
                                      nullptr, false);
  natsMsg_Destroy(reply);
  if (!answer.is_object()) return make_error(errc::unavailable, "the run log's leader answered what cannot be read");
  if (auto e = answer.find("error"); e != answer.end() && e->is_object()) {
    if (e->value("err_code", 0) == JSNoMessageFoundErr) return std::optional<leader_entry>();
    return make_error(errc::unavailable, "the run log's leader: " + e->value("description", std::string("an error")));
  }
  auto m = answer.find("message");
  if (m == answer.end() || !m->is_object() || !(*m)["seq"].is_number_unsigned())
    return make_error(errc::unavailable, "the run log's leader answered without a message or an error");
  leader_entry e;
  e.seq = (*m)["seq"].get<std::uint64_t>();
  e.subject = m->value("subject", std::string());
  e.data = from_base64(m->value("data", std::string()));
  std::string headers = from_base64(m->value("hdrs", std::string()));
  e.part = header_in(headers, part_header);
  if (auto prev = header_in(headers, prev_header); !prev.empty()) e.prev = std::strtoull(prev.c_str(), nullptr, 10);
  return std::optional<leader_entry>(std::move(e));
}

// The sequence of that entry: 0 when there is none.
result<std::uint64_t> next_matching(natsConnection* nc, const std::string& stream, const std::string& filter,
                                    std::uint64_t from, std::int64_t timeout_ms) {
  auto e = entry_from_leader(nc, stream, filter, from, timeout_ms);
  if (!e) return e.error();
  return *e ? (*e)->seq : std::uint64_t{0};
}




// Whether the message at `seq` of `subject`, sent to follow `prev`, counts. Every replica holds a
// stream's messages in the one order its replicas agreed, so the nearest replica answers when it
// holds `seq` already; else the stream's leader does.
result<bool> follows(jsCtx* js, natsConnection* nc, const std::string& stream, const std::string& subject, std::uint64_t prev,
                     std::uint64_t seq, bool prev_was_last, std::int64_t timeout_ms) {
  walk w(prev, seq, prev_was_last);
  while (auto near = nearest(js, stream, subject, w.from)) {
    auto step = w.see(near->first, near->second);
    if (step == walk::step::counts) return true;
    if (step == walk::step::not_counted) return false;
    if (step == walk::step::unknown) break;
  }
  for (;;) {
    auto e = entry_from_leader(nc, stream, subject, w.from, timeout_ms);
    if (!e) return e.error();
    auto step = *e ? w.see((*e)->seq, (*e)->prev) : walk::step::unknown;
    if (step == walk::step::counts) return true;
    if (step == walk::step::not_counted) return false;
    if (step == walk::step::unknown)
      return make_error(errc::unavailable, "sequence " + std::to_string(seq) + " of " + subject + " is not in the log's leader");
  }
}

std::vector<result<bool>> follow_all(jsCtx* js, natsConnection* nc, natsSubscription* sub, const std::string& inbox,
                                     const std::string& stream, const std::vector<follow_check>& checks, std::int64_t timeout_ms) {
  std::vector<result<bool>> out(checks.size(), make_error(errc::unavailable, "not asked"));
  if (checks.empty()) return out;
  std::vector<walk> walks;
  for (const auto& c : checks) walks.emplace_back(c.prev, c.seq, c.prev_was_last);
  std::vector<bool> open(checks.size(), true), to_leader(checks.size(), false);
  bool asked = sub != nullptr;
  auto api = "$JS.API.DIRECT.GET." + stream;
  for (int round = 0; asked && round < 4; ++round) {
    std::size_t waiting = 0;
    for (std::size_t i = 0; i < checks.size(); ++i) {
      if (!open[i] || to_leader[i]) continue;
      auto body = nlohmann::json{{"seq", walks[i].from}, {"next_by_subj", checks[i].subject}}.dump();
      auto reply = inbox + "." + std::to_string(i);
      if (natsConnection_PublishRequest(nc, api.c_str(), reply.c_str(), body.data(), static_cast<int>(body.size())) != NATS_OK)
        to_leader[i] = true;
      else
        ++waiting;
    }
    // A replica answers within milliseconds; one that is paused or gone is not waited for long
    // (the leader is asked instead).
    auto deadline = steady_ms() + std::min<std::int64_t>(timeout_ms, 500);
    while (waiting > 0) {
      natsMsg* msg = nullptr;
      auto left = deadline - steady_ms();
      if (left <= 0 || natsSubscription_NextMsg(&msg, sub, left) != NATS_OK) break;
      std::string_view subject = natsMsg_GetSubject(msg);
      auto i = static_cast<std::size_t>(std::strtoull(std::string(subject.substr(subject.rfind('.') + 1)).c_str(), nullptr, 10));
      const char* seq_text = nullptr;
      std::uint64_t seq = natsMsgHeader_Get(msg, "Nats-Sequence", &seq_text) == NATS_OK && seq_text
                            ? std::strtoull(seq_text, nullptr, 10) : 0;
      auto prev = prev_of(msg);
      natsMsg_Destroy(msg);
      if (i >= checks.size() || !open[i] || to_leader[i]) continue;
      --waiting;
      switch (walks[i].see(seq, prev)) {
        case walk::step::counts: out[i] = true; open[i] = false; break;
        case walk::step::not_counted: out[i] = false; open[i] = false; break;
        case walk::step::unknown: to_leader[i] = true; break;  // that replica has not got it yet, or cannot say
        case walk::step::next: break;
      }
    }
    if (waiting > 0) break;  // unanswered: the leader is asked
  }
  for (std::size_t i = 0; i < checks.size(); ++i)
    if (open[i]) out[i] = follows(js, nc, stream, checks[i].subject, checks[i].prev, checks[i].seq, checks[i].prev_was_last, timeout_ms);
  return out;
}

// For a write refused while expecting `prev` last: the subject's last message when nothing after
// `prev` counts (what came after it are writes that do not: it may go after them); none when
// something after it counts (`prev` cut away included: the first message left counts), or nothing
// is there (refused for another reason).
result<std::optional<std::uint64_t>> after_uncounted(natsConnection* nc, const std::string& stream, const std::string& subject,
                                                     std::uint64_t prev, std::int64_t timeout_ms) {
  auto first = entry_from_leader(nc, stream, subject, prev == 0 ? 1 : prev, timeout_ms);
  if (!first) return first.error();
  if (!*first || prev == 0 || (*first)->seq != prev) return std::optional<std::uint64_t>();
  std::uint64_t last = prev;
  for (std::uint64_t from = prev + 1;;) {
    auto e = entry_from_leader(nc, stream, subject, from, timeout_ms);
    if (!e) return e.error();
    if (!*e) break;
    if (!(*e)->prev || *(*e)->prev == prev) return std::optional<std::uint64_t>();
    last = (*e)->seq;
    from = last + 1;
  }
  return last == prev ? std::optional<std::uint64_t>() : std::optional<std::uint64_t>(last);
}

} // namespace keel::broker::run_log_messages
