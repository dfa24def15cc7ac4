// What a worker tells an operator's tools about a task it ran: the GenAI client metrics of a
// model call (gen_ai_client_token_usage, gen_ai_client_operation_duration_seconds), a tool call's
// duration, and their spans (`chat <model>`, `execute_tool <tool>`) in the run's trace, under the
// span the task's traceparent names.
#pragma once

#include "runtime/config.hpp"
#include "runtime/result.hpp"
#include "runtime/wire.hpp"

#include <cstdint>

namespace keel::actors {

std::int64_t unix_ns();

// `outcome` as the worker will answer it; start and end in Unix nanoseconds.
void observe_task(const config::agent_config* agent, const wire::task& t, const result<wire::value>& outcome,
                  const std::string& worker, std::int64_t start_ns, std::int64_t end_ns);

} // namespace keel::actors
