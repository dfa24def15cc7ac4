// The atoms and message types the actors of one node exchange. These never leave the process
// (NATS carries what goes between nodes), so the wire types are allowed in messages unserialised.
#pragma once

#include "runtime/run_state.hpp"
#include "runtime/wire.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

namespace keel::actors {

using invoke_atom = caf::atom_constant<caf::atom("invoke")>;
using resume_atom = caf::atom_constant<caf::atom("resume")>;
using result_atom = caf::atom_constant<caf::atom("result")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;
using send_atom = caf::atom_constant<caf::atom("send")>;
using recover_atom = caf::atom_constant<caf::atom("recover")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using wait_atom = caf::atom_constant<caf::atom("wait")>;
using adopt_atom = caf::atom_constant<caf::atom("adopt")>;
using stalled_atom = caf::atom_constant<caf::atom("stalled")>;
using audit_atom = caf::atom_constant<caf::atom("audit")>;
using deadline_atom = caf::atom_constant<caf::atom("deadline")>;
using child_atom = caf::atom_constant<caf::atom("child")>;
using child_check_atom = caf::atom_constant<caf::atom("childcheck")>;
// Workflows: a run's next wake (run actor -> supervisor), the supervisor's timer, a wake of a
// run, the wakes of runs on disk to look up, an event sent to a run.
using wake_at_atom = caf::atom_constant<caf::atom("wakeat")>;
using wake_tick_atom = caf::atom_constant<caf::atom("waketick")>;
using wake_atom = caf::atom_constant<caf::atom("wake")>;
using wake_scan_atom = caf::atom_constant<caf::atom("wakescan")>;
using signal_atom = caf::atom_constant<caf::atom("signal")>;
// Queues: a run in line may start (queue keeper -> supervisor -> run).
using admit_atom = caf::atom_constant<caf::atom("admit")>;
// Fan-outs: a child run of a run's join exists (children pool -> supervisor -> run).
using join_child_atom = caf::atom_constant<caf::atom("joinchild")>;
using retention_atom = caf::atom_constant<caf::atom("retention")>;
// Forks (docs/FORKS.md): a new run made from a recorded one (request handler -> supervisor).
using fork_atom = caf::atom_constant<caf::atom("fork")>;
// Answers from the broker, asked off the actors' threads (orchestrator_shared::broker_pool):
// which attempt of a step the work queue holds (-> the run), an idempotency key claimed across
// the cluster (-> supervisor).
using held_atom = caf::atom_constant<caf::atom("held")>;
using claimed_atom = caf::atom_constant<caf::atom("claimed")>;

} // namespace keel::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::wire::invoke_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::wire::resume_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::wire::task_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::wire::task)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::store::signal_record)
