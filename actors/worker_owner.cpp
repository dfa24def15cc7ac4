// A task's two calls to its run's owner: whether it is still wanted, and its result's hand-over.
// Both name the newest epoch of the run's node this worker has seen, and act on no answer of an
// older owner (docs/PROTOCOL.md, "Epochs").
#include "actors/worker_shared.hpp"
#include "runtime/error_reply.hpp"

#include "actors/result_offers.hpp"
#include "runtime/backoff.hpp"
#include "runtime/clock.hpp"
#include "runtime/log.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

namespace keel::actors {

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("actors");
  return l;
}

std::uint64_t epoch_in(const value& body) {
  return body.contains("epoch") && body["epoch"].is_number_unsigned() ? body["epoch"].get<std::uint64_t>() : 0;
}

// Whether an answer in `epoch` may be acted on: not one of an owner older than one seen.
bool current(worker_shared& shared, const std::string& domain, std::uint64_t epoch) {
  auto known = shared.epochs.saw(domain, epoch);
  return epoch == 0 || epoch >= known;
}

} // namespace

result<bool> still_wanted(worker_shared& shared, const wire::task& t) {
  const std::string domain(keel::run_id{t.run_id}.owner());
  value request{{"v", wire::protocol_version}, {"type", "task_wanted"}, {"step", t.step}, {"attempt", t.attempt}};
  if (auto known = shared.epochs.highest(domain)) request["epoch"] = known;
  auto reply = shared.lane_of(t.run_id).request(shared.subjects.run_task_wanted(t.run_id), wire::pack(request),
                                                shared.config().request_timeout_ms);
  if (!reply) return reply.error();
  auto body = wire::unpack(reply->data, shared.limits);
  if (!body || !body->is_object()) return make_error(errc::malformed, "the owner's answer could not be read");
  if (text_field(*body, "type") == "error") {
    // The owner has no such run: nobody wants it.
    if (body->contains("error") && (*body)["error"].is_object() &&
        error_code_of(*body) == "not_found")
      return false;
    return make_error(errc::unavailable, "the owner could not say");
  }
  if (auto epoch = epoch_in(*body); !current(shared, domain, epoch))
    return make_error(errc::unavailable, "an owner of " + domain + " in epoch " + std::to_string(epoch) +
                                           " answered; a newer epoch has been seen");
  return body->value("wanted", false);
}

result<void> hand_over(worker_shared& shared, const std::string& reply_to, const std::string& bytes, const wire::task& t) {
  const std::string domain(keel::run_id{t.run_id}.owner());
  auto started = steady_ms();
  auto next_warning = started + shared.config().result_delivery_ms;
  backoff pause{result_offers::pause_first_ms, result_offers::pause_max_ms};
  // Each offer names the newest epoch known then: one learnt during a long call (or while the
  // result waited) tells an older owner that it was taken over.
  std::string offered = bytes;
  std::uint64_t stamped = t.epoch;
  while (true) {
    if (auto known = shared.epochs.highest(domain); known > stamped) {
      stamped = known;
      auto r = wire::decode<wire::task_result>(bytes, shared.limits);
      if (!r) {
        logger()->warn("run {}: the result of task {} could not be read again to name epoch {}: {}", t.run_id, t.step, known,
                       r.error().message);
      } else {
        r->epoch = known;
        // A few bytes more: a result at the bound is offered as it was rather than refused as too large.
        if (auto again = wire::encode(*r); again.size() <= shared.limits.message_bytes_max) offered = std::move(again);
      }
    }
    // Answered within the owner's hold (actors/result_offers.hpp): waits no longer than that allows.
    auto reply = shared.lane_of(t.run_id).request(reply_to, offered,
                                                  result_offers::answer_wait_ms(shared.config().request_timeout_ms));
    std::string why = reply ? std::string("the owner is not ready") : reply.error().message;
    if (reply) {
      auto body = wire::unpack(reply->data, shared.limits);
      if (body && body->is_object() && text_field(*body, "type") == "result_recorded") {
        auto epoch = epoch_in(*body);
        if (current(shared, domain, epoch)) return success();
        why = "an owner in epoch " + std::to_string(epoch) + " took it, and a newer epoch has been seen";
      } else {
        why = "an unreadable answer";
        if (body && body->is_object() && body->contains("error") && (*body)["error"].is_object())
          why = error_message_of(*body, why);
        bool again = body && body->is_object() && body->contains("error") && (*body)["error"].is_object() &&
                     (error_code_of(*body) == "unavailable" || error_code_of(*body) == "internal");
        if (!again) {
          logger()->warn("run {}: the owner refused the result of task {}: {}", t.run_id, t.step, why);
          return success();  // it will never take it: nothing to hand over
        }
      }
    }
    // A stopping worker tries until its drain ends; the task then goes to another worker.
    if (shared.stopping && steady_ms() >= shared.drain_deadline_ms)
      return make_error(errc::unavailable, "the result of task " + std::to_string(t.step) + " of run " + t.run_id +
                                             " could not be handed over before the worker stopped: " + why);
    if (auto now = steady_ms(); now >= next_warning) {
      logger()->error("run {}: the result of task {} has not been handed over for {} s ({}); still trying", t.run_id, t.step,
                      (now - started) / 1000, why);
      next_warning = now + shared.config().result_delivery_ms;
    }
    auto pause_ms = pause.next_ms();
    if (shared.stopping) pause_ms = std::max<std::int64_t>(0, std::min(pause_ms, shared.drain_deadline_ms - steady_ms()));
    std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
  }
}

} // namespace keel::actors
