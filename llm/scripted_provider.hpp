// The built-in scripted model: deterministic turns read from a JSON file, so agents run offline.
// Turn n answers the request that holds n assistant messages, so a repeated step gives the same
// answer. Text and string arguments may use {{input}}, {{last_tool_result}} and
// {{tool_results}}, filled from the conversation. See docs/SCRIPTED_MODEL.md.
#pragma once

#include "llm/provider.hpp"

#include <mutex>

namespace keel::llm {

struct scripted_turn {
  std::string text;
  std::vector<tool_call> tool_calls;
  std::int64_t delay_ms = 0;  // time the "model" takes, to let tests catch a step in flight
  std::string wait_for_file;  // the "model" answers once this file exists (absolute path)
};

class scripted_provider final : public provider {
public:
  // `calls_log`: when not empty, every call appends "task_id turn" to this file.
  static result<std::unique_ptr<scripted_provider>> load(const std::string& script_path,
                                                         const std::string& calls_log);
  result<completion> complete(const completion_request& request) override;
  std::size_t turns() const { return turns_.size(); }

private:
  std::vector<scripted_turn> turns_;
  std::string calls_log_;
  std::mutex log_mutex_;
};

} // namespace keel::llm
