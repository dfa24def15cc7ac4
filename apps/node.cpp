#include "apps/node.hpp"
#include "apps/node_state.hpp"
#include "runtime/metrics.hpp"
#include "runtime/thread_pool.hpp"

#include "actors/orchestrator.hpp"
#include "actors/worker.hpp"
#include "gateway/api.hpp"
#include "gateway/http_server.hpp"
#include "gateway/tokens.hpp"
#include "broker/authorization.hpp"
#include "broker/connection.hpp"
#include "runtime/clock.hpp"
#include "runtime/cpus.hpp"
#include "runtime/log.hpp"
#include "runtime/run_store.hpp"
#include "runtime/secrets.hpp"
#include "runtime/wire.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <malloc.h>
#include <functional>
#include <random>
#include <set>
#include <unistd.h>

namespace keel::actors {

namespace {

using tick_atom = caf::atom_constant<caf::atom("tick")>;

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("actors");
  return l;
}

} // namespace

result<std::unique_ptr<store::run_store>> open_store(const config::node_config& config) {
  store::store_options options;
  options.path = config.data_dir + "/runs";
  options.fsync = config.fsync;
  options.memtable_bytes = static_cast<std::size_t>(config.memtable_bytes);
  options.block_cache_bytes = static_cast<std::size_t>(config.block_cache_bytes);
  options.reserve_bytes = static_cast<std::uint64_t>(config.disk_reserve_bytes);
  options.keep_conversations = config.retention_keep_conversations;
  return store::run_store::open(options);
}

std::string host_name() {
  char buffer[256] = {0};
  ::gethostname(buffer, sizeof buffer - 1);
  std::string out;
  for (char c : std::string(buffer)) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
    out += ok ? c : '-';
  }
  if (out.empty()) out = "node";
  return out.substr(0, 40);
}

std::string random_suffix() {
  static constexpr char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::random_device device;
  std::string out;
  for (int i = 0; i < 4; ++i) out += alphabet[device() % 36];
  return out;
}

std::string announcer::encode(const char* state) const {
  std::lock_guard lock{mutex_};
  wire::heartbeat now = beat_;
  now.state = state;
  now.time_ms = wall_ms();
  now.runs_in_memory = runs_in_memory_();
  std::tie(now.slots, now.slots_busy) = slots_();
  return wire::encode(now);
}

void announcer::publish(const char* state) const {
  if (auto r = nats_->publish(subjects_.heartbeat(), encode(state)); !r)
    logger()->warn("heartbeat not sent: {}", r.error().message);
}

void announcer::set_node_id(const std::string& id) {
  std::lock_guard lock{mutex_};
  beat_.node_id = id;
}

void announcer::set_runs_in_memory(std::function<std::int64_t()> count) {
  std::lock_guard lock{mutex_};
  runs_in_memory_ = count ? std::move(count) : [] { return std::int64_t{0}; };
}

void announcer::set_slots(std::function<std::pair<std::int64_t, std::int64_t>()> slots) {
  std::lock_guard lock{mutex_};
  slots_ = std::move(slots);
}

namespace {

caf::behavior heartbeat_actor(caf::event_based_actor* self, std::shared_ptr<const announcer> a) {
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      // glibc keeps freed memory in its arenas; hand it back, so that what a node holds is
      // what it uses (a burst of runs that then suspend should cost disk, not memory).
      ::malloc_trim(0);
      a->publish("up");
      self->delayed_send(self, std::chrono::milliseconds(a->interval_ms()), tick_atom::value);
    },
  };
}

} // namespace


std::string derive_node_id(const config::node_config& config, const std::string& stored) {
  if (!config.node_name.empty()) return config.node_name;
  if (!stored.empty()) return stored;
  if (config.has_role(config::role::orchestrator)) return host_name() + "-" + random_suffix();
  return host_name() + "-" + std::to_string(::getpid());
}

node::node(std::unique_ptr<impl> state) : impl_(std::move(state)) {}

node::~node() {
  stop();
  if (impl_ && impl_->left_in_place) (void)impl_.release();  // still in use by a task's thread
}

const std::string& node::id() const { return impl_->id; }

result<std::unique_ptr<node>> node::start(const config::node_config& config) {
  auto state = std::make_unique<impl>();
  state->config = config;
  std::string stored_id;
  if (config.has_role(config::role::orchestrator)) {
    std::error_code ec;
    std::filesystem::create_directories(config.data_dir, ec);
    if (ec)
      return make_error(errc::io, "cannot create data directory " + config.data_dir + ": " +
                                    ec.message());
    // Runs' inputs, answers and outputs are for the node's user only, whatever modes the files
    // inside are made with.
    std::filesystem::permissions(config.data_dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
    if (ec)
      return make_error(errc::io, "cannot make data directory " + config.data_dir + " private: " + ec.message());
    auto opened = open_store(config);
    if (!opened) return opened.error();
    state->store = std::move(*opened);
    auto meta = state->store->get_meta("node_id");
    if (!meta) return meta.error();
    if (*meta) stored_id = **meta;
  }
  state->id = derive_node_id(config, stored_id);
  log::set_node(state->id);
  // A node that rejoined as a new member (its runs were taken over) keeps that identity.
  if (state->store && !config.node_name.empty() && stored_id.starts_with(config.node_name + "-")) {
    auto rejoined = state->store->get_meta("rejoined");
    if (!rejoined) return rejoined.error();
    if (*rejoined && **rejoined == stored_id) state->id = stored_id;
  }
  if (state->store && stored_id != state->id) {
    if (!stored_id.empty())
      logger()->warn("node id changes from {} to {}: runs created as {} stay with that id",
                     stored_id, state->id, stored_id);
    if (auto r = state->store->put_meta("node_id", state->id); !r) return r.error();
  }

  broker::connection_options nats_options;
  nats_options.servers = config.nats_servers;
  nats_options.name = "keel-node " + state->id;
  nats_options.connect_timeout_ms = config.connect_timeout_ms;
  nats_options.reconnect_wait_ms = config.reconnect_wait_ms;
  nats_options.reconnect_attempts_max = config.reconnect_attempts_max;
  if (!config.nats_credentials_file.empty()) {
    auto credentials = broker::read_credentials(config.nats_credentials_file);
    if (!credentials) return make_error(credentials.error().code, "nats.credentials_file: " + credentials.error().message);
    nats_options.user = credentials->user;
    nats_options.password = credentials->password;
  }
  auto connected = broker::connection::connect(nats_options);
  if (!connected) return connected.error();
  state->nats = std::move(*connected);

  state->actor_config = std::make_unique<caf::actor_system_config>();
  state->actor_config->set("scheduler.max-threads",
                           std::max<std::size_t>(2, usable_cpus()));
  // Sharing: idle workers wait on a condition variable. The default (stealing) polls and then
  // sleeps up to 10 ms, so a message arriving on a quiet node from a NATS thread waited for it.
  state->actor_config->set("scheduler.policy", caf::atom("sharing"));
  state->system = std::make_unique<caf::actor_system>(*state->actor_config);

  wire::heartbeat beat;
  beat.node_id = state->id;
  for (auto r : config.roles) beat.roles.emplace_back(config::to_string(r));
  if (config.has_role(config::role::worker)) {
    for (const auto& agent : config.agents) {
      beat.agents.push_back(agent.id);
      if (std::find(beat.queues.begin(), beat.queues.end(), agent.queue) == beat.queues.end()) beat.queues.push_back(agent.queue);
    }
  }
  beat.started_ms = wall_ms();
  beat.pid = ::getpid();
  beat.host = host_name();
  beat.version = "0.1.0";
  beat.interval_ms = config.heartbeat_interval_ms;
  auto a = std::make_shared<announcer>(state->nats, broker::subjects{config.prefix, config.ns}, std::move(beat));
  state->announce = a;
  state->view = std::make_shared<node_view>(state->id);

  // The lanes of a role: `first`, then connections of their own.
  auto lanes_of = [&](std::shared_ptr<broker::connection> first,
                      const std::string& name) -> result<std::vector<std::shared_ptr<broker::connection>>> {
    std::vector<std::shared_ptr<broker::connection>> lanes{std::move(first)};
    const auto count = config.lanes_for();
    for (std::size_t i = 1; i < count; ++i) {
      auto options = nats_options;
      options.name = name + " lane " + std::to_string(i);
      auto more = broker::connection::connect(options);
      if (!more) return more.error();
      lanes.push_back(*more);
      state->lane_connections.push_back(std::move(*more));
    }
    return lanes;
  };
  if (config.has_role(config::role::worker)) {
    state->worker_nats = state->nats;
    auto name = "keel-node " + state->id + " worker";
    if (config.has_role(config::role::orchestrator)) {
      auto options = nats_options;
      options.name = name;
      auto own = broker::connection::connect(options);
      if (!own) return own.error();
      state->worker_nats = std::move(*own);
    }
    auto lanes = lanes_of(state->worker_nats, name);
    if (!lanes) return lanes.error();
    auto w = worker::start(*state->system, state->config, state->id, *lanes);
    if (!w) return w.error();
    state->worker_role = std::move(*w);
    auto* role = state->worker_role.get();
    a->set_slots([role] {
      return std::pair<std::int64_t, std::int64_t>{static_cast<std::int64_t>(role->slots_count()),
                                                   static_cast<std::int64_t>(role->slots_busy())};
    });
  }
  if (config.has_role(config::role::orchestrator)) {
    auto lanes = lanes_of(state->nats, "keel-node " + state->id);
    if (!lanes) return lanes.error();
    state->orchestrator_lanes = std::move(*lanes);
    if (auto started = start_orchestrator_role(*state); !started) return started.error();
  }
  if (config.has_role(config::role::gateway)) {
    auto listen = config::split_listen(config.gateway_listen);
    if (!listen) return listen.error();
    gateway::api_options options;
    options.subjects = broker::subjects{config.prefix, config.ns};
    options.token = config.gateway_token;
    options.token_name = config.gateway_token_name;
    options.tokens_file = config.gateway_tokens_file.empty() ? config.data_dir + "/gateway-tokens" : config.gateway_tokens_file;
    if (config.gateway_token.empty()) {
      // No token given: one is made, so that no other local user or web page can drive the API.
      std::error_code ec;
      std::filesystem::create_directories(std::filesystem::path(options.tokens_file).parent_path(), ec);
      auto url_file = config.data_dir + "/dashboard-url";
      std::string host = listen->first == "0.0.0.0" || listen->first == "::" ? "127.0.0.1" : listen->first;
      if (host.find(':') != std::string::npos) host = "[" + host + "]";
      auto made = gateway::make_first_token(options.tokens_file, account_name(), "http://" + host + ":" + std::to_string(listen->second),
                                            url_file);
      if (!made) return make_error(made.error().code, "gateway: " + made.error().message);
      if (*made) logger()->info("gateway: made a token for '{}'; the dashboard's address with it is in {}", account_name(), url_file);
    }
    options.hosts = config.gateway_hosts;
    options.webhooks = config.webhooks;
    options.request_timeout_ms = config.request_timeout_ms;
    options.streams.ping_ms = config.gateway_stream_ping_ms;
    options.streams.clients_max = static_cast<std::size_t>(config.gateway_streams_max);
    // Its own connection: each streamed run is a subscription, delivered on shared threads.
    auto gateway_nats_options = nats_options;
    gateway_nats_options.name = "keel-node " + state->id + " gateway";
    gateway_nats_options.shared_delivery = true;
    auto gateway_nats = broker::connection::connect(gateway_nats_options);
    if (!gateway_nats) return gateway_nats.error();
    state->gateway_nats = std::move(*gateway_nats);
    state->gateway_api = std::make_shared<gateway::api>(state->gateway_nats, options);
    gateway::server_options server;
    server.host = listen->first;
    server.port = listen->second;
    // A request waits on NATS on one of these (an owner that is down holds it for the request's
    // timeout); streams and idle connections hold none.
    server.handler_threads = 32;
    // Health, readiness and the dashboard's files never queue behind API requests that wait on
    // the broker. Waiting requests are bounded per token (every local client shares 127.0.0.1,
    // so an address alone would let one page hold the dashboard's places); without a known token,
    // per address.
    server.may_wait = [](const gateway::http_request& r) { return r.target.rfind("/api/", 0) == 0; };
    server.client_of = [api = std::weak_ptr(state->gateway_api)](const gateway::http_request& r) {
      auto a = api.lock();
      return a ? a->client_of(r) : r.peer;
    };
    server.waiting_per_client_max = 256;
    auto started = gateway::http_server::start(server, [api = state->gateway_api](gateway::http_request r,
                                                                                 gateway::responder respond) {
      static const std::set<std::string> methods{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
      std::string method = methods.count(r.method) ? r.method : "other";
      api->handle(std::move(r), [respond, method](gateway::http_response out) {
        metrics::count("keel_http_requests_total", {{"method", method}, {"code", std::to_string(out.status)}});
        respond(std::move(out));
      });
    });
    if (!started) return started.error();
    state->gateway_role = std::move(*started);
    logger()->info("gateway listening on http://{}:{}", listen->first, state->gateway_role->port());
  }
  telemetry_sources sources;
  sources.view = state->view;
  if (state->worker_role) {
    auto* role = state->worker_role.get();
    sources.slots = [role] {
      return std::pair<std::int64_t, std::int64_t>{static_cast<std::int64_t>(role->slots_count()),
                                                   static_cast<std::int64_t>(role->slots_busy())};
    };
    sources.nats = state->worker_nats;
  }
  auto observed = node_telemetry::start(config, state->id, std::move(sources));
  if (!observed) return observed.error();
  state->telemetry = std::move(*observed);
  // Every node answers a ping with its heartbeat, so `keel nodes` need not wait for the next one.
  // Only once its roles are up: a node that answers is ready.
  auto pinged = state->nats->subscribe(
    a->subjects().nodes_ping(), "", [a](broker::message&& m) {
      if (m.reply.empty()) return;
      if (auto r = a->nats()->publish(m.reply, a->encode("up")); !r)
        logger()->warn("ping not answered: {}", r.error().message);
    });
  if (!pinged) return pinged.error();
  state->ping_subscription = std::move(*pinged);
  state->heartbeat = state->system->spawn(heartbeat_actor, std::shared_ptr<const announcer>(a));
  std::vector<std::string> roles;
  for (auto r : config.roles) roles.emplace_back(config::to_string(r));
  logger()->info("node {} started: roles [{}], NATS {}", state->id, fmt::join(roles, ", "), state->nats->connected_url());
  if (state->orchestrator_role) run_rejoiner(*state);
  return std::unique_ptr<node>(new node(std::move(state)));
}

void node::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  auto& s = *impl_;
  end_rejoiner(s);  // a restart of the orchestrator role under way ends first
  auto budget_ms = s.config.shutdown_timeout_ms;
  auto started = steady_ms();
  logger()->info("node {} stopping", s.id);
  if (s.heartbeat) caf::anon_send_exit(s.heartbeat, caf::exit_reason::user_shutdown);
  s.announce->publish("stopping");
  s.ping_subscription.reset();
  if (s.telemetry) s.telemetry->stop();  // scrapes read the store and the roles: they go first
  s.admin_subscription.reset();
  // No new work: stop taking requests, invokes, answers and tasks; let the actors finish.
  if (s.gateway_api) s.gateway_api->stop();
  if (s.gateway_role) s.gateway_role->stop();
  if (s.worker_role) s.worker_role->stop();
  if (s.orchestrator_role) s.orchestrator_role->stop();
  s.system->await_all_actors_done();
  // Every transition queued is written, and its events and tasks published, before NATS goes.
  if (s.orchestrator_role) s.orchestrator_role->flush();
  if (s.worker_nats && s.worker_nats != s.nats)
    if (auto r = s.worker_nats->drain(std::max<std::int64_t>(100, budget_ms / 4)); !r)
      logger()->warn("NATS drain (worker): {}", r.error().message);
  for (auto& lane : s.lane_connections)
    if (auto r = lane->drain(std::max<std::int64_t>(100, budget_ms / 8)); !r)
      logger()->warn("NATS drain (lane): {}", r.error().message);
  if (auto r = s.nats->drain(std::max<std::int64_t>(100, budget_ms / 2)); !r)
    logger()->warn("NATS drain: {}", r.error().message);
  // A task that overran the stop still runs on a thread of its own, with the config, the store
  // and the roles under it: nothing is freed then (the process exits without freeing anything).
  if (auto left = thread_pool::threads_left_running(); left > 0) {
    if (s.store)
      if (auto r = s.store->flush(); !r) logger()->error("store flush: {}", r.error().message);
    logger()->info("node {} stopped in {} ms; {} threads still run a task, so what they use stays in place",
                   s.id, steady_ms() - started, left);
    s.left_in_place = true;
    if (s.telemetry) s.telemetry->finish();
    return;
  }
  if (s.telemetry) s.telemetry->finish();  // spans the roles made while stopping go out
  std::lock_guard backup_done{*s.backing_up};  // a backup being made finishes before the store closes
  s.orchestrator_role.reset();
  s.worker_role.reset();
  s.system.reset();
  if (s.store) {
    if (auto r = s.store->flush(); !r) logger()->error("store flush: {}", r.error().message);
    s.store.reset();
  }
  logger()->info("node {} stopped in {} ms", s.id, steady_ms() - started);
}

} // namespace keel::actors
