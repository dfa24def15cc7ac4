// What a worker's task threads share: its config, its connections (one per lane), the agents'
// providers and tools, the conversations and results it keeps, the owners' epochs it has seen;
// and the two calls a task makes to its run's owner (actors/worker_owner.cpp).
#pragma once

#include "actors/conversation_cache.hpp"
#include "actors/task_dedupe.hpp"
#include "broker/connection.hpp"
#include "broker/work_queue.hpp"
#include "llm/provider.hpp"
#include "mcp/session_pool.hpp"
#include "replication/epoch_book.hpp"
#include "runtime/config.hpp"
#include "runtime/ids.hpp"
#include "runtime/wire.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace keel::actors {

using wire::value;

struct worker_shared {
  // A copy, not the node's: a task thread that overran the node's stop keeps it with this.
  config::node_config config_copy;
  const config::node_config& config() const { return config_copy; }
  std::string node_id;
  broker::subjects subjects;
  std::shared_ptr<broker::connection> nats;  // the first lane's: the work queue
  // A run's requests to its owner, its results and its streamed text go on its lane's connection
  // (node.lanes), in order, and runs of other lanes do not queue behind them.
  std::vector<std::shared_ptr<broker::connection>> lanes;
  broker::connection& lane_of(std::string_view run) const { return *lanes[keel::lane_of(run, lanes.size())]; }
  std::unique_ptr<broker::jetstream> js;
  std::map<std::string, std::unique_ptr<llm::provider>> providers;  // the agents' own, made at start
  std::map<std::string, std::shared_ptr<const std::vector<value>>> tool_lists;  // the agents' tool schemas
  wire::limits limits;
  std::unique_ptr<conversation_cache> conversations;
  std::unique_ptr<mcp::session_pool> mcp_sessions;  // the agents' MCP servers, started on first use
  task_dedupe dedupe;
  replication::epoch_book epochs;  // the owners' epochs seen, per domain
  // Providers a run asked for instead (keel run --provider), made on first use.
  std::mutex overrides_mutex;
  std::map<std::string, std::unique_ptr<llm::provider>> overrides;
  std::atomic<bool> stopping{false};
  // While stopping: until when the tasks held may still hand their results over (steady ms).
  std::atomic<std::int64_t> drain_deadline_ms{0};

  result<llm::provider*> provider_for(const config::agent_config& agent, const std::string& kind,
                                      const std::string& model) {
    if (kind.empty() || kind == agent.provider) return providers.at(agent.id).get();
    std::lock_guard lock{overrides_mutex};
    auto key = agent.id + "/" + kind;
    if (auto it = overrides.find(key); it != overrides.end()) return it->second.get();
    config::agent_config other = agent;
    other.provider = kind;
    if (!model.empty()) other.model = model;  // each request names its model anyway
    auto made = llm::make_provider(other);
    if (!made) return made.error();
    return (overrides[key] = std::move(*made)).get();
  }
};

// Asks the run's owner whether this attempt is still wanted: a step already answered, or sent again
// as a newer attempt, is dropped unrun. Unknown (no owner reached, or one older than seen): not now.
result<bool> still_wanted(worker_shared& shared, const wire::task& t);
// Hands a result to the run's owner, which answers once it is on disk; tried again (the owner is
// restarting, the broker is down) for as long as it takes, holding the task meanwhile (given up,
// the task would go to another worker and the paid call be made again). Every
// worker.result_delivery_ms without success is said in the log. Only a stop of the worker ends it,
// once its drain (half of limits.shutdown_timeout_ms) is over.
result<void> hand_over(worker_shared& shared, const std::string& reply_to, const std::string& bytes, const wire::task& t);

} // namespace keel::actors
