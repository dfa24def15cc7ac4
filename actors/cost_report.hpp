// What each agent's runs cost over a time (docs/OPERATIONS.md, cost): the runs this orchestrator
// holds that were created in [since_ms, until_ms), their cost by the configured prices (each run's
// own steps: a sub-agent's run counts under its own agent) and their tokens. Reads at most
// `scan_max` runs; `cut` says when there were more.
#pragma once

#include "runtime/result.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <cstdint>

namespace keel::actors {

// {agents: [{agent, runs, cost_usd, input_tokens, output_tokens, cache_read_tokens,
// cache_write_tokens}], runs_read, cut}
result<wire::value> cost_report(const store::run_store& store, std::int64_t since_ms, std::int64_t until_ms,
                                std::size_t scan_max = 100'000);

// The window a `costs` request asks for: since_ms (default: a day before now) and until_ms
// (default: now), integers, since before until.
result<std::pair<std::int64_t, std::int64_t>> cost_window(const wire::value& body, std::int64_t now_ms);

} // namespace keel::actors
