#include "actors/orchestrator.hpp"
#include "actors/run_listing.hpp"

#include "actors/messages.hpp"
#include "actors/run_machine.hpp"
#include "actors/store_writer.hpp"
#include "actors/task_gate.hpp"
#include "actors/task_publisher.hpp"
#include "broker/run_log.hpp"
#include "broker/key_value.hpp"
#include "broker/work_queue.hpp"
#include "broker/connection.hpp"
#include "replication/lease_keeper.hpp"
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"
#include "runtime/log.hpp"
#include "runtime/run_store.hpp"
#include "runtime/step_trace.hpp"
#include "runtime/thread_pool.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <csignal>
#include <map>
#include <set>
#include <thread>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

namespace keel::actors {

using wire::value;

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("actors");
  return l;
}

// What every actor of the orchestrator shares; lives as long as the orchestrator.
struct shared_state {
  shared_state(const config::node_config& c, std::string id,
               const std::vector<std::shared_ptr<broker::connection>>& connections, store::run_store& s)
    : config(c), node_id(std::move(id)), subjects{c.prefix, c.ns}, nats(connections.at(0)), store(s) {
    limits.message_bytes_max = static_cast<std::size_t>(c.message_bytes_max);
    for (const auto& connection : connections) {
      auto& l = lanes.emplace_back();
      l.nats = connection;
    }
    // Writers once the lanes stand (a writer refers to its lane): the lanes are not moved again.
    for (auto& l : lanes) {
      store_writer::replicate_fn replicate;
      if (c.log_replicas > 0)
        replicate = [this, &l](const std::vector<store::run_transition>& batch) { return this->replicate(l, batch); };
      l.writer = std::make_unique<store_writer>(s, static_cast<std::size_t>(c.store_batch_max), std::move(replicate));
    }
  }

  // One path of steps through the node: a NATS connection (a member of the results queue group,
  // the run's publishes, its tasks) and a store writer. A run always takes the same lane, so what
  // it publishes arrives in order and its writes are in order; runs of different lanes share no
  // thread and no connection on the way of a step. Set up at start, never changed.
  struct lane {
    std::shared_ptr<broker::connection> nats;
    std::unique_ptr<broker::jetstream> js;
    std::unique_ptr<broker::run_log> log;  // with durability.log_replicas > 0
    std::unique_ptr<store_writer> writer;
    void publish(const std::string& subject, const std::string& bytes) const {
      if (subject.empty()) return;
      if (auto r = nats->publish(subject, bytes); !r)
        logger()->warn("publish on {} failed: {}", subject, r.error().message);
    }
  };
  lane& lane_of(std::string_view run_id) { return lanes[keel::lane_of(run_id, lanes.size())]; }

  const config::node_config& config;
  std::string node_id;
  broker::subjects subjects;
  std::shared_ptr<broker::connection> nats;  // lane 0's: requests about runs, invokes, listings
  store::run_store& store;
  std::vector<lane> lanes;
  std::unique_ptr<broker::jetstream> js;  // lane 0's
  // Idempotency keys the whole cluster agrees on (a replicated key-value bucket).
  std::unique_ptr<broker::key_value> keys;
  std::unique_ptr<task_publisher> publisher;
  wire::limits limits;

  // ---- The replicated run log and the leases (durability.log_replicas > 0)
  std::unique_ptr<broker::key_value> lease_bucket;
  std::unique_ptr<replication::lease_bucket> lease_view;  // the same, as the leases see it
  std::unique_ptr<replication::lease_keeper> leases;
  // Whether this node serves the runs of `domain` (the node id in a run id): its own, and those
  // of the nodes it took over. Without the log, only its own.
  bool serves(std::string_view domain) const {
    if (domain == node_id) return !leases || leases->holds(node_id);
    if (!leases || !leases->holds(std::string(domain))) return false;
    std::lock_guard lock{served_mutex};
    return served.count(std::string(domain)) > 0;
  }
  // Whether this node may answer for the runs of `domain` now: it serves them and its lease
  // certainly holds. A node paused past its lease has stale runs in memory and on disk (another
  // took them over and went on): asked whether a task is still wanted, or handed a result, it
  // must say nothing rather than "no longer wanted" or "not needed" (a worker would drop the
  // task the new owner awaits).
  bool answers_for(const std::string& domain) const {
    if (!serves(domain)) return false;
    return !leases || leases->valid(domain);
  }
  // The other nodes whose runs are in this node's store and go on here: a domain is added once
  // its takeover has read and fenced every run (until then, nobody answers for them).
  mutable std::mutex served_mutex;
  std::set<std::string> served;
  void serve(const std::string& domain) {
    std::lock_guard lock{served_mutex};
    served.insert(domain);
  }
  std::string log_subject(const std::string& run) const {
    return subjects.base() + ".log." + std::string(run_id{run}.owner()) + "." + run;
  }
  // The log sequence each run's last entry has, for the runs written since the start (a run not
  // in it is looked up in the log on its first write).
  std::mutex log_mutex;
  std::unordered_map<std::string, std::uint64_t> log_seq;
  void forget_log_seq(const std::string& run) {
    std::lock_guard lock{log_mutex};
    log_seq.erase(run);
    if (auto it = log_unconfirmed.find(run); it != log_unconfirmed.end()) {
      it->second.log->forget(it->second.ticket);
      log_unconfirmed.erase(it);
    }
  }
  // A run out of memory: its last entry confirmed (sent again if need be) and, for a run that
  // completed or was cancelled, its log cut to one entry (its final state and whole history),
  // off the run's way, on the log's own thread.
  std::unique_ptr<thread_pool> log_pool;
  // Asks other orchestrators whether a run exists (off the orchestrator actor's way).
  std::unique_ptr<thread_pool> ask_pool;
  void left_memory(const std::string& run) {
    if (!log_pool) return;
    log_pool->submit([this, run] {
      if (auto settled = settle(run); !settled)
        logger()->warn("run {}: its last write is not confirmed in the run log: {}", run, settled.error().message);
      auto record = store.get(run, false);
      bool finished = record && *record && ((*record)->status == store::run_status::completed ||
                                            (*record)->status == store::run_status::cancelled);
      if (finished) {
        // Its last entry becomes its whole history (final record and every event), so that an
        // orchestrator that takes its runs over serves the same history; then what came before
        // goes. Only by a node that still holds the run's lease, appending where its own last
        // entry is: a node that lost the run (its final write stored here but refused by the
        // log) must not cut the log of the run as its new owner has it.
        auto whole = whole_history(run, **record);
        if (!whole) logger()->debug("run {}: its log was not cut: {}", run, whole.error().message);
        else if (auto r = lane_of(run).log->purge_before(log_subject(run), *whole); !r)
          logger()->debug("run {}: its log was not cut: {}", run, r.error().message);
      }
      // Its position is dropped unless the run came back into memory meanwhile.
      if (find(run)) return;
      std::lock_guard lock{log_mutex};
      if (!log_unconfirmed.count(run) && !settling.count(run)) log_seq.erase(run);
    });
  }
  // Appends the run's final record with all its events after its last entry as this node wrote
  // it: the sequence of the new entry. Refused (conflict) when another wrote since.
  result<std::uint64_t> whole_history(const std::string& run, const store::run_record& record) {
    std::string domain(run_id{run}.owner());
    if (!answers_for(domain)) return make_error(errc::conflict, "this node does not hold the lease on the runs of " + domain);
    std::optional<std::uint64_t> known;
    {
      std::lock_guard lock{log_mutex};
      if (auto it = log_seq.find(run); it != log_seq.end() && it->second > 0) known = it->second;
    }
    if (!known) return make_error(errc::not_found, "where its last entry is, is not known here");
    auto events = store.events(run);
    if (!events) return events.error();
    store::run_transition whole;
    whole.record = record;
    whole.events = std::move(*events);
    auto& log = *lane_of(run).log;
    auto appended = log.append({broker::run_log::entry{log_subject(run), store::encode_transitions({&whole}),
                                                       static_cast<std::int64_t>(*known), node_id}});
    if (!appended.at(0)) return appended[0].error();
    std::lock_guard lock{log_mutex};
    if (log_seq.count(run)) log_seq[run] = *appended[0];
    return *appended[0];
  }
  // An entry sent without waiting: writes that need no sync of their own (what follows from a
  // result the log holds already; replayed from it if they are lost). The run's next write first
  // learns where it landed, and sends it again if the broker did not confirm it.
  struct unconfirmed {
    broker::run_log* log = nullptr;
    std::uint64_t ticket = 0;
    broker::run_log::entry entry;
  };
  std::unordered_map<std::string, unconfirmed> log_unconfirmed;  // guarded by log_mutex
  // A run being settled by one thread: another that needs its position waits for it (else it
  // could ask the log before the unconfirmed entry is stored, and write from a stale position).
  std::set<std::string> settling;  // guarded by log_mutex
  std::condition_variable settled_cv;
  result<void> settle(const std::string& run) {
    std::optional<unconfirmed> u;
    {
      std::unique_lock lock{log_mutex};
      settled_cv.wait(lock, [&] { return !settling.count(run); });
      auto it = log_unconfirmed.find(run);
      if (it == log_unconfirmed.end()) return success();
      u = std::move(it->second);
      log_unconfirmed.erase(it);
      settling.insert(run);
    }
    struct done_settling {
      shared_state* s;
      const std::string& run;
      ~done_settling() {
        {
          std::lock_guard lock{s->log_mutex};
          s->settling.erase(run);
        }
        s->settled_cv.notify_all();
      }
    } done{this, run};
    auto seq = u->ticket ? u->log->wait(u->ticket) : result<std::uint64_t>(make_error(errc::timeout, "not confirmed"));
    if (!seq && seq.error().code != errc::conflict) {
      // Not confirmed: sent again (a copy the broker stored already is recognised and confirmed).
      auto again = u->log->append({u->entry});
      seq = std::move(again.front());
    }
    if (!seq) {
      forget_log_seq(run);
      return make_error(seq.error().code, "the run log: " + seq.error().message);
    }
    log_seq_known(run, *seq);
    return success();
  }
  void log_seq_known(const std::string& run, std::uint64_t seq) {
    std::lock_guard lock{log_mutex};
    log_seq[run] = seq;
  }
  std::once_flag fenced_once;
  // Another orchestrator took this node's runs: it stops (and rejoins as a new member when
  // started again); the log refuses whatever it would still write.
  void fenced(const std::string& domain, const std::string& why) {
    std::call_once(fenced_once, [&] {
      logger()->critical("the runs of {} are no longer this node's ({}): stopping", domain, why);
      ::kill(::getpid(), SIGTERM);
    });
  }
  // The results of another node's runs, once this node serves them (tasks that node sent name
  // its results subject): one member of the results queue group per lane, as for its own.
  broker::handler on_result;
  std::mutex subscriptions_mutex;
  std::vector<std::unique_ptr<broker::subscription>> domain_subscriptions;
  result<void> subscribe_results(const std::string& domain) {
    for (auto& l : lanes) {
      auto s = l.nats->subscribe(subjects.node_results(domain), "results", on_result);
      if (!s) return s.error();
      std::lock_guard lock{subscriptions_mutex};
      domain_subscriptions.push_back(std::move(*s));
    }
    return success();
  }
  // Sends a batch to the log, one entry per run, each where the run's last entry left it, and
  // gives back what waits for the confirmations (the store writes the batch meanwhile). An entry
  // the broker did not confirm is sent again before the run's next write (the store has it;
  // the log must too, in the same place); one it refused means the run's log moved on without
  // this node.
  result<store_writer::replicated_fn> replicate(lane& l, const std::vector<store::run_transition>& batch) {
    std::vector<std::string> runs;
    std::unordered_map<std::string, std::vector<const store::run_transition*>> by_run;
    for (const auto& t : batch) {
      auto& of_run = by_run[t.record.run_id];
      if (of_run.empty()) runs.push_back(t.record.run_id);
      of_run.push_back(&t);
    }
    struct sent {
      std::string run;
      std::uint64_t ticket;
      broker::run_log::entry entry;
    };
    auto waiting = std::make_shared<std::vector<sent>>();
    for (const auto& run : runs) {
      std::string domain(run_id{run}.owner());
      if (!serves(domain)) return make_error(errc::conflict, "run " + run + " is no longer this node's (taken over)");
      // Nor while the lease is not certain: a node paused past its lease, whose write was refused
      // because another took the run over, would otherwise ask the log where the run now ends and
      // append after the new owner's fence before learning its lease is gone; the new owner's next
      // write would then be refused. Written again once the lease is renewed (or the node stops).
      if (!answers_for(domain))
        return make_error(errc::unavailable, "run " + run + ": this node's lease on the runs of " + domain + " is not certain now");
      if (auto settled = settle(run); !settled) return settled.error();
      std::optional<std::uint64_t> known;
      {
        std::lock_guard lock{log_mutex};
        if (auto it = log_seq.find(run); it != log_seq.end()) known = it->second;
      }
      if (!known) {
        auto last = l.log->last_sequence(log_subject(run));
        if (!last) return last.error();
        known = *last;
      }
      broker::run_log::entry e{log_subject(run), store::encode_transitions(by_run[run]), static_cast<std::int64_t>(*known), node_id};
      auto ticket = l.log->send(e);
      if (!ticket) return make_error(ticket.error().code, "the run log: " + ticket.error().message);
      bool unsynced = std::none_of(by_run[run].begin(), by_run[run].end(), [](const store::run_transition* t) { return t->sync; });
      if (unsynced) {
        std::lock_guard lock{log_mutex};
        log_unconfirmed[run] = unconfirmed{l.log.get(), *ticket, std::move(e)};
        continue;
      }
      waiting->push_back({run, *ticket, std::move(e)});
    }
    return store_writer::replicated_fn([this, &l, waiting]() -> result<void> {
      result<void> outcome = success();
      for (auto& w : *waiting) {
        auto seq = l.log->wait(w.ticket);
        if (seq) {
          log_seq_known(w.run, *seq);
          continue;
        }
        if (seq.error().code == errc::conflict) {
          forget_log_seq(w.run);
          logger()->warn("run {}: the run log refused a write after sequence {}", w.run, w.entry.expected_last);
        } else {
          std::lock_guard lock{log_mutex};
          log_unconfirmed[w.run] = unconfirmed{l.log.get(), 0, std::move(w.entry)};
        }
        if (outcome) outcome = make_error(seq.error().code, "the run log: " + seq.error().message);
      }
      // Confirmed, but acknowledged only while the lease on the run's domain certainly held when
      // the confirmation came: a node paused past its lease may have written after another took
      // its runs over and read the log (a new run's first entry has nothing to be fenced by).
      // Not acknowledged, the write is asked again (an idempotency key finds its run).
      if (outcome && leases) {
        for (const auto& w : *waiting) {
          std::string domain(run_id{w.run}.owner());
          if (leases->valid(domain)) continue;
          outcome = make_error(errc::unavailable, "the lease on the runs of " + domain +
                                                    " was not renewed in time for this write to count");
          break;
        }
      }
      return outcome;
    });
  }
  std::atomic<std::size_t> in_memory{0};
  // The order of arrival of task results on this node (see store::received_result): the count
  // of node starts in the high bits, so that orders never repeat across restarts.
  std::atomic<std::uint64_t> next_received{1};

  // Run actors in memory, the one registry of them: written by the orchestrator actor, read by
  // NATS threads so that results and acknowledgements go straight to their run.
  std::mutex registry_mutex;
  std::unordered_map<std::string, caf::actor> registry;
  std::unordered_map<caf::actor_id, std::string> run_of_actor;  // the same, by actor: O(1) on its exit
  void registered(const std::string& run_id, const caf::actor& a) {
    std::lock_guard lock{registry_mutex};
    if (auto old = registry.find(run_id); old != registry.end()) run_of_actor.erase(old->second.id());
    registry[run_id] = a;
    run_of_actor[a.id()] = run_id;
  }
  void unregistered(const std::string& run_id) {
    std::lock_guard lock{registry_mutex};
    if (auto it = registry.find(run_id); it != registry.end()) {
      run_of_actor.erase(it->second.id());
      registry.erase(it);
    }
    in_flight.erase(run_id);
    starting.erase(run_id);
    left_memory(run_id);
  }
  // Unregisters the run this actor served; returns its id, or empty when it served none now.
  std::string unregistered(const caf::actor_addr& actor) {
    std::lock_guard lock{registry_mutex};
    auto by_actor = run_of_actor.find(actor.id());
    if (by_actor == run_of_actor.end()) return {};
    std::string run_id = std::move(by_actor->second);
    run_of_actor.erase(by_actor);
    auto it = registry.find(run_id);
    if (it == registry.end() || it->second.address() != actor) return {};  // replaced already
    registry.erase(it);
    in_flight.erase(run_id);
    left_memory(run_id);
    return run_id;
  }
  std::vector<caf::actor> all_actors() {
    std::lock_guard lock{registry_mutex};
    std::vector<caf::actor> out;
    for (const auto& [run, actor] : registry) out.push_back(actor);
    return out;
  }
  caf::actor find(const std::string& run_id) {
    std::lock_guard lock{registry_mutex};
    auto it = registry.find(run_id);
    return it == registry.end() ? caf::actor{} : it->second;
  }

  // The task each run in memory has in flight (a run has at most one), so that a worker can ask
  // whether an attempt is still wanted without a message to the run's actor. Set just before the
  // task is stored in the work queue; marked once its result is received.
  struct in_flight_task {
    std::uint64_t step = 0;
    std::uint32_t attempt = 0;
    bool result_received = false;
  };
  std::unordered_map<std::string, in_flight_task> in_flight;  // guarded by registry_mutex

  // Set whether or not the run's actor is registered yet (a recovered run marks its queued task
  // from its actor's start, which may come before); dropped when the run leaves memory.
  void sent(const std::string& run_id, std::uint64_t step, std::uint32_t attempt) {
    std::lock_guard lock{registry_mutex};
    in_flight[run_id] = in_flight_task{step, attempt, false};
  }
  // Marks the step's result received; false when that step is not in flight (or its result came).
  bool received(const std::string& run_id, std::uint64_t step) {
    std::lock_guard lock{registry_mutex};
    auto it = in_flight.find(run_id);
    if (it == in_flight.end() || it->second.step != step || it->second.result_received) return false;
    it->second.result_received = true;
    return true;
  }
  // The step's result could not be written: a copy offered again is taken, not called late.
  void receive_failed(const std::string& run_id, std::uint64_t step) {
    std::lock_guard lock{registry_mutex};
    if (auto it = in_flight.find(run_id); it != in_flight.end() && it->second.step == step) it->second.result_received = false;
  }
  // Whether the run in memory has certainly no use for a result of `step`: its result is written
  // or another step is in flight. Not in memory, or still awaiting it (a write of it failed), the
  // answer is no: the worker offers it again, and keeps the task.
  bool result_not_needed(const std::string& run_id, std::uint64_t step) {
    std::lock_guard lock{registry_mutex};
    if (!registry.count(run_id) || starting.count(run_id)) return false;
    auto it = in_flight.find(run_id);
    return it == in_flight.end() || it->second.step != step || it->second.result_received;
  }
  // Runs whose actor is made but has not yet said what it has in flight (a run loaded from disk
  // asks the broker first): a result or question for one is asked again, not taken as late.
  std::unordered_set<std::string> starting;  // guarded by registry_mutex
  void starting_now(const std::string& run_id) {
    std::lock_guard lock{registry_mutex};
    starting.insert(run_id);
  }
  void started(const std::string& run_id) {
    std::lock_guard lock{registry_mutex};
    starting.erase(run_id);
  }
  bool is_starting(const std::string& run_id) {
    std::lock_guard lock{registry_mutex};
    return starting.count(run_id) > 0;
  }
  // Runs whose actor was dropped because a write failed (a full disk): memory was ahead of disk.
  // Once the store writes again they are loaded from what is on disk and go on by themselves;
  // nothing else (no result, no request) may come to wake them.
  std::mutex stalled_mutex;
  std::unordered_map<std::string, caf::actor_addr> stalled_runs;  // run -> the actor dropped; guarded by stalled_mutex
  void stalled(const std::string& run_id, const caf::actor_addr& dropped) {
    std::lock_guard lock{stalled_mutex};
    stalled_runs[run_id] = dropped;
  }
  // The runs to load again: those whose dropped actor is gone (one still leaving waits for the
  // next look; one loaded again meanwhile, by a request or a result, is left alone).
  std::vector<std::string> take_stalled() {
    std::vector<std::string> out;
    std::lock_guard lock{stalled_mutex};
    for (auto it = stalled_runs.begin(); it != stalled_runs.end();) {
      auto actor = find(it->first);
      if (actor && actor.address() == it->second) {
        ++it;
        continue;
      }
      if (!actor) out.push_back(it->first);
      it = stalled_runs.erase(it);
    }
    return out;
  }
  // New runs whose first write is not yet confirmed (and counted: see lease_keeper::valid).
  // Until it is, an invoke naming the run by its idempotency key waits for it: answered with the
  // id once the write counted, told to ask again if it failed, never given an id that may name a
  // run no orchestrator will serve.
  std::mutex uncounted_mutex;
  std::unordered_map<std::string, std::vector<std::string>> uncounted;  // run -> replies waiting; guarded
  std::atomic<std::size_t> uncounted_size{0};
  void creating(const std::string& run_id) {
    std::lock_guard lock{uncounted_mutex};
    uncounted.try_emplace(run_id);
    uncounted_size = uncounted.size();
  }
  // The replies waiting for the run's first write; with `counted`, the run stops being waited on.
  std::vector<std::string> take_waiting(const std::string& run_id, bool counted) {
    if (uncounted_size.load(std::memory_order_relaxed) == 0) return {};
    std::lock_guard lock{uncounted_mutex};
    auto it = uncounted.find(run_id);
    if (it == uncounted.end()) return {};
    auto replies = std::move(it->second);
    it->second.clear();
    if (counted) uncounted.erase(it);
    uncounted_size = uncounted.size();
    return replies;
  }
  // The run's write counted: whoever waits for its id hears it.
  void counted(const std::string& run_id) {
    auto replies = take_waiting(run_id, true);
    if (replies.empty()) return;
    auto bytes = wire::encode(wire::invoke_reply{run_id, false});
    for (const auto& r : replies) publish(r, bytes);
  }
  // The run's first write failed or did not count: whoever waits is told to ask again.
  void not_counted(const std::string& run_id, const std::string& why) {
    for (const auto& r : take_waiting(run_id, false))
      reply_error(r, errc::unavailable, "run " + run_id + " was not written (" + why + "): ask again");
  }
  bool is_counted(const std::string& run_id) {
    std::lock_guard lock{uncounted_mutex};
    return !uncounted.count(run_id);
  }
  // Answers `reply` with the run's id now if its first write counted, else once it does.
  void answer_when_counted(const std::string& run_id, const std::string& reply) {
    {
      std::lock_guard lock{uncounted_mutex};
      if (auto it = uncounted.find(run_id); it != uncounted.end()) {
        if (it->second.size() >= 1024) {
          reply_error(reply, errc::unavailable, "run " + run_id + " is being created: ask again");
          return;
        }
        it->second.push_back(reply);
        return;
      }
    }
    publish(reply, wire::encode(wire::invoke_reply{run_id, false}));
  }
  bool any_stalled() {
    std::lock_guard lock{stalled_mutex};
    return !stalled_runs.empty();
  }
  // True: wanted; false: not; empty: the run is not in memory, or still starting (the caller
  // reads the store).
  std::optional<bool> wanted(const std::string& run_id, std::uint64_t step, std::uint32_t attempt) {
    std::lock_guard lock{registry_mutex};
    if (!registry.count(run_id) || starting.count(run_id)) return std::nullopt;
    auto it = in_flight.find(run_id);
    return it != in_flight.end() && it->second.step == step && it->second.attempt == attempt &&
           !it->second.result_received;
  }
  bool still_in_flight(const std::string& run_id, std::uint64_t step, std::uint32_t attempt) {
    return wanted(run_id, step, attempt).value_or(false);
  }

  // Stores a task in the work queue: sent at once without waiting for the broker's
  // confirmation; one the broker refuses or does not confirm goes to the publisher's threads,
  // which offer it again for as long as the run still wants it.
  // A task goes only while the lease on its run's domain certainly holds: a node paused past its
  // lease wakes up with tasks due (a retry whose wait ended, a step whose write was confirmed
  // just before the pause) for runs another node took over and sent again; sent, they would run
  // twice. Held meanwhile, such a task goes once the lease is renewed, or never (taken over).
  void send_task(const wire::task& t, const std::string& queue) {
    sent(t.run_id, t.step, t.attempt);
    auto id = keel::task_id{t.run_id, t.step, t.attempt}.to_string();
    auto subject = subjects.task(queue, t.run_id, t.step);
    auto bytes = wire::encode(t);
    if (std::string domain = run_id{t.run_id}.owner(); leases && !answers_for(domain)) {
      logger()->info("task {} waits: this node's lease on the runs of {} is not certain now", id, domain);
      offer_again({std::move(subject), std::move(bytes), std::move(id), {}});
      return;
    }
    if (lane_of(t.run_id).js->publish_async(subject, bytes, id, config.request_timeout_ms)) return;
    offer_again({std::move(subject), std::move(bytes), std::move(id), {}});
  }
  void offer_again(broker::publish_failure&& f) {
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
                       [this, run, step, attempt, domain] { return serves(domain) && still_in_flight(run, step, attempt); },
                       [this, domain] { return !leases || answers_for(domain); }});
  }

  run_context context_for(const config::agent_config& agent) const {
    (void)agent;
    run_context c;
    c.results_subject = subjects.node_results(node_id);
    c.step_retry_ms = config.step_retry_ms;
    c.retry_backoff_max_ms = config.retry_backoff_max_ms;
    c.inline_bytes_max = static_cast<std::size_t>(config.task_inline_bytes_max);
    return c;
  }

  void publish(const std::string& subject, const std::string& bytes) const {
    if (subject.empty()) return;
    if (auto r = nats->publish(subject, bytes); !r)
      logger()->warn("publish on {} failed: {}", subject, r.error().message);
  }
  void reply_error(const std::string& reply, errc code, const std::string& message) const {
    publish(reply, wire::encode_error(make_error(code, message)));
  }
};

// The run as clients see it (keel show, keel runs).
value summary(const store::run_record& r) {
  value out{{"run_id", r.run_id},         {"agent", r.agent},
            {"status", store::to_string(r.status)}, {"session_id", r.session_id},
            {"created_ms", r.created_ms}, {"updated_ms", r.updated_ms},
            {"last_event_seq", r.last_event_seq}};
  auto state = store::run_state_from_value(r.state);
  if (!state) {
    // Damaged on disk: the header is shown, with what is wrong (or what a failed load recorded).
    out["error"] = r.state.is_object() && r.state.contains("error") && r.state["error"].is_string()
                     ? r.state["error"].get<std::string>()
                     : state.error().message;
    return out;
  }
  const auto& s = *state;
  out["steps"] = s.steps;
  out["usage"] = value{{"input_tokens", s.usage.input_tokens}, {"output_tokens", s.usage.output_tokens},
                       {"cache_read_tokens", s.usage.cache_read_tokens}, {"cache_write_tokens", s.usage.cache_write_tokens}};
  out["input"] = s.input;
  if (!s.provider.empty()) out["provider"] = s.provider;  // this run's own, when it overrides the agent's
  if (!s.model.empty()) out["model"] = s.model;
  if (s.output) out["output"] = *s.output;
  if (s.stop_reason) out["stop_reason"] = *s.stop_reason;
  if (s.error) out["error"] = *s.error;
  if (s.suspended) out["waiting"] = value{{"step_key", s.suspended->step_key}, {"form", s.suspended->form}};
  // A step failing for a passing reason: what it waits on, and when it is tried next.
  if (s.pending && s.pending->retry)
    out["retrying"] = value{{"reason", s.pending->retry->reason}, {"next_try_ms", s.pending->retry->next_try_ms},
                            {"waiting", s.pending->retry->waiting}};
  return out;
}

// An agent as clients see it (keel agents, the dashboard): what it runs on and what it may do.
// No secret: the key file's path is not shown, nor the system prompt past its start.
value describe_agent(const config::agent_config& a) {
  auto prompt = a.system_prompt.size() > 2000 ? a.system_prompt.substr(0, 2000) + "…" : a.system_prompt;
  value out{{"id", a.id}, {"queue", a.queue}, {"provider", a.provider}, {"model", a.model},
            {"tools", a.tools}, {"max_steps", a.max_steps}, {"max_tokens", a.max_tokens},
            {"stream", a.stream}, {"system_prompt", prompt}};
  if (!a.base_url.empty()) out["base_url"] = a.base_url;
  out["sandbox"] = value{{"env", a.sandbox_env}, {"network", a.network}, {"workspace", a.workspace},
                         {"workspace_scope", a.workspace_scope}, {"exec_security", a.exec_security},
                         {"allowlist", a.allowlist}, {"file_approval", a.file_approval},
                         {"path_restriction", a.path_restriction}, {"exec_timeout_ms", a.exec_timeout_ms},
                         {"cpu_seconds_max", a.cpu_seconds_max}, {"memory_bytes_max", a.memory_bytes_max},
                         {"processes_max", a.processes_max}};
  return out;
}

enum class reply_kind { none, invoke, resume, cancel };

// Defaults and bounds of the request fields (docs/PROTOCOL.md lists them).
constexpr std::size_t history_limit_default = 500;
constexpr std::size_t history_limit_max = 1000;
constexpr std::size_t reason_chars_max = 4096;
constexpr std::size_t idempotency_key_bytes_max = 256;

// An optional unsigned field: its default when absent, clamped into [low, high]; any other type
// is an error that names the field.
result<std::uint64_t> count_field(const value& body, const char* key, std::uint64_t fallback, std::uint64_t low,
                                  std::uint64_t high) {
  if (!body.contains(key)) return fallback;
  const value& v = body[key];
  if (!v.is_number_unsigned())
    return make_error(errc::invalid_argument, std::string(key) + " must be an unsigned integer, got " + v.dump());
  return std::clamp<std::uint64_t>(v.get<std::uint64_t>(), low, high);
}

// Clients waiting for a run to stop running (a wait request) are answered once it is suspended or
// has ended, after the write that says so. They are memory only: after a restart a client asks
// again (its request times out first).
constexpr std::size_t waiters_max = 256;
// How often runs stopped by a failed write (a full disk) look whether the store writes again.
constexpr std::int64_t stalled_check_ms = 500;

std::string run_reply(const store::run_record& r) {
  return wire::pack(value{{"v", wire::protocol_version}, {"type", "run"}, {"run", summary(r)}});
}

struct run_actor_state {
  std::optional<run_machine> machine;
  std::string queue;  // the agent's worker queue
  std::uint64_t received_through = 0;  // results received up to this order were read from disk
  std::vector<std::string> waiters;    // reply subjects of wait requests
  static inline const char* name = "keel.run";
};

using run_actor_type = caf::stateful_actor<run_actor_state>;

// Writes the transition, then (on the writer's thread, in order) publishes events, replies,
// stores tasks in the work queue; a run with nothing left to do asks to leave memory. With a
// gate (the step's result already being written on its own), the task goes out as soon as that
// write is done, without waiting for this one.
// A tool task of a run in a session also carries the approvals remembered for the session.
void add_session_rules(shared_state& shared, const store::run_record& r, std::vector<wire::task>& tasks) {
  if (r.session_id.empty()) return;
  for (auto& t : tasks) {
    if (t.kind != wire::task_kind::tool) continue;
    auto rules = shared.store.get_list(session_rules_key(r.agent, r.session_id));
    if (!rules) {
      logger()->warn("run {}: the session's remembered approvals could not be read: {}", r.run_id,
                     rules.error().message);
      continue;
    }
    for (auto& rule : *rules) t.payload["allow_rules"].push_back(std::move(rule));
  }
}

void perform(run_actor_type* self, const std::shared_ptr<shared_state>& shared, effects e,
             const std::string& reply_to, reply_kind kind, const std::shared_ptr<task_gate>& gate = nullptr) {
  const run_machine& machine = *self->state.machine;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  auto& lane = shared->lane_of(machine.run_id());
  std::string reply_bytes;
  if (kind == reply_kind::invoke) reply_bytes = wire::encode(wire::invoke_reply{machine.run_id(), true});
  if (kind == reply_kind::resume && e.resume_reply) reply_bytes = wire::encode(*e.resume_reply);
  if (kind == reply_kind::cancel) reply_bytes = run_reply(machine.record());
  if (!e.changed) {
    if (!e.transition.received_done.empty()) {  // results the run did not apply: only removed
      e.transition.entries_only = true;
      e.transition.sync = false;  // if it is lost, a replay drops them again
      e.transition.record.run_id = machine.run_id();
      lane.writer->submit_async(std::move(e.transition), [](const result<void>&) {});
    }
    if (reply_to.empty()) return;
    lane.writer->after_pending([shared, &lane, reply_to, reply_bytes](const result<void>&) {
      lane.publish(reply_to, reply_bytes);
    });
    return;
  }
  // The run stops running with this transition: whoever waits for that hears it once it is written.
  std::vector<std::string> waiters;
  std::string waiters_bytes;
  if (e.leave_memory && !self->state.waiters.empty()) {
    waiters = std::move(self->state.waiters);
    self->state.waiters.clear();
    waiters_bytes = run_reply(machine.record());
  }
  std::string events_subject = shared->subjects.run_events(machine.run_id());
  std::vector<std::string> events;
  for (const auto& ev : e.transition.events) events.push_back(wire::encode(ev));
  std::vector<wire::task> tasks = std::move(e.tasks);
  add_session_rules(*shared, machine.record(), tasks);
  auto seq = e.transition.record.last_event_seq;
  step_trace::mark(step_trace::transition_built);
  if (gate && e.task_delay_ms == 0 && !tasks.empty()) {
    std::vector<std::string> encoded;
    for (const auto& t : tasks) encoded.push_back(wire::encode(t));
    gate->on_ready([shared, tasks = std::move(tasks), queue = self->state.queue] {
      step_trace::mark(step_trace::publishing);
      for (const auto& t : tasks) shared->send_task(t, queue);
      step_trace::mark(step_trace::task_published);
    });
    tasks.clear();
  }
  lane.writer->submit(
    std::move(e.transition),
    [shared, &lane, me, run_id = machine.run_id(), events_subject, events = std::move(events), tasks = std::move(tasks),
     delay = e.task_delay_ms, leave = e.leave_memory, seq, reply_to,
     reply_bytes, queue = self->state.queue, waiters = std::move(waiters),
     waiters_bytes = std::move(waiters_bytes)](const result<void>& written) {
      if (!written) {
        // A full disk is errc::unavailable (asked again, it may go); any other failure is io.
        auto code = written.error().code == errc::unavailable ? errc::unavailable : errc::io;
        shared->reply_error(reply_to, code, "the run store could not write: " + written.error().message);
        shared->not_counted(run_id, written.error().message);
        for (const auto& w : waiters)
          shared->reply_error(w, code, "the run store could not write: " + written.error().message);
        // Memory is now ahead of disk: drop the actor so the run reloads from what is written,
        // by itself once the store writes again.
        shared->stalled(run_id, me.address());
        caf::anon_send_exit(me, caf::exit_reason::user_shutdown);
        return;
      }
      shared->counted(run_id);
      // Events before the task they announce: a watcher sees "step started" before the text
      // the step streams (on one server, the order of publishing is the order of delivery).
      step_trace::mark(step_trace::publishing);
      for (const auto& bytes : events) lane.publish(events_subject, bytes);
      for (const auto& t : tasks) {
        if (delay > 0) caf::delayed_anon_send(me, std::chrono::milliseconds(delay), send_atom::value, t);
        else shared->send_task(t, queue);
      }
      step_trace::mark(step_trace::task_published);
      lane.publish(reply_to, reply_bytes);
      for (const auto& w : waiters) lane.publish(w, waiters_bytes);
      if (leave) caf::anon_send(me, idle_atom::value, seq);
    });
}

caf::behavior run_actor(run_actor_type* self, std::shared_ptr<shared_state> shared,
                        store::run_record record, const config::agent_config* agent, bool start_now,
                        bool from_disk, std::string invoke_reply) {
  self->state.machine.emplace(std::move(record), *agent, shared->context_for(*agent));
  self->state.queue = agent->queue;
  shared->in_memory += 1;
  self->attach_functor([shared] { shared->in_memory -= 1; });
  // Results recorded whose consequences were not written (a crash between the two writes of a
  // step) are applied now, and what was due then goes out.
  bool recovered = false;
  if (from_disk) {
    auto& machine = *self->state.machine;
    auto tail = shared->store.journal(machine.run_id(), machine.record().last_journal_seq + 1);
    auto received = shared->store.received(machine.run_id());
    if (!tail || !received) {
      logger()->error("run {}: cannot read its journal: {}", machine.run_id(),
                      (!tail ? tail.error() : received.error()).message);
    } else if (!tail->empty() || !received->empty()) {
      for (const auto& r : *received) self->state.received_through = std::max(self->state.received_through, r.order);
      auto e = machine.recover(*tail, *received);
      recovered = e.changed;
      perform(self, shared, std::move(e), {}, reply_kind::none);
    }
  }
  if (start_now && !recovered) {
    // A step in flight when this node stopped: its task may still be in the work queue (queued,
    // or running on a worker that will hand the result over): then it is not sent again.
    bool queued = false;
    const auto& pending = self->state.machine->state().pending;
    if (from_disk && pending && store::is_active(self->state.machine->record().status)) {
      auto subject = shared->subjects.task(agent->queue, self->state.machine->run_id(), pending->step);
      auto held = shared->js->last_message(shared->subjects.tasks_stream(), subject);
      if (!held) logger()->warn("run {}: cannot tell whether step {} is still queued ({}); it is sent again",
                                self->state.machine->run_id(), pending->step, held.error().message);
      // Held, and the attempt due: an older attempt still there (a copy being handed out again)
      // is refused by the run when a worker asks, so the attempt due is sent.
      std::uint64_t held_attempt = 0;
      if (held && *held) {
        auto task = wire::unpack(**held, shared->limits);
        if (task && task->is_object()) held_attempt = task->value("attempt", std::uint64_t{0});
        queued = held_attempt == pending->attempt;
      }
      logger()->info("run {}: step {} attempt {} was in flight; the queue holds {}: {}", self->state.machine->run_id(),
                     pending->step, pending->attempt,
                     held_attempt ? "attempt " + std::to_string(held_attempt) : std::string("none of it"),
                     queued ? "its result is awaited" : "sent again");
      if (queued) shared->sent(self->state.machine->run_id(), pending->step, pending->attempt);
    }
    perform(self, shared, self->state.machine->start(queued), invoke_reply,
            invoke_reply.empty() ? reply_kind::none : reply_kind::invoke);
  }
  shared->started(self->state.machine->run_id());
  return {
    [=](resume_atom, const wire::resume_request& request, const std::string& reply) {
      auto e = self->state.machine->on_resume(request);
      if (!e) shared->reply_error(reply, e.error().code, e.error().message);
      else perform(self, shared, std::move(*e), reply, reply_kind::resume);
      return true;
    },
    [=](result_atom, std::uint64_t order, const std::string& message, const std::shared_ptr<task_gate>& gate) {
      step_trace::mark(step_trace::result_in_actor);
      // The result is being written as it came (see the results subscription); what follows
      // from it is worked out meanwhile, and the next task goes as soon as it is on disk.
      if (order <= self->state.received_through) return true;  // applied from disk already
      auto& machine = *self->state.machine;
      auto applied = machine.apply_received({order, message});
      if (!applied) {
        // Unreadable: dropped, as a replay would. The step stays in flight and its lease sends
        // it again.
        logger()->warn("run {}: a task result was dropped: {}", machine.run_id(), applied.error().message);
        applied = effects{};
      }
      if (!applied->changed) applied->transition.received_done = {order};  // late or repeated
      perform(self, shared, std::move(*applied), {}, reply_kind::none, gate);
      return true;
    },
    [=](cancel_atom, const std::string& reason, const std::string& by, const std::string& reply) {
      auto e = self->state.machine->cancel(reason, by);
      if (!e) shared->reply_error(reply, e.error().code, e.error().message);
      else perform(self, shared, std::move(*e), reply, reply_kind::cancel);
      return true;
    },
    [=](wait_atom, const std::string& reply) {
      const auto& r = self->state.machine->record();
      if (store::is_active(r.status)) {
        if (self->state.waiters.size() >= waiters_max)
          shared->reply_error(reply, errc::unavailable, "run " + r.run_id + " has " + std::to_string(waiters_max) +
                                                          " waiting already; ask again later");
        else
          self->state.waiters.push_back(reply);
        return true;
      }
      // Stopped already; answered after what is being written, which may be what stopped it.
      auto& lane = shared->lane_of(r.run_id);
      lane.writer->after_pending([shared, &lane, reply, bytes = run_reply(r)](const result<void>&) {
        lane.publish(reply, bytes);
      });
      return true;
    },
    [=](retry_atom, const std::string& by, const std::string& reply) {
      auto e = self->state.machine->retry(by);
      if (!e) shared->reply_error(reply, e.error().code, e.error().message);
      else perform(self, shared, std::move(*e), reply, reply_kind::cancel);
      return true;
    },
    [=](send_atom, const wire::task& t) {
      // A retry whose wait is over: sent unless the step moved on meanwhile.
      if (self->state.machine->wants(t.step, t.attempt)) shared->send_task(t, self->state.queue);
    },
    [=](idle_atom, std::uint64_t seq) {
      // Leave memory only if nothing happened since the write that made the run idle.
      const auto& r = self->state.machine->record();
      bool idle = !store::is_active(r.status);
      if (idle && r.last_event_seq == seq) self->quit();
    },
  };
}

struct orchestrator_state {
  std::unordered_map<std::string, std::string> idempotency;  // agent/key -> run, while in memory
  std::unordered_map<std::string, std::string> key_of_run;
  std::int64_t stalled_warned_ms = 0;
  static inline const char* name = "keel.orchestrator";
};

using orchestrator_type = caf::stateful_actor<orchestrator_state>;

caf::behavior orchestrator_actor(orchestrator_type* self, std::shared_ptr<shared_state> shared) {
  // When the orchestrator stops, so do its run actors (it tells each). A run actor's exit
  // (leaving memory, or a failure) comes as a down message; a stop request (anon_send_exit)
  // names the orchestrator itself as its source.
  self->set_exit_handler([=](caf::exit_msg& exit) {
    if (exit.source != self->address()) return;
    // Run actors are not linked (a link costs a scan of every link when one exits): stopped here.
    for (const auto& actor : shared->all_actors()) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    self->quit(exit.reason);
  });
  self->set_down_handler([=](caf::down_msg& down) {
    auto run_id = shared->unregistered(down.source);
    if (run_id.empty()) return;  // replaced already by an actor loaded again
    if (auto k = self->state.key_of_run.find(run_id); k != self->state.key_of_run.end()) {
      self->state.idempotency.erase(k->second);
      self->state.key_of_run.erase(k);
    }
  });
  auto spawn_run = [=](store::run_record record, const config::agent_config* agent, bool start_now,
                       bool from_disk, const std::string& invoke_reply) {
    std::string id = record.run_id;
    if (from_disk) shared->starting_now(id);
    auto actor = self->spawn(run_actor, shared, std::move(record), agent, start_now, from_disk, invoke_reply);
    self->monitor(actor);
    shared->registered(id, actor);
    return actor;
  };
  // The run's actor, from memory or from disk; none (after replying an error) if there is no run.
  auto find_run = [=](const std::string& run_id, const std::string& reply) -> std::optional<caf::actor> {
    if (auto actor = shared->find(run_id)) return actor;
    auto loaded = shared->store.get(run_id, false);
    if (!loaded) {
      shared->reply_error(reply, loaded.error().code, loaded.error().message);
      return std::nullopt;
    }
    if (!*loaded) {
      shared->reply_error(reply, errc::not_found, "no run " + run_id + " on node " + shared->node_id);
      return std::nullopt;
    }
    const auto* agent = shared->config.find_agent((*loaded)->agent);
    if (!agent) {
      shared->reply_error(reply, errc::not_found, "run " + run_id + " belongs to agent '" +
                                                    (*loaded)->agent + "', which this node no longer has");
      return std::nullopt;
    }
    return spawn_run(std::move(**loaded), agent, false, true, {});
  };
  self->delayed_send(self, std::chrono::milliseconds(stalled_check_ms), stalled_atom::value);
  // Forwards as a request: if the actor left memory before it read the message, the request
  // fails and the run is loaded from disk and asked again (once).
  auto forward_resume = std::make_shared<std::function<void(wire::resume_request, std::string, int)>>();
  // It calls itself again through a weak handle: a strong one would be a cycle that keeps the
  // shared state alive forever.
  *forward_resume = [=, again = std::weak_ptr(forward_resume)](wire::resume_request request, std::string reply, int tries) {
    auto actor = find_run(request.run_id, reply);
    if (!actor) return;
    self->request(*actor, caf::infinite, resume_atom::value, request, reply)
      .then([](bool) {}, [=](caf::error&) {
        shared->unregistered(request.run_id);
        if (auto f = again.lock(); f && tries < 2) (*f)(request, reply, tries + 1);
        else shared->reply_error(reply, errc::unavailable, "run " + request.run_id + " could not be loaded");
      });
  };
  auto forward_cancel = std::make_shared<std::function<void(std::string, std::string, std::string, std::string, int)>>();
  *forward_cancel = [=, again = std::weak_ptr(forward_cancel)](std::string run_id, std::string reason, std::string by,
                                                               std::string reply, int tries) {
    auto actor = find_run(run_id, reply);
    if (!actor) return;
    self->request(*actor, caf::infinite, cancel_atom::value, reason, by, reply)
      .then([](bool) {}, [=](caf::error&) {
        shared->unregistered(run_id);
        if (auto f = again.lock(); f && tries < 2) (*f)(run_id, reason, by, reply, tries + 1);
      });
  };
  auto forward_retry = std::make_shared<std::function<void(std::string, std::string, std::string, int)>>();
  *forward_retry = [=, again = std::weak_ptr(forward_retry)](std::string run_id, std::string by, std::string reply, int tries) {
    auto actor = find_run(run_id, reply);
    if (!actor) return;
    self->request(*actor, caf::infinite, retry_atom::value, by, reply)
      .then([](bool) {}, [=](caf::error&) {
        shared->unregistered(run_id);
        if (auto f = again.lock(); f && tries < 2) (*f)(run_id, by, reply, tries + 1);
        else shared->reply_error(reply, errc::unavailable, "run " + run_id + " could not be loaded");
      });
  };
  // A wait: a run in memory is asked; one on disk that is not running is answered from disk; one on
  // disk that should be running is loaded (as a resume would) and asked.
  auto forward_wait = std::make_shared<std::function<void(std::string, std::string, int)>>();
  *forward_wait = [=, again = std::weak_ptr(forward_wait)](std::string run_id, std::string reply, int tries) {
    if (!shared->find(run_id)) {
      auto stored = shared->store.get(run_id, false);
      if (!stored) return shared->reply_error(reply, stored.error().code, stored.error().message);
      if (!*stored) return shared->reply_error(reply, errc::not_found, "no run " + run_id + " on node " + shared->node_id);
      if (!store::is_active((*stored)->status)) return shared->publish(reply, run_reply(**stored));
    }
    auto actor = find_run(run_id, reply);
    if (!actor) return;
    self->request(*actor, caf::infinite, wait_atom::value, reply)
      .then([](bool) {}, [=](caf::error&) {
        shared->unregistered(run_id);
        if (auto f = again.lock(); f && tries < 2) (*f)(run_id, reply, tries + 1);
        else shared->reply_error(reply, errc::unavailable, "run " + run_id + " could not be loaded");
      });
  };
  return {
    [=](wait_atom, const std::string& run_id, const std::string& reply) { (*forward_wait)(run_id, reply, 0); },
    [=](invoke_atom, const wire::invoke_request& invoke, const std::string& reply) {
      const auto* agent = shared->config.find_agent(invoke.agent);
      if (!agent) {
        std::string known;
        for (const auto& a : shared->config.agents) known += (known.empty() ? "" : ", ") + a.id;
        shared->reply_error(reply, errc::not_found, "unknown agent '" + invoke.agent +
                                                      "'; this node has: " + (known.empty() ? "none" : known));
        return;
      }
      std::string key;
      std::string id;
      bool claimed_fresh = false;  // the id was claimed by this invoke, just now
      if (!invoke.idempotency_key.empty()) {
        if (invoke.idempotency_key.size() > idempotency_key_bytes_max)
          return shared->reply_error(reply, errc::invalid_argument,
                                     "idempotency_key is " + std::to_string(invoke.idempotency_key.size()) +
                                       " bytes; at most " + std::to_string(idempotency_key_bytes_max));
        key = invoke.agent + "/" + invoke.idempotency_key;
        // A key whose run was never stored (its creation's write failed, or its orchestrator
        // stopped or lost its runs between the claim and the write) is taken up again, with the
        // same id, by whoever serves that orchestrator's runs now: else the key would name a run
        // nobody will ever make.
        auto never_stored = [&](const std::string& run) {
          if (!shared->serves(run_id{run}.owner()) || shared->find(run)) return false;
          auto stored_run = shared->store.get(run, false);
          return stored_run && !*stored_run;
        };
        // (A key found in this node's store was written with its run: that run is there.)
        std::optional<std::string> existing;
        bool from_memory = false;
        if (auto it = self->state.idempotency.find(key); it != self->state.idempotency.end())
          existing = it->second, from_memory = true;
        else if (auto stored = shared->store.find_by_idempotency_key(invoke.agent, invoke.idempotency_key);
                 stored && *stored)
          existing = **stored;
        if (existing && from_memory && never_stored(*existing)) {
          id = *existing;
          existing.reset();
        } else if (!existing) {
          // The cluster's word: the first orchestrator to write the key owns the run; the others
          // answer with its id.
          auto mine = make_run_id(node_id{shared->node_id}).value;
          auto claimed = shared->keys->create_if_absent(broker::key_of(invoke.agent, invoke.idempotency_key), mine);
          if (!claimed)
            return shared->reply_error(reply, errc::unavailable,
                                       "the idempotency key cannot be checked across the cluster: " + claimed.error().message);
          claimed_fresh = claimed->written;
          if (claimed->written || never_stored(claimed->value)) id = claimed->value;
          else existing = claimed->value;
        }
        if (existing && shared->leases && !shared->serves(run_id{*existing}.owner())) {
          // Another orchestrator's run: named by the key, but made only if that orchestrator
          // wrote it before it stopped or was paused. Its id is given once whoever serves its runs
          // says it has it; otherwise the invoke is asked again (and whoever serves them makes it).
          std::weak_ptr<shared_state> weak = shared;
          shared->ask_pool->submit([weak, reply, run = *existing] {
            auto s = weak.lock();
            if (!s) return;
            // A run being created (its first write not counted yet) is asked about again, for up
            // to a few seconds: a copy of an invoke sent at once to two orchestrators gets the id.
            for (auto deadline = steady_ms() + 3000;;) {
              auto answer = s->nats->request(s->subjects.base() + ".runs." + run + ".get",
                                             wire::pack(value{{"v", wire::protocol_version}, {"type", "get_run"}}), 2000);
              auto v = answer ? wire::unpack(answer->data) : result<value>(make_error(errc::unavailable, "no answer"));
              if (v && v->is_object() && v->value("type", std::string{}) == "run")
                return s->publish(reply, wire::encode(wire::invoke_reply{run, false}));
              bool being_created = v && v->is_object() && v->contains("error") && (*v)["error"].is_object() &&
                                   (*v)["error"].value("message", std::string{}).find("being created") != std::string::npos;
              if (!being_created || steady_ms() >= deadline) break;
              std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            s->reply_error(reply, errc::unavailable,
                           "the idempotency key names run " + run + ", which its orchestrator has not confirmed yet: ask again");
          });
          return;
        }
        if (existing) {
          auto bytes = wire::encode(wire::invoke_reply{*existing, false});
          auto& lane = shared->lane_of(*existing);
          lane.writer->after_pending([shared, reply, run = *existing](const result<void>&) {
            shared->answer_when_counted(run, reply);
          });
          return;
        }
      }
      // A full disk takes no new run (the runs there go on, within the reserve); an invoke whose
      // key names a run already made is answered above all the same.
      if (auto admitted = shared->store.admits_new_run(); !admitted)
        return shared->reply_error(reply, admitted.error().code, "node " + shared->node_id + ": " + admitted.error().message);
      // A run made under an id claimed earlier (by this node or one whose runs it serves now) may
      // have a first entry in the log already, written late by a node that then lost the run:
      // its position is looked up. A fresh id has none.
      bool fresh = id.empty() || claimed_fresh;
      if (id.empty()) id = make_run_id(node_id{shared->node_id}).value;
      // A node whose lease lapsed (paused, or the lease bucket out of reach) makes no run: its
      // first write could not count. (A key claimed for it is taken up by the next invoke.)
      if (std::string domain(run_id{id}.owner()); shared->leases && !shared->leases->valid(domain))
        return shared->reply_error(reply, errc::unavailable,
                                   "node " + shared->node_id + " is renewing its lease on the runs of " + domain + ": ask again");
      if (!key.empty()) {
        self->state.idempotency[key] = id;
        self->state.key_of_run[id] = key;
      }
      logger()->info("run {} created for agent {}", id, invoke.agent);
      shared->creating(id);
      if (shared->leases && fresh) shared->log_seq_known(id, 0);  // a new run: nothing in the log yet
      spawn_run(run_machine::create(id, invoke, wall_ms()), agent, true, false, reply);
    },
    [=](resume_atom, const wire::resume_request& request, const std::string& reply) {
      (*forward_resume)(request, reply, 0);
    },
    [=](cancel_atom, const std::string& run_id, const std::string& reason, const std::string& by, const std::string& reply) {
      (*forward_cancel)(run_id, reason, by, reply, 0);
    },
    [=](retry_atom, const std::string& run_id, const std::string& by, const std::string& reply) {
      (*forward_retry)(run_id, by, reply, 0);
    },
    [=](stalled_atom) {
      // Runs dropped after a failed write go on once the store writes again (space freed).
      self->delayed_send(self, std::chrono::milliseconds(stalled_check_ms), stalled_atom::value);
      if (!shared->any_stalled()) return;
      auto recovered = shared->store.recover();
      if (!recovered) {
        auto now = steady_ms();
        if (now - self->state.stalled_warned_ms >= 30'000) {
          self->state.stalled_warned_ms = now;
          logger()->warn("runs wait for the run store to write again: {}", recovered.error().message);
        }
        return;
      }
      auto ids = shared->take_stalled();
      if (ids.empty()) return;
      logger()->info("the run store writes again: {} runs stopped by a failed write go on", ids.size());
      self->send(self, adopt_atom::value, ids);
    },
    [=](adopt_atom, const std::vector<std::string>& ids) {
      // Runs taken over from another node, now in this node's store: those with work in flight
      // go on (a step whose task the broker still holds is not sent again).
      for (const auto& id : ids) {
        if (shared->find(id)) continue;
        // Not a run this node no longer serves (dropped after the log refused its write because
        // another took it over): what this store has of it is behind the new owner's.
        if (shared->leases && !shared->serves(run_id{id}.owner())) continue;
        auto record = shared->store.get(id, false);
        if (!record || !*record) continue;
        const auto* agent = shared->config.find_agent((*record)->agent);
        if (!agent) {
          logger()->error("run {} (taken over): agent {} is not configured here; the run waits on disk", id, (*record)->agent);
          continue;
        }
        spawn_run(std::move(**record), agent, true, true, {});
      }
    },
    [=](recover_atom) {
      std::size_t recovered = 0;
      for (auto status : {store::run_status::pending, store::run_status::running}) {
        auto ids = shared->store.list_by_status(status);
        if (!ids) {
          logger()->error("recovery: cannot list {} runs: {}", store::to_string(status), ids.error().message);
          continue;
        }
        for (const auto& id : *ids) {
          // With the run log: only the runs of the nodes this one serves (one that took these
          // over while this node was down has them now).
          if (shared->leases && !shared->serves(run_id{id}.owner())) continue;
          if (shared->find(id)) continue;  // loaded already (a result for it came first)
          auto record = shared->store.get(id, false);
          if (!record) {
            // Damaged on disk: the run fails with the reason, and the node goes on with the others.
            auto reason = "the run's stored record cannot be read: " + record.error().message;
            logger()->error("run {}: {}", id, reason);
            if (auto failed = shared->store.fail_unreadable(id, reason); !failed)
              logger()->error("run {}: cannot mark it failed: {}", id, failed.error().message);
            continue;
          }
          if (!*record) continue;
          const auto* agent = shared->config.find_agent((*record)->agent);
          if (!agent) {
            logger()->error("run {}: agent {} is not configured; the run waits on disk", id, (*record)->agent);
            continue;
          }
          spawn_run(std::move(**record), agent, true, true, {});
          ++recovered;
        }
      }
      if (recovered) logger()->info("recovered {} unfinished runs", recovered);
    },
  };
}

// The run id in `<prefix>.<ns>.runs.<run>.<verb>`.
std::string run_of_subject(const std::string& subject, const broker::subjects& subjects) {
  auto start = subjects.base().size() + std::string_view(".runs.").size();
  if (subject.size() <= start) return {};
  auto end = subject.find('.', start);
  return subject.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// Who sent a request that acts: the last token of its subject (`...invoke.<who>`,
// `...runs.<run>.resume.<who>`), which the broker checked against the sender's user.
std::string sender_of(const std::string& subject) {
  auto dot = subject.rfind('.');
  return dot == std::string::npos ? std::string() : subject.substr(dot + 1);
}

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

// Takes over the runs of `domain` (a node that is gone): reads them from the run log into this
// node's store, fences each (an entry of ours where the run's last entry was: whatever the old
// owner still writes is refused), takes its results, and goes on with what was in flight.
void take_over(const std::shared_ptr<shared_state>& shared, const caf::actor& orchestrator_actor,
               const std::string& domain, std::uint64_t epoch) {
  auto started = steady_ms();
  auto& log = *shared->lanes[0].log;
  auto prefix = shared->subjects.base() + ".log." + domain;
  std::map<std::string, std::uint64_t> last;  // run -> sequence of its last entry applied
  std::uint64_t max_order = 0;
  std::size_t entries = 0, unreadable = 0;
  std::string superseded;  // a later takeover's fence was found: by whom
  // A fence of the same epoch by another node: two claims of one revision both taken (nats-server
  // 2.9 can confirm two concurrent writes expecting the same revision of a replicated key). The
  // bucket's value decides: the node it names goes on, the other gives up.
  std::string tied;
  auto apply = [&](const std::string& subject, std::uint64_t seq, std::string data) {
    auto run = subject.substr(subject.rfind('.') + 1);
    if (auto it = last.find(run); it != last.end() && it->second >= seq) return;
    last[run] = seq;
    ++entries;
    auto transitions = store::decode_transitions(data);
    if (!transitions) {
      ++unreadable;
      logger()->error("run {}: a logged write could not be read ({}); skipped", run, transitions.error().message);
      return;
    }
    for (const auto& t : *transitions)
      for (const auto& r : t.received) max_order = std::max(max_order, r.order);
    if (transitions->empty()) {
      // A takeover's fence. One of a later claim than this one (a node that took the domain from
      // this node while it was paused mid-takeover) means the runs are another's now: fencing
      // after it would refuse the new owner's writes.
      auto marker = wire::unpack(data);
      if (marker && marker->is_object() && marker->contains("takeover") && (*marker)["takeover"].is_object()) {
        const auto& by = (*marker)["takeover"];
        auto their_epoch = by.value("epoch", std::uint64_t{0});
        auto their_node = by.value("by", std::string{});
        if (their_epoch > epoch) superseded = their_node + " (epoch " + std::to_string(their_epoch) + ")";
        else if (their_epoch == epoch && their_node != shared->node_id) tied = their_node;
      }
      return;
    }
    if (auto w = shared->store.apply(*transitions); !w)
      logger()->error("run {}: a logged write could not be stored: {}", run, w.error().message);
  };
  // Read and fenced whole, however long the log takes to answer: a domain held but never served
  // would leave its runs unanswered until this node restarts. Given up only when the lease goes
  // (another serves them) or the node stops.
  auto still_ours = [&] { return superseded.empty() && shared->leases->holds(domain) && !shared->leases->stopping(); };
  auto give_up_if_superseded = [&] {
    if (superseded.empty() && !tied.empty()) {
      auto current = shared->lease_bucket->get(domain);
      auto lease = current && *current ? replication::lease_keeper::decode(**current) : result<std::pair<std::string, std::uint64_t>>(
                                                                             make_error(errc::unavailable, "unread"));
      if (!lease || lease->first != shared->node_id || lease->second != epoch)
        superseded = tied + " (epoch " + std::to_string(epoch) + ", the lease names " +
                     (lease ? lease->first : std::string("no one readable")) + ")";
      tied.clear();
    }
    if (superseded.empty()) return false;
    logger()->warn("taking over {}: a later takeover by {} fenced its runs: they are not this node's", domain, superseded);
    return true;
  };
  std::int64_t backoff_ms = 250;
  auto wait_a_little = [&] {
    for (auto until = steady_ms() + backoff_ms; steady_ms() < until && still_ours();)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    backoff_ms = std::min<std::int64_t>(backoff_ms * 2, 5000);
  };
  for (int tries = 0;; ++tries) {
    auto r = log.read(prefix + ".>", apply);
    if (give_up_if_superseded()) return;
    if (r) break;
    if (tries < 5 || tries % 20 == 0) logger()->warn("taking over {}: reading its runs: {}", domain, r.error().message);
    if (!still_ours()) return;
    wait_a_little();
  }
  auto marker = wire::pack(value{{"transitions", value::array()},
                                 {"takeover", value{{"by", shared->node_id}, {"epoch", epoch}}}});
  // Runs that ended (completed or cancelled) never change again: taken as they are, unfenced.
  std::set<std::string> fenced;
  for (const auto& [run, seq] : last) {
    auto record = shared->store.get(run, false);
    if (record && *record && ((*record)->status == store::run_status::completed ||
                              (*record)->status == store::run_status::cancelled))
      fenced.insert(run);
  }
  backoff_ms = 250;
  for (int round = 0; fenced.size() < last.size(); ++round) {
    if (round > 0) {
      if (!still_ours()) break;
      wait_a_little();
    }
    std::vector<broker::run_log::entry> fences;
    std::vector<std::string> runs;
    for (const auto& [run, seq] : last)
      if (!fenced.count(run)) {
        fences.push_back({prefix + "." + run, marker, static_cast<std::int64_t>(seq), shared->node_id});
        runs.push_back(run);
      }
    auto out = log.append(fences);
    for (std::size_t i = 0; i < runs.size(); ++i) {
      if (out[i]) {
        fenced.insert(runs[i]);
        last[runs[i]] = *out[i];
        shared->log_seq_known(runs[i], *out[i]);
      } else if (out[i].error().code == errc::conflict) {
        (void)log.read(prefix + "." + runs[i], apply);  // it wrote meanwhile: read that too
      }
    }
    if (give_up_if_superseded()) return;
  }
  if (fenced.size() < last.size()) {
    logger()->warn("taking over {}: stopped before {} runs were fenced (the lease went, or the node stops)", domain,
                   last.size() - fenced.size());
    return;
  }
  // Results applied after these keep their order (see store::received_result).
  for (auto now = shared->next_received.load(); now <= max_order && !shared->next_received.compare_exchange_weak(now, max_order + 1);) {
  }
  if (auto r = shared->subscribe_results(domain); !r)
    logger()->error("taking over {}: its results cannot be received: {}", domain, r.error().message);
  shared->serve(domain);
  std::vector<std::string> active;
  std::size_t suspended = 0;
  for (const auto& run : fenced) {
    auto record = shared->store.get(run, false);
    if (!record || !*record) continue;
    if (store::is_active((*record)->status)) active.push_back(run);
    if ((*record)->status == store::run_status::suspended) ++suspended;
  }
  caf::anon_send(orchestrator_actor, adopt_atom::value, active);
  logger()->warn("took over the runs of {} in {} ms: {} runs ({} with work in flight, {} waiting for a person), {} log entries{}",
                 domain, steady_ms() - started, fenced.size(), active.size(), suspended, entries,
                 unreadable ? ", " + std::to_string(unreadable) + " unreadable" : std::string());
}

} // namespace

struct orchestrator::impl {
  std::shared_ptr<shared_state> shared;
  caf::actor actor;
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
                                                          store::run_store& store) {
  if (lanes.empty()) return make_error(errc::invalid_argument, "an orchestrator needs a NATS connection");
  auto shared = std::make_shared<shared_state>(config, node_id, lanes, store);
  std::weak_ptr<shared_state> weak = shared;
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
    }
    auto bucket = broker::key_value::open(*shared->js, {broker::stream_name("KEEL_LEASES_" + config.prefix + "_" + config.ns),
                                                        config.log_replicas, 0});
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
    shared->leases = std::move(*leases);
    // Nodes taken over before this one stopped: taken over again (the takeover may have been cut
    // short by the stop, the claim written but the runs not yet read; and whatever of theirs is
    // in this store is brought to what the log has).
    shared->leases->take_over_again();
  }
  caf::anon_send(state->actor, recover_atom::value);

  auto actor = state->actor;
  const auto& subjects = shared->subjects;
  auto owned = [shared](const std::string& run, const std::string& reply) {
    auto owner = run_id{run}.owner();
    if (!run_id{run}.valid()) {
      shared->reply_error(reply, errc::not_found, "'" + run + "' is not a keel run id");
      return false;
    }
    return shared->answers_for(owner);  // another node's run, or a lease lapsed: its owner answers
  };
  auto subscribe = [&](const std::string& subject, const std::string& queue, broker::handler h) -> result<void> {
    auto s = shared->nats->subscribe(subject, queue, std::move(h));
    if (!s) return s.error();
    state->subscriptions.push_back(std::move(*s));
    return success();
  };

  auto on_invoke = [shared, actor](broker::message&& m) {
    if (m.reply.empty()) return;  // nobody to tell the run id: do not create an orphan run
    auto invoke = wire::decode<wire::invoke_request>(m.data, shared->limits);
    if (!invoke) return shared->reply_error(m.reply, invoke.error().code, invoke.error().message);
    invoke->by = sender_of(m.subject);
    caf::anon_send(actor, invoke_atom::value, std::move(*invoke), m.reply);
  };
  auto r = subscribe(subjects.invoke("*"), "orchestrators", on_invoke);
  if (r) r = subscribe(subjects.node_invoke(node_id, "*"), "", on_invoke);
  if (r) r = subscribe(subjects.run_resume("*", "*"), "", [shared, actor, owned](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (!owned(run, m.reply)) return;
    auto request = wire::decode<wire::resume_request>(m.data, shared->limits);
    if (!request) return shared->reply_error(m.reply, request.error().code, request.error().message);
    if (!request->run_id.empty() && request->run_id != run)
      return shared->reply_error(m.reply, errc::invalid_argument,
                                 "the body names run " + request->run_id + " but the subject names " + run);
    request->run_id = run;
    request->by = sender_of(m.subject);
    caf::anon_send(actor, resume_atom::value, std::move(*request), m.reply);
  });
  if (r) r = subscribe(subjects.run_cancel("*", "*"), "", [shared, actor, owned](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (!owned(run, m.reply)) return;
    auto body = wire::open_request(m.data, "cancel", shared->limits);
    if (!body) return shared->reply_error(m.reply, body.error().code, body.error().message);
    std::string reason = "cancelled on request";
    if (body->contains("reason")) {
      const value& given = (*body)["reason"];
      if (!given.is_string() || given.get_ref<const std::string&>().size() > reason_chars_max)
        return shared->reply_error(m.reply, errc::invalid_argument,
                                   "reason must be a string of at most " + std::to_string(reason_chars_max) + " bytes");
      if (!given.get_ref<const std::string&>().empty()) reason = given.get<std::string>();
    }
    caf::anon_send(actor, cancel_atom::value, run, reason, sender_of(m.subject), m.reply);
  });
  // Every lane is a member of the results queue group: the broker spreads results over the
  // lanes' connections and threads; each is written by its run's lane.
  auto on_result = [shared, actor](broker::message&& m) {
    step_trace::mark(step_trace::result_received);
    // Only the type, run and step are read here (no JSON built). The worker is answered once the
    // result is on disk (or known not to be needed): until then it keeps offering it, and keeps
    // the task, so that neither a restart of this node nor of the broker loses it.
    auto ref = wire::peek_task_ref(m.data, shared->limits);
    if (!ref || ref->type != "task_result") {
      auto why = !ref ? ref.error().message : "a message of type '" + ref->type + "' is not a task result";
      logger()->warn("a message on the results subject was dropped: {}", why);
      return shared->reply_error(m.reply, !ref ? ref.error().code : errc::malformed, why);
    }
    step_trace::mark(step_trace::result_decoded);
    if (std::string domain(run_id{ref->run_id}.owner()); shared->leases && !shared->answers_for(domain))
      return shared->reply_error(m.reply, errc::unavailable,
                                 "this node does not hold the lease on the runs of " + domain + " now; offer it again");
    static const std::string kept = wire::pack(value{{"v", wire::protocol_version}, {"type", "result_recorded"}, {"kept", true}});
    static const std::string not_needed = wire::pack(value{{"v", wire::protocol_version}, {"type", "result_recorded"}, {"kept", false}});
    auto run = shared->find(ref->run_id);
    if (run && shared->is_starting(ref->run_id))
      return shared->reply_error(m.reply, errc::unavailable, "run " + ref->run_id + " is being loaded; offer it again");
    if (!run) {
      // Not in memory: a run being loaded (this node is starting) takes it shortly; any other has
      // no step in flight, so the result is late.
      auto stored = shared->store.get(ref->run_id, false);
      if (!stored) return shared->reply_error(m.reply, errc::unavailable, stored.error().message);
      if (!*stored) return shared->reply_error(m.reply, errc::not_found, "no run " + ref->run_id);
      if (store::is_active((*stored)->status)) {
        // A run with work in flight that is not in memory: one being loaded (this node starting,
        // or taking runs over), or one dropped after a write failed. It is loaded (once: a run
        // in memory is left alone), and takes the result when offered again.
        if (shared->serves(run_id{ref->run_id}.owner()))
          caf::anon_send(actor, adopt_atom::value, std::vector<std::string>{ref->run_id});
        return shared->reply_error(m.reply, errc::unavailable, "run " + ref->run_id + " is being loaded; offer it again");
      }
      return shared->publish(m.reply, not_needed);
    }
    if (!shared->received(ref->run_id, ref->step)) {
      // Late or repeated: answered after what is being written, which may be its first copy. Only
      // "not needed" once that copy is certainly written (else the worker would drop the task
      // whose result is lost): if its write failed, the worker is told to offer it again.
      auto& lane = shared->lane_of(ref->run_id);
      lane.writer->after_pending([shared, &lane, reply = m.reply, run_id = ref->run_id, step = ref->step](const result<void>&) {
        if (shared->result_not_needed(run_id, step)) return lane.publish(reply, not_needed);
        shared->reply_error(reply, errc::unavailable, "the result of step " + std::to_string(step) + " of run " + run_id +
                                                        " is not written yet; offer it again");
      });
      return;
    }
    // Written before anything is acted on, here, as it came; the run's actor gets it at once and
    // works out the next task while the write is in flight.
    store::run_transition received;
    received.entries_only = true;
    received.record.run_id = ref->run_id;
    auto order = shared->next_received.fetch_add(1);
    received.received.push_back({order, m.data});
    auto gate = std::make_shared<task_gate>();
    auto& lane = shared->lane_of(ref->run_id);
    lane.writer->submit(
      std::move(received),
      [gate, run, shared, &lane, reply = m.reply, run_id = ref->run_id, step = ref->step](const result<void>& written) {
        gate->on_written(written.ok());
        if (written) lane.publish(reply, kept);
        else {
          shared->receive_failed(run_id, step);
          shared->reply_error(reply, errc::unavailable, "the result could not be written: " + written.error().message);
        }
        // The run's actor may be ahead of disk: drop it, so that the run reloads from disk (when
        // the worker offers the result again, or once the store writes again).
        if (!written) {
          shared->stalled(run_id, run.address());
          caf::anon_send_exit(run, caf::exit_reason::user_shutdown);
        }
      },
      [&] { caf::anon_send(run, result_atom::value, order, std::move(m.data), gate); });
  };
  shared->on_result = on_result;
  for (auto& lane : shared->lanes) {
    if (!r) break;
    auto s = lane.nats->subscribe(subjects.node_results(node_id), "results", on_result);
    if (!s) r = s.error();
    else state->subscriptions.push_back(std::move(*s));
  }
  if (r) r = subscribe(subjects.base() + ".runs.*.task_wanted", "", [shared, owned](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (m.reply.empty() || !owned(run, m.reply)) return;
    auto body = wire::unpack(m.data, shared->limits);
    if (!body || !body->is_object() || !body->value("step", value()).is_number_unsigned() ||
        !body->value("attempt", value()).is_number_unsigned())
      return shared->reply_error(m.reply, errc::malformed, "a task_wanted request needs step and attempt (unsigned integers)");
    auto step = (*body)["step"].get<std::uint64_t>();
    auto attempt = (*body)["attempt"].get<std::uint32_t>();
    auto answer = [&](bool wanted) {
      shared->publish(m.reply, wire::pack(value{{"v", wire::protocol_version}, {"type", "task_wanted"}, {"wanted", wanted}}));
    };
    if (auto in_memory = shared->wanted(run, step, attempt)) return answer(*in_memory);
    auto stored = shared->store.get(run, false);
    if (!stored) return shared->reply_error(m.reply, errc::unavailable, stored.error().message);
    if (!*stored) return shared->reply_error(m.reply, errc::not_found, "no run " + run);
    if (!store::is_active((*stored)->status)) return answer(false);
    // Active but not in memory: it is being loaded; the worker asks again.
    return shared->reply_error(m.reply, errc::unavailable, "run " + run + " is being loaded");
  });
  if (r) r = subscribe(subjects.base() + ".runs.*.messages", "", [shared, owned](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (m.reply.empty() || !owned(run, m.reply)) return;
    auto body = wire::unpack(m.data, shared->limits);
    if (!body || !body->is_object() || !body->value("from", value()).is_number_unsigned() ||
        !body->value("to", value()).is_number_unsigned())
      return shared->reply_error(m.reply, errc::malformed, "a messages request needs from and to (unsigned integers)");
    auto from = (*body)["from"].get<std::uint64_t>(), to = (*body)["to"].get<std::uint64_t>();
    auto offset = body->value("offset", std::uint64_t{0});
    if (from >= to) return shared->reply_error(m.reply, errc::invalid_argument, "from must be below to");
    // Pieces of messages up to three quarters of a NATS message: one message larger than that goes
    // in several replies, the worker asking from where the last one stopped.
    auto budget = static_cast<std::size_t>(shared->config.message_bytes_max) * 3 / 4;
    auto packed = shared->store.messages(run, from, std::min<std::uint64_t>(to, from + 10'000), budget + offset);
    if (!packed) return shared->reply_error(m.reply, packed.error().code, packed.error().message);
    if (packed->empty())
      return shared->reply_error(m.reply, errc::unavailable, "message " + std::to_string(from) + " of run " + run +
                                                               " is not on disk yet");
    value items = value::array();
    std::size_t used = 0;
    for (std::size_t i = 0; i < packed->size() && used < budget; ++i) {
      const auto& bytes = (*packed)[i];
      std::size_t start = i == 0 ? std::min<std::size_t>(offset, bytes.size()) : 0;
      std::size_t length = std::min(bytes.size() - start, budget - used);
      items.push_back(value{{"index", from + i}, {"offset", start}, {"total", bytes.size()},
                            {"bytes", value::binary(std::vector<std::uint8_t>(bytes.begin() + static_cast<std::ptrdiff_t>(start),
                                                                              bytes.begin() + static_cast<std::ptrdiff_t>(start + length)))}});
      used += length;
    }
    shared->publish(m.reply, wire::pack(value{{"v", wire::protocol_version}, {"type", "messages"}, {"run_id", run}, {"items", items}}));
  });
  if (r) r = subscribe(subjects.run_retry("*", "*"), "", [actor, owned, shared](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (!owned(run, m.reply)) return;
    if (auto body = wire::open_request(m.data, "retry", shared->limits); !body)
      return shared->reply_error(m.reply, body.error().code, body.error().message);
    caf::anon_send(actor, retry_atom::value, run, sender_of(m.subject), m.reply);
  });
  if (r) r = subscribe(subjects.base() + ".runs.*.wait", "", [actor, owned, shared](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (m.reply.empty() || !owned(run, m.reply)) return;  // a wait with nowhere to answer is nothing
    if (auto body = wire::open_request(m.data, "wait", shared->limits); !body)
      return shared->reply_error(m.reply, body.error().code, body.error().message);
    caf::anon_send(actor, wait_atom::value, run, m.reply);
  });
  if (r) r = subscribe(subjects.base() + ".runs.*.get", "", [shared, owned](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (!owned(run, m.reply)) return;
    if (auto body = wire::open_request(m.data, "get_run", shared->limits); !body)
      return shared->reply_error(m.reply, body.error().code, body.error().message);
    if (!shared->is_counted(run))
      return shared->reply_error(m.reply, errc::unavailable, "run " + run + " is being created: ask again");
    auto record = shared->store.get(run, false);
    if (!record) return shared->reply_error(m.reply, record.error().code, record.error().message);
    if (!*record) return shared->reply_error(m.reply, errc::not_found, "no run " + run);
    shared->publish(m.reply, wire::pack(value{{"v", wire::protocol_version}, {"type", "run"},
                                              {"run", summary(**record)}}));
  });
  if (r) r = subscribe(subjects.base() + ".runs.*.history", "", [shared, owned](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (!owned(run, m.reply)) return;
    auto body = wire::open_request(m.data, "get_history", shared->limits);
    if (!body) return shared->reply_error(m.reply, body.error().code, body.error().message);
    auto from = count_field(*body, "from_seq", 1, 1, UINT64_MAX);
    auto limit = count_field(*body, "limit", history_limit_default, 1, history_limit_max);
    if (!from) return shared->reply_error(m.reply, from.error().code, from.error().message);
    if (!limit) return shared->reply_error(m.reply, limit.error().code, limit.error().message);
    auto record = shared->store.get(run, false);
    if (!record) return shared->reply_error(m.reply, record.error().code, record.error().message);
    if (!*record) return shared->reply_error(m.reply, errc::not_found, "no run " + run);
    auto events = shared->store.events(run, *from, *limit + 1);
    if (!events) return shared->reply_error(m.reply, events.error().code, events.error().message);
    bool more = events->size() > *limit;
    if (more) events->pop_back();
    // Within one NATS message: events past half of it wait for the next page ("more").
    value list = value::array();
    std::size_t bytes = 0, budget = static_cast<std::size_t>(shared->config.message_bytes_max) / 2;
    for (const auto& e : *events) {
      auto v = wire::to_value(e);
      auto size = wire::pack(v).size();
      if (!list.empty() && bytes + size > budget) {
        more = true;
        break;
      }
      if (size > budget) v = wire::to_value(wire::event{e.run_id, e.seq, e.event_type, e.time_ms,
                                                        value{{"truncated", true}, {"bytes", size}}});
      bytes += size;
      list.push_back(std::move(v));
    }
    shared->publish(m.reply, wire::pack(value{{"v", wire::protocol_version}, {"type", "history"},
                                              {"run_id", run}, {"events", list}, {"more", more},
                                              {"status", store::to_string((*record)->status)}}));
  });
  if (r) r = subscribe(subjects.agents_list(), "", [shared](broker::message&& m) {
    if (m.reply.empty()) return;
    auto body = wire::open_request(m.data, "list_agents", shared->limits);
    if (!body) return shared->reply_error(m.reply, body.error().code, body.error().message);
    value agents = value::array();
    for (const auto& a : shared->config.agents) agents.push_back(describe_agent(a));
    shared->publish(m.reply, wire::pack(value{{"v", wire::protocol_version}, {"type", "agent_list"},
                                              {"node_id", shared->node_id}, {"agents", agents}}));
  });
  if (r) r = subscribe(subjects.runs_list(), "", [shared](broker::message&& m) {
    if (m.reply.empty()) return;
    auto body = wire::open_request(m.data, "list_runs", shared->limits);
    if (!body) return shared->reply_error(m.reply, body.error().code, body.error().message);
    auto query = parse_list_query(*body);
    if (!query) return shared->reply_error(m.reply, query.error().code, query.error().message);
    auto page = list_runs(shared->store, *query, static_cast<std::size_t>(shared->config.message_bytes_max) / 2, summary);
    page["v"] = wire::protocol_version;
    page["type"] = "run_list";
    page["node_id"] = shared->node_id;
    shared->publish(m.reply, wire::pack(page));
  });
  if (!r) return r.error();
  return std::unique_ptr<orchestrator>(new orchestrator(std::move(state)));
}

void orchestrator::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  if (impl_->shared->leases) impl_->shared->leases->stop();
  impl_->subscriptions.clear();
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

void orchestrator::flush() {
  for (auto& lane : impl_->shared->lanes) lane.writer->stop();
  if (impl_->shared->log_pool) impl_->shared->log_pool->stop(2000);
  if (impl_->shared->ask_pool) impl_->shared->ask_pool->stop(3000);
  impl_->shared->publisher->stop();
}

} // namespace keel::actors
