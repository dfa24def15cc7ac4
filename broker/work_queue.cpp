#include "broker/work_queue.hpp"

#include <nlohmann/json.hpp>

#include <mutex>

#include "broker/native.hpp"
#include "runtime/backoff.hpp"
#include "broker/subscription_reaper.hpp"
#include "runtime/clock.hpp"

#include <thread>

namespace keel::broker {

namespace {
constexpr std::int64_t ns_per_ms = 1'000'000;
} // namespace

error js_error(natsStatus s, int code, const std::string& what) {
  errc kind = errc::unavailable;
  if (s == NATS_TIMEOUT) kind = errc::timeout;
  else if (s == NATS_MAX_PAYLOAD) kind = errc::too_large;
  else if (s == NATS_INVALID_ARG || s == NATS_INVALID_SUBJECT) kind = errc::invalid_argument;
  if (code == JSStreamWrongLastSequenceErr) kind = errc::conflict;
  std::string text = what + ": " + natsStatus_GetText(s);
  if (code != 0) text += " (JetStream error " + std::to_string(code) + ")";
  if (const char* last = nats_GetLastError(nullptr); last && *last && code != JSStreamWrongLastSequenceErr)
    text += ": " + std::string(last);
  return make_error(kind, text);
}

std::string stream_name(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  return out;
}

// ---- delivery

// A pull subscription, freed when its consumer and the last message fetched through it are gone:
// acknowledging a message goes through its subscription (a message acknowledged after its
// consumer was destroyed, as a worker that stops does, would read freed memory).
struct subscription_handle {
  natsSubscription* sub = nullptr;
  std::shared_ptr<retired_subscriptions> retired;
  ~subscription_handle() {
    if (sub) retire(retired, sub);
  }
};

struct delivery::native {
  natsMsg* msg = nullptr;
  std::shared_ptr<subscription_handle> from;
};

delivery::delivery(native* raw) : raw_(raw) {
  natsMsg* m = raw_->msg;
  body_.subject = natsMsg_GetSubject(m);
  if (const char* reply = natsMsg_GetReply(m)) body_.reply = reply;
  body_.data.assign(natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m)));
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, m) == NATS_OK && meta) {
    delivered_ = meta->NumDelivered;
    stored_ms_ = meta->Timestamp / ns_per_ms;
    sequence_ = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
  }
}

delivery::~delivery() {
  natsMsg_Destroy(raw_->msg);
  delete raw_;
}

result<void> delivery::ack() {
  std::lock_guard lock{mutex_};
  if (acknowledged_) return success();
  natsStatus s = natsMsg_Ack(raw_->msg, nullptr);
  if (s != NATS_OK) return js_error(s, 0, "acknowledging " + body_.subject);
  acknowledged_ = true;
  return success();
}

result<void> delivery::in_progress() {
  std::lock_guard lock{mutex_};
  if (acknowledged_) return success();
  natsStatus s = natsMsg_InProgress(raw_->msg, nullptr);
  if (s != NATS_OK) return js_error(s, 0, "saying " + body_.subject + " is in progress");
  return success();
}

result<void> delivery::nak(std::int64_t delay_ms) {
  std::lock_guard lock{mutex_};
  if (acknowledged_) return success();
  natsStatus s = natsMsg_NakWithDelay(raw_->msg, delay_ms, nullptr);
  if (s != NATS_OK) return js_error(s, 0, "handing back " + body_.subject);
  acknowledged_ = true;
  return success();
}

bool delivery::acknowledged() const {
  std::lock_guard lock{mutex_};
  return acknowledged_;
}

// ---- pull consumer

struct pull_consumer::impl {
  std::shared_ptr<subscription_handle> handle = std::make_shared<subscription_handle>();
  std::string durable;
  std::once_flag unsubscribed;
};

pull_consumer::pull_consumer(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
pull_consumer::~pull_consumer() = default;

// The subscription stays (tasks fetched through it are acknowledged through it) but takes no
// more, so that draining the connection does not wait for it. The durable consumer stays on the
// broker: it was bound, not made, by this subscription.
void pull_consumer::unsubscribe() {
  std::call_once(impl_->unsubscribed, [this] {
    if (impl_->handle->sub) natsSubscription_Unsubscribe(impl_->handle->sub);
  });
}

result<std::vector<std::unique_ptr<delivery>>> pull_consumer::fetch(int batch, std::int64_t timeout_ms) {
  std::vector<std::unique_ptr<delivery>> out;
  natsMsgList list{nullptr, 0};
  jsErrCode code = static_cast<jsErrCode>(0);
  // nats.c 3.4 takes messages already waiting on the subscription first (ones that came after an
  // earlier fetch gave up), then asks for the rest with its batch lowered by that count but goes
  // on until the count equals the lowered batch: past the array it made for the batch once more
  // than half of the batch was waiting (a heap overflow, seen under AddressSanitizer). With
  // messages waiting, one is asked for at a time: the count then never passes the batch.
  int waiting = 0;
  if (natsSubscription_GetPending(impl_->handle->sub, &waiting, nullptr) == NATS_OK && waiting > 0) batch = 1;
  natsStatus s = natsSubscription_Fetch(&list, impl_->handle->sub, std::max(1, batch), std::max<std::int64_t>(1, timeout_ms), &code);
  if (s == NATS_TIMEOUT) return out;
  if (s != NATS_OK) {
    natsMsgList_Destroy(&list);
    if (s == NATS_INVALID_SUBSCRIPTION || s == NATS_CONNECTION_CLOSED)
      return make_error(errc::cancelled, "the consumer " + impl_->durable + " is closed");
    return js_error(s, code, "fetching from " + impl_->durable);
  }
  for (int i = 0; i < list.Count; ++i) {
    out.push_back(std::make_unique<delivery>(new delivery::native{list.Msgs[i], impl_->handle}));
    list.Msgs[i] = nullptr;  // owned by the delivery now
  }
  natsMsgList_Destroy(&list);
  return out;
}

// ---- jetstream

struct jetstream::impl {
  std::shared_ptr<connection> nats;
  jsCtx* js = nullptr;
  publish_failed on_failed;
  ~impl() {
    if (js) jsCtx_Destroy(js);
  }
};

jsCtx* jetstream::native() const { return impl_->js; }
jsCtx* native_jetstream(jetstream& js) { return js.native(); }

namespace {
void on_publish_error(jsCtx*, jsPubAckErr* pae, void* closure) {
  auto* state = static_cast<jetstream::impl*>(closure);
  if (!state->on_failed || !pae || !pae->Msg) return;
  publish_failure f;
  f.subject = natsMsg_GetSubject(pae->Msg);
  f.data.assign(natsMsg_GetData(pae->Msg), static_cast<std::size_t>(natsMsg_GetDataLength(pae->Msg)));
  const char* id = nullptr;
  if (natsMsgHeader_Get(pae->Msg, "Nats-Msg-Id", &id) == NATS_OK && id) f.id = id;
  f.why = js_error(pae->Err, pae->ErrCode, "storing a message on " + f.subject + (pae->ErrText ? std::string(": ") + pae->ErrText : ""));
  state->on_failed(std::move(f));
}
} // namespace

jetstream::jetstream(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
jetstream::~jetstream() = default;

result<std::unique_ptr<jetstream>> jetstream::open(std::shared_ptr<connection> nats, std::int64_t request_timeout_ms,
                                                   publish_failed on_failed) {
  auto state = std::make_unique<impl>();
  state->nats = std::move(nats);
  state->on_failed = std::move(on_failed);
  jsOptions options;
  jsOptions_Init(&options);
  options.Wait = request_timeout_ms;
  options.PublishAsync.MaxPending = 16384;
  options.PublishAsync.ErrHandler = on_publish_error;
  options.PublishAsync.ErrHandlerClosure = state.get();
  options.PublishAsync.StallWait = 50;
  natsStatus s = natsConnection_JetStream(&state->js, native_connection(*state->nats), &options);
  if (s != NATS_OK) return js_error(s, 0, "opening JetStream");
  return std::unique_ptr<jetstream>(new jetstream(std::move(state)));
}

result<void> jetstream::ensure_work_queue(const work_queue_options& o) {
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = o.stream.c_str();
  std::vector<const char*> subjects;
  for (const auto& s : o.subjects) subjects.push_back(s.c_str());
  config.Subjects = subjects.data();
  config.SubjectsLen = static_cast<int>(subjects.size());
  config.Retention = js_WorkQueuePolicy;
  config.Storage = js_FileStorage;
  config.MaxMsgSize = static_cast<std::int32_t>(std::min<std::size_t>(o.message_bytes_max, INT32_MAX));
  config.Replicas = o.replicas;
  config.Duplicates = o.duplicate_window_ms * ns_per_ms;
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_AddStream(&info, impl_->js, &config, nullptr, &code);
  if (s != NATS_OK && code == JSStreamNameExistErr) {
    code = static_cast<jsErrCode>(0);
    s = js_UpdateStream(&info, impl_->js, &config, nullptr, &code);
  }
  if (info) jsStreamInfo_Destroy(info);
  if (s != NATS_OK) {
    auto e = js_error(s, code, "creating the JetStream stream " + o.stream + " (is JetStream enabled on nats-server? start it with -js)");
    // No JetStream at all is for the operator to fix (errc::config); anything else (a new
    // cluster still electing its leader, a server moment) may pass.
    if (s == NATS_NO_RESPONDERS || code == JSNotEnabledErr || code == JSNotEnabledForAccountErr) e.code = errc::config;
    return e;
  }
  return success();
}

namespace {
void fill(jsConsumerConfig& config, const consumer_options& o) {
  jsConsumerConfig_Init(&config);
  config.Durable = o.durable.c_str();
  config.FilterSubject = o.filter_subject.c_str();
  config.AckPolicy = js_AckExplicit;
  config.AckWait = o.ack_wait_ms * ns_per_ms;
  config.MaxDeliver = -1;  // workers decide when a task was handed out too often
  config.MaxAckPending = o.ack_pending_max;
  config.DeliverPolicy = js_DeliverAll;
}
} // namespace

// Made by the request that names its filter in the subject ($JS.API.CONSUMER.CREATE.<stream>.
// <consumer>.<filter>), which a worker limited to some queues may send for theirs (the broker
// checks the body against the subject); false when that did not make it (the consumer exists
// with another configuration, an older server): the caller goes the usual way.
bool create_with_filter_in_subject(connection& nats, const consumer_options& o) {
  nlohmann::json body = {{"stream_name", o.stream},
                         {"config", {{"durable_name", o.durable}, {"filter_subject", o.filter_subject},
                                     {"ack_policy", "explicit"}, {"ack_wait", o.ack_wait_ms * ns_per_ms},
                                     {"max_deliver", -1}, {"max_ack_pending", o.ack_pending_max},
                                     {"deliver_policy", "all"}}}};
  auto reply = nats.request("$JS.API.CONSUMER.CREATE." + o.stream + "." + o.durable + "." + o.filter_subject, body.dump(), 5'000);
  if (!reply) return false;
  auto answer = nlohmann::json::parse(reply->data, nullptr, false);
  return answer.is_object() && !answer.contains("error") && answer.contains("config");
}

result<void> jetstream::ensure_consumer(const consumer_options& o) {
  if (create_with_filter_in_subject(*impl_->nats, o)) return success();
  jsConsumerConfig config;
  fill(config, o);
  jsConsumerInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_AddConsumer(&info, impl_->js, o.stream.c_str(), &config, nullptr, &code);
  if (s != NATS_OK && (code == JSConsumerNameExistErr || code == JSConsumerExistingActiveErr || code == 10148)) {
    code = static_cast<jsErrCode>(0);
    s = js_UpdateConsumer(&info, impl_->js, o.stream.c_str(), &config, nullptr, &code);
  }
  if (info) jsConsumerInfo_Destroy(info);
  if (s != NATS_OK) return js_error(s, code, "creating the consumer " + o.durable + " on " + o.stream);
  return success();
}

result<std::unique_ptr<pull_consumer>> jetstream::subscribe(const consumer_options& o) {
  if (auto made = ensure_consumer(o); !made) return made.error();
  auto state = std::make_unique<pull_consumer::impl>();
  state->durable = o.durable;
  state->handle->retired = retired_subscriptions_of(*impl_->nats);
  jsSubOptions options;
  jsSubOptions_Init(&options);
  options.Stream = o.stream.c_str();
  options.Consumer = o.durable.c_str();
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_PullSubscribe(&state->handle->sub, impl_->js, o.filter_subject.c_str(), o.durable.c_str(), nullptr,
                                  &options, &code);
  if (s != NATS_OK) {
    state->handle->sub = nullptr;
    return js_error(s, code, "subscribing to the consumer " + o.durable);
  }
  return std::make_unique<pull_consumer>(std::move(state));
}

result<void> jetstream::publish(std::string_view subject, std::string_view data, std::string_view id) {
  std::string subject_text(subject), id_text(id);
  jsPubOptions options;
  jsPubOptions_Init(&options);
  if (!id_text.empty()) options.MsgId = id_text.c_str();
  jsPubAck* ack = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_Publish(&ack, impl_->js, subject_text.c_str(), data.data(), static_cast<int>(data.size()),
                            &options, &code);
  if (ack) jsPubAck_Destroy(ack);
  if (s != NATS_OK) return js_error(s, code, "storing a message on " + subject_text);
  return success();
}

result<void> jetstream::publish_async(std::string_view subject, std::string_view data, std::string_view id,
                                     std::int64_t ack_wait_ms) {
  std::string subject_text(subject), id_text(id);
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subject_text.c_str(), nullptr, data.data(), static_cast<int>(data.size()));
  if (s != NATS_OK) return js_error(s, 0, "building a message for " + subject_text);
  jsPubOptions options;
  jsPubOptions_Init(&options);
  if (!id_text.empty()) options.MsgId = id_text.c_str();
  options.MaxWait = ack_wait_ms;
  s = js_PublishMsgAsync(impl_->js, &msg, &options);
  if (msg) natsMsg_Destroy(msg);  // still ours when it was not sent
  if (s != NATS_OK) return js_error(s, 0, "sending a message for " + subject_text);
  return success();
}

result<bool> jetstream::holds(std::string_view stream, std::string_view subject) {
  auto last = last_message(stream, subject);
  if (!last) return last.error();
  return last->has_value();
}

result<std::optional<std::string>> jetstream::last_message(std::string_view stream, std::string_view subject) {
  std::string stream_text(stream), subject_text(subject);
  natsMsg* msg = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetLastMsg(&msg, impl_->js, stream_text.c_str(), subject_text.c_str(), nullptr, &code);
  if (s == NATS_OK && msg) {
    std::optional<std::string> out(std::in_place, natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    natsMsg_Destroy(msg);
    return out;
  }
  if (msg) natsMsg_Destroy(msg);
  if (s == NATS_NOT_FOUND || code == JSNoMessageFoundErr) return std::optional<std::string>{};
  return js_error(s, code, "looking for " + subject_text + " in " + stream_text);
}

result<std::uint64_t> jetstream::stored_messages(std::string_view stream) {
  std::string stream_text(stream);
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&info, impl_->js, stream_text.c_str(), nullptr, &code);
  if (s != NATS_OK) return js_error(s, code, "reading the state of " + stream_text);
  std::uint64_t count = info->State.Msgs;
  jsStreamInfo_Destroy(info);
  return count;
}

result<jetstream::backlog> jetstream::consumer_backlog(std::string_view stream, std::string_view consumer) {
  std::string stream_text(stream), consumer_text(consumer);
  jsConsumerInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetConsumerInfo(&info, impl_->js, stream_text.c_str(), consumer_text.c_str(), nullptr, &code);
  if (s != NATS_OK) return js_error(s, code, "reading the consumer " + consumer_text);
  backlog out{info->NumPending, static_cast<std::uint64_t>(std::max<std::int64_t>(0, info->NumAckPending))};
  jsConsumerInfo_Destroy(info);
  return out;
}

result<std::unique_ptr<jetstream>> open_task_queue(std::shared_ptr<connection> nats, const subjects& names,
                                                   std::size_t message_bytes_max, std::int64_t replicas,
                                                   std::int64_t request_timeout_ms, bool make, publish_failed on_failed) {
  auto js = jetstream::open(std::move(nats), request_timeout_ms, std::move(on_failed));
  if (!js) return js.error();
  work_queue_options options;
  options.stream = names.tasks_stream();
  options.subjects = {names.base() + ".tasks.>"};
  options.message_bytes_max = message_bytes_max;
  options.replicas = replicas;
  // A JetStream cluster that has just started elects its leader first (a few seconds): until then
  // creating a stream fails. Ask again for a while; a refusal that lasts is the answer.
  // A worker started before any orchestrator waits for one to make it (two minutes).
  auto deadline = steady_ms() + std::max<std::int64_t>(make ? 30'000 : 120'000, request_timeout_ms);
  backoff pause{100, 1000};  // the broker may be starting, or electing a leader
  while (true) {
    result<void> made = success();
    if (make) {
      made = (*js)->ensure_work_queue(options);
    } else if (auto there = (*js)->stored_messages(options.stream); !there) {
      // Nobody answers the JetStream API: JetStream is off, which waiting will not change.
      bool no_jetstream = there.error().message.find(natsStatus_GetText(NATS_NO_RESPONDERS)) != std::string::npos;
      made = no_jetstream ? make_error(errc::config, "the task stream " + options.stream +
                                                       " cannot be read: is JetStream enabled on nats-server? start it with -js")
                          : make_error(errc::unavailable, there.error().message + " (an orchestrator makes it)");
    }
    if (made) return js;
    if (made.error().code == errc::config) return made.error();
    if (steady_ms() >= deadline)
      return make_error(made.error().code, "the task stream " + options.stream + " cannot be made: " + made.error().message);
    std::this_thread::sleep_for(std::chrono::milliseconds(pause.next_ms()));
  }
}

} // namespace keel::broker
