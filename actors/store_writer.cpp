#include "actors/store_writer.hpp"

#include <pthread.h>
#include <chrono>

#include "runtime/clock.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <spdlog/spdlog.h>

namespace keel::actors {

store_writer::store_writer(store::run_store& store, std::size_t batch_max, replicate_fn replicate)
  : store_(store), batch_max_(batch_max), replicate_(std::move(replicate)), thread_([this] {
      pthread_setname_np(pthread_self(), "keel store");
      loop();
    }) {}

store_writer::~store_writer() { stop(); }

void store_writer::submit(store::run_transition transition, continuation then,
                          const std::function<void()>& announce) {
  std::vector<item> own;
  {
    std::unique_lock lock{mutex_};
    assert(!stopping_ && "a transition after the writer stopped would be lost");
    if (writing_ || !queue_.empty()) {
      queue_.push_back({std::move(transition), std::move(then)});
      bool wake = !writing_;  // whoever is writing takes it up after, without a wake-up
      lock.unlock();
      if (announce) announce();
      if (wake) wake_.notify_one();
      return;
    }
    writing_ = true;  // nothing ahead of it: write it here, in order
    own.push_back({std::move(transition), std::move(then)});
  }
  if (announce) announce();
  write(own);
  // One transition queued behind this one (at low load: what the run's actor worked out from the
  // result just written) is written here too, sparing the writer's thread a wake-up; more go to
  // the writer's thread, which writes them together.
  std::unique_lock lock{mutex_};
  if (queue_.size() == 1 && queue_.front().transition && !stopping_) {
    own.push_back(std::move(queue_.front()));
    queue_.pop_front();
    lock.unlock();
    write(own);
    lock.lock();
  }
  writing_ = false;
  if (!queue_.empty()) wake_.notify_one();
}

void store_writer::submit_async(store::run_transition transition, continuation then) {
  enqueue({std::move(transition), std::move(then)});
}

void store_writer::after_pending(continuation then) { enqueue({std::nullopt, std::move(then)}); }

void store_writer::enqueue(item i) {
  bool wake = false;
  {
    std::lock_guard lock{mutex_};
    assert(!stopping_ && "a transition after the writer stopped would be lost");
    queue_.push_back(std::move(i));
    // While a write is under way (a caller's or the writer's), the writer's thread finds this
    // when it is done: waking it now would only put it back to sleep.
    wake = !writing_;
  }
  if (wake) wake_.notify_one();
}

void store_writer::stop() {
  {
    std::lock_guard lock{mutex_};
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void store_writer::write(std::vector<item>& batch) {
  std::vector<store::run_transition> transitions;
  std::vector<std::string> run_of_item;  // empty for a wait for what is pending
  for (auto& i : batch) {
    run_of_item.push_back(i.transition ? i.transition->record.run_id : std::string());
    if (i.transition) transitions.push_back(std::move(*i.transition));
  }
  result<void> written = success();
  std::int64_t replicate_started = 0;
  replication::log_writer::started replicated;
  if (!transitions.empty() && replicate_) {
    // Room on this disk first: a batch the log has and the store refuses would leave the two apart.
    std::vector<const store::run_transition*> all;
    for (const auto& t : transitions) all.push_back(&t);
    written = store_.room_for(store::encode_transitions(all).size());
    if (written) {
      replicate_started = steady_ms();
      replicated = replicate_(transitions);
    }
  }
  if (written && !replicated.refused.empty())
    std::erase_if(transitions, [&](const store::run_transition& t) { return replicated.refused.count(t.record.run_id) > 0; });
  if (written && !transitions.empty()) {
    auto started = std::chrono::steady_clock::now();
    written = store_.apply(transitions);
    metrics::observe("keel_store_write_duration_seconds", {},
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
  replication::log_writer::failures unconfirmed;
  if (replicated.wait) {
    unconfirmed = replicated.wait();
    metrics::observe("keel_run_log_append_duration_seconds", {}, static_cast<double>(steady_ms() - replicate_started) / 1000.0);
  }
  if (!written)
    log::get("actors")->error("run store write failed, {} transitions not written: {}", transitions.size(),
                              written.error().message);
  for (const auto& [run, why] : replicated.refused)
    log::get("actors")->warn("run {}: not written: {}", run, why.message);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& run = run_of_item[i];
    if (run.empty() || !written) {
      batch[i].then(written);
      continue;
    }
    if (auto r = replicated.refused.find(run); r != replicated.refused.end()) batch[i].then(r->second);
    else if (auto u = unconfirmed.find(run); u != unconfirmed.end()) batch[i].then(u->second);
    else batch[i].then(written);
  }
  batch.clear();
}

void store_writer::loop() {
  std::vector<item> batch;
  while (true) {
    {
      std::unique_lock lock{mutex_};
      wake_.wait(lock, [this] { return (stopping_ || !queue_.empty()) && !writing_; });
      if (queue_.empty() && stopping_) return;
      writing_ = true;
      while (!queue_.empty() && batch.size() < batch_max_) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    write(batch);
    std::lock_guard lock{mutex_};
    writing_ = false;
  }
}

} // namespace keel::actors
