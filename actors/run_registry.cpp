#include "actors/run_registry.hpp"

#include "runtime/clock.hpp"

#include <algorithm>
#include <iterator>

namespace keel::actors {

run_registry::run_registry(std::function<std::int64_t()> now) : now_(now ? std::move(now) : std::function<std::int64_t()>(steady_ms)) {}

void run_registry::registered(const std::string& run_id, const caf::actor& a) {
  std::lock_guard lock{mutex_};
  if (auto old = actors_.find(run_id); old != actors_.end()) run_of_actor_.erase(old->second.id());
  actors_[run_id] = a;
  run_of_actor_[a.id()] = run_id;
}

void run_registry::unregistered(const std::string& run_id) {
  std::lock_guard lock{mutex_};
  if (auto it = actors_.find(run_id); it != actors_.end()) {
    run_of_actor_.erase(it->second.id());
    actors_.erase(it);
  }
  in_flight_.erase(run_id);
  starting_.erase(run_id);
}

std::string run_registry::unregistered(const caf::actor_addr& actor) {
  std::lock_guard lock{mutex_};
  auto by_actor = run_of_actor_.find(actor.id());
  if (by_actor == run_of_actor_.end()) return {};
  std::string run_id = std::move(by_actor->second);
  run_of_actor_.erase(by_actor);
  auto it = actors_.find(run_id);
  if (it == actors_.end() || it->second.address() != actor) return {};  // replaced already
  actors_.erase(it);
  in_flight_.erase(run_id);
  return run_id;
}

std::vector<caf::actor> run_registry::all_actors() {
  std::lock_guard lock{mutex_};
  std::vector<caf::actor> out;
  for (const auto& [run, actor] : actors_) out.push_back(actor);
  return out;
}

caf::actor run_registry::find(const std::string& run_id) {
  std::lock_guard lock{mutex_};
  auto it = actors_.find(run_id);
  return it == actors_.end() ? caf::actor{} : it->second;
}

void run_registry::sent(const std::string& run_id, std::uint64_t step, std::uint32_t attempt) {
  std::lock_guard lock{mutex_};
  in_flight_[run_id] = in_flight_task{step, attempt, false};
}

bool run_registry::received(const std::string& run_id, std::uint64_t step) {
  std::lock_guard lock{mutex_};
  auto it = in_flight_.find(run_id);
  if (it == in_flight_.end() || it->second.step != step || it->second.result_received) return false;
  it->second.result_received = true;
  return true;
}

void run_registry::receive_failed(const std::string& run_id, std::uint64_t step, std::int64_t hold_ms) {
  auto now = now_();
  std::lock_guard lock{mutex_};
  if (auto it = in_flight_.find(run_id); it != in_flight_.end() && it->second.step == step) it->second.result_received = false;
  auto& h = holds_[run_id];
  if (h.written && h.step >= step && h.until_ms > now) return;  // a later copy was written already
  h = hold{step, now + hold_ms, false};
  sweep_locked(now);
}

void run_registry::sweep_locked(std::int64_t now) {
  if (holds_.size() < holds_sweep_at_) return;
  // Those past their time: a worker that stopped offering (it died), a result written long ago.
  for (auto it = holds_.begin(); it != holds_.end();) it = it->second.until_ms <= now ? holds_.erase(it) : std::next(it);
  holds_sweep_at_ = std::max<std::size_t>(1024, 2 * holds_.size());
}

void run_registry::renew_hold(const std::string& run_id, std::uint64_t step, std::int64_t hold_ms) {
  auto now = now_();
  std::lock_guard lock{mutex_};
  if (auto it = holds_.find(run_id); it != holds_.end() && !it->second.written && it->second.step == step && it->second.until_ms > now)
    it->second.until_ms = now + hold_ms;
}

void run_registry::result_written(const std::string& run_id, std::uint64_t step, std::int64_t hold_ms) {
  // Every step's write comes here: a run that never had a hold costs one lookup, nothing kept.
  std::lock_guard lock{mutex_};
  auto it = holds_.find(run_id);
  if (it == holds_.end() || it->second.step > step) return;  // none, or a later step's hold or record
  it->second = hold{step, now_() + hold_ms, true};
}

bool run_registry::held_locked(const std::string& run_id, std::uint64_t step, std::int64_t now) {
  auto it = holds_.find(run_id);
  if (it == holds_.end() || it->second.step != step || it->second.written) return false;
  if (it->second.until_ms > now) return true;
  holds_.erase(it);
  return false;
}

bool run_registry::result_unwritten(const std::string& run_id, std::uint64_t step) {
  auto now = now_();
  std::lock_guard lock{mutex_};
  return held_locked(run_id, step, now);
}

std::size_t run_registry::unwritten_count() {
  std::lock_guard lock{mutex_};
  std::size_t n = 0;
  for (const auto& [run, h] : holds_) n += h.written ? 0 : 1;
  return n;
}

run_registry::task_answer run_registry::answer_task(const std::string& run_id, std::uint64_t step, std::uint32_t attempt) {
  auto now = now_();
  std::lock_guard lock{mutex_};
  bool held = held_locked(run_id, step, now);
  if (!actors_.count(run_id) || starting_.count(run_id)) return held ? task_answer::held : task_answer::unknown;
  auto it = in_flight_.find(run_id);
  // Another step or attempt in flight: this one is not wanted, held or not.
  if (it == in_flight_.end() || it->second.step != step || it->second.attempt != attempt) return task_answer::not_wanted;
  if (held) return task_answer::held;
  return it->second.result_received ? task_answer::not_wanted : task_answer::wanted;
}

bool run_registry::result_not_needed(const std::string& run_id, std::uint64_t step) {
  std::lock_guard lock{mutex_};
  if (!actors_.count(run_id) || starting_.count(run_id)) return false;
  auto it = in_flight_.find(run_id);
  return it == in_flight_.end() || it->second.step != step || it->second.result_received;
}

std::optional<bool> run_registry::wanted(const std::string& run_id, std::uint64_t step, std::uint32_t attempt) {
  std::lock_guard lock{mutex_};
  if (!actors_.count(run_id) || starting_.count(run_id)) return std::nullopt;
  auto it = in_flight_.find(run_id);
  return it != in_flight_.end() && it->second.step == step && it->second.attempt == attempt && !it->second.result_received;
}

void run_registry::starting_now(const std::string& run_id) {
  std::lock_guard lock{mutex_};
  starting_.insert(run_id);
}

void run_registry::started(const std::string& run_id) {
  std::lock_guard lock{mutex_};
  starting_.erase(run_id);
}

bool run_registry::is_starting(const std::string& run_id) {
  std::lock_guard lock{mutex_};
  return starting_.count(run_id) > 0;
}

void run_registry::stalled(const std::string& run_id, const caf::actor_addr& dropped) {
  std::lock_guard lock{stalled_mutex_};
  stalled_[run_id] = dropped;
}

std::vector<std::string> run_registry::take_stalled() {
  std::vector<std::string> out;
  std::lock_guard lock{stalled_mutex_};
  for (auto it = stalled_.begin(); it != stalled_.end();) {
    // One still leaving waits for the next look; one loaded again meanwhile is left alone.
    auto actor = find(it->first);
    if (actor && actor.address() == it->second) {
      ++it;
      continue;
    }
    if (!actor) out.push_back(it->first);
    it = stalled_.erase(it);
  }
  return out;
}

bool run_registry::any_stalled() {
  std::lock_guard lock{stalled_mutex_};
  return !stalled_.empty();
}

void run_registry::creating(const std::string& run_id) {
  std::lock_guard lock{uncounted_mutex_};
  uncounted_.try_emplace(run_id);
  uncounted_size_ = uncounted_.size();
}

std::vector<std::string> run_registry::take_waiting(const std::string& run_id, bool counted) {
  if (uncounted_size_.load(std::memory_order_relaxed) == 0) return {};
  std::lock_guard lock{uncounted_mutex_};
  auto it = uncounted_.find(run_id);
  if (it == uncounted_.end()) return {};
  auto replies = std::move(it->second);
  it->second.clear();
  if (counted) uncounted_.erase(it);
  uncounted_size_ = uncounted_.size();
  return replies;
}

bool run_registry::is_counted(const std::string& run_id) {
  std::lock_guard lock{uncounted_mutex_};
  return !uncounted_.count(run_id);
}

run_registry::wait_outcome run_registry::wait_until_counted(const std::string& run_id, const std::string& reply) {
  std::lock_guard lock{uncounted_mutex_};
  auto it = uncounted_.find(run_id);
  if (it == uncounted_.end()) return wait_outcome::counted;
  if (it->second.size() >= 1024) return wait_outcome::full;
  it->second.push_back(reply);
  return wait_outcome::queued;
}

} // namespace keel::actors
