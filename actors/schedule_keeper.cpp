#include "actors/schedule_keeper.hpp"
#include "actors/actors_log.hpp"

#include "actors/schedule_definitions.hpp"
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
#include <set>
#include <thread>

namespace keel::actors {

using wire::value;

namespace {
constexpr std::size_t api_schedules_max = 1000;
} // namespace

struct schedule_keeper::impl {
  std::shared_ptr<broker::connection> nats;
  std::unique_ptr<broker::key_value> bucket;
  broker::subjects subjects;
  std::int64_t request_timeout_ms = 5000;
  // The keeper's thread's own: every schedule it drives, from the config or made through the API
  // (with its generation), and when each is looked at next.
  struct driven {
    std::unique_ptr<schedule_driver> driver;
    bool from_api = false;
    std::int64_t generation = 0;
  };
  std::map<std::string, driven> drivers;
  std::map<std::string, std::int64_t> due;
  const config::node_config* config = nullptr;
  std::set<std::pair<std::string, std::int64_t>> warned;  // definitions this node cannot drive, told once
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
  schedule_io make_io(const std::string& record_key);
  void sync_definitions();
  void define(const wire::value& body, const std::string& who, const std::string& reply);
  void remove(const std::string& name, const std::string& who, const std::string& reply);

  value describe(const driven& entry) {
    auto out = describe(*entry.driver);
    out["source"] = entry.from_api ? "api" : "config";
    if (entry.from_api) out["input"] = entry.driver->config().input;
    return out;
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
    std::int64_t sync_at = 0;  // the API's definitions, read again every 2 s
    for (;;) {
      std::deque<std::function<void()>> work;
      {
        std::unique_lock lock{mutex};
        std::int64_t next = std::min(wall_ms() + 1000, sync_at);
        for (const auto& [name, at] : due) next = std::min(next, at);
        wake.wait_for(lock, std::chrono::milliseconds(std::max<std::int64_t>(0, next - wall_ms())),
                      [&] { return stopping || !inbox.empty(); });
        if (stopping) return;
        work.swap(inbox);
      }
      for (auto& f : work) f();
      auto now = wall_ms();
      if (now >= sync_at) {
        sync_definitions();
        sync_at = now + 2000;
      }
      for (auto& [name, d] : drivers)
        if (due[name] <= now) due[name] = d.driver->step();
    }
  }
};

// The shared record of a schedule is under `record_key`; its ticks' runs are started through the
// orchestrators' own subject.
schedule_io schedule_keeper::impl::make_io(const std::string& record_key) {
  auto* s = this;
  schedule_io io;
  io.now = [] { return wall_ms(); };
  io.read = [s, record_key](const std::string&) -> result<std::optional<std::pair<schedule_record, std::uint64_t>>> {
    auto got = s->bucket->get_entry(record_key);
    if (!got) return got.error();
    if (!*got) return std::optional<std::pair<schedule_record, std::uint64_t>>{};
    auto record = decode_schedule_record((*got)->value);
    if (!record) return record.error();
    return std::optional(std::make_pair(*record, (*got)->revision));
  };
  io.create = [s, record_key](const std::string&, const schedule_record& r) { return s->bucket->create(record_key, encode(r)); };
  io.update = [s, record_key](const std::string&, const schedule_record& r, std::uint64_t revision) {
    return s->bucket->update(record_key, encode(r), revision);
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
  return io;
}

// The API's schedules as the bucket has them now: new ones driven, removed or replaced ones not.
void schedule_keeper::impl::sync_definitions() {
  auto keys = bucket->keys();
  if (!keys) return;  // looked at again in 2 s
  std::map<std::string, schedule_definition> live;
  for (const auto& key : *keys) {
    if (key.rfind(definition_key_prefix, 0) != 0) continue;
    auto got = bucket->get_entry(key);
    if (!got || !*got) continue;
    auto d = decode_schedule_definition((*got)->value);
    if (!d) {
      logger()->warn("schedule definition {} cannot be read: {}", key, d.error().message);
      continue;
    }
    if (d->generation) live[d->schedule.name] = std::move(*d);
  }
  for (auto it = drivers.begin(); it != drivers.end();) {
    auto found = live.find(it->first);
    if (it->second.from_api && (found == live.end() || found->second.generation != it->second.generation)) {
      logger()->info("schedule {} was removed through the API", it->first);
      due.erase(it->first);
      it = drivers.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [name, d] : live) {
    if (drivers.count(name)) continue;  // driven already (or the config's own, which wins)
    if (auto problem = config::check_schedule(d.schedule, *config); !problem.empty()) {
      if (warned.insert({name, d.generation}).second)  // once per definition, not every 2 s
        logger()->warn("schedule {} (made through the API) is not driven here: {}", name, problem);
      continue;
    }
    drivers[name] = driven{std::make_unique<schedule_driver>(d.schedule, make_io(api_record_key(name, d.generation))), true,
                           d.generation};
    due[name] = 0;
    logger()->info("schedule {} (made through the API by {}) is driven here", name, d.by);
  }
}

void schedule_keeper::impl::define(const wire::value& body, const std::string& who, const std::string& reply) {
  auto made = schedule_from_request(body.contains("schedule") ? body["schedule"] : value());
  if (!made) return reply_error(reply, made.error().code, made.error().message);
  if (auto problem = config::check_schedule(*made, *config); !problem.empty())
    return reply_error(reply, errc::invalid_argument, "schedule " + made->name + ": " + problem);
  if (auto it = drivers.find(made->name); it != drivers.end() && !it->second.from_api)
    return reply_error(reply, errc::conflict, "schedule " + made->name + " is in the config; change it there");
  const auto key = definition_key(made->name);
  auto got = bucket->get_entry(key);
  if (!got) return reply_error(reply, errc::unavailable, "the schedules' bucket cannot be read: " + got.error().message);
  // Bounded: every orchestrator reads every definition every 2 s.
  std::size_t from_api = 0;
  for (const auto& [name, d] : drivers) from_api += d.from_api && name != made->name ? 1 : 0;
  if (from_api >= api_schedules_max)
    return reply_error(reply, errc::unavailable, "there are " + std::to_string(from_api) + " schedules made through the API, the most "
                                                 "there may be; remove one first");
  if (*got) {
    auto existing = decode_schedule_definition((*got)->value);
    if (existing && existing->generation) {
      // The same definition again is the same schedule (a retry); another is refused.
      if (schedule_value(existing->schedule) != schedule_value(*made))
        return reply_error(reply, errc::conflict, "schedule " + made->name + " exists with another definition; remove it first");
      sync_definitions();
      if (auto it = drivers.find(made->name); it != drivers.end())
        return this->reply(reply, value{{"v", wire::protocol_version}, {"type", "schedule"}, {"schedule", describe(it->second)},
                                        {"created", false}});
    }
  }
  schedule_definition d{*made, wall_ms(), who};
  auto written = *got ? bucket->update(key, encode(d), (*got)->revision) : bucket->create(key, encode(d));
  if (!written)
    return reply_error(reply, written.error().code == errc::conflict ? errc::conflict : errc::unavailable,
                       written.error().code == errc::conflict ? "schedule " + made->name + " changed meanwhile; ask again"
                                                              : "cannot write the schedule: " + written.error().message);
  logger()->info("schedule {} made through the API by {}", made->name, who);
  sync_definitions();
  auto it = drivers.find(made->name);
  if (it == drivers.end()) return reply_error(reply, errc::internal, "schedule " + made->name + " was written but is not driven");
  due[made->name] = it->second.driver->step();  // its record made, its next tick known
  this->reply(reply, value{{"v", wire::protocol_version}, {"type", "schedule"}, {"schedule", describe(it->second)}, {"created", true}});
}

void schedule_keeper::impl::remove(const std::string& name, const std::string& who, const std::string& reply) {
  if (auto it = drivers.find(name); it != drivers.end() && !it->second.from_api)
    return reply_error(reply, errc::conflict, "schedule " + name + " is in the config; remove it there");
  const auto key = definition_key(name);
  auto got = bucket->get_entry(key);
  if (!got) return reply_error(reply, errc::unavailable, "the schedules' bucket cannot be read: " + got.error().message);
  auto existing = *got ? decode_schedule_definition((*got)->value) : result<schedule_definition>(make_error(errc::not_found, ""));
  if (!existing || !existing->generation) return reply_error(reply, errc::not_found, "no schedule " + name + " made through the API");
  auto written = bucket->update(key, encode(schedule_definition{{}, 0, who}), (*got)->revision);
  if (!written) return reply_error(reply, errc::unavailable, "cannot remove the schedule: " + written.error().message);
  logger()->info("schedule {} removed through the API by {}", name, who);
  sync_definitions();
  this->reply(reply, value{{"v", wire::protocol_version}, {"type", "schedule_removed"}, {"name", name}, {"by", who}});
}

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
  state->config = &config;
  for (const auto& c : config.schedules) {
    state->drivers[c.name] = impl::driven{std::make_unique<schedule_driver>(c, state->make_io(c.name)), false, 0};
    state->due[c.name] = 0;
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
      for (auto& [name, d] : s->drivers) list.push_back(s->describe(d));
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
        auto done = it->second.driver->set_paused(pause, who);
        if (!done) return s->reply_error(reply, done.error().code, done.error().message);
        logger()->info("schedule {} {} by {}", name, pause ? "paused" : "resumed", who);
        s->reply(reply, value{{"v", wire::protocol_version}, {"type", "schedule"}, {"schedule", s->describe(it->second)}});
      });
    });
    if (!r) return r.error();
  }
  // Schedules made and removed through the API (P.schedules.define.<who>, ...<name>.delete.<who>).
  auto defined = subscribe(base + ".schedules.define.*", [s](broker::message&& m) {
    auto who = m.subject.substr(m.subject.rfind('.') + 1);
    auto body = wire::open_request(m.data, "define_schedule", wire::limits{});
    if (!body) return s->reply_error(m.reply, body.error().code, body.error().message);
    s->post([s, who, body = std::move(*body), reply = m.reply] { s->define(body, who, reply); });
  });
  if (!defined) return defined.error();
  auto removed = subscribe(base + ".schedules.*.delete.*", [s, base](broker::message&& m) {
    auto rest = m.subject.substr(base.size() + std::string(".schedules.").size());
    auto name = rest.substr(0, rest.find('.'));
    auto who = rest.substr(rest.rfind('.') + 1);
    s->post([s, name, who, reply = m.reply] { s->remove(name, who, reply); });
  });
  if (!removed) return removed.error();
  state->thread = std::thread([s] { s->run(); });
  return std::unique_ptr<schedule_keeper>(new schedule_keeper(std::move(state)));
}

} // namespace keel::actors
