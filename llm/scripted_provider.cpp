#include "llm/scripted_provider.hpp"

#include "llm/network_provider.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace keel::llm {

using wire::value;

namespace {

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

struct template_values {
  std::string input;
  std::string last_tool_result;
  std::string tool_results;
};

template_values values_of(const std::vector<message>& messages) {
  template_values t;
  for (const auto& m : messages) {
    if (m.role == "user" && t.input.empty()) t.input = m.text;
  }
  // The tool results that follow the last assistant message.
  std::size_t i = messages.size();
  while (i > 0 && messages[i - 1].role == "tool") --i;
  for (std::size_t k = i; k < messages.size(); ++k) {
    t.tool_results += (k > i ? "\n" : "") + messages[k].text;
    t.last_tool_result = messages[k].text;
  }
  return t;
}

std::string fill(const std::string& text, const template_values& t) {
  auto out = replace_all(text, "{{input}}", t.input);
  out = replace_all(out, "{{last_tool_result}}", t.last_tool_result);
  return replace_all(out, "{{tool_results}}", t.tool_results);
}

value fill_value(const value& v, const template_values& t) {
  if (v.is_string()) return fill(v.get<std::string>(), t);
  if (v.is_array() || v.is_object()) {
    value out = v;
    for (auto it = out.begin(); it != out.end(); ++it) *it = fill_value(*it, t);
    return out;
  }
  return v;
}

std::int64_t estimate_tokens(std::size_t chars) { return static_cast<std::int64_t>(chars / 4 + 1); }

} // namespace

result<std::unique_ptr<scripted_provider>> scripted_provider::load(const std::string& script_path,
                                                                   const std::string& calls_log) {
  if (script_path.empty())
    return make_error(errc::config, "the scripted provider needs a script file");
  std::ifstream in(script_path);
  if (!in) return make_error(errc::config, script_path + ": cannot read the script");
  value script;
  try {
    script = value::parse(in);
  } catch (const std::exception& e) {
    return make_error(errc::config, script_path + ": not valid JSON: " + e.what());
  }
  if (!script.is_object() || !script.contains("turns") || !script["turns"].is_array())
    return make_error(errc::config, script_path + ": expected {\"turns\": [...]}");
  auto provider = std::unique_ptr<scripted_provider>(new scripted_provider());
  provider->calls_log_ = calls_log;
  std::size_t index = 0;
  for (const auto& t : script["turns"]) {
    std::string where = script_path + ": turn " + std::to_string(index + 1);
    if (!t.is_object()) return make_error(errc::config, where + " must be a map");
    scripted_turn turn;
    if (t.contains("text")) {
      if (!t["text"].is_string()) return make_error(errc::config, where + ": text must be a string");
      turn.text = t["text"].get<std::string>();
    }
    if (t.contains("delay_ms")) {
      if (!t["delay_ms"].is_number_integer() || t["delay_ms"].get<std::int64_t>() < 0)
        return make_error(errc::config, where + ": delay_ms must be a non-negative integer");
      turn.delay_ms = t["delay_ms"].get<std::int64_t>();
    }
    if (t.contains("wait_for_file")) {
      if (!t["wait_for_file"].is_string() || t["wait_for_file"].get<std::string>().empty())
        return make_error(errc::config, where + ": wait_for_file must be a file name");
      std::filesystem::path file = t["wait_for_file"].get<std::string>();
      if (file.is_relative()) file = std::filesystem::absolute(script_path).parent_path() / file;
      turn.wait_for_file = file.string();
    }
    if (t.contains("tool_calls")) {
      if (!t["tool_calls"].is_array())
        return make_error(errc::config, where + ": tool_calls must be an array");
      std::size_t k = 0;
      for (const auto& c : t["tool_calls"]) {
        if (!c.is_object() || !c.contains("name") || !c["name"].is_string())
          return make_error(errc::config, where + ": every tool call needs a name");
        tool_call call;
        call.id = "call_" + std::to_string(index + 1) + "_" + std::to_string(++k);
        call.name = c["name"].get<std::string>();
        call.arguments = c.contains("arguments") ? c["arguments"] : value::object();
        if (!call.arguments.is_object())
          return make_error(errc::config, where + ": arguments must be a map");
        turn.tool_calls.push_back(std::move(call));
      }
    }
    provider->turns_.push_back(std::move(turn));
    ++index;
  }
  return provider;
}

result<completion> scripted_provider::complete(const completion_request& request) {
  std::size_t turn_index = 0;
  std::size_t chars = request.system_prompt.size();
  for (const auto& m : request.messages) {
    if (m.role == "assistant") ++turn_index;
    chars += m.text.size();
  }
  if (!calls_log_.empty()) {
    std::lock_guard lock{log_mutex_};
    std::ofstream(calls_log_, std::ios::app) << request.task_id << " " << turn_index + 1 << " " << (request.model.empty() ? "-" : request.model) << "\n";
  }
  completion c;
  c.used.input_tokens = estimate_tokens(chars);
  if (turn_index >= turns_.size()) {
    c.text = "The script has no turn " + std::to_string(turn_index + 1) + "; stopping here.";
    c.stop_reason = "end_turn";
    c.used.output_tokens = estimate_tokens(c.text.size());
    return c;
  }
  const scripted_turn& turn = turns_[turn_index];
  if (turn.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(turn.delay_ms));
  // A test holds a step in flight for as long as it needs, however slow the build it runs.
  for (std::error_code ec; !turn.wait_for_file.empty() && !std::filesystem::exists(turn.wait_for_file, ec);)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto values = values_of(request.messages);
  c.text = fill(turn.text, values);
  std::size_t out_chars = c.text.size();
  for (const auto& call : turn.tool_calls) {
    tool_call filled = call;
    filled.arguments = fill_value(call.arguments, values);
    out_chars += filled.arguments.dump().size();
    c.tool_calls.push_back(std::move(filled));
  }
  c.stop_reason = c.tool_calls.empty() ? "end_turn" : "tool_use";
  c.used.output_tokens = estimate_tokens(out_chars);
  return c;
}

result<std::unique_ptr<provider>> make_provider(const config::agent_config& agent) {
  if (agent.provider == "scripted") {
    auto p = scripted_provider::load(agent.script, agent.script_log);
    if (!p) return make_error(p.error().code, "agents." + agent.id + ".script: " + p.error().message);
    return std::unique_ptr<provider>(std::move(*p));
  }
  if (agent.provider == "anthropic" || agent.provider == "openai") {
    auto settings = settings_for(agent, agent.provider);
    if (!settings) return settings.error();
    if (agent.provider == "anthropic") return std::unique_ptr<provider>(new anthropic_provider(*settings));
    return std::unique_ptr<provider>(new openai_provider(*settings));
  }
  return make_error(errc::config, "agents." + agent.id + ".provider: unknown provider '" + agent.provider + "'");
}

} // namespace keel::llm
