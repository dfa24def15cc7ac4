#include "actors/request_handlers.hpp"
#include "actors/cost_report.hpp"
#include "actors/run_children.hpp"
#include "actors/run_fork.hpp"
#include "actors/actors_log.hpp"

#include "actors/messages.hpp"
#include "actors/run_listing.hpp"
#include "actors/run_views.hpp"
#include "actors/schedule_driver.hpp"
#include "actors/result_offers.hpp"
#include "actors/task_gate.hpp"
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"
#include "runtime/log.hpp"
#include "runtime/step_trace.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

namespace keel::actors {

using wire::value;

namespace {

// Defaults and bounds of the request fields (docs/PROTOCOL.md lists them).
constexpr std::size_t history_limit_default = 500;
constexpr std::size_t history_limit_max = 1000;
constexpr std::size_t reason_chars_max = 4096;

// How long a result that could not be written holds its step: its worker offers it again within
// a backoff's longest pause (2 s) and a request's time; twice that, so one lost offer does not end it.
std::int64_t result_hold_ms(const orchestrator_shared&) { return result_offers::hold_ms; }

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

} // namespace

result<void> serve_requests(const std::shared_ptr<orchestrator_shared>& shared, const caf::actor& actor,
                            std::vector<std::unique_ptr<broker::subscription>>& subscriptions) {
  const auto& subjects = shared->subjects;
  const auto& node_id = shared->node_id;
  auto owned = [shared](const std::string& run, const std::string& reply) {
    auto owner = run_id{run}.owner();
    if (!run_id{run}.valid()) {
      shared->reply_error(reply, errc::not_found, "'" + run + "' is not a keel run id");
      return false;
    }
    return shared->owner.answers_for(owner);  // another node's run, or a lease lapsed: its owner answers
  };
  auto subscribe = [&](const std::string& subject, const std::string& queue, broker::handler h) -> result<void> {
    auto s = shared->nats->subscribe(subject, queue, std::move(h));
    if (!s) return s.error();
    subscriptions.push_back(std::move(*s));
    return success();
  };

  auto on_invoke = [shared, actor](broker::message&& m) {
    if (m.reply.empty()) return;  // nobody to tell the run id: do not create an orphan run
    auto invoke = wire::decode<wire::invoke_request>(m.data, shared->limits);
    if (!invoke) return shared->reply_error(m.reply, invoke.error().code, invoke.error().message);
    if (!invoke->parent.is_null())
      return shared->reply_error(m.reply, errc::invalid_argument, "field 'parent' is set only by keel's orchestrators");
    if (invoke->idempotency_key.rfind(child_key_prefix, 0) == 0 || invoke->idempotency_key.rfind(schedule_key_prefix, 0) == 0 ||
        invoke->idempotency_key.rfind(fork_key_prefix, 0) == 0)
      return shared->reply_error(m.reply, errc::invalid_argument,
                                 std::string("idempotency keys starting with ") + child_key_prefix + ", " + schedule_key_prefix +
                                   " or " + fork_key_prefix + " are keel's own (sub-agents' child runs, schedules' ticks, forks)");
    invoke->by = sender_of(m.subject);
    // A webhook's delivery (docs/WORKFLOWS.md): its key only from the sender the gateway names
    // after the hook, so that no client can claim a delivery's run before the hook's request comes.
    if (const std::string hook = "keel-webhook/"; invoke->idempotency_key.rfind(hook, 0) == 0) {
      auto name = invoke->idempotency_key.substr(hook.size(), invoke->idempotency_key.find('/', hook.size()) - hook.size());
      if (invoke->by != "webhook-" + name)
        return shared->reply_error(m.reply, errc::invalid_argument, "idempotency keys starting with keel-webhook/" + name +
                                                                       "/ are the webhook's own");
    }
    caf::anon_send(actor, invoke_atom::value, std::move(*invoke), m.reply);
  };
  // A sub-agent's child run, asked for by the orchestrator of its parent (only orchestrators may
  // publish here): it names its parent, and the person who started the chain.
  auto on_child_invoke = [shared, actor](broker::message&& m) {
    if (m.reply.empty()) return;
    auto invoke = wire::decode<wire::invoke_request>(m.data, shared->limits);
    if (!invoke) return shared->reply_error(m.reply, invoke.error().code, invoke.error().message);
    const value& parent = invoke->parent;
    auto text = [&](const char* key) { return parent.is_object() && parent.contains(key) && parent[key].is_string(); };
    // A sub-agent's call names where its outcome goes; a fan-out's child, its join (step, index).
    const bool joined = parent.is_object() && parent.contains("join_step") && parent["join_step"].is_number_unsigned() &&
                        parent.contains("join_index") && parent["join_index"].is_number_unsigned();
    if (!text("run_id") || (!text("results_subject") && !joined) || !text("by") || !parent.contains("chain") ||
        !parent["chain"].is_array())
      return shared->reply_error(m.reply, errc::invalid_argument,
                                 "a child run's invoke names its parent: run_id, results_subject (or join_step and join_index), by, chain");
    if (invoke->idempotency_key.rfind(child_key_prefix, 0) != 0)
      return shared->reply_error(m.reply, errc::invalid_argument, "a child run's idempotency key is keel's own");
    invoke->by = parent["by"].get<std::string>();
    caf::anon_send(actor, invoke_atom::value, std::move(*invoke), m.reply);
  };
  // A schedule's tick (actors/schedule_keeper; only orchestrators may publish here): its key names
  // the schedule and the tick, and the run is started in the schedule's name.
  auto on_schedule_invoke = [shared, actor](broker::message&& m) {
    if (m.reply.empty()) return;
    auto invoke = wire::decode<wire::invoke_request>(m.data, shared->limits);
    if (!invoke) return shared->reply_error(m.reply, invoke.error().code, invoke.error().message);
    const std::string prefix = schedule_key_prefix;
    auto& key = invoke->idempotency_key;
    if (key.rfind(prefix, 0) != 0 || key.find('/', prefix.size()) == std::string::npos || !invoke->parent.is_null())
      return shared->reply_error(m.reply, errc::invalid_argument, "a schedule's tick names itself: keel-schedule/<name>/<tick ms>");
    invoke->by = "schedule:" + key.substr(prefix.size(), key.find('/', prefix.size()) - prefix.size());
    caf::anon_send(actor, invoke_atom::value, std::move(*invoke), m.reply);
  };
  auto r = subscribe(subjects.invoke("*"), "orchestrators", on_invoke);
  if (r) r = subscribe(subjects.base() + ".schedules.invoke", "orchestrators", on_schedule_invoke);
  if (r) r = subscribe(subjects.base() + ".children.invoke", "orchestrators", on_child_invoke);
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
  // An outside event for a run (workflows): `{name, payload, id}`; without an id one is made (a
  // client that may send it again gives its own: a repeat is then not taken twice).
  if (r) r = subscribe(subjects.run_signal("*", "*"), "", [shared, actor, owned](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (!owned(run, m.reply)) return;
    auto body = wire::open_request(m.data, "signal", shared->limits);
    if (!body) return shared->reply_error(m.reply, body.error().code, body.error().message);
    store::signal_record signal;
    if (!body->contains("name") || !(*body)["name"].is_string())
      return shared->reply_error(m.reply, errc::invalid_argument, "a signal names its event: name, a string");
    signal.name = (*body)["name"].get<std::string>();
    if (body->contains("id") && !(*body)["id"].is_null()) {
      if (!(*body)["id"].is_string())
        return shared->reply_error(m.reply, errc::invalid_argument, "a signal's id is a string");
      signal.id = (*body)["id"].get<std::string>();
    } else {
      signal.id = "auto-" + make_run_id(keel::node_id{shared->node_id}).value;
    }
    if (body->contains("payload")) signal.payload = (*body)["payload"];
    signal.by = sender_of(m.subject);
    signal.at_ms = wall_ms();
    caf::anon_send(actor, signal_atom::value, std::move(signal), run, m.reply);
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
    // A result naming a newer epoch of the run's domain than this node's is not taken until the
    // lease says this node still holds it (replication::lease_keeper::named): the worker offers it
    // again, and reaches the taker if there is one. The answer names this node's epoch.
    std::uint64_t epoch = 0;
    if (std::string domain(run_id{ref->run_id}.owner()); shared->replicated()) {
      auto [verdict, mine] = shared->owner.leases()->named(domain, ref->epoch);
      if (!shared->owner.answers_for(domain) || verdict != replication::lease_keeper::verdict::held)
        return shared->reply_error(m.reply, errc::unavailable,
                                   "this node does not hold the lease on the runs of " + domain + " now, or cannot say "
                                   "yet in which epoch; offer it again");
      epoch = mine;
    }
    auto recorded = [epoch](bool kept) {
      static const std::string yes = wire::pack(value{{"v", wire::protocol_version}, {"type", "result_recorded"}, {"kept", true}});
      static const std::string no = wire::pack(value{{"v", wire::protocol_version}, {"type", "result_recorded"}, {"kept", false}});
      if (epoch == 0) return kept ? yes : no;
      return wire::pack(value{{"v", wire::protocol_version}, {"type", "result_recorded"}, {"kept", kept}, {"epoch", epoch}});
    };
    auto run = shared->runs.find(ref->run_id);
    if (run && shared->runs.is_starting(ref->run_id)) {
      shared->runs.renew_hold(ref->run_id, ref->step, result_hold_ms(*shared));
      return shared->reply_error(m.reply, errc::unavailable, "run " + ref->run_id + " is being loaded; offer it again");
    }
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
        if (shared->owner.serves(run_id{ref->run_id}.owner()))
          caf::anon_send(actor, adopt_atom::value, std::vector<std::string>{ref->run_id});
        shared->runs.renew_hold(ref->run_id, ref->step, result_hold_ms(*shared));
        return shared->reply_error(m.reply, errc::unavailable, "run " + ref->run_id + " is being loaded; offer it again");
      }
      return shared->publish(m.reply, recorded(false));
    }
    if (!shared->runs.received(ref->run_id, ref->step)) {
      // Late or repeated: answered after what is being written, which may be its first copy. Only
      // "not needed" once that copy is certainly written (else the worker would drop the task
      // whose result is lost): if its write failed, the worker is told to offer it again.
      auto& lane = shared->lane_of(ref->run_id);
      lane.writer->after_pending([shared, &lane, recorded, reply = m.reply, run_id = ref->run_id, step = ref->step](const result<void>&) {
        if (shared->runs.result_not_needed(run_id, step)) return lane.publish(reply, recorded(false));
        shared->runs.renew_hold(run_id, step, result_hold_ms(*shared));
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
      [gate, run, shared, &lane, recorded, reply = m.reply, run_id = ref->run_id, step = ref->step](const result<void>& written) {
        gate->on_written(written.ok());
        if (written) {
          shared->runs.result_written(run_id, step, result_hold_ms(*shared));
          lane.publish(reply, recorded(true));
        } else {
          shared->runs.receive_failed(run_id, step, result_hold_ms(*shared));
          shared->reply_error(reply, errc::unavailable, "the result could not be written: " + written.error().message);
        }
        // The run's actor may be ahead of disk: drop it, so that the run reloads from disk (when
        // the worker offers the result again, or once the store writes again).
        if (!written) {
          shared->runs.stalled(run_id, run.address());
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
    else subscriptions.push_back(std::move(*s));
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
    // The answer names this node's epoch of the run's domain: a worker that has seen a newer one
    // does not act on it. A question naming a newer one than this node's is checked on the lease
    // first, and left unanswered if this node was taken over.
    std::uint64_t epoch = 0;
    if (shared->replicated()) {
      auto named_value = body->value("epoch", value());
      std::uint64_t named = named_value.is_number_unsigned() ? named_value.get<std::uint64_t>() : 0;
      auto [verdict, mine] = shared->owner.leases()->named(std::string(run_id{run}.owner()), named);
      if (verdict == replication::lease_keeper::verdict::unsure)  // asked again shortly, once the lease is read
        return shared->reply_error(m.reply, errc::unavailable, "epoch " + std::to_string(named) + " of " +
                                                                 std::string(run_id{run}.owner()) +
                                                                 " is being checked against its lease: ask again");
      if (verdict != replication::lease_keeper::verdict::held || mine == 0) return;  // not this node's: the taker answers
      epoch = mine;
    }
    auto answer = [&](bool wanted) {
      value a{{"v", wire::protocol_version}, {"type", "task_wanted"}, {"wanted", wanted}};
      if (epoch != 0) a["epoch"] = epoch;
      shared->publish(m.reply, wire::pack(a));
    };
    switch (shared->runs.answer_task(run, step, attempt)) {
      case run_registry::task_answer::wanted: return answer(true);
      case run_registry::task_answer::not_wanted: return answer(false);
      case run_registry::task_answer::held:
        // A result of that step came and is not written yet: its worker still holds it and offers
        // it again; this worker waits (running the task would pay for the same call twice).
        return shared->reply_error(m.reply, errc::unavailable, "a result of step " + std::to_string(step) + " of run " +
                                                                 run + " came and is being written: ask again");
      case run_registry::task_answer::unknown: break;
    }
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
    auto offset_value = body->value("offset", value());
    if (!offset_value.is_null() && !offset_value.is_number_unsigned())
      return shared->reply_error(m.reply, errc::invalid_argument, "a messages request's offset is an unsigned integer");
    auto offset = offset_value.is_null() ? std::uint64_t{0} : offset_value.get<std::uint64_t>();
    if (from >= to) return shared->reply_error(m.reply, errc::invalid_argument, "from must be below to");
    // Pieces of messages up to three quarters of a NATS message: one message larger than that goes
    // in several replies, the worker asking from where the last one stopped.
    auto budget = static_cast<std::size_t>(shared->config.message_bytes_max) * 3 / 4;
    auto packed = shared->store.messages(run, from, std::min<std::uint64_t>(to, from + 10'000), budget + static_cast<std::size_t>(std::min<std::uint64_t>(offset, SIZE_MAX - budget)));
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
  // Forks (docs/FORKS.md): made by the supervisor, as invokes are; a replay reads the recorded
  // run and drives a machine of its own.
  if (r) r = subscribe(subjects.run_fork("*", "*"), "", [actor, owned, shared](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (m.reply.empty() || !owned(run, m.reply)) return;
    if (auto body = wire::open_request(m.data, "fork", shared->limits); !body)
      return shared->reply_error(m.reply, body.error().code, body.error().message);
    caf::anon_send(actor, fork_atom::value, run, std::string(m.data), sender_of(m.subject), m.reply);
  });
  if (r) r = subscribe(subjects.base() + ".runs.*.replay", "", [owned, shared](broker::message&& m) {
    auto run = run_of_subject(m.subject, shared->subjects);
    if (m.reply.empty() || !owned(run, m.reply)) return;
    if (auto body = wire::open_request(m.data, "replay", shared->limits); !body)
      return shared->reply_error(m.reply, body.error().code, body.error().message);
    // On this subscription's own thread: a replay waits only for the replays before it.
    auto recorded = read_recorded_run(shared->store, run);
    if (!recorded) return shared->reply_error(m.reply, recorded.error().code, recorded.error().message);
    const auto* agent = shared->config.find_agent(recorded->record.agent);
    if (!agent)
      return shared->reply_error(m.reply, errc::not_found, "run " + run + " belongs to agent '" + recorded->record.agent +
                                                             "', which this node no longer has");
    auto report = to_value(replay_run(*recorded, *agent, shared->context_for(*agent)));
    report["v"] = wire::protocol_version;
    report["type"] = "replay";
    report["run_id"] = run;
    shared->publish(m.reply, wire::pack(report));
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
    if (!shared->runs.is_counted(run))
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
  if (r) r = subscribe(subjects.base() + ".costs", "", [shared](broker::message&& m) {
    if (m.reply.empty()) return;
    auto body = wire::open_request(m.data, "costs", shared->limits);
    if (!body) return shared->reply_error(m.reply, body.error().code, body.error().message);
    auto window = cost_window(*body, wall_ms());
    if (!window) return shared->reply_error(m.reply, window.error().code, window.error().message);
    auto report = cost_report(shared->store, window->first, window->second);
    if (!report) return shared->reply_error(m.reply, report.error().code, report.error().message);
    (*report)["v"] = wire::protocol_version;
    (*report)["type"] = "cost_list";
    (*report)["node_id"] = shared->node_id;
    shared->publish(m.reply, wire::pack(*report));
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
  return r;
}

} // namespace keel::actors
