// A model provider: one completion per model step. Workers hold providers; orchestrators never do.
#pragma once

#include "llm/conversation.hpp"
#include "runtime/config.hpp"

#include <memory>

namespace keel::llm {

class provider {
public:
  virtual ~provider() = default;
  virtual result<completion> complete(const completion_request& request) = 0;
};

// The provider an agent's config names. Errors name the agent and what is missing.
result<std::unique_ptr<provider>> make_provider(const config::agent_config& agent);

} // namespace keel::llm
