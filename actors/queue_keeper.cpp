#include "actors/queue_keeper.hpp"
#include "actors/actors_log.hpp"

#include "runtime/clock.hpp"
#include "runtime/wire.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace keel::actors {

using wire::value;

namespace {
constexpr std::int64_t reconcile_every_ms = 5000;
constexpr std::size_t listed_entries_max = 100;  // of each list, in a listing
} // namespace

struct queue_keeper::impl {
  std::shared_ptr<broker::connection> nats;
  std::unique_ptr<broker::key_value> bucket;
  broker::subjects subjects;
  std::map<std::string, std::unique_ptr<queue_driver>> drivers;  // the keeper's thread's own
  std::map<std::string, std::int64_t> due;                        // when each is looked at next
  std::vector<std::unique_ptr<broker::subscription>> subscriptions;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::function<void()>> inbox;
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

  value entries(const std::vector<queue_entry>& list) {
    value out = value::array();
    for (std::size_t i = 0; i < list.size() && i < listed_entries_max; ++i) {
      value e{{"run_id", list[i].run}, {"since_ms", list[i].since_ms}};
      if (!list[i].key.empty()) e["key"] = list[i].key;
      if (list[i].admitted_ms) e["admitted_ms"] = list[i].admitted_ms;
      out.push_back(std::move(e));
    }
    return out;
  }

  value describe(queue_driver& d) {
    const auto& limits = d.limits();
    value out{{"name", limits.name}, {"concurrency", limits.concurrency}, {"key_concurrency", limits.key_concurrency},
              {"waiting_max", limits.waiting_max}};
    auto got = bucket->get_entry(limits.name);
    queue_record r = d.shown();
    if (got && *got) {
      if (auto read = decode_queue_record((*got)->value)) r = std::move(*read);
    } else if (!got) {
      out["problem"] = "cannot read the queue's record: " + got.error().message;
    }
    if (!d.problem().empty() && !out.contains("problem")) out["problem"] = d.problem();
    std::map<std::string, std::pair<std::int64_t, std::int64_t>> keys;  // key -> running, waiting
    for (const auto& e : r.running)
      if (!e.key.empty()) keys[e.key].first += 1;
    for (const auto& e : r.waiting)
      if (!e.key.empty()) keys[e.key].second += 1;
    value by_key = value::array();
    for (const auto& [key, counts] : keys)
      if (by_key.size() < listed_entries_max)
        by_key.push_back(value{{"key", key}, {"running", counts.first}, {"waiting", counts.second}});
    out["running"] = static_cast<std::int64_t>(r.running.size());
    out["waiting"] = static_cast<std::int64_t>(r.waiting.size());
    out["admitted_total"] = r.admitted;
    out["oldest_waiting_ms"] = r.waiting.empty() ? std::int64_t{0} : r.waiting.front().since_ms;
    out["running_runs"] = entries(r.running);
    out["waiting_runs"] = entries(r.waiting);
    out["keys"] = by_key;
    return out;
  }

  void step(const std::string& name, bool reconcile) {
    auto it = drivers.find(name);
    if (it == drivers.end()) return;
    due[name] = it->second->step(reconcile);
    if (it->second->wrote())
      (void)nats->publish(subjects.base() + ".queues.changed", wire::pack(value{{"v", wire::protocol_version}, {"queue", name}}));
  }

  void run() {
    std::int64_t reconcile_at = wall_ms();  // at start: whatever this node forgot is put right
    for (;;) {
      std::deque<std::function<void()>> work;
      {
        std::unique_lock lock{mutex};
        std::int64_t next = reconcile_at;
        for (const auto& [name, at] : due) next = std::min(next, at);
        wake.wait_for(lock, std::chrono::milliseconds(std::max<std::int64_t>(0, next - wall_ms())),
                      [&] { return stopping || !inbox.empty(); });
        if (stopping) return;
        work.swap(inbox);
      }
      for (auto& f : work) f();
      auto now = wall_ms();
      const bool reconcile = now >= reconcile_at;
      if (reconcile) reconcile_at = now + reconcile_every_ms;
      for (auto& [name, at] : due)
        if (at <= now || reconcile) step(name, reconcile);
    }
  }
};

queue_keeper::queue_keeper(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
queue_keeper::~queue_keeper() { stop(); }

void queue_keeper::stop() {
  if (!impl_) return;
  impl_->subscriptions.clear();
  {
    std::lock_guard lock{impl_->mutex};
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void queue_keeper::enter(const std::string& queue, const std::string& run, const std::string& key, std::int64_t since_ms) {
  auto* s = impl_.get();
  s->post([s, queue, run, key, since_ms] {
    auto it = s->drivers.find(queue);
    if (it == s->drivers.end()) {
      logger()->error("run {}: its queue {} is not in this node's config; it stays in line here", run, queue);
      return;
    }
    it->second->enter(run, key, since_ms);
    s->due[queue] = 0;
  });
}

void queue_keeper::release(const std::string& queue, const std::string& run, std::int64_t since_ms) {
  auto* s = impl_.get();
  s->post([s, queue, run, since_ms] {
    auto it = s->drivers.find(queue);
    if (it == s->drivers.end()) return;
    it->second->release(run, since_ms);
    s->due[queue] = 0;
  });
}

result<std::unique_ptr<queue_keeper>> queue_keeper::start(const config::node_config& config,
                                                          std::shared_ptr<broker::connection> nats,
                                                          broker::jetstream& js, hooks h) {
  auto state = std::make_unique<impl>();
  state->nats = nats;
  state->subjects = broker::subjects{config.prefix, config.ns};
  auto bucket = broker::key_value::open(js, {broker::stream_name("KEEL_QUEUES_" + config.prefix + "_" + config.ns),
                                             config.task_replicas, 0});
  if (!bucket) return bucket.error();
  state->bucket = std::move(*bucket);
  auto* s = state.get();
  for (const auto& q : config.run_queues) {
    queue_io io;
    io.now = [] { return wall_ms(); };
    io.read = [s](const std::string& name) -> result<std::optional<std::pair<queue_record, std::uint64_t>>> {
      auto got = s->bucket->get_entry(name);
      if (!got) return got.error();
      if (!*got) return std::optional<std::pair<queue_record, std::uint64_t>>{};
      auto record = decode_queue_record((*got)->value);
      if (!record) return record.error();
      return std::optional(std::make_pair(std::move(*record), (*got)->revision));
    };
    io.create = [s](const std::string& name, const queue_record& r) { return s->bucket->create(name, encode(r)); };
    io.update = [s](const std::string& name, const queue_record& r, std::uint64_t revision) {
      return s->bucket->update(name, encode(r), revision);
    };
    io.look_up = h.look_up;
    io.start = h.start;
    state->drivers[q.name] = std::make_unique<queue_driver>(q, std::move(io));
    state->due[q.name] = 0;
  }
  auto base = state->subjects.base();
  auto listed = nats->subscribe(base + ".queues.list", "orchestrators", [s](broker::message&& m) {
    s->post([s, reply = m.reply] {
      value list = value::array();
      for (auto& [name, d] : s->drivers) list.push_back(s->describe(*d));
      if (!reply.empty())
        (void)s->nats->publish(reply, wire::pack(value{{"v", wire::protocol_version}, {"type", "queue_list"}, {"queues", list}}));
    });
  });
  if (!listed) return listed.error();
  state->subscriptions.push_back(std::move(*listed));
  // Another orchestrator changed a queue (a slot freed, runs admitted): looked at now.
  auto changed = nats->subscribe(base + ".queues.changed", "", [s](broker::message&& m) {
    auto v = wire::unpack(m.data);
    if (!v || !v->is_object() || !v->contains("queue") || !(*v)["queue"].is_string()) return;
    s->post([s, name = (*v)["queue"].get<std::string>()] {
      if (s->due.count(name)) s->due[name] = 0;
    });
  });
  if (!changed) return changed.error();
  state->subscriptions.push_back(std::move(*changed));
  state->thread = std::thread([s] { s->run(); });
  return std::unique_ptr<queue_keeper>(new queue_keeper(std::move(state)));
}

} // namespace keel::actors
