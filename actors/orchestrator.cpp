#include "actors/orchestrator.hpp"
#include "actors/actors_log.hpp"

#include "actors/messages.hpp"
#include "actors/orchestrator_shared.hpp"
#include "actors/request_handlers.hpp"
#include "actors/schedule_keeper.hpp"
#include "actors/supervisor.hpp"
#include "replication/environment.hpp"
#include "replication/lease_keeper.hpp"
#include "replication/takeover.hpp"
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/run_store.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

namespace keel::actors {

using wire::value;

namespace {

// Before anything runs: the first order of arrival for this start, and the results received for
// runs that no longer wait for one (a crash came before their run dropped them) removed. The
// runs still in flight apply or drop theirs when they are recovered.
result<std::uint64_t> first_received_order(store::run_store& store) {
  auto starts = store.get_meta("starts");
  if (!starts) return starts.error();
  std::uint64_t count = 0;
  if (*starts) {
    auto v = wire::unpack(**starts, store::disk_limits());
    if (!v || !v->is_number_unsigned()) return make_error(errc::malformed, "node metadata 'starts' is damaged");
    count = v->get<std::uint64_t>();
  }
  count += 1;
  if (auto w = store.put_meta("starts", wire::pack(value(count))); !w) return w.error();
  auto runs = store.runs_with_received();
  if (!runs) return runs.error();
  for (const auto& run : *runs) {
    auto record = store.get(run, false);
    if (!record) return record.error();
    if (*record && store::is_active((*record)->status)) continue;
    auto received = store.received(run);
    if (!received) return received.error();
    store::run_transition drop;
    drop.entries_only = true;
    drop.record.run_id = run;
    for (const auto& r : *received) drop.received_done.push_back(r.order);
    if (auto w = store.apply(drop); !w) return w.error();
    logger()->info("run {}: {} task results received after it stopped waiting were dropped", run,
                   drop.received_done.size());
  }
  return count << 40;
}

// Takes over the runs of `domain` (a node that is gone): read and fenced by the replication layer;
// then this node takes their results and goes on with what was in flight.
void take_over(const std::shared_ptr<orchestrator_shared>& shared, const caf::actor& orchestrator_actor,
               const std::string& domain, std::uint64_t epoch) {
  auto started = steady_ms();
  shared->takeovers_running += 1;
  struct done_guard {
    std::atomic<int>& n;
    ~done_guard() { n -= 1; }
  } guard{shared->takeovers_running};
  replication::takeover_context context{replication::system_environment(), *shared->lanes[0].log_view,
                                        *shared->lease_view, shared->owner, shared->log_writer, shared->store,
                                        shared->subjects.base() + ".log"};
  auto out = replication::take_over(context, domain, epoch);
  if (!out.done) return;
  // Results applied after these keep their order (see store::received_result).
  for (auto now = shared->next_received.load();
       now <= out.max_received_order && !shared->next_received.compare_exchange_weak(now, out.max_received_order + 1);) {
  }
  if (auto r = shared->subscribe_results(domain); !r)
    logger()->error("taking over {}: its results cannot be received: {}", domain, r.error().message);
  shared->owner.serve(domain);
  caf::anon_send(orchestrator_actor, adopt_atom::value, out.active);
  caf::anon_send(orchestrator_actor, wake_scan_atom::value, domain);
  // Runs that had ended: their log cut to their final entry here (as their old owner would have).
  for (const auto& [run, seq] : out.ended) {
    shared->log_writer.known(run, seq);
    shared->left_memory(run);
  }
  metrics::count("keel_takeovers_total");
  logger()->warn("took over the runs of {} in {} ms: {} runs ({} with work in flight, {} waiting for a person), {} log entries{}",
                 domain, steady_ms() - started, out.runs.size(), out.active.size(), out.suspended, out.entries,
                 out.unreadable ? ", " + std::to_string(out.unreadable) + " unreadable" : std::string());
}

} // namespace

struct orchestrator::impl {
  std::shared_ptr<orchestrator_shared> shared;
  caf::actor actor;
  std::unique_ptr<schedule_keeper> schedules;
  std::vector<std::unique_ptr<broker::subscription>> subscriptions;
  bool stopped = false;
};

orchestrator::orchestrator(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
orchestrator::~orchestrator() { stop(); }

std::size_t orchestrator::runs_in_memory() const { return impl_->shared->in_memory; }

result<std::unique_ptr<orchestrator>> orchestrator::start(caf::actor_system& system,
                                                          const config::node_config& config,
                                                          const std::string& node_id,
                                                          const std::vector<std::shared_ptr<broker::connection>>& lanes,
                                                          store::run_store& store,
                                                          std::function<void(const std::string&)> on_fenced) {
  if (lanes.empty()) return make_error(errc::invalid_argument, "an orchestrator needs a NATS connection");
  auto shared = std::make_shared<orchestrator_shared>(config, node_id, lanes, store);
  shared->on_fenced = std::move(on_fenced);
  std::weak_ptr<orchestrator_shared> weak = shared;
  auto js = broker::open_task_queue(shared->nats, shared->subjects, static_cast<std::size_t>(config.message_bytes_max),
                                    config.task_replicas, config.request_timeout_ms, true,
                                    [weak](broker::publish_failure&& f) {
                                      if (auto s = weak.lock(); s && s->publisher) s->offer_again(std::move(f));
                                    });
  if (!js) return js.error();
  shared->js = std::move(*js);
  for (std::size_t i = 0; i < shared->lanes.size(); ++i) {
    auto lane_js = broker::jetstream::open(shared->lanes[i].nats, config.request_timeout_ms,
                                           [weak](broker::publish_failure&& f) {
                                             if (auto s = weak.lock(); s && s->publisher) s->offer_again(std::move(f));
                                           });
    if (!lane_js) return lane_js.error();
    shared->lanes[i].js = std::move(*lane_js);
  }
  auto keys = broker::key_value::open(*shared->js, {broker::stream_name("KEEL_KEYS_" + config.prefix + "_" + config.ns),
                                                    config.task_replicas, 0});
  if (!keys) return keys.error();
  shared->keys = std::move(*keys);
  shared->publisher = std::make_unique<task_publisher>(*shared->js, 2);
  auto tools = tool_registry::start(shared->nats, *shared->js, config);
  if (!tools) return tools.error();
  shared->tools = std::move(*tools);
  shared->children_pool = std::make_unique<thread_pool>(
    4, [](const char* what) { logger()->error("a sub-agent's child run: {}", what); }, "keel children");
  shared->broker_pool = std::make_unique<thread_pool>(
    4, [](const char* what) { logger()->error("a question to the broker: {}", what); }, "keel ask broker");
  shared->keys_pool = std::make_unique<thread_pool>(
    4, [](const char* what) { logger()->error("an idempotency key's claim: {}", what); }, "keel claim key");
  auto first = first_received_order(store);
  if (!first) return first.error();
  shared->next_received = *first;
  auto state = std::make_unique<impl>();
  state->shared = shared;
  state->actor = system.spawn(orchestrator_actor, shared);
  if (config.log_replicas > 0) {
    for (auto& lane : shared->lanes) {
      auto log = broker::run_log::open(lane.nats, {broker::stream_name("KEEL_RUNS_" + config.prefix + "_" + config.ns),
                                                   shared->subjects.base() + ".log.>", config.log_replicas,
                                                   static_cast<std::size_t>(config.message_bytes_max), config.request_timeout_ms});
      if (!log) return log.error();
      lane.log = std::move(*log);
      lane.log_view = replication::jetstream_run_log(*lane.log);
    }
    // Lease requests wait a lease at most (nats.request_timeout_ms, if shorter): a renewal stuck
    // behind a paused stream leader for longer has cost the node its lease anyway (a renewal that
    // fails is tried again at once); a much shorter bound fails the renewals of a node that is
    // merely slow (a loaded machine, a sanitizer).
    auto lease_js = broker::jetstream::open(shared->nats, std::min(config.request_timeout_ms, config.lease_ms), {});
    if (!lease_js) return lease_js.error();
    shared->lease_js = std::move(*lease_js);
    // A renewal that other writes keep coming between gives up within half a lease, and is tried
    // again at once (renewing it after the lease lapsed would be no use).
    auto bucket = broker::key_value::open(*shared->lease_js, {broker::stream_name("KEEL_LEASES_" + config.prefix + "_" + config.ns),
                                                              config.log_replicas, 0, std::max<std::int64_t>(100, config.lease_ms / 2)});
    if (!bucket) return bucket.error();
    shared->lease_bucket = std::move(*bucket);
    shared->log_pool = std::make_unique<thread_pool>(1, [](const char* what) { logger()->error("the run log's thread: {}", what); },
                                                     "keel log");
    shared->ask_pool = std::make_unique<thread_pool>(2, [](const char* what) { logger()->error("a run's lookup: {}", what); },
                                                     "keel ask");
    replication::lease_keeper::hooks hooks;
    auto actor = state->actor;
    hooks.take_over = [weak, actor](const std::string& domain, std::uint64_t epoch) {
      if (auto s = weak.lock()) take_over(s, actor, domain, epoch);
    };
    hooks.lost = [weak](const std::string& domain, const std::string& why) {
      if (auto s = weak.lock()) s->fenced(domain, why);
    };
    shared->lease_view = replication::jetstream_lease_bucket(*shared->lease_bucket);
    auto leases = replication::lease_keeper::start(replication::system_environment(), *shared->lease_view, node_id,
                                                   config.lease_ms, std::move(hooks));
    if (!leases) {
      caf::anon_send_exit(state->actor, caf::exit_reason::user_shutdown);
      return leases.error();
    }
    shared->owner.use(std::move(*leases));
    // Nodes taken over before this one stopped: taken over again (the takeover may have been cut
    // short by the stop, the claim written but the runs not yet read; and whatever of theirs is
    // in this store is brought to what the log has).
    shared->owner.leases()->take_over_again();
  }
  if (!config.run_queues.empty()) {
    queue_keeper::hooks hooks;
    hooks.look_up = [weak](const std::string& run) -> std::optional<local_run> {
      auto s = weak.lock();
      if (!s || (s->replicated() && !s->owner.serves(keel::run_id{run}.owner()))) return std::nullopt;
      auto record = s->store.get(run, false);
      if (!record || !*record) return std::nullopt;
      local_run l;
      l.status = (*record)->status;
      auto read = store::run_state_from_value((*record)->state);
      if (read) l.place = read->queue;
      else l.readable = false;
      return l;
    };
    hooks.start = [actor = state->actor](const std::string& run, std::int64_t since_ms) {
      caf::anon_send(actor, admit_atom::value, run, since_ms, 0);
    };
    auto keeper = queue_keeper::start(config, shared->nats, *shared->js, std::move(hooks));
    if (!keeper) {
      caf::anon_send_exit(state->actor, caf::exit_reason::user_shutdown);
      return keeper.error();
    }
    shared->queues = std::move(*keeper);
  }
  caf::anon_send(state->actor, recover_atom::value);


  if (auto r = serve_requests(shared, state->actor, state->subscriptions); !r) return r.error();
  {  // always: schedules may be made through the API
    auto keeper = schedule_keeper::start(config, shared->nats, *shared->js);
    if (!keeper) return keeper.error();
    state->schedules = std::move(*keeper);
  }
  return std::unique_ptr<orchestrator>(new orchestrator(std::move(state)));
}

void orchestrator::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  if (impl_->schedules) impl_->schedules->stop();
  if (impl_->shared->queues) impl_->shared->queues->stop();
  if (auto* leases = impl_->shared->owner.leases()) leases->stop();
  impl_->subscriptions.clear();
  impl_->shared->tools->stop();
  {
    std::lock_guard lock{impl_->shared->subscriptions_mutex};
    impl_->shared->domain_subscriptions.clear();
    // It holds the shared state and the orchestrator's actor: kept, neither would ever be freed
    // (an orchestrator restarted in the same process, as a node that rejoins, would leak its
    // predecessor's state).
    impl_->shared->on_result = nullptr;
  }
  caf::anon_send_exit(impl_->actor, caf::exit_reason::user_shutdown);
}

bool orchestrator::await_stopped(std::int64_t timeout_ms) const {
  for (auto deadline = steady_ms() + timeout_ms; !(impl_->shared->supervisor_gone && impl_->shared->in_memory == 0);) {
    if (steady_ms() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

bool orchestrator::flush() {
  for (auto& lane : impl_->shared->lanes) lane.writer->stop();
  bool ended = !impl_->shared->log_pool || impl_->shared->log_pool->stop(impl_->shared->config.request_timeout_ms + 2000);
  if (impl_->shared->ask_pool) impl_->shared->ask_pool->stop(3000);
  if (impl_->shared->children_pool) impl_->shared->children_pool->stop(3000);
  if (impl_->shared->broker_pool) impl_->shared->broker_pool->stop(3000);
  if (impl_->shared->keys_pool) impl_->shared->keys_pool->stop(3000);
  impl_->shared->publisher->stop();
  return ended;
}

} // namespace keel::actors