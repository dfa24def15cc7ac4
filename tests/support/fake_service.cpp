#include "tests/support/fake_service.hpp"

#include "runtime/clock.hpp"

#include <httplib.h>

#include <thread>

namespace keel::testing {

struct fake_service::impl {
  httplib::Server server;
  std::thread thread;
  int port = 0;
  handler on_request;
  mutable std::mutex mutex;
  std::vector<fake_request> requests;
};

fake_service::fake_service(handler h) : impl_(std::make_unique<impl>()) {
  impl_->on_request = std::move(h);
  auto* state = impl_.get();
  // As a model service does, many requests at once: one that hangs holds no other back (with
  // httplib's default of 8 threads, eight hanging requests would delay every other one, which
  // its caller would have given up on by the time it is answered).
  state->server.new_task_queue = [] { return new httplib::ThreadPool(64); };
  state->server.Post(R"(/.*)", [state](const httplib::Request& req, httplib::Response& res) {
    fake_request r;
    r.path = req.path;
    for (const auto& [k, v] : req.headers) {
      std::string name = k;
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = v;
    }
    r.body = nlohmann::json::parse(req.body, nullptr, false);
    {
      std::lock_guard lock{state->mutex};
      state->requests.push_back(r);
    }
    fake_reply reply = state->on_request(r);
    if (reply.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(reply.delay_ms));
    for (const auto& [k, v] : reply.headers) res.set_header(k, v);
    res.status = reply.status;
    if (reply.events.empty()) {
      res.set_content(reply.body, "application/json");
      return;
    }
    auto events = std::make_shared<std::vector<std::string>>(reply.events);
    res.set_chunked_content_provider("text/event-stream", [events](std::size_t, httplib::DataSink& sink) {
      for (const auto& e : *events) sink.write(e.data(), e.size());
      sink.done();
      return true;
    });
  });
  impl_->port = impl_->server.bind_to_any_port("127.0.0.1");
  impl_->thread = std::thread([state] { state->server.listen_after_bind(); });
  // cpp-httplib 0.11 has no wait_until_ready: poll is_running.
  auto deadline = steady_ms() + 5000;
  while (!impl_->server.is_running() && steady_ms() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
}

fake_service::~fake_service() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::string fake_service::url() const { return "http://127.0.0.1:" + std::to_string(impl_->port); }

std::vector<fake_request> fake_service::requests() const {
  std::lock_guard lock{impl_->mutex};
  return impl_->requests;
}

std::string sse(const std::string& event, const nlohmann::json& data) {
  std::string out;
  if (!event.empty()) out += "event: " + event + "\n";
  return out + "data: " + data.dump() + "\n\n";
}

} // namespace keel::testing
