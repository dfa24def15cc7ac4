#include "broker/run_log.hpp"

#include "broker/native.hpp"
#include "runtime/clock.hpp"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace keel::broker {

namespace {

constexpr const char* token_header = "Keel-Append";
constexpr const char* part_header = "Keel-Part";  // "<index>/<count>", from 1; absent: whole
constexpr const char* expected_header = "Nats-Expected-Last-Subject-Sequence";  // JetStream's own

// What makes a repeat of an entry recognisable: its subject, the position it goes to, who wrote
// it and what it holds (another writer's entry, or other bytes, for the same position is not a
// repeat: it is refused there).
std::string message_id(const std::string& subject, std::int64_t expected, const std::string& writer,
                       std::string_view data) {
  if (writer.empty() || expected < 0) return {};
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) h = (h ^ c) * 1099511628211ull;
  return subject + "@" + std::to_string(expected) + "@" + writer + "@" + std::to_string(h) + "." + std::to_string(data.size());
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

run_log::run_log(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
run_log::~run_log() = default;

result<std::unique_ptr<run_log>> run_log::open(std::shared_ptr<connection> nats, const run_log_options& options) {
  auto state = std::make_unique<impl>();
  state->nats = std::move(nats);
  state->options = options;
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
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  // A stream just made on a cluster takes writes once its replicas have elected a leader: the
  // node is not ready before (its first runs' writes would wait, then fail). A read that only
  // the leader answers says so.
  std::unique_ptr<run_log> log(new run_log(std::move(state)));
  auto probe = options.subjects;
  if (probe.size() >= 2 && probe.ends_with(".>")) probe = probe.substr(0, probe.size() - 1) + "_ready";
  while (true) {
    auto answered = log->last_sequence(probe);
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
  std::size_t waves = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    expected[i] = entries[i].expected_last;
    parts[i] = std::max<std::size_t>(1, (entries[i].data.size() + piece - 1) / piece);
    waves = std::max(waves, parts[i]);
  }
  for (std::size_t wave = 0; wave < waves; ++wave) {
    std::vector<std::pair<std::size_t, std::uint64_t>> sent;  // entry, token
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
      if (s == NATS_OK && parts[i] > 1)
        s = natsMsgHeader_Set(msg, part_header, (std::to_string(wave + 1) + "/" + std::to_string(parts[i])).c_str());
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
      sent.push_back({i, token});
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(impl_->options.ack_wait_ms + 1000);
    std::unique_lock lock{impl_->mutex};
    for (const auto& [i, token] : sent) {
      impl_->confirmed.wait_until(lock, deadline, [&] { return impl_->waiting[token].has_value(); });
      auto& got = impl_->waiting[token];
      if (got) out[i] = std::move(*got);
      else out[i] = make_error(errc::timeout, "appending to " + entries[i].subject + ": no confirmation");
      impl_->waiting.erase(token);
      if (out[i]) expected[i] = static_cast<std::int64_t>(*out[i]);
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
  std::string id = message_id(e.subject, e.expected_last, e.writer, e.data);
  if (!id.empty()) options.MsgId = id.c_str();
  if (s == NATS_OK) s = js_PublishMsgAsync(impl_->js, &msg, &options);
  if (msg) natsMsg_Destroy(msg);
  if (s != NATS_OK) {
    std::lock_guard lock{impl_->mutex};
    impl_->waiting.erase(ticket);
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
  if (!got) return make_error(errc::timeout, "an append to the run log: no confirmation");
  return std::move(*got);
}

void run_log::forget(std::uint64_t ticket) {
  std::lock_guard lock{impl_->mutex};
  impl_->waiting.erase(ticket);
}

result<void> run_log::read(const std::string& filter, const reader& on_entry) {
  // Up to what the stream holds once the reading consumer is made. Neither count nats-server 2.9
  // gives is enough alone, and a read that believed a short one would serve a node's runs as if
  // there were none: a new consumer can report 0 pending while it is about to deliver what the
  // filter matches (seen with reads made at once on a cluster); a stream information request is
  // answered by the stream's leader, but while the stream has none, by any replica from what it
  // has (seen: 0 entries after servers were killed in turn). So: the larger of the consumer's
  // count and the leader's, and no read while the stream has no leader (asked again later).
  jsSubOptions sub_options;
  jsSubOptions_Init(&sub_options);
  sub_options.Stream = impl_->options.stream.c_str();
  sub_options.Ordered = true;
  sub_options.Config.DeliverPolicy = js_DeliverAll;
  natsSubscription* sub = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_SubscribeSync(&sub, impl_->js, filter.c_str(), nullptr, &sub_options, &code);
  if (s != NATS_OK) return js_error(s, code, "reading " + filter);
  jsConsumerInfo* consumer = nullptr;
  s = natsSubscription_GetConsumerInfo(&consumer, sub, nullptr, &code);
  if (s != NATS_OK) {
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    return js_error(s, code, "reading " + filter + " (how many entries it holds)");
  }
  std::uint64_t expected = consumer->NumPending + consumer->Delivered.Consumer;  // some may be on their way already
  jsConsumerInfo_Destroy(consumer);
  jsOptions info_options;
  jsOptions_Init(&info_options);
  info_options.Stream.Info.SubjectsFilter = filter.c_str();
  jsStreamInfo* info = nullptr;
  s = js_GetStreamInfo(&info, impl_->js, impl_->options.stream.c_str(), &info_options, &code);
  if (s != NATS_OK) {
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    return js_error(s, code, "reading " + filter + " (how many entries it holds)");
  }
  bool leaderless = info->Cluster && info->Cluster->ReplicasLen > 0 &&
                    (info->Cluster->Leader == nullptr || *info->Cluster->Leader == '\0');
  std::uint64_t counted = 0;
  if (info->State.Subjects)
    for (int i = 0; i < info->State.Subjects->Count; ++i) counted += info->State.Subjects->List[i].Msgs;
  jsStreamInfo_Destroy(info);
  if (leaderless) {
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    return make_error(errc::unavailable, "reading " + filter + ": the run log's stream has no leader now");
  }
  expected = std::max(expected, counted);
  std::map<std::string, std::string> partial;  // subject -> parts so far
  result<void> outcome = success();
  // Every one of them, or an error: a read that stopped early would leave runs half read.
  std::uint64_t received = 0;
  auto deadline = steady_ms() + std::max<std::int64_t>(30'000, impl_->options.ack_wait_ms * 6);
  while (received < expected) {
    natsMsg* msg = nullptr;
    s = natsSubscription_NextMsg(&msg, sub, 1000);
    if (s == NATS_TIMEOUT && steady_ms() < deadline) continue;
    if (s != NATS_OK) {
      outcome = js_error(s, 0, "reading " + filter + " (" + std::to_string(received) + " of " +
                                  std::to_string(expected) + " entries read)");
      break;
    }
    ++received;
    jsMsgMetaData* meta = nullptr;
    std::uint64_t seq = 0;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK && meta) {
      seq = meta->Sequence.Stream;
      jsMsgMetaData_Destroy(meta);
    }
    std::string subject = natsMsg_GetSubject(msg);
    std::string data(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    const char* part = nullptr;
    bool whole = true;
    if (natsMsgHeader_Get(msg, part_header, &part) == NATS_OK && part) {
      std::string text = part;
      auto slash = text.find('/');
      auto index = std::strtoull(text.c_str(), nullptr, 10);
      auto count = slash == std::string::npos ? 0 : std::strtoull(text.c_str() + slash + 1, nullptr, 10);
      auto& so_far = partial[subject];
      if (index == 1) so_far.clear();
      so_far += data;
      whole = index == count;
      if (whole) {
        data = std::move(so_far);
        partial.erase(subject);
      }
    }
    natsMsg_Destroy(msg);
    if (whole) on_entry(subject, seq, std::move(data));
  }
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  return outcome;
}

result<std::uint64_t> run_log::last_sequence(const std::string& subject) {
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
  jsOptions options;
  jsOptions_Init(&options);
  options.Stream.Purge.Subject = subject.c_str();
  options.Stream.Purge.Sequence = seq;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_PurgeStream(impl_->js, impl_->options.stream.c_str(), &options, &code);
  if (s != NATS_OK) return js_error(s, code, "purging " + subject);
  return success();
}

} // namespace keel::broker
