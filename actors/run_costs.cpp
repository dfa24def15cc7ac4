// What a run's steps cost and use, with its child runs': tokens and cost by the configured prices
// (docs/OPERATIONS.md, cost). Part of run_machine.
#include "actors/run_machine.hpp"

#include "llm/conversation.hpp"

#include <algorithm>

namespace keel::actors {

using wire::value;

// A child run's tokens (with its own children's), from its outcome's total_usage, count toward this run's.
void run_machine::add_children_usage(const value& outcome) {
  if (!outcome.is_object() || !outcome.contains("total_usage") || !outcome["total_usage"].is_object()) return;
  const auto& used = outcome["total_usage"];
  auto add = [&](std::int64_t& to, const char* key) {
    if (used.contains(key) && used[key].is_number_integer()) to += std::max<std::int64_t>(0, used[key].get<std::int64_t>());
  };
  add(state_.children_usage.input_tokens, "input_tokens");
  add(state_.children_usage.output_tokens, "output_tokens");
  add(state_.children_usage.cache_read_tokens, "cache_read_tokens");
  add(state_.children_usage.cache_write_tokens, "cache_write_tokens");
  if (outcome.contains("total_cost_usd") && outcome["total_cost_usd"].is_number() && outcome["total_cost_usd"].get<double>() > 0)
    state_.children_cost_usd += outcome["total_cost_usd"].get<double>();
}

// What a model step's tokens cost by the configured prices (per million tokens); none: no price.
std::optional<double> run_machine::step_cost(const llm::usage& used) const {
  if (!context_.prices) return std::nullopt;
  auto provider = state_.provider.empty() ? agent_.provider : state_.provider;
  auto model = state_.model.empty() ? agent_.model : state_.model;
  auto it = context_.prices->find(provider + "/" + model);
  if (it == context_.prices->end()) return std::nullopt;
  const auto& p = it->second;
  // OpenAI counts cached tokens within the prompt's; Anthropic apart from it. Each token is paid once.
  auto input = provider == "openai" ? std::max<std::int64_t>(0, used.input_tokens - used.cache_read_tokens) : used.input_tokens;
  return (static_cast<double>(input) * p.input + static_cast<double>(used.output_tokens) * p.output +
          static_cast<double>(used.cache_read_tokens) * p.cache_read + static_cast<double>(used.cache_write_tokens) * p.cache_write) /
         1e6;
}

} // namespace keel::actors
