// What a node holds while it runs (apps/node.cpp composes it; apps/node_orchestrator.cpp starts
// and restarts its orchestrator role): its store, actor system, connections, roles, heartbeat.
#pragma once

#include "apps/node.hpp"
#include "apps/node_telemetry.hpp"

#include "actors/orchestrator.hpp"
#include "actors/worker.hpp"
#include "broker/connection.hpp"
#include "gateway/api.hpp"
#include "gateway/http_server.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <caf/all.hpp>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace keel::actors {

// What the node says of itself; shared by the heartbeat actor and the ping responder. Its id and
// runs in memory change when its orchestrator role rejoins as a new member: read and set under
// its lock.
class announcer {
public:
  announcer(std::shared_ptr<broker::connection> nats, broker::subjects subjects, wire::heartbeat beat)
    : nats_(std::move(nats)), subjects_(std::move(subjects)), beat_(std::move(beat)) {}
  std::string encode(const char* state) const;
  void publish(const char* state) const;
  void set_node_id(const std::string& id);
  void set_runs_in_memory(std::function<std::int64_t()> count);
  void set_slots(std::function<std::pair<std::int64_t, std::int64_t>()> slots);
  std::int64_t interval_ms() const { return beat_.interval_ms; }  // set once
  const broker::subjects& subjects() const { return subjects_; }
  const std::shared_ptr<broker::connection>& nats() const { return nats_; }

private:
  std::shared_ptr<broker::connection> nats_;
  broker::subjects subjects_;
  mutable std::mutex mutex_;
  wire::heartbeat beat_;
  std::function<std::int64_t()> runs_in_memory_ = [] { return 0; };
  std::function<std::pair<std::int64_t, std::int64_t>()> slots_ = [] { return std::pair<std::int64_t, std::int64_t>{0, 0}; };
};

struct node::impl {
  config::node_config config;
  std::string id;  // changes when the orchestrator role rejoins as a new member (on the rejoiner's thread)
  std::unique_ptr<store::run_store> store;
  std::unique_ptr<caf::actor_system_config> actor_config;
  std::unique_ptr<caf::actor_system> system;
  std::shared_ptr<broker::connection> nats;
  // The worker's own connection when the node is an orchestrator too: tasks and results then
  // do not share a socket, a reader thread and its locks with the orchestrator's traffic.
  std::shared_ptr<broker::connection> worker_nats;
  // Connections of the lanes beyond the first (config node.lanes), the orchestrator's and the
  // worker's: a node's steps do not all pass one socket and one reader thread.
  std::vector<std::shared_ptr<broker::connection>> lane_connections;
  std::vector<std::shared_ptr<broker::connection>> orchestrator_lanes;  // its first is `nats`
  // An orchestrator whose runs another took over restarts in place, on `rejoiner`: the node's
  // other roles (its worker, its gateway) go on meanwhile. stop() ends it before anything else.
  // (Declared before the roles: a role destroyed without stop() may still call the hook.)
  std::mutex rejoin_mutex;
  std::condition_variable rejoin_wake;
  std::string rejoin_why;  // not empty: a restart is due
  bool rejoin_ending = false;
  std::shared_ptr<announcer> announce;
  std::shared_ptr<node_view> view;  // what a scrape reads of the node's id and store
  caf::actor heartbeat;
  std::unique_ptr<broker::subscription> ping_subscription;
  std::unique_ptr<orchestrator> orchestrator_role;
  std::unique_ptr<worker> worker_role;
  std::shared_ptr<gateway::api> gateway_api;  // shared with handlers that may outlive a stop
  std::unique_ptr<gateway::http_server> gateway_role;
  std::shared_ptr<broker::connection> gateway_nats;
  std::unique_ptr<node_telemetry> telemetry;  // metrics' collectors and listener, the span exporter
  std::unique_ptr<broker::subscription> admin_subscription;  // backups (orchestrators)
  std::shared_ptr<std::mutex> backing_up = std::make_shared<std::mutex>();  // held while a backup is made
  std::thread rejoiner;
  bool stopped = false;
  bool left_in_place = false;  // stop() found task threads still running: never freed
};

result<std::unique_ptr<store::run_store>> open_store(const config::node_config& config);
std::string host_name();
std::string random_suffix();

// Starts the orchestrator role on the node's store and lanes; a node whose runs another took over
// while it was gone (or paused) rejoins as a new member: a new id, an empty store (the old one
// kept aside). Then serves backups and shows the role's runs to the heartbeat and scrapes.
result<void> start_orchestrator_role(node::impl& state);
// The thread that restarts the orchestrator role when it learns that another orchestrator took
// its runs (the role stops, its actors end, and it starts again as a new member).
void run_rejoiner(node::impl& state);
void end_rejoiner(node::impl& state);

} // namespace keel::actors
