// The orchestrator role: takes invokes (queue group), owns the runs it created, routes results
// and answers to their run actors, recovers unfinished runs at start, and serves run state and
// event history to clients. One run actor per run in memory; a suspended run is bytes on disk.
#pragma once

#include "runtime/config.hpp"
#include "runtime/result.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace caf { class actor_system; }
namespace keel::broker { class connection; }
namespace keel::store { class run_store; }

namespace keel::actors {

class orchestrator {
public:
  static result<std::unique_ptr<orchestrator>> start(caf::actor_system& system,
                                                     const config::node_config& config,
                                                     const std::string& node_id,
                                                     // The node's lanes (config lanes_for()); the
                                                     // first also serves requests about runs.
                                                     const std::vector<std::shared_ptr<broker::connection>>& lanes,
                                                     store::run_store& store,
                                                     // Called (once, on a thread of the role) when
                                                     // another orchestrator took this one's runs;
                                                     // none: the process stops.
                                                     std::function<void(const std::string& why)> on_fenced = {});
  ~orchestrator();
  // Stops taking requests, lets the actors finish, and writes what is queued.
  void stop();
  // After stop(): whether its actors (the supervisor, every run's) ended within the time.
  bool await_stopped(std::int64_t timeout_ms) const;
  // After the actors are gone: writes what is queued and runs its continuations. False when work
  // that uses the store (the run log's thread) was still running at its bound and was left to end
  // on its own.
  bool flush();
  std::size_t runs_in_memory() const;

  struct impl;

private:
  explicit orchestrator(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

} // namespace keel::actors
