#include "actors/run_children.hpp"
#include "runtime/error_reply.hpp"

#include "actors/actors_log.hpp"
#include "actors/messages.hpp"
#include "actors/run_views.hpp"
#include "actors/workflow_tools.hpp"
#include "runtime/ids.hpp"
#include "runtime/utf8.hpp"
#include "runtime/run_state.hpp"

#include <spdlog/spdlog.h>

#include <thread>

namespace keel::actors {

using wire::value;

namespace {

constexpr std::int64_t request_timeout_ms = 15'000;
constexpr int hand_over_tries = 8;

std::string children_invoke(const orchestrator_shared& shared) { return shared.subjects.base() + ".children.invoke"; }

// A result handed to a run's results subject as a worker hands one: offered until kept (or
// "not needed": the step has its result already), a few times.
void hand_over(const std::shared_ptr<orchestrator_shared>& shared, const std::string& subject, const wire::task_result& r) {
  auto bytes = wire::encode(r);
  for (int attempt = 0; attempt < hand_over_tries; ++attempt) {
    auto reply = shared->nats->request(subject, bytes, request_timeout_ms);
    if (reply) {
      auto opened = wire::unpack(reply->data, shared->limits);
      if (opened && opened->is_object() && text_field(*opened, "type") != "error") return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250 << std::min(attempt, 4)));
  }
  logger()->warn("run {}: the outcome of step {} could not be handed over; the run asks for it later", r.run_id, r.step);
}

wire::task_result result_for(const std::string& run_id, std::uint64_t step, std::uint32_t attempt, value payload) {
  wire::task_result r;
  r.run_id = run_id;
  r.step = step;
  r.attempt = attempt;
  r.worker = "sub-agent";
  r.ok = true;
  r.payload = std::move(payload);
  return r;
}

value error_payload(const std::string& message) {
  return value{{"status", "done"}, {"result", {{"error", message}}}, {"is_error", true}};
}

} // namespace

std::optional<value> child_outcome(const value& summary) {
  if (!summary.is_object()) return std::nullopt;
  auto status = summary.value("status", std::string{});
  if (status != "completed" && status != "failed" && status != "cancelled") return std::nullopt;
  value result{{"run_id", summary.value("run_id", std::string{})}, {"agent", summary.value("agent", std::string{})},
               {"status", status}, {"steps", summary.value("steps", std::int64_t{0})},
               {"duration_ms", summary.value("updated_ms", std::int64_t{0}) - summary.value("created_ms", std::int64_t{0})}};
  if (summary.contains("total_usage")) result["total_usage"] = summary["total_usage"];
  if (summary.contains("total_cost_usd")) result["total_cost_usd"] = summary["total_cost_usd"];
  if (status == "completed") result["output"] = summary.value("output", std::string{});
  else result["error"] = summary.contains("error") && summary["error"].is_string() ? summary["error"].get<std::string>()
                                                                                   : "the run was " + status;
  return value{{"status", "done"}, {"result", result}, {"is_error", status != "completed"}};
}

wire::invoke_request child_invoke(const store::run_record& parent_record, const wire::task& t) {
  auto state = store::run_state_from_value(parent_record.state);
  value chain = state && state->parent.is_object() && state->parent.contains("chain") && state->parent["chain"].is_array()
                  ? state->parent["chain"] : value::array();
  chain.push_back(parent_record.run_id);
  wire::invoke_request invoke(t.payload.value("sub_agent", std::string{}), t.payload.value("task", std::string{}),
                              std::string(child_key_prefix) + parent_record.run_id + "/" + std::to_string(t.step), parent_record.session_id);
  invoke.parent = value{{"run_id", parent_record.run_id}, {"agent", parent_record.agent}, {"task_step", t.step},
                        {"attempt", t.attempt}, {"call_id", t.payload.value("call_id", std::string{})},
                        {"results_subject", t.reply_to}, {"chain", chain},
                        {"by", state ? state->started_by : std::string{}}};
  return invoke;
}

void start_child(const std::shared_ptr<orchestrator_shared>& shared, const caf::actor& parent,
                 wire::invoke_request invoke, const wire::task& t) {
  shared->children_pool->submit([shared, parent, invoke, t] {
    for (int attempt = 0;; ++attempt) {
      auto reply = shared->nats->request(children_invoke(*shared), wire::encode(invoke), request_timeout_ms);
      if (reply) {
        auto made = wire::decode<wire::invoke_reply>(reply->data, shared->limits);
        if (made) {
          caf::anon_send(parent, child_atom::value, t.step, made->run_id, t.reply_to);
          return;
        }
        if (made.error().code != errc::unavailable && made.error().code != errc::timeout) {
          // What another try cannot change: the model reads why.
          return hand_over(shared, t.reply_to, result_for(t.run_id, t.step, t.attempt,
                                                           error_payload("agent " + invoke.agent + " could not start: " + made.error().message)));
        }
      }
      if (attempt >= 20) {
        logger()->warn("run {}: the child run of step {} could not be started yet; the run tries again later", t.run_id, t.step);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500 << std::min(attempt, 4)));
    }
  });
}

void check_child(const std::shared_ptr<orchestrator_shared>& shared, const std::string& child_run_id,
                 const std::string& parent_run_id, std::uint64_t step, std::uint32_t attempt,
                 const std::string& results_subject) {
  shared->children_pool->submit([=] {
    auto reply = shared->nats->request(shared->subjects.base() + ".runs." + child_run_id + ".get",
                                       wire::pack(value{{"v", wire::protocol_version}, {"type", "get_run"}}), request_timeout_ms);
    if (!reply) return;
    auto opened = wire::unpack(reply->data, shared->limits);
    if (!opened || !opened->is_object() || !opened->contains("run")) return;
    auto outcome = child_outcome((*opened)["run"]);
    if (outcome) hand_over(shared, results_subject, result_for(parent_run_id, step, attempt, std::move(*outcome)));
  });
}

namespace {

// A fan-out child's outcome, as the event keel.join/<step>/<index> sent to its parent by keel
// (join_sender): offered until the parent took it, or said it has no use for it (ended).
void send_join_outcome(const std::shared_ptr<orchestrator_shared>& shared, const std::string& parent, std::uint64_t step,
                       std::size_t index, const std::string& child, value outcome) {
  // Bounded: the parent keeps every child's outcome until the join ends.
  if (outcome.contains("result") && outcome["result"].contains("output") && outcome["result"]["output"].is_string()) {
    auto& text = outcome["result"]["output"];
    auto whole = text.get<std::string>();
    // Cut as text: a cut inside a character would be refused as a message.
    if (whole.size() > fan_out_output_bytes_max)
      text = wire::repaired_utf8(std::string_view(whole).substr(0, fan_out_output_bytes_max)) + "\n[... " +
             std::to_string(whole.size() - fan_out_output_bytes_max) + " more bytes: keel show " + child + "]";
  }
  auto body = wire::pack(value{{"v", wire::protocol_version}, {"type", "signal"},
                               {"name", std::string(join_event_prefix) + std::to_string(step) + "/" + std::to_string(index)},
                               {"id", "join-" + child}, {"payload", outcome}});
  for (int attempt = 0; attempt < hand_over_tries; ++attempt) {
    auto reply = shared->nats->request(shared->subjects.run_signal(parent, join_sender), body, request_timeout_ms);
    if (reply) {
      auto opened = wire::unpack(reply->data, shared->limits);
      if (opened && opened->is_object() && text_field(*opened, "type") == "signal_reply") return;
      // Ended (conflict), or refused for good: nothing more to do.
      if (opened && opened->is_object() && opened->contains("error") && (*opened)["error"].is_object()) {
        auto code = error_code_of(*opened);
        if (code == "conflict") return;
        if (code != "unavailable" && code != "timeout") {
          logger()->error("run {}: the outcome of its fan-out child {} was refused: {}", parent, child, opened->dump());
          return;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250 << std::min(attempt, 4)));
  }
  logger()->warn("run {}: the outcome of its fan-out child {} could not be handed over; the run asks for it later", parent, child);
}

value refused_outcome(const std::string& agent, const std::string& why) {
  return value{{"status", "done"}, {"result", {{"agent", agent}, {"status", "failed"}, {"error", why}}}, {"is_error", true}};
}

} // namespace

wire::invoke_request join_child_invoke(const store::run_record& parent_record, std::uint64_t step, std::size_t index) {
  auto state = store::run_state_from_value(parent_record.state);
  value chain = state && state->parent.is_object() && state->parent.contains("chain") && state->parent["chain"].is_array()
                  ? state->parent["chain"] : value::array();
  chain.push_back(parent_record.run_id);
  const auto& child = state->join->children.at(index);
  wire::invoke_request invoke(child.agent, child.task,
                              std::string(child_key_prefix) + parent_record.run_id + "/j" + std::to_string(step) + "." +
                                std::to_string(index),
                              parent_record.session_id);
  invoke.parent = value{{"run_id", parent_record.run_id}, {"agent", parent_record.agent}, {"join_step", step},
                        {"join_index", index}, {"chain", chain}, {"by", state ? state->started_by : std::string{}}};
  return invoke;
}

void start_join_children(const std::shared_ptr<orchestrator_shared>& shared, const caf::actor& supervisor,
                         const std::string& parent_run_id, std::uint64_t step,
                         std::vector<std::pair<std::size_t, wire::invoke_request>> invokes) {
  for (auto& [index, invoke] : invokes) {
    shared->children_pool->submit([shared, supervisor, parent_run_id, step, index = index, invoke = std::move(invoke)] {
      for (int attempt = 0; attempt < 8; ++attempt) {
        auto reply = shared->nats->request(children_invoke(*shared), wire::encode(invoke), request_timeout_ms);
        if (reply) {
          auto made = wire::decode<wire::invoke_reply>(reply->data, shared->limits);
          if (made) {
            caf::anon_send(supervisor, join_child_atom::value, parent_run_id, step, index, made->run_id, 0);
            return;
          }
          if (made.error().code != errc::unavailable && made.error().code != errc::timeout)
            return send_join_outcome(shared, parent_run_id, step, index, "(none)",
                                     refused_outcome(invoke.agent, "agent " + invoke.agent + " could not start: " + made.error().message));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(500 << std::min(attempt, 4)));
      }
      logger()->warn("run {}: child {} of its fan-out could not be started yet; the run tries again later", parent_run_id, index);
    });
  }
}

void check_join_children(const std::shared_ptr<orchestrator_shared>& shared, const std::string& parent_run_id,
                         std::uint64_t step, const std::vector<std::pair<std::size_t, std::string>>& children) {
  for (const auto& [index, child] : children) {
    shared->children_pool->submit([shared, parent_run_id, step, index = index, child = child] {
      auto reply = shared->nats->request(shared->subjects.base() + ".runs." + child + ".get",
                                         wire::pack(value{{"v", wire::protocol_version}, {"type", "get_run"}}), request_timeout_ms);
      if (!reply) return;
      auto opened = wire::unpack(reply->data, shared->limits);
      if (!opened || !opened->is_object() || !opened->contains("run")) return;
      if (auto outcome = child_outcome((*opened)["run"])) send_join_outcome(shared, parent_run_id, step, index, child, std::move(*outcome));
    });
  }
}

void notify_parent(const std::shared_ptr<orchestrator_shared>& shared, const store::run_record& child) {
  auto state = store::run_state_from_value(child.state);
  if (!state || !state->parent.is_object()) return;
  const value& p = state->parent;
  if (p.contains("join_step")) {
    auto outcome = child_outcome(summary(child));
    if (!outcome) return;
    auto parent = p.value("run_id", std::string{});
    auto step = p.value("join_step", std::uint64_t{0});
    auto index = p.value("join_index", std::uint64_t{0});
    shared->children_pool->submit([shared, parent, step, index, id = child.run_id, o = std::move(*outcome)]() mutable {
      send_join_outcome(shared, parent, step, index, id, std::move(o));
    });
    return;
  }
  auto outcome = child_outcome(summary(child));
  auto subject = p.value("results_subject", std::string{});
  auto parent_run = p.value("run_id", std::string{});
  if (!outcome || subject.empty() || parent_run.empty()) return;
  auto r = result_for(parent_run, p.value("task_step", std::uint64_t{0}),
                      static_cast<std::uint32_t>(p.value("attempt", std::uint64_t{1})), std::move(*outcome));
  shared->children_pool->submit([shared, subject, r] { hand_over(shared, subject, r); });
}

void cancel_children(const std::shared_ptr<orchestrator_shared>& shared, const std::vector<std::string>& children,
                     const std::string& parent_run_id, const std::string& reason) {
  for (const auto& child : children) {
    if (child.empty()) continue;
    shared->children_pool->submit([shared, child, parent_run_id, reason] {
      auto body = wire::pack(value{{"v", wire::protocol_version}, {"type", "cancel"},
                                   {"reason", reason.empty() ? "its parent run " + parent_run_id + " was cancelled" : reason}});
      for (int attempt = 0; attempt < 5; ++attempt) {
        auto reply = shared->nats->request(shared->subjects.run_cancel(child, "keel"), body, request_timeout_ms);
        if (reply) return;
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
      logger()->warn("run {}: its child run {} could not be cancelled", parent_run_id, child);
    });
  }
}

} // namespace keel::actors
