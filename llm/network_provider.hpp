// The providers that call a model service over HTTP: Anthropic's Messages API and OpenAI's Chat
// Completions (which OpenAI-compatible servers also speak). Shared here: where the key and the
// base URL come from, and retries with backoff.
#pragma once

#include "llm/http_client.hpp"
#include "llm/provider.hpp"

namespace keel::llm {

struct network_settings {
  std::string kind;              // "anthropic" or "openai"
  std::string model;
  std::string base_url;          // without a trailing slash
  std::string api_key;           // never logged, never stored in runs
  std::int64_t max_output_tokens = 4096;
  double temperature = -1;       // below 0: the service's default
  bool stream = true;
  std::int64_t retries_max = 4;
  std::int64_t retry_base_ms = 500;
  std::int64_t connect_timeout_ms = 10'000;
  std::int64_t timeout_ms = 600'000;
};

// The settings an agent's config and the environment give: ANTHROPIC_API_KEY and
// ANTHROPIC_BASE_URL, OPENAI_API_KEY and OPENAI_BASE_URL, as the official SDKs read them, unless
// the config names a key file or a base URL.
result<network_settings> settings_for(const config::agent_config& agent, const std::string& kind);

class anthropic_provider final : public provider {
public:
  explicit anthropic_provider(network_settings s) : settings_(std::move(s)) {}
  result<completion> complete(const completion_request& request) override;
  // The request body, for tests of the wire format.
  std::string request_body(const completion_request& request) const;
  static result<completion> parse_response(const std::string& body);

private:
  network_settings settings_;
};

class openai_provider final : public provider {
public:
  explicit openai_provider(network_settings s) : settings_(std::move(s)) {}
  result<completion> complete(const completion_request& request) override;
  std::string request_body(const completion_request& request) const;
  static result<completion> parse_response(const std::string& body);

private:
  network_settings settings_;
};

// Splits a server-sent event stream into (event, data) pairs as bytes arrive.
class sse_parser {
public:
  // Returns false when `on_event` asks to stop.
  bool feed(std::string_view bytes, const std::function<bool(const std::string& event, const std::string& data)>& on_event);

private:
  std::string buffer_;
  std::string event_;
  std::string data_;
};

// Runs `attempt` until it succeeds, fails for good, or the retries run out. A response with
// status 429, 5xx or 529 is retried (after `retry-after` when the service says), as is a
// network failure; any other 4xx fails at once with the service's message. For a stream,
// `before_attempt` resets what the last attempt put together, and `stream_outcome` says after
// the body whether the stream was whole (none) or broke off (unavailable: tried again).
result<http_response> post_with_retries(const network_settings& s, const http_request& request,
                                        const std::function<std::string(const http_response&)>& error_text,
                                        const std::function<void(std::int64_t)>& before_attempt = {},
                                        const std::function<std::optional<keel::error>()>& stream_outcome = {});

} // namespace keel::llm
