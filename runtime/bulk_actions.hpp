// Bulk actions on runs chosen by a filter (docs/FORKS.md): which runs each applies to. The CLI and
// the HTTP API both preview the runs an action will touch, and act only on those confirmed.
#pragma once

#include <string>
#include <string_view>

namespace keel {

// cancel (a run not ended), retry (a failed run), approve and reject (a suspended run's waiting
// step).
bool is_bulk_action(std::string_view action);
bool bulk_applies(std::string_view action, std::string_view status);
// The list of actions, for messages.
inline constexpr std::string_view bulk_actions_text = "cancel, retry, approve or reject";
// Runs one bulk action touches at most.
inline constexpr std::size_t bulk_runs_max = 1000;

} // namespace keel
