// What the orchestrator's parts share for as long as it runs: its lanes (a NATS connection and a
// store writer each), the replication layer (ownership, the log writer), the run registry, task
// publishing and replies. The state of a run itself is its actor's alone (actors/run_actor).
#pragma once

#include "actors/queue_keeper.hpp"
#include "actors/run_machine.hpp"
#include "actors/run_registry.hpp"
#include "actors/store_writer.hpp"
#include "actors/task_publisher.hpp"
#include "actors/tool_registry.hpp"
#include "broker/connection.hpp"
#include "broker/key_value.hpp"
#include "broker/run_log.hpp"
#include "broker/work_queue.hpp"
#include "replication/lease_bucket.hpp"
#include "replication/log_writer.hpp"
#include "replication/ownership.hpp"
#include "replication/run_log.hpp"
#include "runtime/config.hpp"
#include "runtime/thread_pool.hpp"
#include "runtime/wire.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace keel::actors {

struct orchestrator_shared {
  orchestrator_shared(const config::node_config& c, std::string id,
                      const std::vector<std::shared_ptr<broker::connection>>& connections, store::run_store& s);

  // One path of steps through the node: a NATS connection (a member of the results queue group,
  // the run's publishes, its tasks), a store writer and, with the replicated log, the log. A run
  // always takes the same lane, so what it publishes arrives in order and its writes are in
  // order; runs of different lanes share no thread and no connection. Set up at start.
  struct lane {
    std::shared_ptr<broker::connection> nats;
    std::unique_ptr<broker::jetstream> js;
    std::unique_ptr<broker::run_log> log;            // with durability.log_replicas > 0
    std::unique_ptr<replication::run_log> log_view;  // the same, as the log writer sees it
    std::unique_ptr<store_writer> writer;
    void publish(const std::string& subject, const std::string& bytes) const;
  };
  lane& lane_of(std::string_view run_id);

  const config::node_config& config;
  std::string node_id;
  broker::subjects subjects;
  std::shared_ptr<broker::connection> nats;  // lane 0's: requests about runs, invokes, listings
  store::run_store& store;
  std::vector<lane> lanes;
  std::unique_ptr<broker::jetstream> js;  // lane 0's
  std::unique_ptr<broker::key_value> keys;  // idempotency keys the whole cluster agrees on
  std::unique_ptr<task_publisher> publisher;
  std::unique_ptr<tool_registry> tools;  // what tool workers declared
  std::shared_ptr<queue_keeper> queues;   // [queues.<name>] of the config; null: none
  wire::limits limits;

  // ---- The replicated run log and the leases (durability.log_replicas > 0)
  std::unique_ptr<broker::jetstream> lease_js;  // requests about leases wait a quarter of a lease at most
  std::unique_ptr<broker::key_value> lease_bucket;
  std::unique_ptr<replication::lease_bucket> lease_view;  // the same, as the leases see it
  replication::ownership owner;
  replication::log_writer log_writer;
  bool replicated() const { return owner.replicated(); }
  std::string log_subject(const std::string& run) const;
  // Off the runs' way: confirming and cutting the log of runs that left memory; asking other
  // orchestrators whether a run exists.
  std::unique_ptr<thread_pool> log_pool;
  std::unique_ptr<thread_pool> ask_pool;
  std::unique_ptr<thread_pool> children_pool;  // sub-agents' child runs: starting, asking, handing over
  // Questions to the broker that an actor needs answered: whether the work queue holds a step's
  // task, claiming an idempotency key. An actor's thread never waits on the broker: one slow to
  // answer (a stream leader paused, a bucket contended) would hold the thread, and every run
  // scheduled on it; the answer comes back to the actor as a message.
  std::unique_ptr<thread_pool> broker_pool;
  std::unique_ptr<thread_pool> keys_pool;  // the same for idempotency keys' claims, apart: neither waits behind the other
  // A run out of memory: its last entry confirmed and, for a run that completed or was
  // cancelled, its log cut to one entry (its final state and whole history).
  void left_memory(const std::string& run);
  // Another orchestrator took this node's runs: the role stops and rejoins as a new member
  // (`on_fenced`, the node's: in place, its other roles going on; without one, the process stops).
  void fenced(const std::string& domain, const std::string& why);
  std::function<void(const std::string& why)> on_fenced;
  // The results of another node's runs, once this node serves them.
  broker::handler on_result;
  std::mutex subscriptions_mutex;
  std::vector<std::unique_ptr<broker::subscription>> domain_subscriptions;
  result<void> subscribe_results(const std::string& domain);

  // ---- Runs in memory
  run_registry runs;
  std::atomic<std::size_t> in_memory{0};
  std::atomic<bool> supervisor_gone{false};  // the orchestrator's actor has ended
  // Takeovers writing another node's runs into the store now: retention waits for them (a run
  // the log holds as failed, then retried, must not be removed between the two).
  std::atomic<int> takeovers_running{0};
  // The order of arrival of task results on this node (see store::received_result): the count
  // of node starts in the high bits, so that orders never repeat across restarts.
  std::atomic<std::uint64_t> next_received{1};
  void unregistered(const std::string& run_id);         // and the run leaves memory
  std::string unregistered(const caf::actor_addr& actor);  // the same, by actor: its run, or empty

  // ---- New runs' first writes: whoever waits for the id hears it once the write counted.
  void counted(const std::string& run_id);
  void not_counted(const std::string& run_id, const std::string& why);
  void answer_when_counted(const std::string& run_id, const std::string& reply);

  // ---- Tasks: stored in the work queue only while the lease on the run's domain certainly
  // holds; one not confirmed is offered again by the publisher while the run still wants it.
  void send_task(const wire::task& t, const std::string& queue);
  // The same with the task already encoded (`bytes` = wire::encode(t)): a run's actor encodes the
  // next task while the result it follows from is being synced, so that only the publish is left
  // once it is on disk.
  void send_task(const wire::task& t, const std::string& queue, std::string bytes);
  void offer_again(broker::publish_failure&& f);
  run_context context_for(const config::agent_config& agent) const;

  void publish(const std::string& subject, const std::string& bytes) const;
  void reply_error(const std::string& reply, errc code, const std::string& message) const;

private:
  result<std::uint64_t> whole_history(const std::string& run, const store::run_record& record);
  std::once_flag fenced_once_;
};

} // namespace keel::actors
