// A local HTTP server for provider tests: it speaks a model service's wire format on a free
// loopback port, records every request, and answers with what the test scripts.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace keel::testing {

struct fake_request {
  std::string path;
  std::map<std::string, std::string> headers;
  nlohmann::json body;
};

struct fake_reply {
  fake_reply(int status_code = 200, std::string body_text = {}, std::vector<std::string> sse_events = {},
             std::map<std::string, std::string> extra_headers = {}, int delay = 0)
    : status(status_code), body(std::move(body_text)), events(std::move(sse_events)),
      headers(std::move(extra_headers)), delay_ms(delay) {}
  int status = 200;
  std::string body;                 // sent as it is
  std::vector<std::string> events;  // when not empty: a text/event-stream of these chunks
  std::map<std::string, std::string> headers;
  int delay_ms = 0;                 // wait before answering (a hanging service)
};

class fake_service {
public:
  using handler = std::function<fake_reply(const fake_request&)>;
  explicit fake_service(handler h);
  ~fake_service();
  std::string url() const;  // http://127.0.0.1:PORT
  std::vector<fake_request> requests() const;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

// Server-sent events, as the services frame them.
std::string sse(const std::string& event, const nlohmann::json& data);

} // namespace keel::testing
