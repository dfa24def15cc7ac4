// A node's orchestrator role: started on the node's store and lanes, rejoining as a new member
// when its runs were taken over while it was gone, and restarted in place (its actors ended, a
// new member started) when it learns, while it runs, that another orchestrator took its runs.
#include "apps/node_admin.hpp"
#include "apps/node_state.hpp"

#include "runtime/clock.hpp"
#include "runtime/log.hpp"
#include "runtime/thread_pool.hpp"

#include <spdlog/spdlog.h>

#include <csignal>
#include <filesystem>
#include <unistd.h>

namespace keel::actors {

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("actors");
  return l;
}

// A restart that cannot be made in place ends the process (a supervisor starts it again, and
// it rejoins as a new member then).
void stop_process(const std::string& why) {
  logger()->critical("{}: the node stops", why);
  ::kill(::getpid(), SIGTERM);
}

bool ending(node::impl& s) {
  std::lock_guard lock{s.rejoin_mutex};
  return s.rejoin_ending;
}

void restart(node::impl& s, const std::string& why) {
  if (!s.orchestrator_role || ending(s)) return;
  auto was = s.id;
  logger()->warn("{}; node {}'s orchestrator role restarts, its other roles go on", why, s.id);
  // Nothing reads the role or its store from here on: the heartbeat, scrapes, backups.
  s.announce->set_runs_in_memory({});
  s.view->set_orchestrator(nullptr, {});
  s.admin_subscription.reset();
  s.orchestrator_role->stop();
  // Its actors (the supervisor, every run's) end within the node's stop bound; then what they
  // queued is written. Work of the old role still running after that would use the store under
  // the new one: the process stops instead (without writing under running actors).
  if (!s.orchestrator_role->await_stopped(s.config.shutdown_timeout_ms))
    return stop_process("node " + s.id + ": its orchestrator role's actors did not end within node.shutdown_timeout_ms (" +
                        std::to_string(s.config.shutdown_timeout_ms) + " ms)");
  if (!s.orchestrator_role->flush())
    return stop_process("node " + s.id + ": its orchestrator role's run log thread did not end in time");
  std::lock_guard backup_done{*s.backing_up};
  s.orchestrator_role.reset();
  // A stop asked meanwhile: no new role (node::stop closes the store).
  if (ending(s)) return;
  if (auto started = start_orchestrator_role(s); !started)
    return stop_process("node " + s.id + ": its orchestrator role cannot start again (" + started.error().message + ")");
  logger()->warn("node {}: orchestrator role restarted as {}", was, s.id);
}

} // namespace

result<void> start_orchestrator_role(node::impl& s) {
  auto fenced = [raw = &s](const std::string& why) {
    {
      std::lock_guard lock{raw->rejoin_mutex};
      raw->rejoin_why = why;
    }
    raw->rejoin_wake.notify_all();
  };
  auto o = orchestrator::start(*s.system, s.config, s.id, s.orchestrator_lanes, *s.store, fenced);
  if (!o && o.error().code == errc::conflict && s.config.log_replicas > 0) {
    // Another orchestrator took this node's runs over while it was gone (or paused): they are
    // its now. This node rejoins as a new member: a new id, an empty store; the old store is
    // kept aside, untouched.
    auto old_id = s.id;
    s.announce->publish("stopping");  // the old id leaves `keel nodes` and the gateways' lists now
    s.store.reset();
    auto aside = s.config.data_dir + "/runs.taken-over-" + std::to_string(wall_ms());
    std::error_code ec;
    std::filesystem::rename(s.config.data_dir + "/runs", aside, ec);
    if (ec) return make_error(errc::io, "cannot move the store of a taken-over node aside: " + ec.message());
    auto reopened = open_store(s.config);
    if (!reopened) return reopened.error();
    s.store = std::move(*reopened);
    s.id = (s.config.node_name.empty() ? host_name() : s.config.node_name) + "-" + random_suffix();
    if (auto r = s.store->put_meta("node_id", s.id); !r) return r.error();
    if (auto r = s.store->put_meta("rejoined", s.id); !r) return r.error();
    s.announce->set_node_id(s.id);
    s.view->set_id(s.id);
    log::set_node(s.id);
    logger()->warn("{}; node {} rejoins as a new member, {} (its old store is kept at {})", o.error().message, old_id, s.id,
                   aside);
    o = orchestrator::start(*s.system, s.config, s.id, s.orchestrator_lanes, *s.store, fenced);
  }
  if (!o) return o.error();
  s.orchestrator_role = std::move(*o);
  auto* role = s.orchestrator_role.get();
  auto in_memory = [role] { return static_cast<std::int64_t>(role->runs_in_memory()); };
  s.announce->set_runs_in_memory(in_memory);
  s.view->set_orchestrator(s.store.get(), in_memory);
  auto admin = serve_admin(s.nats, broker::subjects{s.config.prefix, s.config.ns}, s.id, *s.store, s.config.data_dir,
                           s.backing_up);
  if (!admin) return admin.error();
  s.admin_subscription = std::move(*admin);
  return success();
}

void run_rejoiner(node::impl& s) {
  s.rejoiner = std::thread([&s] {
    while (true) {
      std::string why;
      {
        std::unique_lock lock{s.rejoin_mutex};
        s.rejoin_wake.wait(lock, [&] { return s.rejoin_ending || !s.rejoin_why.empty(); });
        if (s.rejoin_ending) return;
        why = std::exchange(s.rejoin_why, {});
      }
      try {
        restart(s, why);
      } catch (const std::exception& e) {
        stop_process("node " + s.id + ": restarting its orchestrator role failed (" + e.what() + ")");
      }
    }
  });
}

void end_rejoiner(node::impl& s) {
  {
    std::lock_guard lock{s.rejoin_mutex};
    s.rejoin_ending = true;
  }
  s.rejoin_wake.notify_all();
  if (s.rejoiner.joinable()) s.rejoiner.join();
}

} // namespace keel::actors
