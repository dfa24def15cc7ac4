#include "runtime/log.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/details/fmt_helper.h>
#include <spdlog/formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <mutex>

namespace keel::log {

namespace {
std::mutex mutex;
spdlog::sink_ptr shared_sink;
spdlog::level::level_enum shared_level = spdlog::level::info;
bool json_format = false;
std::shared_ptr<std::string> node_name = std::make_shared<std::string>();

constexpr const char* text_pattern = "%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v";

bool id_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' || c == '.';
}

// The word after `word ` at a word boundary, made of id characters (a trailing '.' dropped).
std::string after(std::string_view message, std::string_view word, bool digits_only) {
  for (std::size_t at = message.find(word); at != std::string_view::npos; at = message.find(word, at + 1)) {
    if (at > 0 && id_char(message[at - 1])) continue;
    auto start = at + word.size() + 1;
    if (start >= message.size() || message[start - 1] != ' ') continue;
    auto end = start;
    while (end < message.size() && id_char(message[end]) && (!digits_only || (message[end] >= '0' && message[end] <= '9'))) ++end;
    std::string out(message.substr(start, end - start));
    while (!out.empty() && out.back() == '.') out.pop_back();
    if (out.empty() || (!digits_only && out.find('-') == std::string::npos)) continue;  // a run id has its owner after '-'
    return out;
  }
  return {};
}

class json_formatter final : public spdlog::formatter {
public:
  explicit json_formatter(std::shared_ptr<std::string> node) : node_(std::move(node)) {}
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count();
    std::time_t seconds = static_cast<std::time_t>(ms / 1000);
    std::tm utc{};
    ::gmtime_r(&seconds, &utc);
    char time[40];
    auto n = std::strftime(time, sizeof time, "%Y-%m-%dT%H:%M:%S", &utc);
    std::snprintf(time + n, sizeof time - n, ".%03dZ", static_cast<int>(ms % 1000));
    auto level = spdlog::level::to_string_view(msg.level);
    auto line = json_line(time, std::string_view(level.data(), level.size()),
                          std::string_view(msg.logger_name.data(), msg.logger_name.size()), *node_,
                          std::string_view(msg.payload.data(), msg.payload.size()));
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<json_formatter>(node_); }

private:
  std::shared_ptr<std::string> node_;
};

spdlog::sink_ptr sink_locked() {
  if (!shared_sink) shared_sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  return shared_sink;
}

void format_locked(spdlog::logger& l) {
  if (json_format) l.set_formatter(std::make_unique<json_formatter>(node_name));
  else l.set_pattern(text_pattern);
}
} // namespace

std::string json_line(std::string_view time, std::string_view level, std::string_view logger, std::string_view node,
                      std::string_view message) {
  nlohmann::json j{{"time", time}, {"level", level}, {"logger", logger}};
  if (!node.empty()) j["node"] = node;
  j["message"] = message;
  if (auto run = after(message, "run", false); !run.empty()) j["run_id"] = run;
  auto step = after(message, "step", true);
  if (step.empty()) step = after(message, "task", true);
  if (!step.empty()) j["step"] = std::stoull(step.substr(0, 18));
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void configure(const std::string& level, const std::string& file, const std::string& format, const std::string& node) {
  std::lock_guard lock{mutex};
  shared_level = spdlog::level::from_str(level);
  json_format = format == "json";
  if (!node.empty()) node_name = std::make_shared<std::string>(node);
  if (!file.empty()) shared_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file);
  else shared_sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& existing) {
    existing->sinks().assign(1, shared_sink);
    existing->set_level(shared_level);
    format_locked(*existing);
  });
}

void set_node(const std::string& node) {
  std::lock_guard lock{mutex};
  node_name = std::make_shared<std::string>(node);
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& existing) { format_locked(*existing); });
}

std::shared_ptr<spdlog::logger> get(const std::string& folder) {
  std::lock_guard lock{mutex};
  if (auto existing = spdlog::get(folder)) return existing;
  auto created = std::make_shared<spdlog::logger>(folder, sink_locked());
  created->set_level(shared_level);
  format_locked(*created);
  spdlog::register_logger(created);
  return created;
}

} // namespace keel::log
