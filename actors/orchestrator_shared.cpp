#include "actors/orchestrator_shared.hpp"
#include "actors/actors_log.hpp"

#include "runtime/ids.hpp"
#include "runtime/log.hpp"

#include <spdlog/spdlog.h>

#include <csignal>
#include <unistd.h>

namespace keel::actors {

orchestrator_shared::orchestrator_shared(const config::node_config& c, std::string id,
                                         const std::vector<std::shared_ptr<broker::connection>>& connections,
                                         store::run_store& s)
  : config(c), node_id(id), subjects{c.prefix, c.ns}, nats(connections.at(0)), store(s), owner(id),
    log_writer(owner, [this](const std::string& run) { return log_subject(run); }) {
  limits.message_bytes_max = static_cast<std::size_t>(c.message_bytes_max);
  for (const auto& connection : connections) lanes.emplace_back().nats = connection;
  // Writers once the lanes stand (a writer refers to its lane): the lanes are not moved again.
  for (std::size_t i = 0; i < lanes.size(); ++i) {
    auto& l = lanes[i];
    store_writer::replicate_fn replicate;
    if (c.log_replicas > 0)
      replicate = [this, &l, gate = static_cast<int>(i)](const std::vector<store::run_transition>& batch) {
        return log_writer.replicate(*l.log_view, batch, gate);
      };
    l.writer = std::make_unique<store_writer>(s, static_cast<std::size_t>(c.store_batch_max), std::move(replicate));
  }
}

void orchestrator_shared::lane::publish(const std::string& subject, const std::string& bytes) const {
  if (subject.empty()) return;
  if (auto r = nats->publish(subject, bytes); !r) logger()->warn("publish on {} failed: {}", subject, r.error().message);
}

orchestrator_shared::lane& orchestrator_shared::lane_of(std::string_view run_id) {
  return lanes[keel::lane_of(run_id, lanes.size())];
}

std::string orchestrator_shared::log_subject(const std::string& run) const {
  return subjects.base() + ".log." + std::string(run_id{run}.owner()) + "." + run;
}

void orchestrator_shared::left_memory(const std::string& run) {
  if (!log_pool) return;
  log_pool->submit([this, run] {
    if (auto settled = log_writer.settle(run); !settled)
      logger()->warn("run {}: its last write is not confirmed in the run log: {}", run, settled.error().message);
    auto record = store.get(run, false);
    bool finished = record && *record && ((*record)->status == store::run_status::completed ||
                                          (*record)->status == store::run_status::cancelled);
    // Checked here too, not only by the log's compare-and-set (which nats-server 2.9 does not
    // make atomic on a replicated stream): a node stopping because its lease went cuts nothing.
    if (finished && !owner.answers_for(run_id{run}.owner())) {
      logger()->debug("run {}: its log is not cut: this node's lease on it is not certain now", run);
    } else if (finished) {
      // Its last entry becomes its whole history (final record, every event, its conversation), so that an
      // orchestrator that takes its runs over serves the same history; then what came before
      // goes. Only by a node that still holds the run's lease, appending where its own last
      // entry is: a node that lost the run must not cut the log of the run as its new owner has it.
      auto whole = whole_history(run, **record);
      if (!whole) logger()->debug("run {}: its log was not cut: {}", run, whole.error().message);
      else if (auto r = lane_of(run).log_view->purge_before(log_subject(run), *whole); !r)
        logger()->debug("run {}: its log was not cut: {}", run, r.error().message);
    }
    // Its position is dropped unless the run came back into memory meanwhile.
    if (runs.find(run)) return;
    log_writer.forget_if_settled(run);
  });
}

result<std::uint64_t> orchestrator_shared::whole_history(const std::string& run, const store::run_record& record) {
  auto events = store.events(run);
  if (!events) return events.error();
  store::run_transition whole;
  whole.record = record;
  whole.events = std::move(*events);
  // Its conversation too, while completed runs keep theirs (a fork reads it, whoever serves it).
  if (config.retention_keep_conversations) {
    auto counted = record.state.is_object() ? record.state.find("messages_count") : record.state.end();
    std::uint64_t count = counted != record.state.end() && counted->is_number_unsigned() ? counted->get<std::uint64_t>() : 0;
    auto messages = store.messages(run, 0, count, SIZE_MAX);
    if (!messages) return messages.error();
    whole.messages = std::move(*messages);
    whole.messages_from = 0;
  }
  return log_writer.append_after_last(*lane_of(run).log_view, run, whole);
}

void orchestrator_shared::fenced(const std::string& domain, const std::string& why) {
  std::call_once(fenced_once_, [&] {
    if (on_fenced) {
      logger()->critical("the runs of {} are no longer this node's ({}): its orchestrator role restarts", domain, why);
      on_fenced("the runs of " + domain + " are no longer this node's (" + why + ")");
      return;
    }
    logger()->critical("the runs of {} are no longer this node's ({}): stopping", domain, why);
    ::kill(::getpid(), SIGTERM);
  });
}

result<void> orchestrator_shared::subscribe_results(const std::string& domain) {
  for (auto& l : lanes) {
    auto s = l.nats->subscribe(subjects.node_results(domain), "results", on_result);
    if (!s) return s.error();
    std::lock_guard lock{subscriptions_mutex};
    domain_subscriptions.push_back(std::move(*s));
  }
  return success();
}

void orchestrator_shared::unregistered(const std::string& run_id) {
  runs.unregistered(run_id);
  left_memory(run_id);
}

std::string orchestrator_shared::unregistered(const caf::actor_addr& actor) {
  auto run = runs.unregistered(actor);
  if (!run.empty()) left_memory(run);
  return run;
}

void orchestrator_shared::counted(const std::string& run_id) {
  auto replies = runs.take_waiting(run_id, true);
  if (replies.empty()) return;
  auto bytes = wire::encode(wire::invoke_reply{run_id, false});
  for (const auto& r : replies) publish(r, bytes);
}

void orchestrator_shared::not_counted(const std::string& run_id, const std::string& why) {
  for (const auto& r : runs.take_waiting(run_id, false))
    reply_error(r, errc::unavailable, "run " + run_id + " was not written (" + why + "): ask again");
}

void orchestrator_shared::answer_when_counted(const std::string& run_id, const std::string& reply) {
  switch (runs.wait_until_counted(run_id, reply)) {
    case run_registry::wait_outcome::queued: return;
    case run_registry::wait_outcome::full:
      return reply_error(reply, errc::unavailable, "run " + run_id + " is being created: ask again");
    case run_registry::wait_outcome::counted: return publish(reply, wire::encode(wire::invoke_reply{run_id, false}));
  }
}

// A node paused past its lease wakes up with tasks due (a retry whose wait ended, a step whose
// write was confirmed just before the pause) for runs another node took over and sent again;
// sent, they would run twice. Held meanwhile, such a task goes once the lease is renewed, or
// never (taken over).
void orchestrator_shared::send_task(const wire::task& t, const std::string& agent_queue) {
  send_task(t, agent_queue, wire::encode(t));
}

void orchestrator_shared::send_task(const wire::task& t, const std::string& agent_queue, std::string bytes) {
  runs.sent(t.run_id, t.step, t.attempt);
  auto id = keel::task_id{t.run_id, t.step, t.attempt}.to_string();
  auto subject = subjects.task(t.queue.empty() ? agent_queue : t.queue, t.run_id, t.step);
  if (std::string domain = run_id{t.run_id}.owner(); replicated() && !owner.answers_for(domain)) {
    logger()->info("task {} waits: this node's lease on the runs of {} is not certain now", id, domain);
    offer_again({std::move(subject), std::move(bytes), std::move(id), {}});
    return;
  }
  if (lane_of(t.run_id).js->publish_async(subject, bytes, id, config.request_timeout_ms)) return;
  offer_again({std::move(subject), std::move(bytes), std::move(id), {}});
}

void orchestrator_shared::offer_again(broker::publish_failure&& f) {
  // The id is <run>/<step>/<attempt>: whether that attempt is still in flight decides.
  auto last = f.id.rfind('/');
  auto middle = last == std::string::npos ? std::string::npos : f.id.rfind('/', last - 1);
  if (middle == std::string::npos) return;
  auto run = f.id.substr(0, middle);
  auto step = std::strtoull(f.id.c_str() + middle + 1, nullptr, 10);
  auto attempt = static_cast<std::uint32_t>(std::strtoul(f.id.c_str() + last + 1, nullptr, 10));
  if (!f.why.message.empty()) logger()->warn("task {} not confirmed by the broker ({}); offered again", f.id, f.why.message);
  std::string domain(run_id{run}.owner());
  publisher->submit({std::move(f.subject), std::move(f.data), std::move(f.id),
                     [this, run, step, attempt, domain] { return owner.serves(domain) && runs.still_in_flight(run, step, attempt); },
                     [this, domain] { return !replicated() || owner.answers_for(domain); }});
}

run_context orchestrator_shared::context_for(const config::agent_config&) const {
  run_context c;
  c.results_subject = subjects.node_results(node_id);
  if (replicated())
    c.epoch = [leases = owner.leases()](std::string_view domain) { return leases->epoch_of(std::string(domain)); };
  c.step_retry_ms = config.step_retry_ms;
  c.retry_backoff_max_ms = config.retry_backoff_max_ms;
  c.inline_bytes_max = static_cast<std::size_t>(config.task_inline_bytes_max);
  if (tools) c.declared_tools = [registry = tools.get()] { return registry->snapshot(); };
  c.find_agent = [&cfg = config](const std::string& id) { return cfg.find_agent(id); };
  c.prices = &config.prices;
  return c;
}

void orchestrator_shared::publish(const std::string& subject, const std::string& bytes) const {
  if (subject.empty()) return;
  if (auto r = nats->publish(subject, bytes); !r) logger()->warn("publish on {} failed: {}", subject, r.error().message);
}

void orchestrator_shared::reply_error(const std::string& reply, errc code, const std::string& message) const {
  publish(reply, wire::encode_error(make_error(code, message)));
}

} // namespace keel::actors
