#include "gateway/client_limiter.hpp"

#include <algorithm>

namespace keel::gateway {

client_limiter::client_limiter(thread_pool& pool, std::size_t running_max)
  : state_(std::make_shared<state>()) {
  state_->pool = &pool;
  state_->running_max = std::max<std::size_t>(1, running_max);
}

client_limiter::~client_limiter() { stop(); }

void client_limiter::stop() {
  std::lock_guard lock{state_->mutex};
  state_->pool = nullptr;  // a job still running hands nothing on
  state_->lines.clear();
}

// Under s->mutex: the pool is used only while it is known to be there.
void client_limiter::start_locked(const std::shared_ptr<state>& s, const std::string& client, std::function<void()> job) {
  if (!s->pool) return;
  s->pool->submit([s, client, job = std::move(job)] {
    job();
    std::lock_guard lock{s->mutex};
    auto it = s->lines.find(client);
    if (it == s->lines.end()) return;
    if (!it->second.waiting.empty()) {
      auto next = std::move(it->second.waiting.front());  // its place goes to its next request
      it->second.waiting.pop_front();
      start_locked(s, client, std::move(next));
    } else if (--it->second.running == 0) {
      s->lines.erase(it);
    }
  });
}

void client_limiter::submit(const std::string& client, std::function<void()> job) {
  std::lock_guard lock{state_->mutex};
  if (!state_->pool) return;
  auto& l = state_->lines[client];
  if (l.running >= state_->running_max) {
    l.waiting.push_back(std::move(job));
    return;
  }
  ++l.running;
  start_locked(state_, client, std::move(job));
}

std::size_t client_limiter::held(const std::string& client) const {
  std::lock_guard lock{state_->mutex};
  auto it = state_->lines.find(client);
  return it == state_->lines.end() ? 0 : it->second.running + it->second.waiting.size();
}

} // namespace keel::gateway
