#include "tests/simulation/world.hpp"

#include <cassert>
#include <exception>

namespace keel::simulation {

namespace {
thread_local int current_process = -1;
} // namespace

world::world(std::uint64_t seed) : seed_(seed), random_(seed) {}

world::~world() { halt(); }

std::int64_t world::uniform(std::int64_t low, std::int64_t high) {
  std::uniform_int_distribution<std::int64_t> d(low, high);
  return d(random_);
}

bool world::chance(double p) { return std::uniform_real_distribution<double>(0.0, 1.0)(random_) < p; }

bool world::in_process() const { return current_process >= 0; }

int world::current_node() const {
  std::lock_guard lock{mutex_};
  return current_process >= 0 ? processes_[static_cast<std::size_t>(current_process)]->node : -1;
}

void world::enqueue(int id, std::int64_t at_ms) {
  events_.emplace(at_ms, random_(), enqueued_++, id);
}

void world::give_turn(int id) {
  running_ = id;
  if (id == -1) scheduler_turn_.notify_one();
  else if (id >= 0) processes_[static_cast<std::size_t>(id)]->turn.notify_one();
}

void world::wait_for_turn(std::unique_lock<std::mutex>& lock, int id) {
  auto& me = processes_[static_cast<std::size_t>(id)]->turn;
  me.wait(lock, [&] { return running_ == id; });
  if (halting_) {
    // A process that waits while it unwinds (a destructor) goes on; any other stops here.
    if (std::uncaught_exceptions() > 0) return;
    throw halted{};
  }
}

void world::next_turn(std::unique_lock<std::mutex>& lock, bool check) {
  if (check && after_each_ && !halting_) {
    running_ = -2;
    lock.unlock();
    after_each_();
    lock.lock();
  }
  while (true) {
    if (halting_ || events_.empty() || std::get<0>(*events_.begin()) > until_ms_) return give_turn(-1);
    auto [at, tie, order, id] = *events_.begin();
    (void)tie;
    (void)order;
    events_.erase(events_.begin());
    int node = processes_[static_cast<std::size_t>(id)]->node;
    if (crashed_.count(node)) continue;  // it never runs again (unwound at halt)
    if (auto p = paused_until_.find(node); p != paused_until_.end() && p->second > at) {
      enqueue(id, p->second);
      continue;
    }
    now_ms_ = std::max(now_ms_, at);
    return give_turn(id);
  }
}

int world::spawn(int node, std::string name, std::function<void()> body) {
  std::lock_guard lock{mutex_};
  auto p = std::make_unique<process>();
  p->id = static_cast<int>(processes_.size());
  p->node = node;
  p->name = std::move(name);
  auto* raw = p.get();
  processes_.push_back(std::move(p));
  enqueue(raw->id, now_ms_);
  raw->thread = std::thread([this, raw, body = std::move(body)] {
    current_process = raw->id;
    try {
      {
        std::unique_lock l{mutex_};
        wait_for_turn(l, raw->id);
      }
      body();
    } catch (const halted&) {
    } catch (const std::exception& e) {
      std::lock_guard l{mutex_};
      errors_.push_back(raw->name + " threw: " + e.what());
    } catch (...) {
      std::lock_guard l{mutex_};
      errors_.push_back(raw->name + " threw something that is not an exception");
    }
    std::unique_lock l{mutex_};
    raw->finished = true;
    if (halting_) return give_turn(-1);
    next_turn(l, true);
  });
  return raw->id;
}

void world::sleep(std::int64_t ms) {
  int id = current_process;
  assert(id >= 0 && "world::sleep outside a process");
  std::unique_lock lock{mutex_};
  if (halting_) {
    if (std::uncaught_exceptions() > 0) return;
    throw halted{};
  }
  enqueue(id, now_ms_ + std::max<std::int64_t>(ms, 0));
  next_turn(lock, true);
  wait_for_turn(lock, id);
}

void world::join(int id) {
  if (!in_process()) return;  // the scheduler's side: only once the world is halted
  while (true) {
    {
      std::lock_guard lock{mutex_};
      if (processes_[static_cast<std::size_t>(id)]->finished) return;
    }
    sleep(1);
  }
}

void world::run_until(std::int64_t until_ms, const std::function<void()>& after_each) {
  {
    std::unique_lock lock{mutex_};
    if (halting_) return;
    until_ms_ = until_ms;
    after_each_ = after_each;
    next_turn(lock, false);
    scheduler_turn_.wait(lock, [&] { return running_ == -1; });
    after_each_ = nullptr;
    now_ms_ = std::max(now_ms_, until_ms);
  }
}

void world::halt() {
  std::vector<process*> all;
  {
    std::lock_guard lock{mutex_};
    if (halting_) return;
    halting_ = true;
    for (auto& p : processes_) all.push_back(p.get());
  }
  // One at a time, as they ran: each unwinds from where it waited.
  for (auto* p : all) {
    {
      std::unique_lock lock{mutex_};
      if (!p->finished) {
        give_turn(p->id);
        scheduler_turn_.wait(lock, [&] { return p->finished && running_ == -1; });
      }
    }
    if (p->thread.joinable()) p->thread.join();
  }
}

void world::pause(int node, std::int64_t ms) {
  std::lock_guard lock{mutex_};
  auto& until = paused_until_[node];
  until = std::max(until, now_ms_ + ms);
}

void world::suspend(int node, std::int64_t ms) {
  pause(node, ms);
  std::lock_guard lock{mutex_};
  suspensions_[node].emplace_back(now_ms_, now_ms_ + ms);
}

void world::crash(int node) {
  std::lock_guard lock{mutex_};
  crashed_.insert(node);
}

bool world::crashed(int node) const {
  std::lock_guard lock{mutex_};
  return crashed_.count(node) > 0;
}

bool world::paused(int node) const {
  std::lock_guard lock{mutex_};
  auto p = paused_until_.find(node);
  return p != paused_until_.end() && p->second > now_ms_;
}

std::int64_t world::suspended_ms(int node) const {
  std::lock_guard lock{mutex_};
  std::int64_t total = 0;
  if (auto s = suspensions_.find(node); s != suspensions_.end())
    for (auto [from, to] : s->second) total += std::max<std::int64_t>(0, std::min(now_ms_, to) - from);
  return total;
}

std::vector<std::string> world::errors() const {
  std::lock_guard lock{mutex_};
  return errors_;
}

void world::note(const std::string& line) {
  std::lock_guard lock{mutex_};
  trace_.push_back(std::to_string(now_ms_) + " ms: " + line);
}

std::string world::trace() const {
  std::lock_guard lock{mutex_};
  std::string out;
  for (const auto& l : trace_) out += l + "\n";
  return out;
}

} // namespace keel::simulation
