#include "broker/run_log.hpp"

#include "broker/native.hpp"
#include "broker/run_log_messages.hpp"
#include "runtime/backoff.hpp"
#include "broker/subscription_reaper.hpp"
#include "runtime/clock.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <optional>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace keel::broker {

using namespace run_log_messages;

namespace {

constexpr const char* token_header = "Keel-Append";
constexpr const char* expected_header = "Nats-Expected-Last-Subject-Sequence";  // JetStream's own

// What makes a repeat of an entry recognisable: its subject, the position it goes to, who wrote
// it and what it holds (another writer's entry, or other bytes, for the same position is not a
// repeat: it is refused there). `after`: the subject's last message it is sent expecting, when
// that is not `expected` (messages that do not count came after it).
std::string message_id(const std::string& subject, std::int64_t expected, const std::string& writer,
                       std::string_view data, std::int64_t after = -1) {
  if (writer.empty() || expected < 0) return {};
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) h = (h ^ c) * 1099511628211ull;
  auto id = subject + "@" + std::to_string(expected) + "@" + writer + "@" + std::to_string(h) + "." + std::to_string(data.size());
  if (after >= 0 && after != expected) id += "@" + std::to_string(after);
  return id;
}

} // namespace

struct run_log::impl {
  std::shared_ptr<connection> nats;
  run_log_options options;
  jsCtx* js = nullptr;
  // Appends waiting for their confirmation, by token.
  std::mutex mutex;
  std::condition_variable confirmed;
  std::uint64_t next_token = 1;
  std::map<std::uint64_t, std::optional<result<std::uint64_t>>> waiting;
  // Where the entries appended here start, by (subject, sequence of the last part): a cut keeps
  // the whole entry it is given, without asking the stream. The 4096 most recent ones.
  std::map<std::pair<std::string, std::uint64_t>, std::uint64_t> starts;  // guarded by mutex
  std::deque<std::pair<std::string, std::uint64_t>> starts_order;         // oldest first; guarded by mutex
  // On a replicated stream, a confirmed write is checked to count (follows()): the subject and
  // the position each ticket of send() went to. Guarded by mutex.
  bool replicated = false;
  std::map<std::uint64_t, std::pair<std::string, std::uint64_t>> checked;
  std::int64_t ask_timeout_ms() const { return std::max<std::int64_t>(2'000, options.ack_wait_ms); }
  // A write that counts, or errc::conflict when another at the same position was stored first.
  result<std::uint64_t> counted(const std::string& subject, std::uint64_t prev, result<std::uint64_t> confirmed,
                                bool prev_was_last = true);
  // One message written now, sent to follow `prev` with `after` as the subject's last.
  result<std::uint64_t> publish_now(const std::string& subject, std::string_view data, const std::string& part,
                                    std::uint64_t prev, std::uint64_t after, const std::string& writer);
  // A write refused at `prev` because only writes that do not count came after it is sent after
  // them; any other outcome is given back as it was.
  result<std::uint64_t> past_uncounted(const std::string& subject, std::string_view data, const std::string& part,
                                       std::uint64_t prev, const std::string& writer, result<std::uint64_t> outcome);
  ~impl() {
    if (js) jsCtx_Destroy(js);
  }
};

namespace {
void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  auto* state = static_cast<run_log::impl*>(closure);
  const char* token_text = nullptr;
  if (!msg || natsMsgHeader_Get(msg, token_header, &token_text) != NATS_OK || !token_text) {
    if (msg) natsMsg_Destroy(msg);
    return;
  }
  auto token = std::strtoull(token_text, nullptr, 10);
  result<std::uint64_t> outcome = pa ? result<std::uint64_t>(pa->Sequence)
                                     : result<std::uint64_t>(js_error(pae ? pae->Err : NATS_ERR, pae ? pae->ErrCode : 0,
                                                                       std::string("appending to ") + natsMsg_GetSubject(msg) +
                                                                         (pae && pae->ErrText ? std::string(": ") + pae->ErrText : "")));
  natsMsg_Destroy(msg);
  std::lock_guard lock{state->mutex};
  auto it = state->waiting.find(token);
  if (it == state->waiting.end()) return;  // given up on already
  it->second = std::move(outcome);
  state->confirmed.notify_all();
}
} // namespace

result<std::uint64_t> run_log::impl::counted(const std::string& subject, std::uint64_t prev, result<std::uint64_t> confirmed,
                                             bool prev_was_last) {
  if (!confirmed || !replicated) return confirmed;
  auto f = follows(js, native_connection(*nats), options.stream, subject, prev, *confirmed, prev_was_last, ask_timeout_ms());
  if (!f)
    return make_error(errc::unavailable, "appending to " + subject + ": confirmed at sequence " + std::to_string(*confirmed) +
                                           ", but whether another write came first cannot be read: " + f.error().message);
  if (!*f)
    return make_error(errc::conflict, "appending to " + subject + ": another write after sequence " + std::to_string(prev) +
                                        " was stored first (confirmed at " + std::to_string(*confirmed) + ", it does not count)");
  return confirmed;
}

result<std::uint64_t> run_log::impl::publish_now(const std::string& subject, std::string_view data, const std::string& part,
                                                 std::uint64_t prev, std::uint64_t after, const std::string& writer) {
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, data.data(), static_cast<int>(data.size()));
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, prev_header, std::to_string(prev).c_str());
  if (s == NATS_OK && !part.empty()) s = natsMsgHeader_Set(msg, part_header, part.c_str());
  jsPubOptions o;
  jsPubOptions_Init(&o);
  o.MaxWait = options.ack_wait_ms;
  o.ExpectLastSubjectSeq = after;
  std::string id = message_id(subject, static_cast<std::int64_t>(prev), writer, data, static_cast<std::int64_t>(after));
  if (!id.empty()) o.MsgId = id.c_str();
  jsPubAck* ack = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  if (s == NATS_OK) s = js_PublishMsg(&ack, js, msg, &o, &code);
  natsMsg_Destroy(msg);
  if (s != NATS_OK) return js_error(s, static_cast<int>(code), "appending to " + subject);
  auto seq = ack->Sequence;
  jsPubAck_Destroy(ack);
  return seq;
}

result<std::uint64_t> run_log::impl::past_uncounted(const std::string& subject, std::string_view data, const std::string& part,
                                                    std::uint64_t prev, const std::string& writer, result<std::uint64_t> outcome) {
  for (int tries = 0; replicated && !outcome && outcome.error().code == errc::conflict && tries < 8; ++tries) {
    auto after = after_uncounted(native_connection(*nats), options.stream, subject, prev, ask_timeout_ms());
    if (!after || !*after) return outcome;
    outcome = counted(subject, prev, publish_now(subject, data, part, prev, **after, writer), false);
  }
  return outcome;
}

run_log::run_log(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
run_log::~run_log() = default;

result<std::unique_ptr<run_log>> run_log::open(std::shared_ptr<connection> nats, const run_log_options& options) {
  auto state = std::make_unique<impl>();
  state->nats = std::move(nats);
  state->options = options;
  state->replicated = options.replicas > 1;
  jsOptions js_options;
  jsOptions_Init(&js_options);
  js_options.Wait = options.ack_wait_ms;
  js_options.PublishAsync.MaxPending = 65536;
  js_options.PublishAsync.AckHandler = on_ack;
  js_options.PublishAsync.AckHandlerClosure = state.get();
  natsStatus s = natsConnection_JetStream(&state->js, native_connection(*state->nats), &js_options);
  if (s != NATS_OK) return js_error(s, 0, "opening JetStream for the run log");

  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = options.stream.c_str();
  const char* subjects[] = {options.subjects.c_str()};
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Retention = js_LimitsPolicy;
  config.Storage = js_FileStorage;
  config.MaxMsgSize = static_cast<std::int32_t>(std::min<std::size_t>(options.message_bytes_max, INT32_MAX));
  config.Replicas = options.replicas;
  config.AllowDirect = true;
  auto deadline = steady_ms() + 30'000;
  backoff pause{100, 1000};  // the broker may be starting, or electing a leader
  while (true) {
    jsStreamInfo* info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    s = js_AddStream(&info, state->js, &config, nullptr, &code);
    if (s != NATS_OK && code == JSStreamNameExistErr) {
      code = static_cast<jsErrCode>(0);
      s = js_UpdateStream(&info, state->js, &config, nullptr, &code);
    }
    if (info) jsStreamInfo_Destroy(info);
    if (s == NATS_OK) break;
    if (s == NATS_NO_RESPONDERS || code == JSNotEnabledErr || code == JSNotEnabledForAccountErr) {
      auto e = js_error(s, code, "creating the run log " + options.stream + " (is JetStream enabled on nats-server? start it with -js)");
      e.code = errc::config;
      return e;
    }
    if (steady_ms() >= deadline) return js_error(s, code, "creating the run log " + options.stream);
    std::this_thread::sleep_for(std::chrono::milliseconds(pause.next_ms()));
  }
  // A stream just made on a cluster takes writes once its replicas have elected a leader: the
  // node is not ready before (its first runs' writes would wait, then fail). A read that only
  // the leader answers says so.
  std::unique_ptr<run_log> log(new run_log(std::move(state)));
  auto probe = options.subjects;
  if (probe.size() >= 2 && probe.ends_with(".>")) probe = probe.substr(0, probe.size() - 1) + "_ready";
  while (true) {
    auto answered = log->last_message(probe);
    if (answered) break;
    if (steady_ms() >= deadline) return answered.error();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return log;
}

std::vector<result<std::uint64_t>> run_log::append(const std::vector<entry>& entries) {
  // An entry in parts of at most `piece` bytes (room left for the headers): each part goes once
  // the one before it is stored, expecting it to be the subject's last.
  const std::size_t piece = std::max<std::size_t>(1024, impl_->options.message_bytes_max - 4096);
  std::vector<result<std::uint64_t>> out(entries.size(), result<std::uint64_t>(std::uint64_t{0}));
  std::vector<std::int64_t> expected(entries.size());
  std::vector<std::size_t> parts(entries.size());
  std::vector<std::uint64_t> first(entries.size(), 0);  // sequence of each entry's first part
  std::size_t waves = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    expected[i] = entries[i].expected_last;
    parts[i] = std::max<std::size_t>(1, (entries[i].data.size() + piece - 1) / piece);
    waves = std::max(waves, parts[i]);
  }
  for (std::size_t wave = 0; wave < waves; ++wave) {
    struct sent_part {
      std::size_t entry;
      std::uint64_t token;
      std::int64_t prev;  // where it was sent to go (-1: no check)
      std::string part;
      std::size_t offset, length;
    };
    std::vector<sent_part> sent;
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (wave >= parts[i] || !out[i]) continue;
      const auto& e = entries[i];
      std::uint64_t token;
      {
        std::lock_guard lock{impl_->mutex};
        token = impl_->next_token++;
        impl_->waiting[token] = std::nullopt;
      }
      auto offset = wave * piece;
      auto length = std::min(piece, e.data.size() - std::min(offset, e.data.size()));
      natsMsg* msg = nullptr;
      natsStatus s = natsMsg_Create(&msg, e.subject.c_str(), nullptr, e.data.data() + offset, static_cast<int>(length));
      if (s == NATS_OK) s = natsMsgHeader_Set(msg, token_header, std::to_string(token).c_str());
      std::string part = parts[i] > 1 ? std::to_string(wave + 1) + "/" + std::to_string(parts[i]) : std::string();
      if (s == NATS_OK && !part.empty()) s = natsMsgHeader_Set(msg, part_header, part.c_str());
      if (s == NATS_OK && expected[i] >= 0) s = natsMsgHeader_Set(msg, prev_header, std::to_string(expected[i]).c_str());
      jsPubOptions options;
      jsPubOptions_Init(&options);
      options.MaxWait = impl_->options.ack_wait_ms;
      // nats.c sends the check only for a sequence above 0; a subject that must have no message
      // yet (a run's first entry) is checked with the header set here: a first entry sent again
      // late, after another wrote the run, is refused too.
      if (expected[i] > 0) options.ExpectLastSubjectSeq = static_cast<std::uint64_t>(expected[i]);
      else if (s == NATS_OK && expected[i] == 0 && wave == 0) s = natsMsgHeader_Set(msg, expected_header, "0");
      std::string id = message_id(e.subject, expected[i], e.writer, std::string_view(e.data).substr(offset, length));
      if (!id.empty()) options.MsgId = id.c_str();
      if (s == NATS_OK) s = js_PublishMsgAsync(impl_->js, &msg, &options);
      if (msg) natsMsg_Destroy(msg);
      if (s != NATS_OK) {
        out[i] = js_error(s, 0, "appending to " + e.subject);
        std::lock_guard lock{impl_->mutex};
        impl_->waiting.erase(token);
        continue;
      }
      sent.push_back({i, token, expected[i], std::move(part), offset, length});
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(impl_->options.ack_wait_ms + 1000);
    std::unique_lock lock{impl_->mutex};
    for (const auto& p : sent) {
      auto i = p.entry;
      auto token = p.token;
      impl_->confirmed.wait_until(lock, deadline, [&] { return impl_->waiting[token].has_value(); });
      auto& got = impl_->waiting[token];
      if (got) out[i] = std::move(*got);
      else out[i] = make_error(errc::timeout, "appending to " + entries[i].subject + ": no confirmation");
      impl_->waiting.erase(token);
    }
    lock.unlock();
    if (impl_->replicated) {
      // Each confirmed write checked to count, all at once; then those refused only by writes
      // that do not count are sent after them (not under the lock: both ask the broker).
      std::vector<follow_check> checks;
      std::vector<std::size_t> checked;
      for (std::size_t k = 0; k < sent.size(); ++k)
        if (sent[k].prev >= 0 && out[sent[k].entry]) {
          checks.push_back({entries[sent[k].entry].subject, static_cast<std::uint64_t>(sent[k].prev), *out[sent[k].entry]});
          checked.push_back(k);
        }
      // Answers come to an inbox of the connection's own (its broker user may subscribe to no
      // other).
      auto* nc = native_connection(*impl_->nats);
      auto inbox = impl_->nats->new_inbox();
      natsSubscription* sub = nullptr;
      if (!checks.empty() && natsConnection_SubscribeSync(&sub, nc, (inbox + ".*").c_str()) != NATS_OK) sub = nullptr;
      auto answers = follow_all(impl_->js, nc, sub, inbox, impl_->options.stream, checks, impl_->ask_timeout_ms());
      if (sub) retire(retired_subscriptions_of(*impl_->nats), sub);
      for (std::size_t c = 0; c < checked.size(); ++c) {
        auto i = sent[checked[c]].entry;
        if (!answers[c])
          out[i] = make_error(errc::unavailable, "appending to " + entries[i].subject + ": confirmed at sequence " +
                                                   std::to_string(checks[c].seq) + ", but whether another write came first cannot be read: " +
                                                   answers[c].error().message);
        else if (!*answers[c])
          out[i] = make_error(errc::conflict, "appending to " + entries[i].subject + ": another write after sequence " +
                                                std::to_string(checks[c].prev) + " was stored first (confirmed at " +
                                                std::to_string(checks[c].seq) + ", it does not count)");
      }
      for (const auto& p : sent)
        if (p.prev >= 0 && !out[p.entry] && out[p.entry].error().code == errc::conflict) {
          auto i = p.entry;
          out[i] = impl_->past_uncounted(entries[i].subject, std::string_view(entries[i].data).substr(p.offset, p.length), p.part,
                                         static_cast<std::uint64_t>(p.prev), entries[i].writer, std::move(out[i]));
        }
    }
    lock.lock();
    for (const auto& p : sent) {
      auto i = p.entry;
      if (out[i]) {
        expected[i] = static_cast<std::int64_t>(*out[i]);
        if (wave == 0) first[i] = *out[i];
        if (wave + 1 == parts[i]) {
          impl_->starts[{entries[i].subject, *out[i]}] = first[i];
          impl_->starts_order.emplace_back(entries[i].subject, *out[i]);
          if (impl_->starts_order.size() > 4096) {
            impl_->starts.erase(impl_->starts_order.front());
            impl_->starts_order.pop_front();
          }
        }
      }
    }
  }
  return out;
}

result<std::uint64_t> run_log::send(const entry& e) {
  const std::size_t piece = std::max<std::size_t>(1024, impl_->options.message_bytes_max - 4096);
  if (e.data.size() > piece) {
    // Several parts: appended here, and the ticket holds the outcome already.
    auto done = append({e});
    std::lock_guard lock{impl_->mutex};
    auto ticket = impl_->next_token++;
    impl_->waiting[ticket] = std::move(done.front());
    return ticket;
  }
  std::uint64_t ticket;
  {
    std::lock_guard lock{impl_->mutex};
    ticket = impl_->next_token++;
    impl_->waiting[ticket] = std::nullopt;
  }
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, e.subject.c_str(), nullptr, e.data.data(), static_cast<int>(e.data.size()));
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, token_header, std::to_string(ticket).c_str());
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = impl_->options.ack_wait_ms;
  if (e.expected_last > 0) options.ExpectLastSubjectSeq = static_cast<std::uint64_t>(e.expected_last);
  else if (s == NATS_OK && e.expected_last == 0) s = natsMsgHeader_Set(msg, expected_header, "0");
  if (s == NATS_OK && e.expected_last >= 0) s = natsMsgHeader_Set(msg, prev_header, std::to_string(e.expected_last).c_str());
  std::string id = message_id(e.subject, e.expected_last, e.writer, e.data);
  if (!id.empty()) options.MsgId = id.c_str();
  if (impl_->replicated && e.expected_last >= 0) {
    std::lock_guard lock{impl_->mutex};
    impl_->checked[ticket] = {e.subject, static_cast<std::uint64_t>(e.expected_last)};
  }
  if (s == NATS_OK) s = js_PublishMsgAsync(impl_->js, &msg, &options);
  if (msg) natsMsg_Destroy(msg);
  if (s != NATS_OK) {
    std::lock_guard lock{impl_->mutex};
    impl_->waiting.erase(ticket);
    impl_->checked.erase(ticket);
    return js_error(s, 0, "appending to " + e.subject);
  }
  return ticket;
}

result<std::uint64_t> run_log::wait(std::uint64_t ticket) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(impl_->options.ack_wait_ms + 1000);
  std::unique_lock lock{impl_->mutex};
  auto it = impl_->waiting.find(ticket);
  if (it == impl_->waiting.end()) return make_error(errc::not_found, "no such append");
  impl_->confirmed.wait_until(lock, deadline, [&] { return impl_->waiting[ticket].has_value(); });
  auto got = std::move(impl_->waiting[ticket]);
  impl_->waiting.erase(ticket);
  std::optional<std::pair<std::string, std::uint64_t>> check;
  if (auto c = impl_->checked.find(ticket); c != impl_->checked.end()) {
    check = std::move(c->second);
    impl_->checked.erase(c);
  }
  lock.unlock();
  if (!got) return make_error(errc::timeout, "an append to the run log: no confirmation");
  // A write that does not count is refused as any other (the writer reads the log and writes
  // again after what counts: append() does so past writes that do not count).
  if (check) return impl_->counted(check->first, check->second, std::move(*got));
  return std::move(*got);
}

void run_log::forget(std::uint64_t ticket) {
  std::lock_guard lock{impl_->mutex};
  impl_->waiting.erase(ticket);
  impl_->checked.erase(ticket);
}

result<void> run_log::read(const std::string& filter, const reader& on_entry) {
  chain_filter chain;
  return read_chain(filter, on_entry, chain);
}

result<void> run_log::read_chain(const std::string& filter, const reader& on_entry, chain_filter& chain) {
  // Every entry the filter matches, up to the last the stream holds when the read is done. No
  // count nats-server 2.9 gives can say when that is: a new consumer can report 0 pending while
  // it is about to deliver what the filter matches (seen with reads made at once on a cluster);
  // a stream's count by subject can stay above what it holds after purges (seen after an hour of
  // faults: 30 counted, 22 there, every read timed out), or below it while the stream has no
  // leader (any replica then answers from what it has). So whenever the reading consumer has
  // nothing more to hand, the stream's leader is asked for the next matching entry after the
  // last one read: the read is done when there is none, and fails (to be asked again) when the
  // leader cannot say.
  jsSubOptions sub_options;
  jsSubOptions_Init(&sub_options);
  sub_options.Stream = impl_->options.stream.c_str();
  sub_options.Ordered = true;
  sub_options.Config.DeliverPolicy = js_DeliverAll;
  natsSubscription* sub = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_SubscribeSync(&sub, impl_->js, filter.c_str(), nullptr, &sub_options, &code);
  if (s != NATS_OK) return js_error(s, code, "reading " + filter);
  auto* nc = native_connection(*impl_->nats);
  auto ask_timeout = std::max<std::int64_t>(2'000, impl_->options.ack_wait_ms);
  std::map<std::string, std::pair<std::uint64_t, std::string>> partial;  // subject -> next part expected, parts so far
  result<void> outcome = success();
  // Every one of them, or an error: a read that stopped early would leave runs half read.
  std::uint64_t received = 0, last_seq = 0;
  // The entry the leader named as next: the consumer must hand it (or one after it, once it is
  // purged) before the leader is asked again.
  std::uint64_t awaited = 0;
  // The leader is asked at the start (an empty domain is read without waiting), when the
  // consumer says nothing more is pending after what it handed, and when it has been silent for
  // 100 ms (its count can be wrong either way): never while the entry it named is still due.
  bool ask = true;
  auto deadline = steady_ms() + std::max<std::int64_t>(30'000, impl_->options.ack_wait_ms * 6);
  // Only an entry whose parts all came, in order, is handed on (never one cut inside).
  auto take = [&](const std::string& subject, std::uint64_t seq, std::string data, const std::string& part) {
    bool whole = true;
    if (!part.empty()) {
      auto slash = part.find('/');
      auto index = std::strtoull(part.c_str(), nullptr, 10);
      auto count = slash == std::string::npos ? 0 : std::strtoull(part.c_str() + slash + 1, nullptr, 10);
      auto& so_far = partial[subject];
      if (index == 1) so_far = {1, {}};
      if (index >= 1 && index == so_far.first) {
        so_far.second += data;
        so_far.first = index + 1;
        whole = index == count;
      } else {
        so_far = {0, {}};
        whole = false;
      }
      if (whole) {
        data = std::move(so_far.second);
        partial.erase(subject);
      }
    }
    if (whole) on_entry(subject, seq, std::move(data));
  };
  // Writes that do not count (sent at once to one position, stored second) are not handed on.
  auto gap = [](const std::string& filter, const std::string& subject, std::uint64_t seq) {
    return make_error(errc::unavailable, "reading " + filter + ": sequence " + std::to_string(seq) + " of " + subject +
                                           " follows a message this read did not see (cut meanwhile, or missing from the copy read): "
                                           "read again");
  };
  // A message follows one this read did not see: the copy read lacks it (a replica behind, or
  // one that lost it: "read again" through the same copy would never end), or it was cut while
  // this read went on, or the log does not hold it. The leader's copy decides (resolve_gap); once
  // it was asked, the rest of the read is the leader's too. Nothing the leader does not hold is
  // taken to count.
  auto resolve = [&](const std::string& subject, std::uint64_t seq, std::uint64_t prev, std::optional<std::uint64_t> seq_prev,
                     bool& to_leader) {
    to_leader = true;
    return resolve_gap(
      chain, subject, seq, prev, seq_prev,
      [&](std::uint64_t from) { return entry_from_leader(nc, impl_->options.stream, subject, from, ask_timeout); },
      [&](leader_entry&& e) { take(subject, e.seq, std::move(e.data), e.part); });
  };
  // The consumer did not hand what the leader named within options.stall_ms: the rest is read
  // from the leader, entry by entry.
  std::int64_t awaited_since = 0;
  bool from_leader = impl_->options.stall_ms <= 0;
  while (true) {
    if (from_leader) {
      auto e = entry_from_leader(nc, impl_->options.stream, filter, last_seq + 1, ask_timeout);
      if (!e) {
        outcome = make_error(e.error().code, "reading " + filter + " from the stream's leader: " + e.error().message);
        break;
      }
      if (!*e) break;  // nothing after the last read: whole
      ++received;
      last_seq = (*e)->seq;
      auto verdict = chain.see((*e)->subject, (*e)->seq, (*e)->prev);
      if (verdict == chain_filter::verdict::gap) {
        bool ignored = true;
        auto resolved = resolve((*e)->subject, (*e)->seq, *(*e)->prev, (*e)->prev, ignored);
        if (!resolved) {
          outcome = make_error(resolved.error().code, "reading " + filter + ": " + resolved.error().message);
          break;
        }
        verdict = *resolved;
      }
      if (verdict == chain_filter::verdict::gap) {
        outcome = gap(filter, (*e)->subject, (*e)->seq);
        break;
      }
      if (verdict == chain_filter::verdict::counts) take((*e)->subject, (*e)->seq, std::move((*e)->data), (*e)->part);
      continue;
    }
    if (awaited > last_seq && steady_ms() - awaited_since >= impl_->options.stall_ms) {
      from_leader = true;
      continue;
    }
    if (ask && awaited <= last_seq) {
      ask = false;
      auto next = next_matching(nc, impl_->options.stream, filter, last_seq + 1, ask_timeout);
      if (!next) {
        outcome = make_error(next.error().code, "reading " + filter + ": " + next.error().message);
        break;
      }
      if (*next == 0) break;  // nothing after the last read: whole
      awaited = *next;
      awaited_since = steady_ms();
    }
    natsMsg* msg = nullptr;
    s = natsSubscription_NextMsg(&msg, sub, awaited > last_seq ? 1000 : 100);
    if (s == NATS_TIMEOUT) {
      if (steady_ms() >= deadline) {
        outcome = js_error(s, 0, "reading " + filter + " (" + std::to_string(received) + " entries read, up to sequence " +
                                   std::to_string(last_seq) + "; sequence " + std::to_string(awaited) + " not handed)");
        break;
      }
      ask = true;
      continue;
    }
    if (s != NATS_OK) {
      outcome = js_error(s, 0, "reading " + filter + " (" + std::to_string(received) + " entries read)");
      break;
    }
    jsMsgMetaData* meta = nullptr;
    std::uint64_t seq = 0;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK && meta) {
      seq = meta->Sequence.Stream;
      if (meta->NumPending == 0) ask = true;
      jsMsgMetaData_Destroy(meta);
    }
    if (seq != 0 && seq <= last_seq) {  // read already
      natsMsg_Destroy(msg);
      continue;
    }
    ++received;
    last_seq = std::max(last_seq, seq);
    std::string subject = natsMsg_GetSubject(msg);
    std::string data(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    const char* part = nullptr;
    std::string part_text = natsMsgHeader_Get(msg, part_header, &part) == NATS_OK && part ? part : "";
    auto prev = prev_of(msg);
    natsMsg_Destroy(msg);
    auto verdict = chain.see(subject, seq, prev);
    if (verdict == chain_filter::verdict::gap) {
      auto resolved = resolve(subject, seq, *prev, prev, from_leader);
      if (!resolved) {
        outcome = make_error(resolved.error().code, "reading " + filter + ": " + resolved.error().message);
        break;
      }
      verdict = *resolved;
    }
    if (verdict == chain_filter::verdict::gap) {
      outcome = gap(filter, subject, seq);
      break;
    }
    if (verdict == chain_filter::verdict::counts) take(subject, seq, std::move(data), part_text);
  }
  retire(retired_subscriptions_of(*impl_->nats), sub);
  return outcome;
}

result<std::uint64_t> run_log::last_sequence(const std::string& subject) {
  // On a replicated stream the last message may be one that does not count: the subject is read.
  if (impl_->replicated) {
    chain_filter chain;
    auto read_whole = read_chain(subject, [](const std::string&, std::uint64_t, std::string) {}, chain);
    if (!read_whole) return read_whole.error();
    return chain.last(subject);
  }
  return last_message(subject);
}

result<std::uint64_t> run_log::last_message(const std::string& subject) {
  natsMsg* msg = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetLastMsg(&msg, impl_->js, impl_->options.stream.c_str(), subject.c_str(), nullptr, &code);
  if (s == NATS_NOT_FOUND || code == JSNoMessageFoundErr) {
    if (msg) natsMsg_Destroy(msg);
    return std::uint64_t{0};
  }
  if (s != NATS_OK) return js_error(s, code, "reading the last entry of " + subject);
  std::uint64_t seq = natsMsg_GetSequence(msg);
  natsMsg_Destroy(msg);
  return seq;
}

result<void> run_log::purge_before(const std::string& subject, std::uint64_t seq) {
  // `seq` names an entry by its last part (as append answers): the cut keeps all of its parts.
  // One whose first part is not known here is not cut (a log left long is whole; one cut inside
  // an entry would read back as an entry that cannot be decoded).
  std::uint64_t from = seq;
  bool known = false;
  {
    std::lock_guard lock{impl_->mutex};
    if (auto it = impl_->starts.find({subject, seq}); it != impl_->starts.end()) {
      from = it->second;
      known = true;
      impl_->starts.erase(it);
    }
  }
  if (!known) {
    natsMsg* msg = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    natsStatus s = js_GetMsg(&msg, impl_->js, impl_->options.stream.c_str(), seq, nullptr, &code);
    if (s != NATS_OK) return js_error(s, code, "reading the entry at sequence " + std::to_string(seq) + " before cutting " + subject);
    const char* part = nullptr;
    bool later_part = natsMsgHeader_Get(msg, part_header, &part) == NATS_OK && part && std::strtoull(part, nullptr, 10) > 1;
    bool other_subject = subject != natsMsg_GetSubject(msg);
    natsMsg_Destroy(msg);
    if (other_subject) return make_error(errc::invalid_argument, "sequence " + std::to_string(seq) + " is not an entry of " + subject);
    if (later_part)
      return make_error(errc::conflict, "the entry ending at sequence " + std::to_string(seq) + " of " + subject +
                                          " is in parts whose first is not known here; not cut");
  }
  jsOptions options;
  jsOptions_Init(&options);
  options.Stream.Purge.Subject = subject.c_str();
  options.Stream.Purge.Sequence = from;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_PurgeStream(impl_->js, impl_->options.stream.c_str(), &options, &code);
  if (s != NATS_OK) return js_error(s, code, "purging " + subject);
  return success();
}

} // namespace keel::broker
