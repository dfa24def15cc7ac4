#include "llm/network_provider.hpp"
#include "runtime/json_bounded.hpp"

#include "runtime/backoff.hpp"
#include "runtime/log.hpp"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace keel::llm {

using wire::value;

namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

std::string trim_slash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

std::int64_t backoff_ms(const network_settings& s, std::int64_t attempt) {
  return backoff_wait_spread_ms(static_cast<std::uint32_t>(std::clamp<std::int64_t>(attempt, 0, 30)) + 1, s.retry_base_ms, 30'000);
}

bool retryable(long status) { return status == 408 || status == 409 || status == 429 || status >= 500; }

} // namespace

result<network_settings> settings_for(const config::agent_config& agent, const std::string& kind) {
  network_settings s;
  s.kind = kind;
  s.model = agent.model;
  s.max_output_tokens = agent.max_output_tokens;
  s.temperature = agent.temperature;
  s.stream = agent.stream;
  s.retries_max = agent.retries_max;
  s.retry_base_ms = agent.retry_base_ms;
  s.timeout_ms = agent.request_timeout_ms;
  bool anthropic = kind == "anthropic";
  std::string default_url = anthropic ? "https://api.anthropic.com" : "https://api.openai.com/v1";
  s.base_url = trim_slash(!agent.base_url.empty()
                            ? agent.base_url
                            : env_or(anthropic ? "ANTHROPIC_BASE_URL" : "OPENAI_BASE_URL", default_url));
  const char* key_variable = anthropic ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY";
  if (!agent.api_key_file.empty()) {
    std::ifstream in(agent.api_key_file);
    if (!in) return make_error(errc::config, "agents." + agent.id + ".api_key_file: cannot read " + agent.api_key_file);
    std::getline(in, s.api_key);
  } else {
    s.api_key = env_or(key_variable, "");
  }
  // OpenAI-compatible local servers (Ollama, llama.cpp) take no key; the services do.
  if (s.api_key.empty() && anthropic)
    return make_error(errc::config, "agents." + agent.id + ": no API key: set " + key_variable +
                                      " or agents." + agent.id + ".api_key_file");
  if (s.model.empty()) return make_error(errc::config, "agents." + agent.id + ".model: a model name is needed");
  return s;
}

bool sse_parser::feed(std::string_view bytes,
                      const std::function<bool(const std::string&, const std::string&)>& on_event) {
  buffer_.append(bytes);
  std::size_t start = 0;
  while (true) {
    auto end = buffer_.find('\n', start);
    if (end == std::string::npos) break;
    std::string line = buffer_.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {  // a blank line ends an event
      if (!data_.empty() || !event_.empty()) {
        bool go_on = on_event(event_, data_);
        event_.clear();
        data_.clear();
        if (!go_on) return false;
      }
      continue;
    }
    if (line[0] == ':') continue;  // a comment
    auto colon = line.find(':');
    std::string field = line.substr(0, colon);
    std::string v = colon == std::string::npos ? "" : line.substr(colon + 1);
    if (!v.empty() && v[0] == ' ') v.erase(0, 1);
    if (field == "event") event_ = v;
    else if (field == "data") data_ += (data_.empty() ? "" : "\n") + v;
  }
  buffer_.erase(0, start);
  return true;
}

result<http_response> post_with_retries(const network_settings& s, const http_request& request,
                                        const std::function<std::string(const http_response&)>& error_text,
                                        const std::function<void(std::int64_t)>& before_attempt,
                                        const std::function<std::optional<keel::error>()>& stream_outcome) {
  auto logger = log::get("llm");
  for (std::int64_t attempt = 0;; ++attempt) {
    // Each attempt starts from nothing: what a broken stream put together is thrown away.
    if (before_attempt) before_attempt(attempt);
    auto response = http_post(request);
    // A stream that broke off (or said it failed) is a failed attempt like any other.
    if (response && response->status >= 200 && response->status < 300 && stream_outcome)
      if (auto broken = stream_outcome()) {
        if (broken->code != errc::unavailable || attempt >= s.retries_max) return *broken;
        auto wait_ms = backoff_ms(s, attempt);
        logger->warn("{} stream failed ({}); retry {} of {} in {} ms", s.kind, broken->message, attempt + 1,
                     s.retries_max, wait_ms);
        std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
        continue;
      }
    std::int64_t wait_ms = 0;
    std::string why;
    if (!response) {
      why = response.error().message;
      // The stream was stopped because of what it said: a malformed stream is not asked again.
      if (stream_outcome)
        if (auto broken = stream_outcome(); broken && broken->code != errc::unavailable) return *broken;
      if (attempt >= s.retries_max) return response.error();
    } else if (response->status >= 200 && response->status < 300) {
      return response;
    } else {
      why = "HTTP " + std::to_string(response->status) + ": " + error_text(*response);
      if (!retryable(response->status) || attempt >= s.retries_max) {
        errc code = response->status == 429 || response->status >= 500 ? errc::unavailable
                    : response->status == 401 || response->status == 403 ? errc::denied
                                                                          : errc::invalid_argument;
        return make_error(code, s.kind + " answered " + why);
      }
      if (auto it = response->headers.find("retry-after"); it != response->headers.end())
        wait_ms = std::clamp<std::int64_t>(std::atoll(it->second.c_str()) * 1000, 0, 60'000);
    }
    if (wait_ms == 0) wait_ms = backoff_ms(s, attempt);
    logger->warn("{} call failed ({}); retry {} of {} in {} ms", s.kind, why, attempt + 1, s.retries_max, wait_ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
  }
}

// ---- Anthropic Messages API -----------------------------------------------------------------

std::string anthropic_provider::request_body(const completion_request& r) const {
  value messages = value::array();
  for (std::size_t i = 0; i < r.messages.size(); ++i) {
    const message& m = r.messages[i];
    if (m.role == "tool") {
      // Consecutive tool results travel together in one user message.
      value block{{"type", "tool_result"}, {"tool_use_id", m.tool_call_id}, {"content", m.text}};
      if (m.is_error) block["is_error"] = true;
      if (!messages.empty() && messages.back()["role"] == "user" &&
          messages.back()["content"].back()["type"] == "tool_result")
        messages.back()["content"].push_back(block);
      else
        messages.push_back({{"role", "user"}, {"content", value::array({block})}});
      continue;
    }
    value content = value::array();
    if (!m.text.empty()) content.push_back({{"type", "text"}, {"text", m.text}});
    for (const auto& c : m.tool_calls)
      content.push_back({{"type", "tool_use"}, {"id", c.id}, {"name", c.name},
                         {"input", c.arguments.is_object() ? c.arguments : value::object()}});
    if (content.empty()) content.push_back({{"type", "text"}, {"text", "(empty)"}});
    messages.push_back({{"role", m.role == "assistant" ? "assistant" : "user"}, {"content", content}});
  }
  // Prompt caching: the system prompt, the tools and the conversation so far.
  value ephemeral{{"type", "ephemeral"}};
  if (!messages.empty()) messages.back()["content"].back()["cache_control"] = ephemeral;
  value body{{"model", r.model.empty() ? settings_.model : r.model},
             {"max_tokens", r.max_tokens > 0 ? r.max_tokens : settings_.max_output_tokens},
             {"messages", messages}};
  if (!r.system_prompt.empty())
    body["system"] = value::array({{{"type", "text"}, {"text", r.system_prompt}, {"cache_control", ephemeral}}});
  if (r.tools && !r.tools->empty()) {
    value tools = value::array();
    for (const auto& t : *r.tools)
      tools.push_back({{"name", t["name"]}, {"description", t["description"]}, {"input_schema", t["input_schema"]}});
    tools.back()["cache_control"] = ephemeral;
    body["tools"] = tools;
  }
  if (settings_.temperature >= 0) body["temperature"] = settings_.temperature;
  if (settings_.stream) body["stream"] = true;
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {
std::string anthropic_error_text(const http_response& r) {
  auto v = keel::parse_bounded(r.body);
  if (!v.is_discarded() && v.contains("error") && v["error"].is_object())
    return v["error"].value("type", std::string{}) + ": " + v["error"].value("message", std::string{});
  return r.body.substr(0, 300);
}

// A member of a JSON object a model service sent, or null when there is none (or the value is no
// object): an answer of another shape is an error, never a crash (the const operator[] of a
// missing key is undefined).
const value& member(const value& v, const char* key) {
  static const value none;
  if (!v.is_object()) return none;
  auto it = v.find(key);
  return it == v.end() ? none : *it;
}

// A token count a service sent: a whole number from 0 to a trillion. Anything else (negative,
// fractional, out of any range a count can have, not a number) is no count: `otherwise`. (A
// conversion of 1e120 to an integer is undefined behaviour, not an error.)
constexpr double token_count_max = 1e12;
std::int64_t token_count(const value& u, const char* key, std::int64_t otherwise) {
  const auto& n = member(u, key);
  if (n.is_number_unsigned())
    return n.get<std::uint64_t>() <= static_cast<std::uint64_t>(token_count_max) ? static_cast<std::int64_t>(n.get<std::uint64_t>()) : otherwise;
  if (n.is_number_integer()) {
    auto i = n.get<std::int64_t>();
    return i >= 0 && i <= static_cast<std::int64_t>(token_count_max) ? i : otherwise;
  }
  if (n.is_number_float()) {
    auto f = n.get<double>();
    return f >= 0 && f <= token_count_max && f == static_cast<double>(static_cast<std::int64_t>(f)) ? static_cast<std::int64_t>(f) : otherwise;
  }
  return otherwise;
}

// The index of a content block or a tool call in a stream: a whole number below 4096 (no answer
// has that many), else -1. A service's 1e120 must not become an integer.
int stream_index(const value& e) {
  const auto& n = member(e, "index");
  if (n.is_null()) return 0;
  if (n.is_number_unsigned() && n.get<std::uint64_t>() < 4096) return static_cast<int>(n.get<std::uint64_t>());
  if (n.is_number_integer() && n.get<std::int64_t>() >= 0 && n.get<std::int64_t>() < 4096) return static_cast<int>(n.get<std::int64_t>());
  return -1;
}

usage anthropic_usage(const value& u, usage base = {}) {
  if (!u.is_object()) return base;
  base.input_tokens = token_count(u, "input_tokens", base.input_tokens);
  base.output_tokens = token_count(u, "output_tokens", base.output_tokens);
  base.cache_read_tokens = token_count(u, "cache_read_input_tokens", base.cache_read_tokens);
  base.cache_write_tokens = token_count(u, "cache_creation_input_tokens", base.cache_write_tokens);
  return base;
}
} // namespace

result<completion> anthropic_provider::parse_response(const std::string& body) {
  try {
    auto v = keel::parse_bounded(body);
    if (v.is_discarded() || !v.is_object() || !v.contains("content") || !v["content"].is_array())
      return make_error(errc::malformed, "the Anthropic response is not a message: " + body.substr(0, 200));
    completion c;
    for (const auto& block : v["content"]) {
      auto type = block.value("type", std::string{});
      if (type == "text") c.text += block.value("text", std::string{});
      else if (type == "tool_use")
        c.tool_calls.push_back({block.value("id", std::string{}), block.value("name", std::string{}),
                                block.contains("input") ? block["input"] : value::object()});
    }
    c.stop_reason = v.value("stop_reason", std::string{});
    c.used = anthropic_usage(v.contains("usage") ? v["usage"] : value());
    return c;
  } catch (const std::exception& e) {
    return make_error(errc::malformed, std::string("the Anthropic response has an unexpected shape: ") + e.what());
  }
}

result<completion> anthropic_provider::complete(const completion_request& r) {
  http_request h;
  h.url = settings_.base_url + "/v1/messages";
  h.headers = {"content-type: application/json", "anthropic-version: 2023-06-01",
               "x-api-key: " + settings_.api_key};
  h.body = request_body(r);
  h.connect_timeout_ms = settings_.connect_timeout_ms;
  h.timeout_ms = settings_.timeout_ms;
  if (!settings_.stream) {
    auto response = post_with_retries(settings_, h, anthropic_error_text);
    if (!response) return response.error();
    return parse_response(response->body);
  }
  // Streaming: blocks are put together from their deltas; text deltas go out as they come.
  completion c;
  std::map<int, std::string> partial_json;
  std::optional<keel::error> stream_error;
  sse_parser parser;
  bool stopped = false;  // message_stop seen: the answer is whole
  auto fresh = [&](std::int64_t attempt) {
    c = completion{};
    partial_json.clear();
    stream_error.reset();
    parser = sse_parser{};
    stopped = false;
    if (attempt > 0 && r.on_stream_restart) r.on_stream_restart();
  };
  auto outcome = [&]() -> std::optional<keel::error> {
    if (stream_error) return stream_error;
    if (!stopped) return make_error(errc::unavailable, "the Anthropic stream ended before message_stop");
    return std::nullopt;
  };
  h.on_data = [&](std::string_view bytes) {
    // An event of another shape stops the stream with an error (tried again), never a crash.
    try {
      return parser.feed(bytes, [&](const std::string&, const std::string& data) {
        auto e = keel::parse_bounded(data);
        if (e.is_discarded() || !e.is_object()) {
          stream_error = make_error(errc::malformed, "an event of the Anthropic stream is not JSON");
          return false;
        }
        auto type = e.value("type", std::string{});
        if (type == "message_start") c.used = anthropic_usage(member(member(e, "message"), "usage"));
        else if (type == "content_block_start" && member(member(e, "content_block"), "type") == "tool_use") {
          const auto& b = member(e, "content_block");
          c.tool_calls.push_back({b.value("id", std::string{}), b.value("name", std::string{}), value::object()});
          auto index = stream_index(e);
          if (index < 0) {
            stream_error = make_error(errc::malformed, "an event of the Anthropic stream has no usable index");
            return false;
          }
          partial_json[index] = "";
        } else if (type == "content_block_delta") {
          const auto& d = member(e, "delta");
          if (d.value("type", "") == "text_delta") {
            auto text = d.value("text", std::string{});
            c.text += text;
            if (r.on_text_delta) r.on_text_delta(text);
          } else if (d.value("type", "") == "input_json_delta") {
            auto index = stream_index(e);
            if (index < 0) {
              stream_error = make_error(errc::malformed, "an event of the Anthropic stream has no usable index");
              return false;
            }
            partial_json[index] += d.value("partial_json", std::string{});
          }
        } else if (type == "message_stop") {
          stopped = true;
        } else if (type == "message_delta") {
          c.stop_reason = member(e, "delta").value("stop_reason", c.stop_reason);
          c.used = anthropic_usage(e.value("usage", value()), c.used);
        } else if (type == "error") {
          stream_error = make_error(errc::unavailable, "Anthropic stream error: " +
                                                        member(e, "error").value("type", std::string{}) + ": " +
                                                        member(e, "error").value("message", std::string{}));
          return false;
        }
        return true;
      });
    } catch (const std::exception& ex) {
      stream_error = make_error(errc::malformed, std::string("the Anthropic stream has an event of an unexpected shape: ") + ex.what());
      return false;
    }
  };
  auto response = post_with_retries(settings_, h, anthropic_error_text, fresh, outcome);
  if (!response) return response.error();
  std::size_t k = 0;
  for (auto& [index, json] : partial_json) {
    auto input = keel::parse_bounded(json.empty() ? "{}" : json);
    if (input.is_discarded()) return make_error(errc::malformed, "a tool call's input in the stream is not JSON");
    if (k < c.tool_calls.size()) c.tool_calls[k++].arguments = input;
  }
  return c;
}

// ---- OpenAI Chat Completions ----------------------------------------------------------------

std::string openai_provider::request_body(const completion_request& r) const {
  value messages = value::array();
  if (!r.system_prompt.empty()) messages.push_back({{"role", "system"}, {"content", r.system_prompt}});
  for (const auto& m : r.messages) {
    if (m.role == "tool") {
      messages.push_back({{"role", "tool"}, {"tool_call_id", m.tool_call_id}, {"content", m.text}});
    } else if (m.role == "assistant") {
      value out{{"role", "assistant"}, {"content", m.text.empty() ? value() : value(m.text)}};
      if (!m.tool_calls.empty()) {
        value calls = value::array();
        for (const auto& c : m.tool_calls)
          calls.push_back({{"id", c.id}, {"type", "function"},
                           {"function", {{"name", c.name}, {"arguments", c.arguments.dump()}}}});
        out["tool_calls"] = calls;
      }
      messages.push_back(out);
    } else {
      messages.push_back({{"role", "user"}, {"content", m.text}});
    }
  }
  value body{{"model", r.model.empty() ? settings_.model : r.model}, {"messages", messages},
             {"max_tokens", r.max_tokens > 0 ? r.max_tokens : settings_.max_output_tokens}};
  if (r.tools && !r.tools->empty()) {
    value tools = value::array();
    for (const auto& t : *r.tools)
      tools.push_back({{"type", "function"},
                       {"function", {{"name", t["name"]}, {"description", t["description"]},
                                     {"parameters", t["input_schema"]}}}});
    body["tools"] = tools;
  }
  if (settings_.temperature >= 0) body["temperature"] = settings_.temperature;
  if (settings_.stream) {
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
  }
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {
std::string openai_error_text(const http_response& r) {
  auto v = keel::parse_bounded(r.body);
  if (!v.is_discarded() && v.contains("error") && v["error"].is_object())
    return v["error"].value("message", std::string{});
  return r.body.substr(0, 300);
}

usage openai_usage(const value& u) {
  usage out;
  if (!u.is_object()) return out;
  out.input_tokens = token_count(u, "prompt_tokens", 0);
  out.output_tokens = token_count(u, "completion_tokens", 0);
  out.cache_read_tokens = token_count(member(u, "prompt_tokens_details"), "cached_tokens", 0);
  return out;
}

std::string openai_stop(const std::string& finish) {
  if (finish == "tool_calls") return "tool_use";
  if (finish == "length") return "max_tokens";
  if (finish == "stop") return "end_turn";
  return finish;
}
} // namespace

result<completion> openai_provider::parse_response(const std::string& body) {
  try {
    auto v = keel::parse_bounded(body);
    if (v.is_discarded() || !v.is_object() || !v.contains("choices") || !v["choices"].is_array() ||
        v["choices"].empty())
      return make_error(errc::malformed, "the OpenAI response has no choices: " + body.substr(0, 200));
    const auto& choice = v["choices"][0];
    const auto& m = choice.value("message", value::object());
    completion c;
    if (m.contains("content") && m["content"].is_string()) c.text = m["content"].get<std::string>();
    for (const auto& call : m.value("tool_calls", value::array())) {
      auto arguments = keel::parse_bounded(member(call, "function").value("arguments", std::string("{}")));
      if (arguments.is_discarded()) return make_error(errc::malformed, "a tool call's arguments are not JSON");
      c.tool_calls.push_back({call.value("id", std::string{}), member(call, "function").value("name", std::string{}), arguments});
    }
    c.stop_reason = openai_stop(choice.value("finish_reason", std::string{}));
    c.used = openai_usage(v.value("usage", value()));
    return c;
  } catch (const std::exception& e) {
    return make_error(errc::malformed, std::string("the OpenAI response has an unexpected shape: ") + e.what());
  }
}

result<completion> openai_provider::complete(const completion_request& r) {
  http_request h;
  h.url = settings_.base_url + "/chat/completions";
  h.headers = {"content-type: application/json"};
  if (!settings_.api_key.empty()) h.headers.push_back("authorization: Bearer " + settings_.api_key);
  h.body = request_body(r);
  h.connect_timeout_ms = settings_.connect_timeout_ms;
  h.timeout_ms = settings_.timeout_ms;
  if (!settings_.stream) {
    auto response = post_with_retries(settings_, h, openai_error_text);
    if (!response) return response.error();
    return parse_response(response->body);
  }
  completion c;
  std::map<int, std::pair<std::size_t, std::string>> call_arguments;  // index -> (call, json)
  std::optional<keel::error> stream_error;
  sse_parser parser;
  bool finished = false;  // [DONE] or a finish_reason seen: the answer is whole
  auto fresh = [&](std::int64_t attempt) {
    c = completion{};
    call_arguments.clear();
    stream_error.reset();
    parser = sse_parser{};
    finished = false;
    if (attempt > 0 && r.on_stream_restart) r.on_stream_restart();
  };
  auto outcome = [&]() -> std::optional<keel::error> {
    if (stream_error) return stream_error;
    if (!finished) return make_error(errc::unavailable, "the OpenAI stream ended before its last chunk");
    return std::nullopt;
  };
  h.on_data = [&](std::string_view bytes) {
    // An event of another shape stops the stream with an error (tried again), never a crash.
    try {
      return parser.feed(bytes, [&](const std::string&, const std::string& data) {
        if (data == "[DONE]") {
          finished = true;
          return true;
        }
        auto e = keel::parse_bounded(data);
        if (e.is_discarded() || !e.is_object()) {
          stream_error = make_error(errc::malformed, "a chunk of the OpenAI stream is not JSON");
          return false;
        }
        if (e.contains("error")) {
          stream_error = make_error(errc::unavailable, "OpenAI stream error: " + member(e, "error").value("message", std::string{}));
          return false;
        }
        if (e.contains("usage") && e["usage"].is_object()) c.used = openai_usage(e["usage"]);
        for (const auto& choice : e.value("choices", value::array())) {
          const auto& d = choice.value("delta", value::object());
          if (d.contains("content") && d["content"].is_string()) {
            auto text = d["content"].get<std::string>();
            c.text += text;
            if (r.on_text_delta && !text.empty()) r.on_text_delta(text);
          }
          for (const auto& call : d.value("tool_calls", value::array())) {
            int index = stream_index(call);
            if (index < 0) {
              stream_error = make_error(errc::malformed, "a tool call of the OpenAI stream has no usable index");
              return false;
            }
            if (!call_arguments.count(index)) {
              call_arguments[index] = {c.tool_calls.size(), ""};
              c.tool_calls.push_back({call.value("id", std::string{}),
                                      call.value("function", value::object()).value("name", std::string{}),
                                      value::object()});
            }
            if (call.contains("function"))
              call_arguments[index].second += member(call, "function").value("arguments", std::string{});
          }
          if (choice.contains("finish_reason") && choice["finish_reason"].is_string()) {
            c.stop_reason = openai_stop(choice["finish_reason"].get<std::string>());
            finished = true;
          }
        }
        return true;
      });
    } catch (const std::exception& ex) {
      stream_error = make_error(errc::malformed, std::string("the OpenAI stream has an event of an unexpected shape: ") + ex.what());
      return false;
    }
  };
  auto response = post_with_retries(settings_, h, openai_error_text, fresh, outcome);
  if (!response) return response.error();
  for (auto& [index, entry] : call_arguments) {
    auto arguments = keel::parse_bounded(entry.second.empty() ? "{}" : entry.second);
    if (arguments.is_discarded()) return make_error(errc::malformed, "a tool call's arguments in the stream are not JSON");
    c.tool_calls[entry.first].arguments = arguments;
  }
  return c;
}

} // namespace keel::llm
