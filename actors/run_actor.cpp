#include "actors/run_actor.hpp"
#include "actors/actors_log.hpp"

#include "actors/messages.hpp"
#include "actors/run_children.hpp"
#include "actors/run_views.hpp"
#include "actors/task_gate.hpp"
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"
#include "runtime/log.hpp"
#include "runtime/step_trace.hpp"

#include <spdlog/spdlog.h>

namespace keel::actors {

using wire::value;

namespace {

enum class reply_kind { none, invoke, resume, cancel, signal };

// Clients waiting for a run to stop running (a wait request) are answered once it is suspended or
// has ended, after the write that says so. They are memory only: after a restart a client asks
// again (its request times out first).
constexpr std::size_t waiters_max = 256;

// How long a task may be in flight before its run checks that the broker still holds it (in the
// work queue, or on a worker, which keeps it there until its result is handed over): three worker
// liveness periods, 10 s at least (a task whose worker went silent is handed to another within
// one). A broker that confirmed a task and then lost it (a replica that becomes leader without
// it) would otherwise leave its run waiting for good.
std::chrono::milliseconds audit_after(const orchestrator_shared& shared) {
  return std::chrono::milliseconds(std::max<std::int64_t>(10'000, 3 * shared.config.worker_liveness_ms));
}

void audit_later(const caf::actor& me, const orchestrator_shared& shared, std::uint64_t step, std::uint32_t attempt) {
  caf::delayed_anon_send(me, audit_after(shared), audit_atom::value, step, attempt);
}
void audit_later(const caf::actor& me, const orchestrator_shared& shared, const wire::task& t) {
  audit_later(me, shared, t.step, t.attempt);
}

// A task goes to the work queue (and is audited later); a sub-agent's call starts its child run.
void dispatch(const std::shared_ptr<orchestrator_shared>& shared, const caf::actor& me, const wire::task& t,
              const std::string& queue, const std::optional<wire::invoke_request>& child) {
  if (child) {
    shared->runs.sent(t.run_id, t.step, t.attempt);  // its outcome is taken as a task's result
    return start_child(shared, me, *child, t);
  }
  shared->send_task(t, queue);
  audit_later(me, *shared, t);
}

// A child run not heard from is asked after a while, then less and less often (to 5 minutes): its
// own hand-over is the way its outcome comes; this covers one lost to a crash.
void check_child_later(const caf::actor& me, const orchestrator_shared& shared, std::uint64_t step,
                       const std::string& child, const std::string& reply_to, std::int64_t after_ms) {
  caf::delayed_anon_send(me, std::chrono::milliseconds(after_ms), child_check_atom::value, step, child, reply_to,
                         std::min<std::int64_t>(after_ms * 2, 300'000));
  (void)shared;
}

// A step is given up at its deadline (wall clock; a declared tool's timeout_ms, step_timeout_ms): the run looks then.
void deadline_later(const caf::actor& me, std::uint64_t step, std::uint32_t attempt, std::int64_t deadline_ms) {
  auto wait = std::max<std::int64_t>(0, deadline_ms - wall_ms());
  caf::delayed_anon_send(me, std::chrono::milliseconds(wait), deadline_atom::value, step, attempt);
}

// The queue a run's step in flight went to: a tool worker's, or the agent's.
const std::string& queue_of(const run_machine& machine, const std::string& agent_queue) {
  const auto& pending = machine.state().pending;
  return pending && !pending->queue.empty() ? pending->queue : agent_queue;
}

// The attempt of `step` that the work queue holds for the run: 0 when it holds none.
result<std::uint32_t> held_attempt(orchestrator_shared& shared, const std::string& queue, const std::string& run,
                                   std::uint64_t step) {
  auto held = shared.js->last_message(shared.subjects.tasks_stream(), shared.subjects.task(queue, run, step));
  if (!held) return held.error();
  if (!*held) return std::uint32_t{0};
  auto task = wire::unpack(**held, shared.limits);
  if (!task || !task->is_object()) return std::uint32_t{0};
  const auto& attempt = (*task)["attempt"];
  return attempt.is_number_unsigned() ? static_cast<std::uint32_t>(attempt.get<std::uint64_t>()) : std::uint32_t{0};
}

// Asks, on the broker pool, which attempt of `step` the work queue holds; the answer comes to the
// run's actor as (held_atom, step, attempt, attempt held or 0, why the broker could not say or
// empty). Not on the actor's thread: a broker slow to answer would hold it, and every run
// scheduled there.
void ask_held(run_actor_type* self, const std::shared_ptr<orchestrator_shared>& shared, std::uint64_t step,
              std::uint32_t attempt) {
  std::weak_ptr<orchestrator_shared> weak = shared;
  auto me = caf::actor_cast<caf::actor>(self);
  bool asked = shared->broker_pool->submit([weak, me, queue = queue_of(*self->state.machine, self->state.queue),
                                            run = self->state.machine->run_id(), step, attempt] {
    auto s = weak.lock();
    if (!s) return;
    result<std::uint32_t> held = make_error(errc::internal, "the question failed");
    try {
      held = held_attempt(*s, queue, run, step);
    } catch (const std::exception& e) {
      held = make_error(errc::internal, e.what());
    }
    caf::anon_send(me, held_atom::value, step, attempt, held ? *held : std::uint32_t{0},
                   held ? std::string{} : held.error().message);
  });
  // The orchestrator stops: answered at once, as a broker that could not say.
  if (!asked) caf::anon_send(me, held_atom::value, step, attempt, std::uint32_t{0}, std::string("the orchestrator stops"));
}



// Writes the transition, then (on the writer's thread, in order) publishes events, replies,
// stores tasks in the work queue; a run with nothing left to do asks to leave memory. With a
// gate (the step's result already being written on its own), the task goes out as soon as that
// write is done, without waiting for this one.
// A tool task of a run in a session also carries the approvals remembered for the session.
void add_session_rules(orchestrator_shared& shared, const store::run_record& r, std::vector<wire::task>& tasks) {
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

// A run that is not running and was loaded only to be asked something leaves memory once what is
// being written for it is (the idle message checks that nothing happened since).
void leave_if_idle(run_actor_type* self, const std::shared_ptr<orchestrator_shared>& shared) {
  const auto& r = self->state.machine->record();
  if (store::is_active(r.status)) return;
  auto& lane = shared->lane_of(r.run_id);
  lane.writer->after_pending([me = caf::actor_cast<caf::actor>(self), seq = r.last_event_seq](const result<void>&) {
    caf::anon_send(me, idle_atom::value, seq);
  });
}

// The supervisor holds when each run next falls due by the clock; told whenever that changes.
void report_wake(run_actor_type* self) {
  auto wake = self->state.machine->next_wake_ms();
  if (wake == self->state.wake_reported || !self->state.supervisor) return;
  self->state.wake_reported = wake;
  caf::anon_send(self->state.supervisor, wake_at_atom::value, self->state.machine->run_id(), wake);
}

void perform(run_actor_type* self, const std::shared_ptr<orchestrator_shared>& shared, effects e,
             const std::string& reply_to, reply_kind kind, const std::shared_ptr<task_gate>& gate = nullptr) {
  const run_machine& machine = *self->state.machine;
  report_wake(self);
  caf::actor me = caf::actor_cast<caf::actor>(self);
  auto& lane = shared->lane_of(machine.run_id());
  std::string reply_bytes;
  if (kind == reply_kind::invoke) reply_bytes = wire::encode(wire::invoke_reply{machine.run_id(), true});
  if (kind == reply_kind::resume && e.resume_reply) reply_bytes = wire::encode(*e.resume_reply);
  if (kind == reply_kind::cancel) reply_bytes = run_reply(machine.record());
  if (kind == reply_kind::signal && e.signal_reply) reply_bytes = wire::pack(*e.signal_reply);
  if (!e.changed) {
    if (e.queue_enter && shared->queues)
      shared->queues->enter(e.queue_enter->name, machine.run_id(), e.queue_enter->key, e.queue_enter->since_ms);
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
  // Sub-agents' calls: the invoke of each child, made now from the run's record.
  std::vector<std::optional<wire::invoke_request>> children;
  for (const auto& t : tasks)
    children.push_back(is_sub_agent_task(t) ? std::optional(child_invoke(machine.record(), t)) : std::nullopt);
  const bool ended = std::any_of(e.transition.events.begin(), e.transition.events.end(), [](const wire::event& ev) {
    return ev.event_type == "run_completed" || ev.event_type == "run_failed" || ev.event_type == "run_cancelled";
  });
  // A fan-out's children to start (their invokes made now from the run's record) or ask after.
  std::vector<std::pair<std::size_t, wire::invoke_request>> join_starts;
  std::vector<std::pair<std::size_t, std::string>> join_checks;
  std::uint64_t join_step = 0;
  if (e.join) {
    join_step = e.join->step;
    for (auto index : e.join->start) join_starts.emplace_back(index, join_child_invoke(machine.record(), join_step, index));
    join_checks = std::move(e.join->check);
  }
  std::optional<store::run_record> ended_child;
  if (ended && machine.state().parent.is_object()) ended_child = machine.record();
  if (e.deadline_ms > 0)
    for (const auto& t : tasks) deadline_later(me, t.step, t.attempt, e.deadline_ms);
  auto seq = e.transition.record.last_event_seq;
  auto observed = self->state.observer->take(machine.record(), machine.state(), e.transition.events);
  step_trace::mark(step_trace::transition_built);
  if (gate && e.task_delay_ms == 0 && !tasks.empty()) {
    // Encoded here, while the result's write is in flight: once it is on disk, only the publish
    // is left. (Its audit is armed once it is sent: the step must be in flight by then.)
    std::vector<std::string> encoded;
    for (std::size_t i = 0; i < tasks.size(); ++i) encoded.push_back(children[i] ? std::string() : wire::encode(tasks[i]));
    gate->on_ready([shared, me, tasks = std::move(tasks), encoded = std::move(encoded), children, queue = self->state.queue]() mutable {
      step_trace::mark(step_trace::publishing);
      for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (children[i]) {
          dispatch(shared, me, tasks[i], queue, children[i]);
        } else {
          shared->send_task(tasks[i], queue, std::move(encoded[i]));
          audit_later(me, *shared, tasks[i]);
        }
      }
      step_trace::mark(step_trace::task_published);
    });
    tasks.clear();
  }
  lane.writer->submit(
    std::move(e.transition),
    [shared, &lane, me, run_id = machine.run_id(), events_subject, events = std::move(events), tasks = std::move(tasks),
     delay = e.task_delay_ms, leave = e.leave_memory, seq, reply_to,
     reply_bytes, queue = self->state.queue, waiters = std::move(waiters),
     waiters_bytes = std::move(waiters_bytes), children = std::move(children), ended_child = std::move(ended_child),
     cancel = std::move(e.cancel_children), cancel_reason = std::move(e.cancel_reason), queue_enter = std::move(e.queue_enter),
     queue_release = std::move(e.queue_release), join_starts = std::move(join_starts), join_checks = std::move(join_checks),
     join_step, supervisor = self->state.supervisor, observed = std::move(observed)](const result<void>& written) mutable {
      if (!written) {
        // The answer says what happened. Unknown: written here, not confirmed by the run log
        // (it takes effect if the log has it: the client reads the run to find out). Refused
        // because another node has the run now, or the lease is not certain: not done, ask
        // again (the owner answers). A full disk (unavailable) or any other failure (io): not
        // done.
        auto code = written.error().code;
        std::string message;
        if (code == errc::unknown) {
          message = written.error().message + "; read the run (keel show " + run_id + ") to see whether it did";
        } else if (code == errc::conflict) {
          code = errc::unavailable;
          message = "not done: " + written.error().message + "; ask again";
        } else {
          if (code != errc::unavailable) code = errc::io;
          message = "the run store could not write: " + written.error().message;
        }
        shared->reply_error(reply_to, code, message);
        shared->not_counted(run_id, written.error().message);
        for (const auto& w : waiters) shared->reply_error(w, code, message);
        // Memory is now ahead of disk: drop the actor so the run reloads from what is written,
        // by itself once the store writes again.
        shared->runs.stalled(run_id, me.address());
        caf::anon_send_exit(me, caf::exit_reason::user_shutdown);
        return;
      }
      shared->counted(run_id);
      if (observed) observed();
      // Events before the task they announce: a watcher sees "step started" before the text
      // the step streams (on one server, the order of publishing is the order of delivery).
      step_trace::mark(step_trace::publishing);
      for (const auto& bytes : events) lane.publish(events_subject, bytes);
      for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (delay > 0) caf::delayed_anon_send(me, std::chrono::milliseconds(delay), send_atom::value, tasks[i]);
        else dispatch(shared, me, tasks[i], queue, i < children.size() ? children[i] : std::nullopt);
      }
      if (!cancel.empty()) cancel_children(shared, cancel, run_id, cancel_reason);
      if (ended_child) notify_parent(shared, *ended_child);
      if (!join_starts.empty() && supervisor) start_join_children(shared, supervisor, run_id, join_step, std::move(join_starts));
      if (!join_checks.empty()) check_join_children(shared, run_id, join_step, join_checks);
      if (shared->queues && queue_enter) shared->queues->enter(queue_enter->name, run_id, queue_enter->key, queue_enter->since_ms);
      if (shared->queues && queue_release) shared->queues->release(queue_release->name, run_id, queue_release->since_ms);
      step_trace::mark(step_trace::task_published);
      lane.publish(reply_to, reply_bytes);
      for (const auto& w : waiters) lane.publish(w, waiters_bytes);
      if (leave) caf::anon_send(me, idle_atom::value, seq);
    });
}

} // namespace

caf::behavior run_actor(run_actor_type* self, std::shared_ptr<orchestrator_shared> shared,
                        store::run_record record, const config::agent_config* agent, bool start_now,
                        bool from_disk, std::string invoke_reply, caf::actor supervisor) {
  self->state.observer.emplace(record);
  self->state.machine.emplace(std::move(record), *agent, shared->context_for(*agent));
  self->state.supervisor = std::move(supervisor);
  self->state.queue = agent->queue;
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
  // What is left of the start once it is known whether the work queue still holds the step in
  // flight (queued: its result is awaited, not sent again).
  auto finish_start = [=](bool queued) {
    perform(self, shared, self->state.machine->start(queued), invoke_reply,
            invoke_reply.empty() ? reply_kind::none : reply_kind::invoke);
    shared->runs.started(self->state.machine->run_id());
  };
  // A step in flight when this node stopped: its task may still be in the work queue (queued, or
  // running on a worker that will hand the result over): then it is not sent again. The broker is
  // asked off this thread; until it answers, the run takes no other message (they wait in its
  // mailbox, and results offered meanwhile are told it is being loaded).
  const auto& pending = self->state.machine->state().pending;
  bool ask_queue = start_now && !recovered && from_disk && pending && store::is_active(self->state.machine->record().status);
  if (start_now && !recovered && !ask_queue) finish_start(false);
  if (!start_now || recovered) shared->runs.started(self->state.machine->run_id());
  caf::behavior running{
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
      if (!self->state.machine->wants(t.step, t.attempt)) return;
      auto child = is_sub_agent_task(t) ? std::optional(child_invoke(self->state.machine->record(), t)) : std::nullopt;
      dispatch(shared, caf::actor_cast<caf::actor>(self), t, self->state.queue, child);
    },
    [=](audit_atom, std::uint64_t step, std::uint32_t attempt) {
      // A task in flight for a while: still in the work queue (queued, or on a worker), or its
      // result here, else the broker lost it and the next attempt goes (an older attempt that
      // turns up after all is refused when its worker asks).
      auto& machine = *self->state.machine;
      const auto& run = machine.run_id();
      auto me = caf::actor_cast<caf::actor>(self);
      if (!machine.wants(step, attempt) || !shared->runs.still_in_flight(run, step, attempt)) return;
      // Not yet in the work queue, being offered (the broker did not confirm it, or this node's
      // lease is not certain now): asked again later. Asked before the queue is read, so that a
      // task that leaves the publisher for the queue meanwhile is found there.
      if (shared->publisher->offering(keel::task_id{run, step, attempt}.to_string())) return audit_later(me, *shared, step, attempt);
      ask_held(self, shared, step, attempt);
    },
    [=](held_atom, std::uint64_t step, std::uint32_t attempt, std::uint32_t held, const std::string& why) {
      // The broker's answer to an audit: read before anything below is looked at.
      auto& machine = *self->state.machine;
      const auto& run = machine.run_id();
      auto me = caf::actor_cast<caf::actor>(self);
      if (!machine.wants(step, attempt)) return;
      if (!why.empty()) {
        logger()->warn("run {}: cannot tell whether step {} attempt {} is still queued ({}); asked again later", run,
                       step, attempt, why);
        return audit_later(me, *shared, step, attempt);
      }
      // Held, or its result here and not yet written (its worker offers it again).
      if (held == attempt || shared->runs.result_unwritten(run, step)) return audit_later(me, *shared, step, attempt);
      // Asked after the queue: a worker hands a result over (marking it received) before its
      // task leaves the queue.
      if (!shared->runs.still_in_flight(run, step, attempt)) return;
      logger()->warn("run {}: step {} attempt {} is not in the work queue ({}) and its result never came: the broker "
                     "lost its task; sent again", run, step, attempt,
                     held ? "it holds attempt " + std::to_string(held) : std::string("it holds none"));
      perform(self, shared, machine.on_task_lost(step, attempt, "the broker lost its task"), {}, reply_kind::none);
    },
    [=](deadline_atom, std::uint64_t step, std::uint32_t attempt) {
      auto& machine = *self->state.machine;
      auto e = machine.on_deadline(step, attempt);
      if (e.changed) {
        logger()->warn("run {}: step {} attempt {} gave no result in time ({})", machine.run_id(), step, attempt,
                       e.transition.events.empty() ? std::string() : e.transition.events.front().event_type);
        return perform(self, shared, std::move(e), {}, reply_kind::none);
      }
      // Woken early (the wall clock was set back): wait again until the deadline.
      const auto& pending = machine.state().pending;
      if (machine.wants(step, attempt) && pending->deadline_ms > 0)
        deadline_later(caf::actor_cast<caf::actor>(self), step, attempt, pending->deadline_ms);
    },
    [=](child_atom, std::uint64_t step, const std::string& child, const std::string& reply_to) {
      // A sub-agent's child run exists: recorded once, and asked after a while if it does not answer.
      auto e = self->state.machine->on_child_started(step, child);
      if (e.changed) perform(self, shared, std::move(e), {}, reply_kind::none);
      // Cancelled while its child was being started, or the call given up (step_timeout_ms): the child goes too.
      const auto& r = self->state.machine->record();
      if (r.status == store::run_status::cancelled) return cancel_children(shared, {child}, r.run_id);
      if (!self->state.machine->expects(step) && !e.changed) {
        bool known = false;
        if (self->state.machine->state().children.is_array())
          for (const auto& c : self->state.machine->state().children) known = known || c.value("run_id", std::string{}) == child;
        if (!known) return cancel_children(shared, {child}, r.run_id, "the call of run " + r.run_id + " it was started for is over");
      }
      if (self->state.machine->expects(step))
        check_child_later(caf::actor_cast<caf::actor>(self), *shared, step, child, reply_to, audit_after(*shared).count());
    },
    [=](child_check_atom, std::uint64_t step, const std::string& child, const std::string& reply_to, std::int64_t next_ms) {
      auto& machine = *self->state.machine;
      const auto& pending = machine.state().pending;
      if (!pending || pending->step != step || pending->sub_agent.empty()) return;
      check_child(shared, child, machine.run_id(), step, pending->attempt, reply_to);
      check_child_later(caf::actor_cast<caf::actor>(self), *shared, step, child, reply_to, next_ms);
    },
    [=](join_child_atom, std::uint64_t step, std::size_t index, const std::string& child) {
      auto e = self->state.machine->on_join_child(step, index, child);
      bool changed = e.changed;
      perform(self, shared, std::move(e), {}, reply_kind::none);
      // Started after its fan-out was over (ended, cancelled, another child won): the child goes too.
      const auto& r = self->state.machine->record();
      if (!changed && !self->state.machine->awaits_join_child(step, index, child))
        cancel_children(shared, {child}, r.run_id, "the fan-out of run " + r.run_id + " it was started for is over");
      if (!changed) leave_if_idle(self, shared);
      return true;
    },
    [=](admit_atom, std::int64_t since_ms) {
      auto e = self->state.machine->on_admitted(since_ms);
      bool changed = e.changed;
      perform(self, shared, std::move(e), {}, reply_kind::none);
      if (!changed) leave_if_idle(self, shared);
      return true;
    },
    [=](wake_atom) {
      // The supervisor's schedule says something is due; the machine checks its own state. The
      // next wake is told again either way (the schedule holds this one a minute later until then).
      self->state.wake_reported = -1;
      auto e = self->state.machine->on_wake();
      bool changed = e.changed;
      perform(self, shared, std::move(e), {}, reply_kind::none);
      // Loaded for nothing (woken early): back to disk, after what is being written.
      if (!changed) leave_if_idle(self, shared);
      return true;
    },
    [=](signal_atom, const store::signal_record& signal, const std::string& reply) {
      auto e = self->state.machine->on_signal(signal);
      if (!e) shared->reply_error(reply, e.error().code, e.error().message);
      bool changed = e && e->changed;
      if (e) perform(self, shared, std::move(*e), reply, reply_kind::signal);
      if (!changed) leave_if_idle(self, shared);
      return true;
    },
    [=](idle_atom, std::uint64_t seq) {
      // Leave memory only if nothing happened since the write that made the run idle.
      const auto& r = self->state.machine->record();
      bool idle = !store::is_active(r.status);
      if (idle && r.last_event_seq == seq) self->quit();
    },
  };
  if (!ask_queue) return running;
  // Loaded with a step in flight: the run takes only the broker's answer until it has started.
  ask_held(self, shared, pending->step, pending->attempt);
  self->set_default_handler(caf::skip);
  return {
    [=](held_atom, std::uint64_t step, std::uint32_t attempt, std::uint32_t held, const std::string& why) {
      const auto& run = self->state.machine->run_id();
      if (!why.empty())
        logger()->warn("run {}: cannot tell whether step {} is still queued ({}); unless its result is here, it is sent again",
                       run, step, why);
      // Held, and the attempt due: an older attempt still there (a copy being handed out again)
      // is refused by the run when a worker asks, so the attempt due is sent. Or its result came
      // here and is not written yet: the worker holding it offers it again.
      bool queued = (held != 0 && held == attempt) || shared->runs.result_unwritten(run, step);
      logger()->info("run {}: step {} attempt {} was in flight; the queue holds {}: {}", run, step, attempt,
                     held ? "attempt " + std::to_string(held) : std::string("none of it"),
                     queued ? "its result is awaited" : "sent again");
      if (queued) {
        shared->runs.sent(run, step, attempt);
        audit_later(caf::actor_cast<caf::actor>(self), *shared, step, attempt);
        const auto& in_flight = self->state.machine->state().pending;
        if (in_flight && in_flight->deadline_ms > 0)
          deadline_later(caf::actor_cast<caf::actor>(self), step, attempt, in_flight->deadline_ms);
      }
      finish_start(queued);
      self->set_default_handler(caf::print_and_drop);
      self->become(running);
    },
  };
}

} // namespace keel::actors
