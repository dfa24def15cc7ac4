#include "broker/connection.hpp"

#include <pthread.h>
#include "broker/native.hpp"
#include "broker/subscription_reaper.hpp"

#include "runtime/log.hpp"
#include "runtime/wire.hpp"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <mutex>

namespace keel::broker {

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("broker");
  return l;
}

error nats_error(natsStatus s, const std::string& what) {
  errc code = errc::unavailable;
  if (s == NATS_TIMEOUT) code = errc::timeout;
  else if (s == NATS_INVALID_ARG || s == NATS_INVALID_SUBJECT) code = errc::invalid_argument;
  else if (s == NATS_MAX_PAYLOAD) code = errc::too_large;
  return make_error(code, what + ": " + natsStatus_GetText(s));
}

// nats.c keeps library-wide state; open it once per process.
void open_library() {
  static std::once_flag once;
  std::call_once(once, [] { nats_Open(-1); });
}

} // namespace

struct connection::impl {
  natsConnection* nc = nullptr;
  natsOptions* options = nullptr;
  std::string servers_text;
  std::mutex closed_mutex;
  std::condition_variable closed_signal;
  bool closed = false;
  std::atomic<bool> closing{false};
  int pending_messages_max = 65536;  // per subscription (connection_options)
  std::string inbox_prefix = "_INBOX";
  // The broker's last "Permissions Violation" (its text), so that a request it refused says so
  // instead of timing out in silence.
  std::mutex refusal_mutex;
  std::string last_refusal;
  // Subscriptions unsubscribed and not yet destroyed (subscription_reaper.hpp says why).
  std::shared_ptr<retired_subscriptions> retired = make_retired_subscriptions();

  // Bounds what may wait in memory for a slow reader; past it the server drops and we log.
  void bound_pending(natsSubscription* sub) const {
    natsSubscription_SetPendingLimits(sub, pending_messages_max, 256 << 20);
  }

  // nats.c calls back from its own threads, and the closed callback comes last: wait for it, so
  // that no callback runs on freed state.
  ~impl() {
    if (nc) {
      closing = true;
      natsConnection_Close(nc);
      std::unique_lock lock{closed_mutex};
      closed_signal.wait_for(lock, std::chrono::seconds(5), [this] { return closed; });
      lock.unlock();
      natsConnection_Destroy(nc);
    }
    if (options) natsOptions_Destroy(options);
  }
};

// The handler lives until nats.c says the subscription is complete (no callback is running and
// none will run), so that unsubscribing while a message is being handled is safe.
// What a subscription's callbacks run with. nats.c calls on_complete once the subscription is
// closed and its last callback has returned; until then the handler (and whatever it refers to)
// must live, so a subscription waits for it when destroyed.
struct delivery {
  explicit delivery(handler h) : on_message(std::move(h)) {}
  handler on_message;
  std::mutex mutex;
  std::condition_variable done;
  bool complete = false;   // no callback runs or will run; guarded by mutex
  bool abandoned = false;  // the subscription went without waiting: on_complete frees this
};

struct subscription::impl {
  natsSubscription* sub = nullptr;
  delivery* on_message = nullptr;
  std::string subject;
  std::shared_ptr<retired_subscriptions> retired;
  ~impl() { retire(retired, sub); }
};

namespace {

void on_disconnected(natsConnection*, void* closure) {
  auto* state = static_cast<connection::impl*>(closure);
  if (!state->closing) logger()->warn("disconnected from NATS ({})", state->servers_text);
}

void on_reconnected(natsConnection* nc, void*) {
  char url[256] = {0};
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  logger()->info("reconnected to NATS at {}", url);
}

void on_closed(natsConnection*, void* closure) {
  auto* state = static_cast<connection::impl*>(closure);
  // Called once nats.c has joined the connection's threads: nothing can reach a subscription now.
  connection_closed(state->retired);
  std::lock_guard lock{state->closed_mutex};
  state->closed = true;
  state->closed_signal.notify_all();
}

void on_error(natsConnection* nc, natsSubscription* sub, natsStatus err, void* closure) {
  if (err == NATS_NOT_PERMITTED) {
    const char* text = nullptr;
    natsConnection_GetLastError(nc, &text);
    std::string what = text ? text : "permissions violation";
    logger()->warn("the broker refused: {}", what);
    auto* state = static_cast<connection::impl*>(closure);
    std::lock_guard lock{state->refusal_mutex};
    state->last_refusal = what;
  } else if (err == NATS_SLOW_CONSUMER) {
    logger()->error("slow consumer on '{}': messages were dropped", natsSubscription_GetSubject(sub));
  } else {
    logger()->error("NATS error: {}", natsStatus_GetText(err));
  }
}

void on_complete(void* closure) {
  auto* d = static_cast<delivery*>(closure);
  bool free_it = false;
  {
    // Notified under the lock: the waiter frees `d` as soon as it sees `complete`.
    std::lock_guard lock{d->mutex};
    d->complete = true;
    if (d->abandoned) free_it = true;
    else d->done.notify_all();
  }
  if (free_it) delete d;
}

// Messages a thread has read (their bytes are copied out), freed a batch at a time. nats.c frees
// a message on a thread of its own, which it wakes for each one whenever that thread sleeps: two
// wake-ups of another thread per step, competing for the two cores with the step's own work.
// Held: at most 32 messages or 256 KB per thread; freed too when the thread ends.
class spent_messages {
public:
  void add(natsMsg* raw) {
    held_.push_back(raw);
    bytes_ += static_cast<std::size_t>(natsMsg_GetDataLength(raw));
    if (held_.size() >= 32 || bytes_ >= (256u << 10)) free_all();
  }
  ~spent_messages() { free_all(); }

private:
  void free_all() {
    for (auto* raw : held_) natsMsg_Destroy(raw);
    held_.clear();
    bytes_ = 0;
  }
  std::vector<natsMsg*> held_;
  std::size_t bytes_ = 0;
};
thread_local spent_messages spent;

constexpr std::string_view inbox_root = "_INBOX.";

// A copy of what a nats.c message carries; the caller still frees `raw`. A message delivered to a
// subscription names where its answer goes; only an inbox is taken (`_INBOX.`): whoever sent it
// could otherwise have this process, with its rights, publish its answer on any subject (a task,
// an event, a key of a bucket). A message naming another place is handled as needing no answer.
message copy_of(natsMsg* raw, bool delivered = true) {
  message m;
  m.subject = natsMsg_GetSubject(raw);
  if (const char* reply = natsMsg_GetReply(raw)) {
    std::string_view r(reply);
    if (!delivered || r.substr(0, inbox_root.size()) == inbox_root) m.reply = reply;
  }
  m.data.assign(natsMsg_GetData(raw), static_cast<std::size_t>(natsMsg_GetDataLength(raw)));
  return m;
}

result<void> unsubscribe_from(natsSubscription* sub, const std::string& subject) {
  natsStatus s = natsSubscription_Unsubscribe(sub);
  if (s != NATS_OK && s != NATS_INVALID_SUBSCRIPTION && s != NATS_CONNECTION_CLOSED)
    return nats_error(s, "unsubscribing from " + subject);
  return success();
}

// A delivery thread is named after the last word of the subject it serves ("nats results",
// "nats events"), so that a profile or top -H says which subscription is busy.
void name_delivery_thread(natsSubscription* sub) {
  thread_local bool named = false;
  if (named || !sub) return;
  named = true;
  const char* subject = natsSubscription_GetSubject(sub);
  if (!subject) return;
  std::string_view s(subject);
  auto last = s.substr(s.rfind('.') + 1);
  std::string name = "nats " + std::string(last.substr(0, 10));
  pthread_setname_np(pthread_self(), name.c_str());
}

// The delivery whose callback this thread runs now (a subscription destroyed from inside its own
// callback cannot wait for that callback to return).
thread_local delivery* delivering = nullptr;
// The inbox the message being handled on this thread asks its answer on, and whether the handler
// published there already (connection::publish marks it).
thread_local const char* answering = nullptr;
thread_local bool answered = false;

void deliver(natsConnection* nc, natsSubscription* sub, natsMsg* raw, void* closure) {
  name_delivery_thread(sub);
  auto* d = static_cast<delivery*>(closure);
  delivering = d;
  // Where the handler's answer goes (an inbox only: copy_of), for answering it if the handler
  // fails before it answered. The handler's own publish there marks it answered.
  const char* reply = natsMsg_GetReply(raw);
  const bool inbox = reply && std::string_view(reply).substr(0, inbox_root.size()) == inbox_root;
  answering = inbox ? reply : nullptr;
  answered = false;
  bool failed = false;
  try {
    d->on_message(copy_of(raw));
  } catch (const std::exception& e) {
    // A handler must not take the delivery thread down with it.
    failed = true;
    logger()->error("a message handler threw: {}", e.what());
  } catch (...) {
    failed = true;
    logger()->error("a message handler threw something that is not an exception");
  }
  // Nor leave its requester waiting for the timeout: answered `internal` (what went wrong stays in
  // this node's log), which a requester may ask again. A handler that answered first keeps its
  // answer; one that handed the answer to another thread and then failed is answered twice (the
  // first answer is the one a requester takes).
  if (failed && answering && !answered) {
    try {
      static const std::string bytes = wire::encode_error(
        make_error(errc::internal, "the request failed on the node that took it (its log says why); ask again"));
      (void)natsConnection_Publish(nc, answering, bytes.data(), static_cast<int>(bytes.size()));
    } catch (...) {  // nothing may escape into nats.c's frames
    }
  }
  answering = nullptr;
  delivering = nullptr;
  spent.add(raw);
}

} // namespace

connection::connection(std::unique_ptr<impl> state) : impl_(std::move(state)) {}

struct native_access {
  static natsConnection* of(connection& c) { return c.impl_->nc; }
  static std::shared_ptr<retired_subscriptions> retired(connection& c) { return c.impl_->retired; }
};
natsConnection* native_connection(connection& c) { return native_access::of(c); }
std::shared_ptr<retired_subscriptions> retired_subscriptions_of(connection& c) { return native_access::retired(c); }
connection::~connection() = default;

result<std::shared_ptr<connection>> connection::connect(const connection_options& options) {
  if (options.servers.empty()) return make_error(errc::invalid_argument, "no NATS server given");
  open_library();
  auto state = std::make_unique<impl>();
  for (std::size_t i = 0; i < options.servers.size(); ++i)
    state->servers_text += (i ? ", " : "") + options.servers[i];
  if (auto s = natsOptions_Create(&state->options); s != NATS_OK)
    return nats_error(s, "creating NATS options");
  std::vector<const char*> urls;
  for (const auto& s : options.servers) urls.push_back(s.c_str());
  natsOptions* o = state->options;
  natsStatus s = natsOptions_SetServers(o, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK && !options.name.empty()) s = natsOptions_SetName(o, options.name.c_str());
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, options.connect_timeout_ms);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, options.reconnect_wait_ms);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, static_cast<int>(options.reconnect_attempts_max));
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(o, true);
  if (s == NATS_OK) s = natsOptions_SetSendAsap(o, options.send_asap);
  if (s == NATS_OK && options.shared_delivery) s = natsOptions_UseGlobalMessageDelivery(o, true);
  if (s == NATS_OK) s = natsOptions_SetMaxPendingMsgs(o, static_cast<int>(options.pending_messages_max));
  state->pending_messages_max = static_cast<int>(options.pending_messages_max);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_disconnected, state.get());
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_reconnected, state.get());
  if (s == NATS_OK) s = natsOptions_SetClosedCB(o, on_closed, state.get());
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, on_error, state.get());
  // Messages published while reconnecting are buffered (8 MiB) instead of failing at once.
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(o, 8 << 20);
  if (s == NATS_OK && !options.user.empty()) {
    s = natsOptions_SetUserInfo(o, options.user.c_str(), options.password.c_str());
    state->inbox_prefix = "_INBOX." + options.user;
    if (s == NATS_OK) s = natsOptions_SetCustomInboxPrefix(o, state->inbox_prefix.c_str());
  }
  if (s != NATS_OK) return nats_error(s, "setting NATS options");
  s = natsConnection_Connect(&state->nc, o);
  if (s == NATS_CONNECTION_AUTH_FAILED || s == NATS_NOT_PERMITTED) {
    state->nc = nullptr;
    return make_error(errc::denied, "NATS at " + state->servers_text + " refused " +
                                      (options.user.empty() ? std::string("a connection without credentials")
                                                            : "the credentials of user '" + options.user + "'") +
                                      " (nats.credentials_file, or the context file of `keel dev`)");
  }
  if (s != NATS_OK) {
    state->nc = nullptr;
    return make_error(errc::unavailable, "cannot connect to NATS at " + state->servers_text +
                                           ": " + natsStatus_GetText(s) +
                                           " (is nats-server running?)");
  }
  connection_made(state->retired, state->nc);
  return std::shared_ptr<connection>(new connection(std::move(state)));
}

result<void> connection::publish(std::string_view subject, std::string_view data) {
  return publish(subject, {}, data);
}

result<void> connection::publish(std::string_view subject, std::string_view reply,
                                 std::string_view data) {
  if (answering && subject == answering) answered = true;
  std::string subject_text(subject), reply_text(reply);
  natsStatus s =
    reply.empty()
      ? natsConnection_Publish(impl_->nc, subject_text.c_str(), data.data(), static_cast<int>(data.size()))
      : natsConnection_PublishRequest(impl_->nc, subject_text.c_str(), reply_text.c_str(),
                                      data.data(), static_cast<int>(data.size()));
  if (s != NATS_OK) return nats_error(s, "publishing on " + subject_text);
  return success();
}

result<message> connection::request(std::string_view subject, std::string_view data,
                                    std::int64_t timeout_ms) {
  std::string subject_text(subject);
  natsMsg* reply = nullptr;
  natsStatus s = natsConnection_Request(&reply, impl_->nc, subject_text.c_str(), data.data(),
                                        static_cast<int>(data.size()), timeout_ms);
  if (s == NATS_NO_RESPONDERS)
    return make_error(errc::unavailable, "nobody serves " + subject_text);
  if (s == NATS_TIMEOUT) {
    std::lock_guard lock{impl_->refusal_mutex};
    if (impl_->last_refusal.find("\"" + subject_text + "\"") != std::string::npos)
      return make_error(errc::denied, "the broker refused: " + impl_->last_refusal);
  }
  if (s == NATS_TIMEOUT)
    return make_error(errc::timeout, "no reply on " + subject_text + " within " +
                                       std::to_string(timeout_ms) + " ms");
  if (s != NATS_OK) return nats_error(s, "request on " + subject_text);
  message m = copy_of(reply, false);
  natsMsg_Destroy(reply);
  return m;
}

result<std::unique_ptr<subscription>> connection::subscribe(std::string_view subject,
                                                            std::string_view queue,
                                                            handler on_message) {
  auto state = std::make_unique<subscription::impl>();
  state->subject = subject;
  state->retired = impl_->retired;
  state->on_message = new delivery(std::move(on_message));
  std::string queue_text(queue);
  natsStatus s =
    queue.empty()
      ? natsConnection_Subscribe(&state->sub, impl_->nc, state->subject.c_str(), deliver,
                                 state->on_message)
      : natsConnection_QueueSubscribe(&state->sub, impl_->nc, state->subject.c_str(),
                                      queue_text.c_str(), deliver, state->on_message);
  if (s == NATS_OK) s = natsSubscription_SetOnCompleteCB(state->sub, on_complete, state->on_message);
  if (s != NATS_OK) {
    retire(state->retired, state->sub);
    state->sub = nullptr;
    delete state->on_message;
    return nats_error(s, "subscribing to " + state->subject);
  }
  impl_->bound_pending(state->sub);
  return std::make_unique<subscription>(std::move(state));
}

struct pull_subscription::impl {
  natsSubscription* sub = nullptr;
  std::string subject;
  std::shared_ptr<retired_subscriptions> retired;
  ~impl() { retire(retired, sub); }
};



result<std::shared_ptr<pull_subscription>> connection::subscribe_pull(std::string_view subject,
                                                                      std::string_view queue) {
  auto state = std::make_unique<pull_subscription::impl>();
  state->subject = subject;
  state->retired = impl_->retired;
  std::string queue_text(queue);
  natsStatus s = queue.empty()
                   ? natsConnection_SubscribeSync(&state->sub, impl_->nc, state->subject.c_str())
                   : natsConnection_QueueSubscribeSync(&state->sub, impl_->nc, state->subject.c_str(),
                                                       queue_text.c_str());
  if (s != NATS_OK) {
    state->sub = nullptr;
    return nats_error(s, "subscribing to " + state->subject);
  }
  impl_->bound_pending(state->sub);
  return std::make_shared<pull_subscription>(std::move(state));
}

pull_subscription::pull_subscription(std::unique_ptr<impl> state) : impl_(std::move(state)) {}

pull_subscription::~pull_subscription() {
  if (impl_ && impl_->sub) natsSubscription_Unsubscribe(impl_->sub);
}

result<std::optional<message>> pull_subscription::next(std::int64_t timeout_ms) {
  natsMsg* raw = nullptr;
  natsStatus s = natsSubscription_NextMsg(&raw, impl_->sub, std::max<std::int64_t>(1, timeout_ms));
  if (s == NATS_TIMEOUT) return std::optional<message>{};
  if (s == NATS_SLOW_CONSUMER) {
    logger()->error("slow consumer on '{}': messages were dropped", impl_->subject);
    return std::optional<message>{};
  }
  if (s == NATS_INVALID_SUBSCRIPTION || s == NATS_CONNECTION_CLOSED)
    return make_error(errc::cancelled, "the subscription to " + impl_->subject + " is closed");
  if (s != NATS_OK) return nats_error(s, "reading from " + impl_->subject);
  auto m = copy_of(raw);
  spent.add(raw);
  return std::optional<message>(std::move(m));
}

result<void> pull_subscription::unsubscribe() { return unsubscribe_from(impl_->sub, impl_->subject); }

result<void> connection::flush(std::int64_t timeout_ms) {
  natsStatus s = natsConnection_FlushTimeout(impl_->nc, timeout_ms);
  if (s != NATS_OK) return nats_error(s, "flushing");
  return success();
}

result<void> connection::drain(std::int64_t timeout_ms) {
  impl_->closing = true;
  natsStatus s = natsConnection_DrainTimeout(impl_->nc, timeout_ms);
  if (s != NATS_OK && s != NATS_CONNECTION_CLOSED) return nats_error(s, "draining");
  std::unique_lock lock{impl_->closed_mutex};
  bool closed = impl_->closed_signal.wait_for(lock, std::chrono::milliseconds(timeout_ms + 100),
                                              [&] { return impl_->closed; });
  if (!closed) return make_error(errc::timeout, "the connection did not drain in time");
  return success();
}

std::string connection::new_inbox() const {
  natsInbox* inbox = nullptr;
  natsInbox_Create(&inbox);
  std::string out(inbox);  // "_INBOX.<unique>"
  natsInbox_Destroy(inbox);
  return impl_->inbox_prefix + out.substr(out.find('.'));
}

bool connection::connected() const {
  return natsConnection_Status(impl_->nc) == NATS_CONN_STATUS_CONNECTED;
}

std::string connection::connected_url() const {
  char url[256] = {0};
  natsConnection_GetConnectedUrl(impl_->nc, url, sizeof url);
  return url;
}

subscription::subscription(std::unique_ptr<impl> state) : impl_(std::move(state)) {}

// Unsubscribes, and returns once no callback runs or will run: a handler that refers to its
// owner (a gateway, an orchestrator's shared state) never runs on it while or after it is
// destroyed. From inside its own callback it cannot wait: the handler is then freed after that
// callback returns. A callback still running after 10 s (blocked on what the destroying thread
// holds) is left to finish on its own, said in the log.
subscription::~subscription() {
  if (!impl_ || !impl_->sub) return;
  natsSubscription_Unsubscribe(impl_->sub);
  auto* d = impl_->on_message;
  std::unique_lock lock{d->mutex};
  if (delivering != d && !d->done.wait_for(lock, std::chrono::seconds(10), [d] { return d->complete; }))
    logger()->warn("a callback of the subscription to {} did not return within 10 s of its unsubscribing", impl_->subject);
  if (!d->complete) {
    d->abandoned = true;
    return;
  }
  lock.unlock();
  delete d;
}

result<void> subscription::unsubscribe() { return unsubscribe_from(impl_->sub, impl_->subject); }

} // namespace keel::broker
