#include "apps/node_telemetry.hpp"

#include "broker/connection.hpp"
#include "broker/work_queue.hpp"
#include "gateway/http_server.hpp"
#include "runtime/clock.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/run_store.hpp"
#include "telemetry/otlp_exporter.hpp"

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>

namespace keel::actors {

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("node");
  return l;
}

// Runs held in a status, counted up to this (a scrape reads the status index, never every run).
constexpr std::size_t status_count_max = 1'000'000;
// Waiting approvals read for the oldest one's age.
constexpr std::size_t approvals_read_max = 10'000;

void collect_store(const store::run_store& store, const metrics::gauge_setter& set) {
  using store::run_status;
  for (auto s : {run_status::pending, run_status::running, run_status::suspended, run_status::waiting, run_status::queued}) {
    if (s != run_status::suspended) {
      if (auto n = store.count_by_status(s)) set("keel_runs", {{"status", std::string(store::to_string(s))}}, static_cast<double>(*n));
      continue;
    }
    auto ids = store.list_by_status(s, status_count_max);
    if (!ids) continue;
    set("keel_runs", {{"status", std::string(store::to_string(s))}}, static_cast<double>(ids->size()));
    set("keel_approvals_waiting", {}, static_cast<double>(ids->size()));
    std::int64_t oldest = 0;
    std::size_t read = 0;
    for (const auto& id : *ids) {
      if (++read > approvals_read_max) break;
      auto r = store.get(id, false);
      if (r && *r && (oldest == 0 || (*r)->updated_ms < oldest)) oldest = (*r)->updated_ms;
    }
    set("keel_approval_oldest_age_seconds", {},
        oldest == 0 ? 0.0 : static_cast<double>(std::max<std::int64_t>(0, wall_ms() - oldest)) / 1000.0);
  }
}

std::string read_token(const std::string& file) {
  std::ifstream in(file);
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) token.pop_back();
  return token;
}

// The Host a request names: localhost or an address, so that a web page cannot reach this
// listener through a name of its own pointed here (DNS rebinding).
bool host_ok(const std::string& host) {
  std::string name = host;
  if (!name.empty() && name.front() == '[') return name.find(']') != std::string::npos;  // [v6]:port
  if (auto colon = name.rfind(':'); colon != std::string::npos) name = name.substr(0, colon);
  if (name == "localhost") return true;
  if (name.empty()) return false;
  for (char c : name)
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.')) return false;
  return true;
}

bool same(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace

struct node_telemetry::impl {
  std::vector<metrics::collector_handle> collectors;
  std::unique_ptr<gateway::http_server> listener;
  bool exporting = false;
  std::mutex js_mutex;  // scrapes may overlap
  std::unique_ptr<broker::jetstream> js;
};

node_telemetry::node_telemetry(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
node_telemetry::~node_telemetry() {
  stop();
  finish();
}

std::uint16_t node_telemetry::metrics_port() const { return impl_ && impl_->listener ? impl_->listener->port() : 0; }

void node_view::set_id(std::string id) {
  std::unique_lock lock{mutex_};
  id_ = std::move(id);
}

void node_view::set_orchestrator(const store::run_store* store, std::function<std::int64_t()> runs_in_memory) {
  std::unique_lock lock{mutex_};
  store_ = store;
  runs_in_memory_ = std::move(runs_in_memory);
}

void node_view::collect(const metrics::gauge_setter& set, const std::string& roles) const {
  std::shared_lock lock{mutex_};
  set("keel_build_info", {{"version", "0.1.0"}, {"node", id_}, {"roles", roles}}, 1);
  if (store_) collect_store(*store_, set);
  if (runs_in_memory_) set("keel_runs_in_memory", {}, static_cast<double>(runs_in_memory_()));
}

result<std::unique_ptr<node_telemetry>> node_telemetry::start(const config::node_config& config, const std::string& node_id,
                                                              telemetry_sources sources) {
  auto state = std::make_unique<impl>();
  auto* raw = state.get();
  std::string roles;
  for (auto r : config.roles) roles += (roles.empty() ? "" : ",") + std::string(config::to_string(r));
  if (sources.view)
    state->collectors.push_back(metrics::add_collector([view = sources.view, roles](const metrics::gauge_setter& set) {
      view->collect(set, roles);
    }));
  if (sources.slots) {
    std::set<std::string> queues;
    for (const auto& agent : config.agents) queues.insert(agent.queue);
    broker::subjects names{config.prefix, config.ns};
    state->collectors.push_back(metrics::add_collector(
      [raw, slots = sources.slots, nats = sources.nats, queues, names](const metrics::gauge_setter& set) {
        auto [count, busy] = slots();
        set("keel_worker_slots", {}, static_cast<double>(count));
        set("keel_worker_slots_busy", {}, static_cast<double>(busy));
        if (!nats) return;
        std::lock_guard lock{raw->js_mutex};
        if (!raw->js) {
          auto opened = broker::jetstream::open(nats, 2000);
          if (!opened) return;
          raw->js = std::move(*opened);
        }
        for (const auto& q : queues)
          if (auto b = raw->js->consumer_backlog(names.tasks_stream(), broker::stream_name("workers_" + q)))
            set("keel_tasks_waiting", {{"queue", q}}, static_cast<double>(b->waiting));
      }));
  }
  // Traces: the standard variables, with [telemetry] over them.
  telemetry::exporter_settings settings{config.otlp_endpoint, config.otlp_headers, config.otel_service_name,
                                        config.spans_queued_max, 0};
  auto options = telemetry::exporter_options_from([](const char* name) { return std::getenv(name); }, settings);
  if (!options) return options.error();
  if (!options->endpoint.empty()) {
    options->about.attributes["service.instance.id"] = node_id;
    options->about.attributes["service.version"] = "0.1.0";
    telemetry::start_exporter(std::move(*options));
    state->exporting = true;
  }
  if (!config.metrics_listen.empty()) {
    auto listen = config::split_listen(config.metrics_listen);
    if (!listen) return listen.error();
    gateway::server_options server;
    server.host = listen->first;
    server.port = listen->second;
    server.io_threads = 1;
    server.handler_threads = 2;
    server.quick_threads = 1;
    server.body_bytes_max = 4096;
    auto token_file = config.metrics_token_file;
    auto started = gateway::http_server::start(server, [token_file](gateway::http_request r, gateway::responder respond) {
      gateway::http_response out;
      out.content_type = "text/plain; charset=utf-8";
      auto host = r.headers.find("host");
      if (host == r.headers.end() || !host_ok(host->second)) {
        out.status = 403;
        out.body = "the Host must be localhost or an address\n";
        return respond(std::move(out));
      }
      auto path = r.target.substr(0, r.target.find('?'));
      if (path != "/metrics") {
        out.status = 404;
        out.body = "only /metrics is served here\n";
        return respond(std::move(out));
      }
      if (r.method != "GET" && r.method != "HEAD") {
        out.status = 405;
        out.headers.emplace_back("Allow", "GET, HEAD");
        out.body = "GET only\n";
        return respond(std::move(out));
      }
      if (!token_file.empty()) {
        // Read at each scrape: a token replaced in its file takes effect without a restart.
        auto token = read_token(token_file);
        auto given = r.headers.find("authorization");
        if (token.empty() || given == r.headers.end() || !same(given->second, "Bearer " + token)) {
          out.status = 401;
          out.headers.emplace_back("WWW-Authenticate", "Bearer");
          out.body = token.empty() ? "metrics.token_file holds no token\n" : "a bearer token is required\n";
          return respond(std::move(out));
        }
      }
      out.content_type = "text/plain; version=0.0.4; charset=utf-8";
      out.body = metrics::render();
      respond(std::move(out));
    });
    if (!started) return make_error(started.error().code, "metrics.listen: " + started.error().message);
    state->listener = std::move(*started);
    logger()->info("metrics on http://{}:{}/metrics", listen->first, state->listener->port());
  }
  return std::unique_ptr<node_telemetry>(new node_telemetry(std::move(state)));
}

void node_telemetry::stop() {
  if (!impl_) return;
  if (impl_->listener) impl_->listener->stop();
  impl_->collectors.clear();
}

void node_telemetry::finish() {
  if (!impl_ || !impl_->exporting) return;
  telemetry::stop_exporter(1000);
  impl_->exporting = false;
}

} // namespace keel::actors
