#include "actors/tool_registry.hpp"
#include "actors/actors_log.hpp"

#include "runtime/clock.hpp"
#include "runtime/wire.hpp"

#include <spdlog/spdlog.h>

namespace keel::actors {

using wire::value;

namespace {
constexpr std::int64_t read_again_ms = 30'000;
constexpr std::size_t jobs_max = 256;  // requests waiting for the registry's thread (up to 1 MiB each)
constexpr std::size_t queues_per_declarer_max = 64;
}

result<std::unique_ptr<tool_registry>> tool_registry::start(std::shared_ptr<broker::connection> nats,
                                                            broker::jetstream& js, const config::node_config& config) {
  broker::subjects names{config.prefix, config.ns};
  auto bucket = broker::key_value::open(js, {broker::stream_name(names.tools_bucket()), config.task_replicas, 0});
  if (!bucket) return bucket.error();
  std::unique_ptr<tool_registry> r(new tool_registry(nats, std::move(*bucket), config));
  r->read_all();
  r->publish_snapshot();
  tool_registry* self = r.get();
  auto declare = nats->subscribe(names.tools_declare("*"), "orchestrators", [self](broker::message&& m) {
    self->post([self, m = std::move(m)] { self->declare(m); });
  });
  if (!declare) return declare.error();
  r->subscriptions_.push_back(std::move(*declare));
  auto changed = nats->subscribe(names.tools_changed(), "", [self](broker::message&& m) {
    auto v = wire::unpack(m.data, self->limits_);
    if (!v || !v->is_object() || !v->contains("queue") || !(*v)["queue"].is_string()) return;
    self->post([self, queue = (*v)["queue"].get<std::string>()] {
      self->read_queue(queue);
      self->publish_snapshot();
    });
  });
  if (!changed) return changed.error();
  r->subscriptions_.push_back(std::move(*changed));
  auto list = nats->subscribe(names.tools_list(), "orchestrators", [self](broker::message&& m) {
    self->post([self, m = std::move(m)] { self->list(m); });
  });
  if (!list) return list.error();
  r->subscriptions_.push_back(std::move(*list));
  r->thread_ = std::thread([self] { self->loop(); });
  return r;
}

tool_registry::tool_registry(std::shared_ptr<broker::connection> nats, std::unique_ptr<broker::key_value> bucket,
                             const config::node_config& config)
  : nats_(std::move(nats)), bucket_(std::move(bucket)), subjects_{config.prefix, config.ns},
    result_bytes_cap_(config.message_bytes_max / 2), snapshot_(std::make_shared<const tools::declared_tools>()) {
  limits_.message_bytes_max = static_cast<std::size_t>(config.message_bytes_max);
  for (const auto& agent : config.agents) agent_queues_.insert(agent.queue);
}

tool_registry::~tool_registry() { stop(); }

void tool_registry::stop() {
  subscriptions_.clear();
  {
    std::lock_guard lock{jobs_mutex_};
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<const tools::declared_tools> tool_registry::snapshot() const {
  std::lock_guard lock{snapshot_mutex_};
  return snapshot_;
}

void tool_registry::post(std::function<void()> job) {
  {
    std::lock_guard lock{jobs_mutex_};
    if (stopping_ || jobs_.size() >= jobs_max) return;  // a flood is dropped: its senders time out and ask again
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
}

void tool_registry::loop() {
  auto next_read = steady_ms() + read_again_ms;
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock{jobs_mutex_};
      wake_.wait_for(lock, std::chrono::milliseconds(std::max<std::int64_t>(1, next_read - steady_ms())),
                     [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      if (!jobs_.empty()) {
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
    }
    try {
      if (job) job();
      if (steady_ms() >= next_read) {
        read_all();
        publish_snapshot();
        next_read = steady_ms() + read_again_ms;
      }
    } catch (const std::exception& e) {
      logger()->error("the tool registry: {}", e.what());
    }
  }
}

void tool_registry::declare(const broker::message& m) {
  auto reply_error = [&](errc code, const std::string& message) {
    if (!m.reply.empty()) (void)nats_->publish(m.reply, wire::encode_error(make_error(code, message)));
  };
  std::string who = m.subject.substr(m.subject.rfind('.') + 1);
  auto request = wire::open_request(m.data, "declare_tools", limits_);
  if (!request) return reply_error(request.error().code, request.error().message);
  (*request)["by"] = who;
  (*request)["time_ms"] = wall_ms();
  auto declared = tools::queue_tools_from_value(*request, result_bytes_cap_);
  if (!declared) return reply_error(declared.error().code, declared.error().message);
  // An agent's queue carries its model and built-in tool tasks to keel's workers: a tool worker
  // there would take tasks it cannot run, and keel's workers its calls.
  if (agent_queues_.count(declared->queue))
    return reply_error(errc::invalid_argument, "queue " + declared->queue + " is an agent's queue; declare tools on a queue of their own");
  // A queue is its first declarer's: another user may not replace (or empty) its tools. Read
  // fresh, as another orchestrator may have stored it.
  read_queue(declared->queue);
  if (auto held = queues_.find(declared->queue); held != queues_.end() && !held->second.by.empty() && held->second.by != who)
    return reply_error(errc::denied, "queue " + declared->queue + " is declared by " + held->second.by +
                                       "; only that user may declare its tools again");
  if (queues_.count(declared->queue) == 0) {
    std::size_t mine = 0;
    for (const auto& [name, q] : queues_) mine += q.by == who;
    if (mine >= queues_per_declarer_max)
      return reply_error(errc::too_large, who + " declares tools for " + std::to_string(mine) + " queues already, the most one user may");
  }
  auto stored = bucket_->put(declared->queue, wire::pack(declared->to_value()));
  if (!stored) {
    logger()->warn("tools of queue {} declared by {} not stored: {}", declared->queue, who, stored.error().message);
    return reply_error(errc::unavailable, "the tools were not stored (" + stored.error().message + "): declare them again");
  }
  value names = value::array();
  for (const auto& t : declared->tools) names.push_back(t->name);
  std::string queue = declared->queue;
  logger()->info("{} declared {} tools for queue {}", who, declared->tools.size(), queue);
  queues_[queue] = std::move(*declared);
  publish_snapshot();
  (void)nats_->publish(subjects_.tools_changed(),
                       wire::pack(value{{"v", wire::protocol_version}, {"type", "tools_changed"}, {"queue", queue}}));
  if (!m.reply.empty())
    (void)nats_->publish(m.reply, wire::pack(value{{"v", wire::protocol_version}, {"type", "tools_declared"},
                                                   {"queue", queue}, {"tools", names}, {"revision", *stored}}));
}

void tool_registry::read_queue(const std::string& queue) {
  auto bytes = bucket_->get(queue);
  if (!bytes) {
    logger()->warn("the tools of queue {} could not be read: {}", queue, bytes.error().message);
    return;
  }
  if (!*bytes) {
    queues_.erase(queue);
    return;
  }
  auto v = wire::unpack(**bytes, limits_);
  auto declared = v ? tools::queue_tools_from_value(*v, result_bytes_cap_) : result<tools::queue_tools>(v.error());
  if (!declared) {
    logger()->warn("the stored tools of queue {} cannot be read: {}", queue, declared.error().message);
    return;
  }
  queues_[queue] = std::move(*declared);
}

void tool_registry::read_all() {
  auto keys = bucket_->keys();
  if (!keys) {
    logger()->warn("the declared tools could not be listed: {}", keys.error().message);
    return;
  }
  for (const auto& key : *keys) read_queue(key);
}

void tool_registry::list(const broker::message& m) const {
  if (m.reply.empty()) return;
  if (auto request = wire::open_request(m.data, "list_tools", limits_); !request) {
    (void)nats_->publish(m.reply, wire::encode_error(request.error()));
    return;
  }
  value queues = value::array();
  for (const auto& [name, q] : queues_) queues.push_back(q.to_value());
  auto bytes = wire::pack(value{{"v", wire::protocol_version}, {"type", "tool_list"}, {"queues", queues}});
  if (bytes.size() > limits_.message_bytes_max * 3 / 4) {  // too large whole: names and descriptions only
    for (auto& q : queues)
      for (auto& t : q["tools"]) t = value{{"name", t["name"]}, {"description", t["description"]}};
    bytes = wire::pack(value{{"v", wire::protocol_version}, {"type", "tool_list"}, {"queues", queues}, {"schemas_left_out", true}});
  }
  (void)nats_->publish(m.reply, bytes);
}

void tool_registry::publish_snapshot() {
  auto all = std::make_shared<tools::declared_tools>();
  for (const auto& [name, q] : queues_)
    for (const auto& t : q.tools) (*all)[t->key()] = t;
  std::lock_guard lock{snapshot_mutex_};
  snapshot_ = std::move(all);
}

} // namespace keel::actors
