// The run actor: the one owner of a run in memory. It feeds what comes for the run (results,
// resumes, cancels, retries, waits) to its run machine and performs the effects: write, then
// publish events, replies and tasks. A run with nothing left to do leaves memory.
#pragma once

#include "actors/orchestrator_shared.hpp"
#include "actors/run_machine.hpp"
#include "actors/run_observer.hpp"

#include <caf/all.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel::actors {

struct run_actor_state {
  std::optional<run_machine> machine;
  std::optional<run_observer> observer;  // metrics and spans from its transitions
  std::string queue;  // the agent's worker queue
  std::uint64_t received_through = 0;  // results received up to this order were read from disk
  std::vector<std::string> waiters;    // reply subjects of wait requests
  caf::actor supervisor;               // told the run's next wake (workflows)
  std::int64_t wake_reported = -1;     // the last told
  static inline const char* name = "keel.run";
};

using run_actor_type = caf::stateful_actor<run_actor_state>;

// `start_now`: go on with the run at once (a new run, or one recovered with work in flight);
// `from_disk`: loaded from the store (its journal's tail is applied first); `invoke_reply`: where
// the new run's id goes once its first write counted.
caf::behavior run_actor(run_actor_type* self, std::shared_ptr<orchestrator_shared> shared, store::run_record record,
                        const config::agent_config* agent, bool start_now, bool from_disk, std::string invoke_reply,
                        caf::actor supervisor);

} // namespace keel::actors
