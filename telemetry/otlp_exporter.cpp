#include "telemetry/otlp_exporter.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

namespace keel::telemetry {

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("telemetry");
  return l;
}

std::string trim(std::string s) {
  auto first = s.find_first_not_of(" \t");
  if (first == std::string::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

std::string percent_decode(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// "a=b,c=d" (W3C baggage-like, values percent-encoded), as the OTLP variables write lists.
result<std::vector<std::pair<std::string, std::string>>> pairs_of(const std::string& text, const std::string& where) {
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find(',', start);
    auto item = trim(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (!item.empty()) {
      auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0)  // not echoed: it may hold a secret
        return make_error(errc::config, where + ": item " + std::to_string(out.size() + 1) + " is not name=value");
      auto name = trim(item.substr(0, eq));
      auto value = percent_decode(trim(item.substr(eq + 1)));
      if (name.find_first_of("\r\n:") != std::string::npos || value.find_first_of("\r\n") != std::string::npos)
        return make_error(errc::config, where + ": item " + std::to_string(out.size() + 1) + " holds a character a header cannot");
      out.emplace_back(name, value);
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

result<std::int64_t> number_of(const char* text, const std::string& where, std::int64_t low) {
  try {
    std::size_t used = 0;
    auto v = std::stoll(text, &used);
    if (used != std::string(text).size() || v < low) throw std::out_of_range(where);
    return static_cast<std::int64_t>(v);
  } catch (const std::exception&) {
    return make_error(errc::config, where + ": '" + std::string(text) + "' is not a whole number of at least " + std::to_string(low));
  }
}

struct exporter {
  exporter_options options;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<span> queue;
  bool stopping = false;
  std::int64_t flush_until_ms = 0;
  std::thread thread;

  static std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }

  // 0: sent; else the HTTP status (or -1: not sent at all).
  long send(const std::string& body) {
    CURL* curl = curl_easy_init();
    if (!curl) return -1;
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    for (const auto& [k, v] : options.headers) headers = curl_slist_append(headers, (k + ": " + v).c_str());
    std::string answer;
    curl_easy_setopt(curl, CURLOPT_URL, options.endpoint.c_str());
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout_ms));
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::min<std::int64_t>(options.timeout_ms, 3000)));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char* p, size_t size, size_t n, void* to) -> size_t {
      auto* s = static_cast<std::string*>(to);
      if (s->size() < 4096) s->append(p, std::min<std::size_t>(size * n, 4096 - s->size()));
      return size * n;
    });
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
    // A stop waits for a send in flight only until its flush time: a hung collector holds nothing.
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, this);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, +[](void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
      auto* e = static_cast<exporter*>(self);
      std::lock_guard lock{e->mutex};
      return e->stopping && now_ms() > e->flush_until_ms ? 1 : 0;
    });
    auto code = curl_easy_perform(curl);
    long status = -1;
    if (code == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    else answer = curl_easy_strerror(code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (status >= 200 && status < 300) return 0;
    static std::int64_t last_warned = 0;
    if (now_ms() - last_warned > 60'000) {  // a collector that is down is said once a minute
      last_warned = now_ms();
      logger()->warn("traces not delivered to {}: {}", options.endpoint,
                     status > 0 ? "HTTP " + std::to_string(status) + " " + answer : answer);
    }
    return status;
  }

  void export_batch(std::vector<span> batch) {
    auto body = to_otlp_json(options.about, batch);
    auto status = send(body);
    if (status == 429 || status == 502 || status == 503 || status == 504) {
      std::unique_lock lock{mutex};
      wake.wait_for(lock, std::chrono::seconds(1), [&] { return stopping; });
      bool again = !stopping;
      lock.unlock();
      if (again) status = send(body);
    }
    if (status == 0) metrics::count("keel_trace_spans_exported_total", {}, static_cast<double>(batch.size()));
    else metrics::count("keel_trace_spans_dropped_total", {{"reason", "export_failed"}}, static_cast<double>(batch.size()));
  }

  void loop() {
    std::unique_lock lock{mutex};
    while (true) {
      wake.wait_for(lock, std::chrono::milliseconds(options.delay_ms),
                    [&] { return stopping || queue.size() >= options.batch_max; });
      if (queue.empty()) {
        if (stopping) return;
        continue;
      }
      if (stopping && now_ms() > flush_until_ms) {
        metrics::count("keel_trace_spans_dropped_total", {{"reason", "stopped"}}, static_cast<double>(queue.size()));
        queue.clear();
        return;
      }
      std::vector<span> batch;
      while (!queue.empty() && batch.size() < options.batch_max) {
        batch.push_back(std::move(queue.front()));
        queue.pop_front();
      }
      lock.unlock();
      export_batch(std::move(batch));
      lock.lock();
    }
  }
};

std::mutex current_mutex;
std::shared_ptr<exporter> current;

} // namespace

result<exporter_options> exporter_options_from(const std::function<const char*(const char*)>& getenv,
                                               const exporter_settings& settings) {
  exporter_options o;
  auto env = [&](const char* name) -> std::string {
    const char* v = getenv(name);
    return v ? trim(v) : std::string();
  };
  auto either = [&](const char* traces, const char* general) {
    auto v = env(traces);
    return v.empty() ? env(general) : v;
  };
  std::string sdk_disabled = env("OTEL_SDK_DISABLED");
  std::transform(sdk_disabled.begin(), sdk_disabled.end(), sdk_disabled.begin(), ::tolower);
  auto exporter_kind = env("OTEL_TRACES_EXPORTER");
  bool disabled = sdk_disabled == "true" || exporter_kind == "none";
  if (!exporter_kind.empty() && exporter_kind != "otlp" && exporter_kind != "none")
    return make_error(errc::config, "OTEL_TRACES_EXPORTER: '" + exporter_kind + "' is not taken (otlp or none)");
  auto protocol = either("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL");
  if (protocol == "grpc")
    return make_error(errc::config, "OTEL_EXPORTER_OTLP_PROTOCOL: grpc is not spoken; use http/json (or leave it unset)");
  if (!protocol.empty() && protocol != "http/json" && protocol != "http/protobuf")
    return make_error(errc::config, "OTEL_EXPORTER_OTLP_PROTOCOL: '" + protocol + "' is not taken (http/json)");
  if (auto traces = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); !traces.empty()) {
    o.endpoint = traces;
  } else if (auto base = env("OTEL_EXPORTER_OTLP_ENDPOINT"); !base.empty()) {
    while (!base.empty() && base.back() == '/') base.pop_back();
    o.endpoint = base + "/v1/traces";
  }
  if (!settings.endpoint.empty()) o.endpoint = settings.endpoint;
  if (disabled && settings.endpoint.empty()) o.endpoint.clear();
  if (!o.endpoint.empty() && o.endpoint.rfind("http://", 0) != 0 && o.endpoint.rfind("https://", 0) != 0)
    return make_error(errc::config, "the traces endpoint (telemetry.otlp_endpoint, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or "
                                    "OTEL_EXPORTER_OTLP_ENDPOINT) must be an http:// or https:// URL, not '" + o.endpoint + "'");
  auto headers_text = either("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS");
  if (!settings.headers.empty()) headers_text = settings.headers;
  auto headers = pairs_of(headers_text, settings.headers.empty() ? "OTEL_EXPORTER_OTLP_HEADERS" : "telemetry.otlp_headers");
  if (!headers) return headers.error();
  o.headers = std::move(*headers);
  if (auto t = either("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"); !t.empty()) {
    auto v = number_of(t.c_str(), "OTEL_EXPORTER_OTLP_TIMEOUT", 1);
    if (!v) return v.error();
    o.timeout_ms = *v;
  }
  if (auto q = env("OTEL_BSP_MAX_QUEUE_SIZE"); !q.empty()) {
    auto v = number_of(q.c_str(), "OTEL_BSP_MAX_QUEUE_SIZE", 1);
    if (!v) return v.error();
    o.queue_max = static_cast<std::size_t>(*v);
  }
  if (auto b = env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"); !b.empty()) {
    auto v = number_of(b.c_str(), "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1);
    if (!v) return v.error();
    o.batch_max = static_cast<std::size_t>(*v);
  }
  if (auto d = env("OTEL_BSP_SCHEDULE_DELAY"); !d.empty()) {
    auto v = number_of(d.c_str(), "OTEL_BSP_SCHEDULE_DELAY", 1);
    if (!v) return v.error();
    o.delay_ms = *v;
  }
  if (settings.queue_max > 0) o.queue_max = static_cast<std::size_t>(settings.queue_max);
  if (settings.delay_ms > 0) o.delay_ms = settings.delay_ms;
  o.batch_max = std::min(o.batch_max, o.queue_max);
  auto resource_text = env("OTEL_RESOURCE_ATTRIBUTES");
  auto attributes = pairs_of(resource_text, "OTEL_RESOURCE_ATTRIBUTES");
  if (!attributes) return attributes.error();
  for (const auto& [k, v] : *attributes) {
    if (k == "service.name") o.about.service_name = v;
    else o.about.attributes[k] = v;
  }
  if (auto name = env("OTEL_SERVICE_NAME"); !name.empty()) o.about.service_name = name;
  if (!settings.service_name.empty()) o.about.service_name = settings.service_name;
  return o;
}

void start_exporter(exporter_options options) {
  stop_exporter(1000);
  if (options.endpoint.empty()) return;
  auto e = std::make_shared<exporter>();
  e->options = std::move(options);
  e->thread = std::thread([raw = e.get()] { raw->loop(); });
  logger()->info("traces go to {} (OTLP/HTTP, JSON)", e->options.endpoint);
  std::lock_guard lock{current_mutex};
  current = std::move(e);
}

void stop_exporter(std::int64_t flush_ms) {
  std::shared_ptr<exporter> e;
  {
    std::lock_guard lock{current_mutex};
    e = std::move(current);
  }
  if (!e) return;
  {
    std::lock_guard lock{e->mutex};
    e->stopping = true;
    e->flush_until_ms = exporter::now_ms() + flush_ms;
  }
  e->wake.notify_all();
  if (e->thread.joinable()) e->thread.join();
}

bool tracing() {
  std::lock_guard lock{current_mutex};
  return current != nullptr;
}

void record(span s) {
  std::shared_ptr<exporter> e;
  {
    std::lock_guard lock{current_mutex};
    e = current;
  }
  if (!e) return;
  bool full = false, wake = false, stopped = false;
  {
    std::lock_guard lock{e->mutex};
    if (e->stopping) {
      stopped = true;
    } else if (e->queue.size() >= e->options.queue_max) {
      full = true;
    } else {
      e->queue.push_back(std::move(s));
      wake = e->queue.size() >= e->options.batch_max;
    }
  }
  if (full) metrics::count("keel_trace_spans_dropped_total", {{"reason", "queue_full"}});
  if (stopped) metrics::count("keel_trace_spans_dropped_total", {{"reason", "stopped"}});
  if (wake) e->wake.notify_one();
}

} // namespace keel::telemetry
