#include "apps/keel/client.hpp"
#include "runtime/error_reply.hpp"

#include "runtime/clock.hpp"
#include "runtime/ids.hpp"

#include <algorithm>
#include <set>
#include <thread>

namespace keel::cli {

using wire::value;

result<client> client::connect(const context& c, const std::string& name, std::int64_t timeout_ms) {
  broker::connection_options options;
  options.servers = {c.nats_url};
  options.name = name;
  options.reconnect_attempts_max = 10;
  options.connect_timeout_ms = std::min<std::int64_t>(timeout_ms, 2000);
  options.user = c.user;
  options.password = c.password;
  auto nats = broker::connection::connect(options);
  if (!nats && nats.error().code == errc::denied) return nats.error();
  if (!nats)
    return make_error(nats.error().code, nats.error().message + "; start keel with `keel dev`, or "
                                                                "point at a cluster with --nats");
  client out;
  out.nats_ = std::move(*nats);
  out.subjects_ = broker::subjects{c.prefix, c.ns};
  out.who_ = c.who();
  out.timeout_ms_ = timeout_ms;
  return out;
}

result<broker::message> client::request(const std::string& subject, const std::string& bytes,
                                        const std::string& run) {
  auto reply = nats_->request(subject, bytes, timeout_ms_);
  if (!reply && !run.empty() &&
      (reply.error().code == errc::unavailable || reply.error().code == errc::timeout)) {
    auto owner = run_id{run}.owner();
    if (owner.empty()) return make_error(errc::not_found, "'" + run + "' is not a keel run id");
    return make_error(reply.error().code, "no answer from node " + std::string(owner) +
                                            ", which owns run " + run + " (is it running?)");
  }
  if (!reply && reply.error().code == errc::unavailable && subject == subjects_.invoke(who_))
    return make_error(errc::unavailable, "no orchestrator is listening on " + subject +
                                           " (is `keel dev` or a keel-node running?)");
  return reply;
}

result<wire::invoke_reply> client::invoke(const wire::invoke_request& r) {
  auto reply = request(subjects_.invoke(who_), wire::encode(r), {});
  if (!reply) return reply.error();
  return wire::decode<wire::invoke_reply>(reply->data);
}

result<wire::resume_reply> client::resume(const wire::resume_request& r) {
  auto reply = request(subjects_.run_resume(r.run_id, who_), wire::encode(r), r.run_id);
  if (!reply) return reply.error();
  return wire::decode<wire::resume_reply>(reply->data);
}

namespace {
// Replies that are plain maps of a given type (run, history, run_list).
result<value> open_reply(const std::string& bytes, const char* type) {
  auto v = wire::unpack(bytes);
  if (!v) return v.error();
  if (!v->is_object()) return make_error(errc::malformed, "a reply must be a map");
  auto actual = text_field(*v, "type");
  if (actual == "error") {
    errc code = errc::internal;
    from_string(error_code_of(*v), code);
    return make_error(code, error_message_of(*v, std::string{}));
  }
  if (actual != type) return make_error(errc::malformed, "expected a '" + std::string(type) + "' reply, got '" + actual + "'");
  return v;
}
} // namespace

result<value> client::cancel(const std::string& run, const std::string& reason) {
  auto reply = request(subjects_.run_cancel(run, who_),
                       wire::pack(value{{"v", wire::protocol_version}, {"type", "cancel"}, {"reason", reason}}), run);
  if (!reply) return reply.error();
  auto v = open_reply(reply->data, "run");
  if (!v) return v.error();
  return (*v)["run"];
}

result<value> client::retry(const std::string& run) {
  auto reply = request(subjects_.run_retry(run, who_), wire::pack(value{{"v", wire::protocol_version}, {"type", "retry"}}), run);
  if (!reply) return reply.error();
  auto v = open_reply(reply->data, "run");
  if (!v) return v.error();
  return (*v)["run"];
}

result<wire::invoke_reply> client::fork(const std::string& run, const value& fields) {
  value body = fields;
  body["v"] = wire::protocol_version;
  body["type"] = "fork";
  auto reply = request(subjects_.run_fork(run, who_), wire::pack(body), run);
  if (!reply) return reply.error();
  return wire::decode<wire::invoke_reply>(reply->data);
}

result<value> client::replay(const std::string& run) {
  auto reply = request(subjects_.base() + ".runs." + run + ".replay",
                       wire::pack(value{{"v", wire::protocol_version}, {"type", "replay"}}), run);
  if (!reply) return reply.error();
  return open_reply(reply->data, "replay");
}

result<value> client::signal(const std::string& run, const std::string& name, const value& payload, const std::string& id) {
  value body{{"v", wire::protocol_version}, {"type", "signal"}, {"name", name}, {"payload", payload}};
  if (!id.empty()) body["id"] = id;
  auto reply = request(subjects_.run_signal(run, who_), wire::pack(body), run);
  if (!reply) return reply.error();
  return open_reply(reply->data, "signal_reply");
}

result<value> client::schedules() {
  auto reply = request(subjects_.base() + ".schedules.list", wire::pack(value{{"v", wire::protocol_version}, {"type", "list_schedules"}}), "");
  if (!reply) return reply.error();
  auto v = open_reply(reply->data, "schedule_list");
  if (!v) return v.error();
  return (*v)["schedules"];
}

result<value> client::run_queues() {
  auto reply = request(subjects_.base() + ".queues.list", wire::pack(value{{"v", wire::protocol_version}, {"type", "list_queues"}}), "");
  if (!reply) return reply.error();
  auto v = open_reply(reply->data, "queue_list");
  if (!v) return v.error();
  return (*v)["queues"];
}

result<value> client::define_schedule(const value& schedule) {
  auto reply = request(subjects_.base() + ".schedules.define." + who_,
                       wire::pack(value{{"v", wire::protocol_version}, {"type", "define_schedule"}, {"schedule", schedule}}), "");
  if (!reply) return reply.error();
  return open_reply(reply->data, "schedule");
}

result<void> client::remove_schedule(const std::string& name) {
  auto reply = request(subjects_.base() + ".schedules." + name + ".delete." + who_,
                       wire::pack(value{{"v", wire::protocol_version}, {"type", "delete_schedule"}}), "");
  if (!reply) return reply.error();
  auto v = open_reply(reply->data, "schedule_removed");
  if (!v) return v.error();
  return success();
}

result<value> client::pause_schedule(const std::string& name, bool pause) {
  auto reply = request(subjects_.base() + ".schedules." + name + (pause ? ".pause." : ".resume.") + who_,
                       wire::pack(value{{"v", wire::protocol_version}, {"type", pause ? "pause" : "resume"}}), "");
  if (!reply) return reply.error();
  auto v = open_reply(reply->data, "schedule");
  if (!v) return v.error();
  return (*v)["schedule"];
}

result<value> client::show(const std::string& run) {
  auto reply = request(subjects_.run_query(run),
                       wire::pack(value{{"v", wire::protocol_version}, {"type", "get_run"}}), run);
  if (!reply) return reply.error();
  auto v = open_reply(reply->data, "run");
  if (!v) return v.error();
  return (*v)["run"];
}

result<value> client::wait(const std::string& run) {
  auto reply = request(subjects_.run_wait(run), wire::pack(value{{"v", wire::protocol_version}, {"type", "wait"}}), run);
  if (!reply && reply.error().code == errc::timeout)
    return make_error(errc::timeout, "no answer in " + std::to_string(timeout_ms_) + " ms: run " + run +
                                       " is still running, or node " + std::string(run_id{run}.owner()) +
                                       ", which owns it, is not");
  if (!reply) return reply.error();
  auto v = open_reply(reply->data, "run");
  if (!v) return v.error();
  return (*v)["run"];
}

result<value> client::history(const std::string& run, std::uint64_t from_seq, std::size_t limit) {
  auto reply = request(subjects_.base() + ".runs." + run + ".history",
                       wire::pack(value{{"v", wire::protocol_version}, {"type", "get_history"},
                                        {"from_seq", from_seq}, {"limit", limit}}), run);
  if (!reply) return reply.error();
  return open_reply(reply->data, "history");
}

result<std::vector<value>> client::runs(const value& filter, std::vector<std::string>* missing) {
  // Shared with the delivery threads, which may still be in a callback when this returns.
  struct gathered {
    std::mutex mutex;
    std::vector<value> out;
    std::optional<keel::error> failure;
    std::set<std::string> answered, orchestrators;
  };
  auto state = std::make_shared<gathered>();
  std::string inbox = nats_->new_inbox();
  auto sub = nats_->subscribe(inbox, "", [state](broker::message&& m) {
    auto v = open_reply(m.data, "run_list");
    std::lock_guard lock{state->mutex};
    if (!v) state->failure = v.error();
    else {
      state->answered.insert(v->value("node_id", std::string{}));
      for (const auto& r : (*v)["runs"]) state->out.push_back(r);
    }
  });
  if (!sub) return sub.error();
  // The live orchestrators, from their answers to a ping: one that does not list is named.
  std::string ping_inbox = nats_->new_inbox();
  auto pings = nats_->subscribe(ping_inbox, "", [state](broker::message&& m) {
    auto beat = wire::decode<wire::heartbeat>(m.data);
    if (!beat || std::find(beat->roles.begin(), beat->roles.end(), "orchestrator") == beat->roles.end()) return;
    std::lock_guard lock{state->mutex};
    state->orchestrators.insert(beat->node_id);
  });
  if (!pings) return pings.error();
  if (auto p = nats_->publish(subjects_.nodes_ping(), ping_inbox, wire::pack(value{{"v", 1}, {"type", "ping"}})); !p)
    return p.error();
  value body = filter;
  body["v"] = wire::protocol_version;
  body["type"] = "list_runs";
  if (auto p = nats_->publish(subjects_.runs_list(), inbox, wire::pack(body)); !p) return p.error();
  // Every orchestrator answers; collect for a moment.
  std::this_thread::sleep_for(std::chrono::milliseconds(std::min<std::int64_t>(timeout_ms_, 500)));
  (void)(*sub)->unsubscribe();
  (void)(*pings)->unsubscribe();
  std::lock_guard lock{state->mutex};
  if (state->failure) return *state->failure;
  if (missing)
    for (const auto& id : state->orchestrators)
      if (!state->answered.count(id)) missing->push_back(id);
  auto out = state->out;
  std::sort(out.begin(), out.end(), [](const value& a, const value& b) {
    return a.value("created_ms", 0LL) > b.value("created_ms", 0LL);
  });
  return out;
}

bool is_final_event(const std::string& t) {
  return t == "run_completed" || t == "run_failed" || t == "run_cancelled";
}

result<std::unique_ptr<event_stream>> event_stream::open(client& c, const std::string& run,
                                                         std::uint64_t from_seq) {
  auto s = std::unique_ptr<event_stream>(new event_stream(c, run, from_seq));
  auto sub = c.nats().subscribe(c.subjects().run_events(run), "", [live = s->live_](broker::message&& m) {
    auto e = wire::decode<wire::event>(m.data);
    if (!e) return;
    std::lock_guard lock{live->mutex};
    live->events[e->seq] = std::move(*e);
    live->arrived.notify_all();
  });
  if (!sub) return sub.error();
  s->subscription_ = std::move(*sub);
  if (auto r = c.nats().flush(c.timeout_ms()); !r) return r.error();
  if (auto r = s->fill_from_history(); !r) return r.error();
  return s;
}

result<void> event_stream::fill_from_history() {
  std::uint64_t from = next_seq_;
  while (true) {
    auto page = client_.history(run_id_, from, 500);
    if (!page) return page.error();
    const auto& events = (*page)["events"];
    for (const auto& v : events) {
      auto e = wire::event_from_value(v);
      if (e && e->seq >= next_seq_) {
        from = std::max(from, e->seq + 1);
        buffered_.emplace(e->seq, std::move(*e));
      }
    }
    if (!(*page)["more"].get<bool>() || events.empty()) break;
  }
  caught_up_ = true;
  return success();
}

result<std::optional<wire::event>> event_stream::next(std::int64_t timeout_ms) {
  auto deadline = steady_ms() + timeout_ms;
  while (true) {
    {
      std::unique_lock lock{live_->mutex};
      for (auto it = live_->events.begin(); it != live_->events.end();) {
        if (it->first >= next_seq_) buffered_.emplace(it->first, std::move(it->second));
        it = live_->events.erase(it);
      }
    }
    if (auto it = buffered_.find(next_seq_); it != buffered_.end()) {
      auto e = std::move(it->second);
      buffered_.erase(it);
      ++next_seq_;
      return std::optional<wire::event>(std::move(e));
    }
    if (!buffered_.empty() && buffered_.begin()->first > next_seq_) {
      // A gap: what is missing was published before we subscribed, or lost; read it back.
      if (auto r = fill_from_history(); !r) return r.error();
      if (buffered_.count(next_seq_)) continue;
    }
    std::unique_lock lock{live_->mutex};
    if (steady_ms() >= deadline) return std::optional<wire::event>{};
    live_->arrived.wait_for(lock, std::chrono::milliseconds(std::min<std::int64_t>(200, deadline - steady_ms())));
  }
}

} // namespace keel::cli
