#include "actors/supervisor.hpp"
#include "runtime/error_reply.hpp"
#include "actors/retention.hpp"
#include "actors/actors_log.hpp"

#include "actors/messages.hpp"
#include "actors/run_actor.hpp"
#include "actors/run_fork.hpp"
#include "actors/run_views.hpp"
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"
#include "runtime/log.hpp"

#include <spdlog/spdlog.h>

#include <functional>
#include <thread>

namespace keel::actors {

using wire::value;

namespace {

constexpr std::size_t idempotency_key_bytes_max = 256;
// Idempotency keys claimed across the cluster at once, and invokes of one key waiting for its
// claim: beyond these an invoke is answered "ask again" (a bucket slow to answer must not let
// waiting invokes grow without bound).
constexpr std::size_t claims_at_once_max = 1024;
constexpr std::size_t waiting_per_claim_max = 64;

// The cluster's answer to a claim of an idempotency key.
struct key_claim {
  bool ok = false;       // the bucket answered
  bool written = false;  // this claim wrote the key
  std::string value;     // the run the key names
  std::string why;       // why the bucket did not answer
};
// How often runs stopped by a failed write (a full disk) look whether the store writes again.
constexpr std::int64_t stalled_check_ms = 500;
// Wakes: at most this many runs are woken at once (the rest a moment later), and a wake not
// acknowledged by its run's next report is tried again this much later.
constexpr std::size_t wakes_at_once_max = 256;
constexpr std::int64_t wake_retry_ms = 60'000;

} // namespace


caf::behavior orchestrator_actor(orchestrator_type* self, std::shared_ptr<orchestrator_shared> shared) {
  self->attach_functor([shared] { shared->supervisor_gone = true; });
  // When the orchestrator stops, so do its run actors (it tells each). A run actor's exit
  // (leaving memory, or a failure) comes as a down message; a stop request (anon_send_exit)
  // names the orchestrator itself as its source.
  self->set_exit_handler([=](caf::exit_msg& exit) {
    if (exit.source != self->address()) return;
    // Run actors are not linked (a link costs a scan of every link when one exits): stopped here.
    for (const auto& actor : shared->runs.all_actors()) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
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
    if (from_disk) shared->runs.starting_now(id);
    // Counted from its spawn, not its first activation (which may come after the supervisor
    // quit): a stopping orchestrator waits for every run actor it made to end.
    shared->in_memory += 1;
    auto actor = self->spawn(run_actor, shared, std::move(record), agent, start_now, from_disk, invoke_reply,
                             caf::actor_cast<caf::actor>(self));
    actor->attach_functor([shared] { shared->in_memory -= 1; });
    self->monitor(actor);
    shared->runs.registered(id, actor);
    return actor;
  };
  // The run's actor, from memory or from disk; none (after replying an error) if there is no run.
  auto find_run = [=](const std::string& run_id, const std::string& reply) -> std::optional<caf::actor> {
    if (auto actor = shared->runs.find(run_id)) return actor;
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
  auto retention = std::make_shared<retention_cursor>();  // the supervisor's alone
  if (shared->config.retention_max_age_ms > 0 || shared->config.retention_max_runs > 0)
    self->delayed_send(self, std::chrono::milliseconds(shared->config.retention_interval_ms), retention_atom::value);
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
    if (!shared->runs.find(run_id)) {
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
  auto forward_signal = std::make_shared<std::function<void(store::signal_record, std::string, std::string, int)>>();
  *forward_signal = [=, again = std::weak_ptr(forward_signal)](store::signal_record signal, std::string run_id,
                                                               std::string reply, int tries) {
    auto actor = find_run(run_id, reply);
    if (!actor) return;
    self->request(*actor, caf::infinite, signal_atom::value, signal, reply)
      .then([](bool) {}, [=](caf::error&) {
        shared->unregistered(run_id);
        if (auto f = again.lock(); f && tries < 2) (*f)(signal, run_id, reply, tries + 1);
        else shared->reply_error(reply, errc::unavailable, "run " + run_id + " could not be loaded");
      });
  };
  // Wakes: the schedule is looked at when its earliest entry falls due (a tick asked for then).
  auto tick_by = [=](std::int64_t at_ms) {
    auto& state = self->state;
    if (at_ms <= 0 || (state.tick_at_ms != 0 && state.tick_at_ms <= at_ms)) return;
    state.tick_at_ms = at_ms;
    self->delayed_send(self, std::chrono::milliseconds(std::max<std::int64_t>(0, at_ms - wall_ms())),
                       wake_tick_atom::value);
  };
  auto wake = [=](const std::string& run) {
    // Another node's now (taken over): not this node's to wake.
    if (shared->replicated() && !shared->owner.serves(run_id{run}.owner())) return self->state.wakes.set(run, 0);
    if (!shared->runs.find(run)) {
      auto stored = shared->store.get(run, false);
      if (stored && !*stored) return self->state.wakes.set(run, 0);
    }
    auto actor = find_run(run, {});
    if (!actor) return;  // tried again later (the schedule keeps it a minute on)
    auto address = actor->address();
    self->request(*actor, caf::infinite, wake_atom::value).then([](bool) {}, [=](caf::error&) {
      // It left memory before it read the wake: that actor (not one made since) is forgotten, and
      // the wake goes again at once.
      shared->unregistered(address);
      self->send(self, wake_at_atom::value, run, wall_ms());
    });
  };
  // The wakes of runs on disk (waiting, or suspended with an approval's limits): at start, and
  // after a takeover (`domain`: that node's runs only). Runs in memory tell their own.
  auto scan_wakes = [=](const std::string& domain) {
    std::size_t found = 0;
    for (auto status : {store::run_status::waiting, store::run_status::suspended, store::run_status::queued}) {
      auto ids = shared->store.list_by_status(status);
      if (!ids) {
        logger()->error("wakes: cannot list {} runs: {}", store::to_string(status), ids.error().message);
        continue;
      }
      for (const auto& id : *ids) {
        std::string owner(run_id{id}.owner());
        if (!domain.empty() && owner != domain) continue;
        if (shared->replicated() && !shared->owner.serves(owner)) continue;
        if (shared->runs.find(id)) continue;
        auto record = shared->store.get(id, false);
        if (!record || !*record) continue;
        auto state = store::run_state_from_value((*record)->state);
        if (!state) continue;  // damaged: failed with the reason when it is next loaded
        // A run in line: its place is asked for again (a repeat is harmless; it may have been
        // admitted while this node was down).
        if (status == store::run_status::queued && state->queue && shared->queues)
          shared->queues->enter(state->queue->name, id, state->queue->key, state->queue->since_ms);
        auto at = store::next_wake_ms(*state, store::is_terminal((*record)->status));
        if (at <= 0) continue;
        self->state.wakes.set(id, at);
        tick_by(at);
        ++found;
      }
    }
    if (found) logger()->info("{} runs on disk wait for a time{}", found, domain.empty() ? "" : " (taken over from " + domain + ")");
  };
  // A new run (an invoke, a fork): its agent, idempotency key and id checked and claimed, its record
  // made by `make_record` under the id, its actor started; the reply once its first write is on disk.
  // `claim`: the cluster's answer for its key, once it came (see claimed_atom).
  using record_maker = std::function<result<store::run_record>(const std::string&)>;
  auto create_run = std::make_shared<
    std::function<void(const wire::invoke_request&, record_maker, const std::string&, const key_claim*)>>();
  *create_run = [=](const wire::invoke_request& invoke, record_maker make_record, const std::string& reply,
                    const key_claim* claim) {
    const auto* agent = shared->config.find_agent(invoke.agent);
    if (!agent) {
      std::string known;
      for (const auto& a : shared->config.agents) known += (known.empty() ? "" : ", ") + a.id;
      shared->reply_error(reply, errc::not_found, "unknown agent '" + invoke.agent +
                                                    "'; this node has: " + (known.empty() ? "none" : known));
      return;
    }
    if (!invoke.concurrency_key.empty() && agent->run_queue.empty())
      return shared->reply_error(reply, errc::invalid_argument,
                                 "agent '" + invoke.agent + "' has no run_queue; a concurrency_key means nothing to it");
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
        if (!shared->owner.serves(run_id{run}.owner()) || shared->runs.find(run)) return false;
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
      } else if (!existing && !claim) {
        // The cluster's word: the first orchestrator to write the key owns the run; the others
        // answer with its id. Asked off this thread (the bucket may be slow to answer: a stream
        // leader paused, writes contending), and the invoke goes on with the answer; invokes of
        // the same key meanwhile wait for that same answer.
        auto found = self->state.claiming.find(key);
        if (found == self->state.claiming.end() && self->state.claiming.size() >= claims_at_once_max)
          return shared->reply_error(reply, errc::unavailable,
                                     "node " + shared->node_id + " is checking too many idempotency keys across the "
                                                                 "cluster now: ask again");
        if (found != self->state.claiming.end() && found->second.size() >= waiting_per_claim_max)
          return shared->reply_error(reply, errc::unavailable,
                                     "too many invokes of this idempotency key wait for its check across the cluster: ask again");
        auto& waiting = self->state.claiming[key];
        waiting.push_back({invoke, std::move(make_record), reply});
        if (waiting.size() > 1) return;
        std::weak_ptr<orchestrator_shared> weak = shared;
        auto me = caf::actor_cast<caf::actor>(self);
        bool asked = shared->keys_pool->submit([weak, me, key, bucket_key = broker::key_of(invoke.agent, invoke.idempotency_key),
                                                mine = make_run_id(node_id{shared->node_id}).value] {
          auto s = weak.lock();
          if (!s) return;
          result<broker::key_value::created> claimed = make_error(errc::internal, "the claim failed");
          try {
            claimed = s->keys->create_if_absent(bucket_key, mine);
          } catch (const std::exception& e) {
            claimed = make_error(errc::internal, e.what());
          }
          if (!claimed) caf::anon_send(me, claimed_atom::value, key, false, false, std::string{}, claimed.error().message);
          else caf::anon_send(me, claimed_atom::value, key, true, claimed->written, claimed->value, std::string{});
        });
        if (!asked)
          caf::anon_send(me, claimed_atom::value, key, false, false, std::string{}, std::string("the orchestrator stops"));
        return;
      } else if (!existing) {
        if (!claim->ok)
          return shared->reply_error(reply, errc::unavailable,
                                     "the idempotency key cannot be checked across the cluster: " + claim->why);
        claimed_fresh = claim->written;
        if (claim->written || never_stored(claim->value)) id = claim->value;
        else existing = claim->value;
      }
      if (existing && shared->replicated() && !shared->owner.serves(run_id{*existing}.owner())) {
        // Another orchestrator's run: named by the key, but made only if that orchestrator
        // wrote it before it stopped or was paused. Its id is given once whoever serves its runs
        // says it has it; otherwise the invoke is asked again (and whoever serves them makes it).
        std::weak_ptr<orchestrator_shared> weak = shared;
        shared->ask_pool->submit([weak, reply, run = *existing] {
          auto s = weak.lock();
          if (!s) return;
          // A run being created (its first write not counted yet) is asked about again, for up
          // to a few seconds: a copy of an invoke sent at once to two orchestrators gets the id.
          for (auto deadline = steady_ms() + 3000;;) {
            auto answer = s->nats->request(s->subjects.base() + ".runs." + run + ".get",
                                           wire::pack(value{{"v", wire::protocol_version}, {"type", "get_run"}}), 2000);
            auto v = answer ? wire::unpack(answer->data) : result<value>(make_error(errc::unavailable, "no answer"));
            if (v && v->is_object() && text_field(*v, "type") == "run")
              return s->publish(reply, wire::encode(wire::invoke_reply{run, false}));
            bool being_created = v && v->is_object() && v->contains("error") && (*v)["error"].is_object() &&
                                 error_message_of(*v, std::string{}).find("being created") != std::string::npos;
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
    if (std::string domain(run_id{id}.owner()); shared->replicated() && !shared->owner.leases()->valid(domain))
      return shared->reply_error(reply, errc::unavailable,
                                 "node " + shared->node_id + " is renewing its lease on the runs of " + domain + ": ask again");
    if (!key.empty()) {
      self->state.idempotency[key] = id;
      self->state.key_of_run[id] = key;
    }
    logger()->info("run {} created for agent {}", id, invoke.agent);
    shared->runs.creating(id);
    if (shared->replicated() && fresh) shared->log_writer.known(id, 0);  // a new run: nothing in the log yet
    auto record = make_record(id);
    if (!record) return shared->reply_error(reply, record.error().code, record.error().message);
    spawn_run(std::move(*record), agent, true, false, reply);
  };
  return {
    [=](wait_atom, const std::string& run_id, const std::string& reply) { (*forward_wait)(run_id, reply, 0); },
    [=](wake_at_atom, const std::string& run, std::int64_t at_ms) {
      self->state.wakes.set(run, at_ms);
      tick_by(at_ms);
    },
    [=](wake_tick_atom) {
      self->state.tick_at_ms = 0;
      for (const auto& run : self->state.wakes.take_due(wall_ms(), wakes_at_once_max, wake_retry_ms)) wake(run);
      tick_by(self->state.wakes.next_ms());
    },
    [=](wake_scan_atom, const std::string& domain) { scan_wakes(domain); },
    [=](join_child_atom, const std::string& run, std::uint64_t step, std::size_t index, const std::string& child, int tries) {
      // A fan-out's child run exists: its parent records it (loaded from disk if it waits there).
      if (shared->replicated() && !shared->owner.serves(run_id{run}.owner())) return;
      auto actor = find_run(run, {});
      if (!actor) return;  // its next look at its children finds the child by its key
      auto address = actor->address();
      self->request(*actor, caf::infinite, join_child_atom::value, step, index, child).then([](bool) {}, [=](caf::error&) {
        // It left memory before it read this: again, from disk (else its next look finds the child).
        shared->unregistered(address);
        if (tries < 3) self->send(self, join_child_atom::value, run, step, index, child, tries + 1);
      });
    },
    [=](admit_atom, const std::string& run, std::int64_t since_ms, int tries) {
      // Its queue's record says it runs: the run checks that it is still in line, and starts.
      if (shared->replicated() && !shared->owner.serves(run_id{run}.owner())) return;
      auto actor = find_run(run, {});
      if (!actor) return;
      auto address = actor->address();
      self->request(*actor, caf::infinite, admit_atom::value, since_ms).then([](bool) {}, [=](caf::error&) {
        shared->unregistered(address);
        // It left memory before it read this: once more (else the keeper's next check tells it).
        if (tries < 2) self->send(self, admit_atom::value, run, since_ms, tries + 1);
      });
    },
    [=](signal_atom, const store::signal_record& signal, const std::string& run_id, const std::string& reply) {
      (*forward_signal)(signal, run_id, reply, 0);
    },
    [=](invoke_atom, const wire::invoke_request& invoke, const std::string& reply) {
      (*create_run)(invoke, [now = wall_ms(), invoke](const std::string& id) -> result<store::run_record> {
        return run_machine::create(id, invoke, now);
      }, reply, nullptr);
    },
    [=](fork_atom, const std::string& from, const std::string& body, const std::string& by, const std::string& reply) {
      // A fork of a run of this node's (docs/FORKS.md): checked against the recorded run before any
      // id or key is claimed, made under a new id by the same path as an invoke.
      auto unpacked = wire::unpack(body, shared->limits);
      if (!unpacked) return shared->reply_error(reply, unpacked.error().code, unpacked.error().message);
      auto request = fork_request_from_value(*unpacked);
      if (!request) return shared->reply_error(reply, request.error().code, request.error().message);
      request->by = by;
      auto recorded = read_recorded_run(shared->store, from);
      if (!recorded) return shared->reply_error(reply, recorded.error().code, recorded.error().message);
      if (!shared->config.find_agent(recorded->record.agent))
        return shared->reply_error(reply, errc::not_found, "run " + from + " belongs to agent '" + recorded->record.agent +
                                                             "', which this node no longer has");
      // A repeat of a fork with the same key names the same fork (keys are the agent's: a fork's
      // are kept apart by the run it forks).
      if (!request->idempotency_key.empty()) request->idempotency_key = fork_key_prefix + from + "/" + request->idempotency_key;
      // Planned once, before any id is claimed; the new run's id is all the record lacks.
      auto planned = plan_fork("", *recorded, *request, wall_ms());
      if (!planned) return shared->reply_error(reply, planned.error().code, planned.error().message);
      wire::invoke_request invoke;
      invoke.agent = recorded->record.agent;
      invoke.by = by;
      invoke.idempotency_key = request->idempotency_key;
      logger()->info("run {} forked at step {} by {}", from, planned->replayed_steps, by);
      auto record = std::make_shared<store::run_record>(std::move(planned->record));
      (*create_run)(invoke, [record](const std::string& id) -> result<store::run_record> {
        auto made = *record;
        made.run_id = id;
        return made;
      }, reply, nullptr);
    },
    [=](claimed_atom, const std::string& key, bool ok, bool written, const std::string& run, const std::string& why) {
      // An idempotency key's claim answered: the invoke that asked goes on with it; those of the
      // same key that waited meanwhile go on with what it named (the run it made, or another's).
      auto found = self->state.claiming.find(key);
      if (found == self->state.claiming.end()) return;
      auto waiting = std::move(found->second);
      self->state.claiming.erase(found);
      key_claim answer{ok, written, run, why};
      key_claim named{ok, false, run, why};
      for (std::size_t i = 0; i < waiting.size(); ++i)
        (*create_run)(waiting[i].invoke, std::move(waiting[i].make_record), waiting[i].reply, i == 0 ? &answer : &named);
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
    [=](retention_atom) {
      // Here, between loads: a run is never loaded while it is being removed.
      apply_retention(*shared, wall_ms(), *retention);
      self->delayed_send(self, std::chrono::milliseconds(shared->config.retention_interval_ms), retention_atom::value);
    },
    [=](stalled_atom) {
      // Runs dropped after a failed write go on once the store writes again (space freed).
      self->delayed_send(self, std::chrono::milliseconds(stalled_check_ms), stalled_atom::value);
      if (!shared->runs.any_stalled()) return;
      auto recovered = shared->store.recover();
      if (!recovered) {
        auto now = steady_ms();
        if (now - self->state.stalled_warned_ms >= 30'000) {
          self->state.stalled_warned_ms = now;
          logger()->warn("runs wait for the run store to write again: {}", recovered.error().message);
        }
        return;
      }
      auto ids = shared->runs.take_stalled();
      if (ids.empty()) return;
      logger()->info("the run store writes again: {} runs stopped by a failed write go on", ids.size());
      self->send(self, adopt_atom::value, ids);
    },
    [=](adopt_atom, const std::vector<std::string>& ids) {
      // Runs taken over from another node, now in this node's store: those with work in flight
      // go on (a step whose task the broker still holds is not sent again).
      for (const auto& id : ids) {
        if (shared->runs.find(id)) continue;
        // Not a run this node no longer serves (dropped after the log refused its write because
        // another took it over): what this store has of it is behind the new owner's.
        if (shared->replicated() && !shared->owner.serves(run_id{id}.owner())) continue;
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
          if (shared->replicated() && !shared->owner.serves(run_id{id}.owner())) continue;
          if (shared->runs.find(id)) continue;  // loaded already (a result for it came first)
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
      scan_wakes({});
    },
  };
}

} // namespace keel::actors
