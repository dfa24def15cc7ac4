#include "gateway/run_stream.hpp"

#include "runtime/log.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace keel::gateway {

using wire::value;

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("gateway");
  return l;
}

bool terminal_status(const std::string& status) {
  return status == "completed" || status == "failed" || status == "cancelled";
}

// The status a run has after this event, when the event ends it.
std::string status_after(const std::string& event_type) {
  if (event_type == "run_completed") return "completed";
  if (event_type == "run_failed") return "failed";
  if (event_type == "run_cancelled") return "cancelled";
  return {};
}

std::string json_text(const value& v) { return v.dump(-1, ' ', false, value::error_handler_t::replace); }

struct client {
  std::shared_ptr<stream_sink> sink;
  std::mutex mutex;
  std::uint64_t last = 0;   // the last seq sent
  bool catching_up = true;  // reading history; live events only mark `missed`
  bool missed = false;
  bool done = false;
};

struct feed {
  std::string run;
  std::unique_ptr<broker::subscription> events, deltas;
  std::vector<std::shared_ptr<client>> clients;  // under run_streams::impl::mutex
};

// Sends the final event and ends the stream (the client's mutex held).
void finish(client& c, const std::string& status) {
  if (c.done) return;
  c.done = true;
  c.sink->write(sse_frame("end", "", json_text(value{{"status", status}, {"last_seq", c.last}})));
  c.sink->close();
}

} // namespace

std::string sse_frame(const std::string& event, const std::string& id, const std::string& data) {
  std::string out;
  out.reserve(data.size() + event.size() + id.size() + 24);
  if (!event.empty()) out += "event: " + event + "\n";
  if (!id.empty()) out += "id: " + id + "\n";
  // One data line per line of text (JSON as sent here has none, but the frame stays valid).
  std::size_t start = 0;
  while (true) {
    auto end = data.find('\n', start);
    out += "data: " + data.substr(start, end == std::string::npos ? std::string::npos : end - start) + "\n";
    if (end == std::string::npos) break;
    start = end + 1;
  }
  out += "\n";
  return out;
}

struct run_streams::impl : std::enable_shared_from_this<run_streams::impl> {
  std::shared_ptr<broker::connection> nats;
  broker::subjects subjects;
  history_reader history;
  stream_options options;
  thread_pool catch_ups{4, [](const char* what) { logger()->error("a stream's catch-up threw: {}", what); }};
  mutable std::mutex mutex;
  std::map<std::string, std::shared_ptr<feed>> feeds;
  std::size_t count = 0;
  bool stopping = false;
  std::condition_variable wake;
  std::thread pinger;

  void remove(const std::string& run, const std::shared_ptr<client>& c) {
    std::shared_ptr<feed> gone;
    {
      std::lock_guard lock{mutex};
      auto it = feeds.find(run);
      if (it == feeds.end()) return;
      auto& list = it->second->clients;
      auto pos = std::find(list.begin(), list.end(), c);
      if (pos == list.end()) return;
      list.erase(pos);
      --count;
      if (list.empty()) {
        gone = std::move(it->second);
        feeds.erase(it);
      }
    }
    // Unsubscribing waits for a delivery in progress: never from inside one.
    if (gone) catch_ups.submit([gone] { (void)gone; });
  }

  std::vector<std::shared_ptr<client>> clients_of(const std::string& run) {
    std::lock_guard lock{mutex};
    auto it = feeds.find(run);
    if (it == feeds.end()) return {};
    return it->second->clients;
  }

  void on_event(const std::string& run, broker::message&& m) {
    auto v = wire::unpack(m.data);
    if (!v || !v->is_object() || !(*v)["seq"].is_number_unsigned()) return;
    auto seq = (*v)["seq"].get<std::uint64_t>();
    auto ends = status_after(v->value("event_type", std::string{}));
    v->erase("v");
    v->erase("type");
    auto frame = sse_frame("", std::to_string(seq), json_text(*v));
    for (auto& c : clients_of(run)) {
      std::unique_lock lock{c->mutex};
      if (c->done) continue;
      if (c->catching_up) {
        c->missed = true;
        continue;
      }
      if (seq <= c->last) continue;
      if (seq == c->last + 1) {
        c->last = seq;
        c->sink->write(frame);
        if (!ends.empty()) finish(*c, ends);
        continue;
      }
      c->catching_up = true;  // a gap: read it from the history
      lock.unlock();
      start_catch_up(run, c);
    }
  }

  void on_delta(const std::string& run, broker::message&& m) {
    auto v = wire::unpack(m.data);
    if (!v || !v->is_object()) return;
    value shown{{"step", v->value("step", value())}, {"text", v->value("text", std::string{})}};
    if (v->value("restart", false)) shown["restart"] = true;
    auto frame = sse_frame("delta", "", json_text(shown));
    for (auto& c : clients_of(run)) {
      std::lock_guard lock{c->mutex};
      if (!c->done && !c->catching_up) c->sink->write(frame);
    }
  }

  void start_catch_up(const std::string& run, const std::shared_ptr<client>& c) {
    catch_ups.submit([self = shared_from_this(), run, c] { self->catch_up(run, c); });
  }

  // Sends what the history holds after the client's last seq, until nothing came meanwhile.
  void catch_up(const std::string& run, const std::shared_ptr<client>& c) {
    while (true) {
      std::uint64_t from;
      {
        std::lock_guard lock{c->mutex};
        if (c->done || c->sink->closed()) return;
        c->missed = false;
        from = c->last + 1;
      }
      auto page = history(run, from);
      std::lock_guard lock{c->mutex};
      if (c->done) return;
      if (!page) {
        c->sink->write(sse_frame("stream_error", "", json_text(value{{"code", std::string(to_string(page.error().code))},
                                                                      {"message", page.error().message}})));
        c->done = true;
        c->sink->close();
        return;
      }
      for (auto& e : (*page)["events"]) {
        if (!e.is_object() || !e["seq"].is_number_unsigned()) continue;
        auto seq = e["seq"].get<std::uint64_t>();
        if (seq <= c->last) continue;
        c->last = seq;
        e.erase("v");
        e.erase("type");
        c->sink->write(sse_frame("", std::to_string(seq), json_text(e)));
      }
      if ((*page).value("more", false) && !(*page)["events"].empty()) continue;
      auto status = (*page).value("status", std::string{});
      if (terminal_status(status)) return finish(*c, status);
      if (c->missed) continue;
      c->catching_up = false;
      return;
    }
  }

  void ping_loop() {
    std::unique_lock lock{mutex};
    while (!stopping) {
      wake.wait_for(lock, std::chrono::milliseconds(options.ping_ms));
      if (stopping) break;
      std::vector<std::shared_ptr<client>> all;
      for (auto& [run, f] : feeds) all.insert(all.end(), f->clients.begin(), f->clients.end());
      lock.unlock();
      for (auto& c : all) c->sink->write(": ping\n\n");
      lock.lock();
    }
  }
};

run_streams::run_streams(std::shared_ptr<broker::connection> nats, broker::subjects subjects, history_reader history,
                         stream_options options)
  : impl_(std::make_shared<impl>()) {
  impl_->nats = std::move(nats);
  impl_->subjects = std::move(subjects);
  impl_->history = std::move(history);
  impl_->options = options;
  impl_->pinger = std::thread([s = impl_.get()] { s->ping_loop(); });
}

run_streams::~run_streams() { stop(); }

void run_streams::stop() {
  std::map<std::string, std::shared_ptr<feed>> feeds;
  {
    std::lock_guard lock{impl_->mutex};
    if (impl_->stopping) return;
    impl_->stopping = true;
    feeds.swap(impl_->feeds);
    impl_->count = 0;
  }
  impl_->wake.notify_all();
  if (impl_->pinger.joinable()) impl_->pinger.join();
  for (auto& [run, f] : feeds) {
    f->events.reset();
    f->deltas.reset();
    for (auto& c : f->clients) c->sink->close();
  }
  impl_->catch_ups.stop(1000);
}

bool run_streams::has_room() const {
  std::lock_guard lock{impl_->mutex};
  return !impl_->stopping && impl_->count < impl_->options.clients_max;
}

std::size_t run_streams::clients() const {
  std::lock_guard lock{impl_->mutex};
  return impl_->count;
}

void run_streams::follow(const std::string& run, std::uint64_t after_seq, std::shared_ptr<stream_sink> sink) {
  auto c = std::make_shared<client>();
  c->sink = sink;
  c->last = after_seq;
  sink->write("retry: " + std::to_string(impl_->options.retry_ms) + "\n\n");
  {
    std::lock_guard lock{impl_->mutex};
    if (impl_->stopping) {
      sink->close();
      return;
    }
    auto& f = impl_->feeds[run];
    if (!f) {
      f = std::make_shared<feed>();
      f->run = run;
      std::weak_ptr<impl> weak = impl_;
      auto base = impl_->subjects.base() + ".runs." + run;
      auto events = impl_->nats->subscribe(base + ".events", "", [weak, run](broker::message&& m) {
        if (auto self = weak.lock()) self->on_event(run, std::move(m));
      });
      auto deltas = impl_->nats->subscribe(base + ".deltas", "", [weak, run](broker::message&& m) {
        if (auto self = weak.lock()) self->on_delta(run, std::move(m));
      });
      if (!events || !deltas) {
        impl_->feeds.erase(run);
        auto e = !events ? events.error() : deltas.error();
        sink->write(sse_frame("stream_error", "", json_text(value{{"code", std::string(to_string(e.code))}, {"message", e.message}})));
        sink->close();
        return;
      }
      f->events = std::move(*events);
      f->deltas = std::move(*deltas);
    }
    f->clients.push_back(c);
    ++impl_->count;
  }
  std::weak_ptr<impl> weak = impl_;
  sink->on_closed([weak, run, c] {
    if (auto self = weak.lock()) self->remove(run, c);
  });
  impl_->start_catch_up(run, c);
}

} // namespace keel::gateway
