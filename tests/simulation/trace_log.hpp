// Sends what a folder's logger says into the running simulation's trace (with simulated time),
// instead of the terminal: a failing seed's report then shows what the code said and when.
#pragma once

#include "runtime/log.hpp"
#include "tests/simulation/world.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>

namespace keel::simulation {

class trace_sink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  static std::atomic<world*>& current() {
    static std::atomic<world*> w{nullptr};
    return w;
  }

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (auto* w = current().load()) w->note("log: " + std::string(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}
};

// While it lives, `folder`'s logger writes into `w`'s trace only.
class traced_logs {
public:
  traced_logs(world& w, const std::string& folder) : logger_(log::get(folder)) {
    trace_sink::current() = &w;
    saved_ = logger_->sinks();
    logger_->sinks() = {std::make_shared<trace_sink>()};
  }
  ~traced_logs() {
    logger_->sinks() = saved_;
    trace_sink::current() = nullptr;
  }

private:
  std::shared_ptr<spdlog::logger> logger_;
  std::vector<spdlog::sink_ptr> saved_;
};

} // namespace keel::simulation
