// [agents.<id>] keys of workflows: the waiting tools, the run's time limit, and what becomes of an
// approval nobody answers. docs/WORKFLOWS.md has them with what each does.
#include "runtime/config_keys.hpp"
#include "runtime/ids.hpp"

namespace keel::config::detail {

namespace {
constexpr std::int64_t day_ms = 86'400'000;
}

void add_workflow_keys(std::vector<entry>& e) {
  e.push_back(string_array_key(
    "agents.*.workflow_tools", {},
    "Waiting tools the model may call, run by the orchestrator (no worker, no sandbox): sleep "
    "{seconds}, wait_until {time} (RFC 3339), wait_for_event {name, timeout_seconds}, run_agents {runs, "
    "wait, on_failure} (child runs of its sub_agents at once, waited for all or first). A waiting run is "
    "on disk only and goes on when its time, event or children come, through restarts and failover.",
    [](node_config&, agent_config* a) -> std::vector<std::string>& { return a->workflow_tools; },
    [](const std::string& v) { return one_of(v, {"sleep", "wait_until", "wait_for_event", "run_agents"}); }));
  e.push_back(integer_key(
    "agents.*.wait_max_ms", 30 * day_ms, 1000, 3660 * day_ms,
    "The longest a waiting tool may wait; a longer wait asked for is refused to the model with this bound.",
    [](node_config&, agent_config* a) -> std::int64_t& { return a->wait_max_ms; }));
  e.push_back(integer_key(
    "agents.*.run_timeout_ms", 0, 0, 3660 * day_ms,
    "A run still going this long after it was made fails (event run_timed_out, reason given); 0: never. "
    "Waits and approvals count. A person's retry gives it this long again.",
    [](node_config&, agent_config* a) -> std::int64_t& { return a->run_timeout_ms; }));
  e.push_back(integer_key(
    "agents.*.approval_timeout_ms", 0, 0, 3660 * day_ms,
    "An approval nobody answered this long gets approval_timeout_answer (event approval_expired); 0: it waits for good.",
    [](node_config&, agent_config* a) -> std::int64_t& { return a->approval_timeout_ms; }));
  e.push_back(string_key(
    "agents.*.approval_timeout_answer", "reject",
    "The answer an approval gets when approval_timeout_ms passes: reject (the model is told, with "
    "approval_timeout_feedback), approve (the call runs as the form showed it), or fail (the run fails).",
    [](node_config&, agent_config* a) -> std::string& { return a->approval_timeout_answer; },
    [](const std::string& v) { return one_of(v, {"reject", "approve", "fail"}); }));
  e.push_back(string_key(
    "agents.*.approval_timeout_feedback", "Nobody answered in time.",
    "What the model is told with a rejection given because nobody answered in time.",
    [](node_config&, agent_config* a) -> std::string& { return a->approval_timeout_feedback; },
    [](const std::string& v) { return v.size() <= 4096 ? std::string() : std::string("at most 4096 bytes"); }));
  e.push_back(integer_key(
    "agents.*.approval_escalate_after_ms", 0, 0, 3660 * day_ms,
    "An approval nobody answered this long is escalated once: event approval_escalated names "
    "approval_escalate_to, and the inbox shows it; 0: never.",
    [](node_config&, agent_config* a) -> std::int64_t& { return a->approval_escalate_after_ms; }));
  e.push_back(string_key(
    "agents.*.approval_escalate_to", "",
    "Who or where an escalated approval goes (a person, a team, a channel: shown and sent as given).",
    [](node_config&, agent_config* a) -> std::string& { return a->approval_escalate_to; },
    [](const std::string& v) { return v.size() <= 256 ? std::string() : std::string("at most 256 bytes"); }));
  e.push_back(string_key(
    "agents.*.run_queue", "",
    "The run queue ([run_queues.<name>]) the agent's runs wait in before they start: at most its concurrency "
    "run at once across the cluster (per concurrency key too), the rest in order; empty: none.",
    [](node_config&, agent_config* a) -> std::string& { return a->run_queue; },
    [](const std::string& v) { return v.empty() || is_valid_name(v) ? std::string() : std::string("a run queue's name"); }));
  e.push_back(integer_key(
    "agents.*.step_timeout_ms", 0, 0, 3660 * day_ms,
    "A step (a model call, a tool call, a sub-agent's child run) with no result this long after it was sent is "
    "given up (event step_timed_out): a model call is sent again (a new attempt, within node.step_retry_ms), a "
    "tool's call gets an error result the model reads, a child run is cancelled. 0: no limit (a declared "
    "tool keeps its own timeout_ms).",
    [](node_config&, agent_config* a) -> std::int64_t& { return a->step_timeout_ms; }));
}

} // namespace keel::config::detail
