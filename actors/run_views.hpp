// Runs and agents as clients see them (keel show, keel runs, keel agents, the dashboard): one
// encoder for each view.
#pragma once

#include "runtime/config.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <string>

namespace keel::actors {

// A run's summary: status, steps, usage, what it waits for, its output or error.
wire::value summary(const store::run_record& r);
// An agent: what it runs on and what it may do; no secret.
wire::value describe_agent(const config::agent_config& a);
// The reply that carries a run's summary.
std::string run_reply(const store::run_record& r);

} // namespace keel::actors
