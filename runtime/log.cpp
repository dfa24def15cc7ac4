#include "runtime/log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace keel::log {

namespace {
std::mutex mutex;
spdlog::sink_ptr shared_sink;
spdlog::level::level_enum shared_level = spdlog::level::info;

spdlog::sink_ptr sink_locked() {
  if (!shared_sink) shared_sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  return shared_sink;
}
} // namespace

void configure(const std::string& level, const std::string& file) {
  std::lock_guard lock{mutex};
  shared_level = spdlog::level::from_str(level);
  if (!file.empty()) shared_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file);
  else shared_sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& existing) {
    existing->sinks().assign(1, shared_sink);
    existing->set_level(shared_level);
  });
}

std::shared_ptr<spdlog::logger> get(const std::string& folder) {
  std::lock_guard lock{mutex};
  if (auto existing = spdlog::get(folder)) return existing;
  auto created = std::make_shared<spdlog::logger>(folder, sink_locked());
  created->set_level(shared_level);
  created->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  spdlog::register_logger(created);
  return created;
}

} // namespace keel::log
