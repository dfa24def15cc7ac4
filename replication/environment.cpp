#include "replication/environment.hpp"

#include "runtime/log.hpp"

#include <pthread.h>
#include <time.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <thread>

namespace keel::replication {

namespace {

class system_thread final : public joinable {
public:
  explicit system_thread(std::thread t) : thread_(std::move(t)) {}
  ~system_thread() override { join(); }
  void join() override {
    if (thread_.joinable()) thread_.join();
  }

private:
  std::thread thread_;
};

class system_env final : public environment {
public:
  std::int64_t now_ms() override {
    timespec ts{};
    ::clock_gettime(CLOCK_BOOTTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
  }
  void sleep_ms(std::int64_t ms, const std::atomic<bool>& stop) override {
    // In slices, so that a stop is seen within 20 ms without a condition variable per caller.
    for (auto until = now_ms() + ms; !stop.load() && now_ms() < until;)
      std::this_thread::sleep_for(std::chrono::milliseconds(std::clamp<std::int64_t>(until - now_ms(), 1, 20)));
  }
  std::unique_ptr<joinable> spawn(const std::string& name, std::function<void()> body) override {
    return std::make_unique<system_thread>(std::thread([name, body = std::move(body)] {
      pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
      try {
        body();
      } catch (const std::exception& e) {
        log::get("replication")->error("{}: stopped by an error: {}", name, e.what());
      } catch (...) {
        log::get("replication")->error("{}: stopped by an unknown error", name);
      }
    }));
  }
};

} // namespace

environment& system_environment() {
  static system_env env;
  return env;
}

} // namespace keel::replication
