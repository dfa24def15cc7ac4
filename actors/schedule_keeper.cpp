#include "actors/schedule_keeper.hpp"
#include "actors/actors_log.hpp"

#include "actors/schedule_driver.hpp"
#include "actors/workflow_tools.hpp"
#include "runtime/clock.hpp"
#include "runtime/log.hpp"
#include "runtime/wire.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace keel::actors {

using wire::value;

struct schedule_keeper::impl {
  std::shared_ptr<broker::connection> nats;
  std::unique_ptr<broker::key_value> bucket;
  broker::subjects subjects;
  std::int64_t request_timeout_ms = 5000;
  std::map<std::string, std::unique_ptr<schedule_driver>> drivers;  // the keeper's thread's own
  std::vector<std::unique_ptr<broker::subscription>> subscriptions;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::function<void()>> inbox;  // requests, run on the keeper's thread
  bool stopping = false;
  std::thread thread;

  void post(std::function<void()> f) {
    {
      std::lock_guard lock{mutex};
      if (stopping) return;
      inbox.push_back(std::move(f));
    }
    wake.notify_one();
  }
  void reply(const std::string& to, const value& v) {
    if (!to.empty()) (void)nats->publish(to, wire::pack(v));
  }
  void reply_error(const std::string& to, errc code, const std::string& message) {
    if (!to.empty()) (void)nats->publish(to, wire::encode_error(make_error(code, message)));
  }
  value describe(schedule_driver& d) {
    auto shown = d.shown();
    const auto& c = d.config();
    value out{{"name", c.name}, {"agent", c.agent}, {"cron", c.cron}, {"timezone", c.timezone}, {"missed", c.missed},
              {"paused", shown.record.paused}, {"last_tick_ms", shown.record.last_started_ms}, {"next_ms", shown.next_ms},
              {"skipped", shown.record.skipped}};
    if (!shown.record.paused_by.empty()) out["paused_by"] = shown.record.paused_by;
    if (!shown.problem.empty()) out["problem"] = shown.problem;
    return out;
  }

  void run() {
    std::map<std::string, std::int64_t> due;  // when each driver is looked at next
    for (auto& [name, d] : drivers) due[name] = 0;
    for (;;) {
      std::deque<std::function<void()>> work;
      {
        std::unique_lock lock{mutex};
        std::int64_t next = wall_ms() + 1000;
        for (const auto& [name, at] : due) next = std::min(next, at);
        wake.wait_for(lock, std::chrono::milliseconds(std::max<std::int64_t>(0, next - wall_ms())),
                      [&] { return stopping || !inbox.empty(); });
        if (stopping) return;
        work.swap(inbox);
      }
      for (auto& f : work) f();
      auto now = wall_ms();
      for (auto& [name, d] : drivers)
        if (due[name] <= now) due[name] = d->step();
    }
  }
};

schedule_keeper::schedule_keeper(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
schedule_keeper::~schedule_keeper() { stop(); }

void schedule_keeper::stop() {
  if (!impl_) return;
  impl_->subscriptions.clear();
  {
    std::lock_guard lock{impl_->mutex};
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

result<std::unique_ptr<schedule_keeper>> schedule_keeper::start(const config::node_config& config,
                                                                std::shared_ptr<broker::connection> nats,
                                                                broker::jetstream& js) {
  auto state = std::make_unique<impl>();
  state->nats = nats;
  state->subjects = broker::subjects{config.prefix, config.ns};
  state->request_timeout_ms = config.request_timeout_ms;
  auto bucket = broker::key_value::open(js, {broker::stream_name("KEEL_SCHEDULES_" + config.prefix + "_" + config.ns),
                                             config.task_replicas, 0});
  if (!bucket) return bucket.error();
  state->bucket = std::move(*bucket);
  auto* s = state.get();
  for (const auto& c : config.schedules) {
    schedule_io io;
    io.now = [] { return wall_ms(); };
    io.read = [s](const std::string& name) -> result<std::optional<std::pair<schedule_record, std::uint64_t>>> {
      auto got = s->bucket->get_entry(name);
      if (!got) return got.error();
      if (!*got) return std::optional<std::pair<schedule_record, std::uint64_t>>{};
      auto record = decode_schedule_record((*got)->value);
      if (!record) return record.error();
      return std::optional(std::make_pair(*record, (*got)->revision));
    };
    io.create = [s](const std::string& name, const schedule_record& r) { return s->bucket->create(name, encode(r)); };
    io.update = [s](const std::string& name, const schedule_record& r, std::uint64_t revision) {
      return s->bucket->update(name, encode(r), revision);
    };
    io.start = [s](const config::schedule_config& c, std::int64_t tick) -> result<std::string> {
      std::string input = c.input;
      for (auto at = input.find("{{tick}}"); at != std::string::npos; at = input.find("{{tick}}", at))
        input.replace(at, 8, rfc3339(tick));
      wire::invoke_request invoke{c.agent, input, tick_key(c.name, tick), ""};
      auto reply = s->nats->request(s->subjects.base() + ".schedules.invoke", wire::encode(invoke), s->request_timeout_ms);
      if (!reply) return reply.error();
      auto made = wire::decode<wire::invoke_reply>(reply->data);
      if (!made) return made.error();
      if (made->created) logger()->info("schedule {}: tick {} started run {}", c.name, rfc3339(tick), made->run_id);
      return made->run_id;
    };
    state->drivers[c.name] = std::make_unique<schedule_driver>(c, std::move(io));
  }
  auto subscribe = [&](const std::string& subject, broker::handler h) -> result<void> {
    auto sub = nats->subscribe(subject, "orchestrators", std::move(h));
    if (!sub) return sub.error();
    state->subscriptions.push_back(std::move(*sub));
    return success();
  };
  auto base = state->subjects.base();
  auto listed = subscribe(base + ".schedules.list", [s](broker::message&& m) {
    s->post([s, reply = m.reply] {
      value list = value::array();
      for (auto& [name, d] : s->drivers) list.push_back(s->describe(*d));
      s->reply(reply, value{{"v", wire::protocol_version}, {"type", "schedule_list"}, {"schedules", list}});
    });
  });
  if (!listed) return listed.error();
  for (const char* verb : {"pause", "resume"}) {
    auto r = subscribe(base + ".schedules.*." + verb + ".*", [s, base, pause = std::string(verb) == "pause"](broker::message&& m) {
      // <base>.schedules.<name>.<verb>.<who>
      auto rest = m.subject.substr(base.size() + std::string(".schedules.").size());
      auto name = rest.substr(0, rest.find('.'));
      auto who = rest.substr(rest.rfind('.') + 1);
      s->post([s, name, who, pause, reply = m.reply] {
        auto it = s->drivers.find(name);
        if (it == s->drivers.end()) return s->reply_error(reply, errc::not_found, "no schedule " + name);
        auto done = it->second->set_paused(pause, who);
        if (!done) return s->reply_error(reply, done.error().code, done.error().message);
        logger()->info("schedule {} {} by {}", name, pause ? "paused" : "resumed", who);
        s->reply(reply, value{{"v", wire::protocol_version}, {"type", "schedule"}, {"schedule", s->describe(*it->second)}});
      });
    });
    if (!r) return r.error();
  }
  state->thread = std::thread([s] { s->run(); });
  return std::unique_ptr<schedule_keeper>(new schedule_keeper(std::move(state)));
}

} // namespace keel::actors
