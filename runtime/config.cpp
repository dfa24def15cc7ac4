#include "runtime/config.hpp"
#include "runtime/cpus.hpp"

#include "runtime/config_keys.hpp"
#include "runtime/config_tools.hpp"
#include "runtime/ids.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <thread>
#include <filesystem>
#include <set>
#include <fstream>
#include <sys/stat.h>
#include <functional>
#include <sstream>

namespace keel::config {

namespace {

using namespace detail;

std::string name_check(const std::string& value) {
  if (is_valid_name(value)) return {};
  return "a name of 1 to 64 characters from [A-Za-z0-9_-], got \"" + value + "\"";
}

// A name something is done under: not one of keel's own senders.
std::string sender_check(const std::string& value) {
  if (auto problem = name_check(value); !problem.empty()) return problem;
  return reserved_sender_problem(value);
}

std::string optional_name_check(const std::string& value) {
  return value.empty() ? std::string{} : name_check(value);
}

std::string nats_url_check(const std::string& value) {
  if (value.rfind("nats://", 0) == 0 || value.rfind("tls://", 0) == 0) return {};
  return "a server URL starting with nats:// or tls://, got \"" + value + "\"";
}

role role_from_name(const std::string& name) {
  if (name == "orchestrator") return role::orchestrator;
  if (name == "worker") return role::worker;
  return role::gateway;
}

entry roles_key() {
  return {{"node.roles", "array of strings", "[\"orchestrator\", \"worker\", \"gateway\"]",
           "Any of orchestrator, worker, gateway; at least one."},
          [](node_config& c, agent_config*, const toml::node& n) -> std::string {
            const auto* array = n.as_array();
            if (!array) return "an array of roles, got " + type_name(n);
            std::vector<role> out;
            for (const auto& element : *array) {
              auto v = element.value<std::string>();
              if (!element.is_string() || !v) return "an array of role names";
              if (auto problem = one_of(*v, {"orchestrator", "worker", "gateway"});
                  !problem.empty())
                return problem;
              role r = role_from_name(*v);
              if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
            }
            if (out.empty()) return "at least one role";
            c.roles = std::move(out);
            return {};
          }};
}

constexpr std::int64_t hour_ms = 3'600'000;

const std::vector<entry>& entries() {
  static const std::vector<entry> all = [] {
    std::vector<entry> e;
    // [node]
    e.push_back(string_key(
      "node.name", "", "This node's id: [A-Za-z0-9_-]. Empty: derived from the host name.",
      [](node_config& c, agent_config*) -> std::string& { return c.node_name; },
      optional_name_check));
    e.push_back(roles_key());
    e.push_back(string_key(
      "node.data_dir", "./.keel/data", "Where an orchestrator keeps its RocksDB database.",
      [](node_config& c, agent_config*) -> std::string& { return c.data_dir; }));
    e.push_back(integer_key(
      "node.lanes", 0, 0, 64,
      "Independent paths a step takes through this node, each with its own NATS connection and "
      "store writer (a run always takes the same one), so that a node's throughput grows with its "
      "cores. 0: one per CPU the node may use (its affinity mask and cgroup CPU quota), up to 16.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.lanes; }));
    // [nats]
    e.push_back(string_array_key(
      "nats.servers", {"nats://127.0.0.1:4222"}, "NATS server URLs; the node reconnects among them.",
      [](node_config& c, agent_config*) -> std::vector<std::string>& { return c.nats_servers; },
      nats_url_check));
    e.push_back(string_key(
      "nats.prefix", "keel", "First token of every subject.",
      [](node_config& c, agent_config*) -> std::string& { return c.prefix; }, name_check));
    e.push_back(string_key(
      "nats.namespace", "default", "Second token of every subject; separates tenants.",
      [](node_config& c, agent_config*) -> std::string& { return c.ns; }, name_check));
    e.push_back(string_key(
      "nats.credentials_file", "",
      "The broker user this node connects as (made by `keel credentials`, owner-only); empty: none.",
      [](node_config& c, agent_config*) -> std::string& { return c.nats_credentials_file; }));
    e.push_back(integer_key(
      "nats.connect_timeout_ms", 2000, 10, 60'000, "How long one connection attempt may take.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.connect_timeout_ms; }));
    e.push_back(integer_key(
      "nats.reconnect_wait_ms", 250, 10, 60'000, "Pause between reconnection attempts.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.reconnect_wait_ms; }));
    e.push_back(integer_key(
      "nats.reconnect_attempts_max", -1, -1, 1'000'000,
      "Reconnection attempts before giving up; -1: never give up.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.reconnect_attempts_max; }));
    e.push_back(integer_key(
      "nats.request_timeout_ms", 5000, 10, hour_ms, "How long a request waits for its reply.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.request_timeout_ms; }));
    // [durability]
    e.push_back(boolean_key(
      "durability.fsync", true,
      "Sync every state change to disk before it is acknowledged. Off: faster, and a machine "
      "crash (not a process crash) may lose the last acknowledged changes.",
      [](node_config& c, agent_config*) -> bool& { return c.fsync; }));
    e.push_back(integer_key(
      "durability.log_replicas", 0, 0, 5,
      "Copies of every run's writes kept in the replicated run log (a JetStream stream) before "
      "they are acted on, so that another orchestrator can take the runs over when this one is "
      "gone. 0: off (runs live only in this node's store). 3 in a cluster of three nats-servers.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.log_replicas; }));
    e.push_back(integer_key(
      "durability.lease_ms", 5000, 500, 600'000,
      "With the run log on: an orchestrator holds its runs by a lease it renews four times in this "
      "time; another takes them over once it has not been renewed for this long.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.lease_ms; }));
    e.push_back(integer_key(
      "durability.memtable_bytes", 16 << 20, 1 << 20, 1 << 30,
      "Size of one RocksDB memtable (at most two are held in memory).",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.memtable_bytes; }));
    e.push_back(integer_key(
      "durability.disk_reserve_bytes", 256 << 20, 0, std::int64_t{1} << 40,
      "Free space the run store keeps on its disk. Below it the node takes no new run (invokes "
      "are refused with \"disk full\") while its runs go on; a write that would leave less than "
      "half of it waits until space is freed, so that the database never meets a full disk. At "
      "least four memtables (durability.memtable_bytes); 0: no check.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.disk_reserve_bytes; }));
    e.push_back(integer_key(
      "durability.block_cache_bytes", 16 << 20, 1 << 20, std::int64_t{16} << 30,
      "RocksDB block cache for reads (recovery, history, resumes).",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.block_cache_bytes; }));
    // [limits]
    e.push_back(integer_key(
      "limits.message_bytes_max", 1 << 20, 1024, 64 << 20,
      "Largest message the node accepts or sends.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.message_bytes_max; }));
    e.push_back(integer_key(
      "limits.heartbeat_interval_ms", 1000, 50, 60'000, "How often the node announces itself.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.heartbeat_interval_ms; }));
    e.push_back(integer_key(
      "limits.shutdown_timeout_ms", 5000, 100, 120'000,
      "How long a stopping node may take to drain and flush before it exits anyway.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.shutdown_timeout_ms; }));
    e.push_back(integer_key(
      "limits.step_retry_ms", hour_ms, 100, 7 * 24 * hour_ms,
      "How long a step that failed for a reason that may pass (a model service down or "
      "overloaded, a worker error) is tried again, with backoff, before its run fails.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.step_retry_ms; }));
    e.push_back(integer_key(
      "limits.retry_backoff_max_ms", 60'000, 10, hour_ms,
      "The longest wait between two tries of a failing step (the wait doubles from 1 s).",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.retry_backoff_max_ms; }));
    e.push_back(integer_key(
      "limits.task_inline_bytes_max", 256 << 10, 0, 64 << 20,
      "New messages of a conversation sent inside a model task, up to this; a worker fetches "
      "older and larger ones from the run's owner (and keeps them for the next step).",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.task_inline_bytes_max; }));
    e.push_back(integer_key(
      "limits.task_replicas", 1, 1, 5,
      "Copies the broker keeps of each queued task (JetStream replicas; up to the servers in the cluster).",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.task_replicas; }));
    // [worker]
    e.push_back(integer_key(
      "worker.slots", 64, 1, 16384,
      "Tasks a worker runs at once, across its queues; the rest wait in the broker, without loss, "
      "until some worker has a free slot.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.worker_slots; }));
    e.push_back(integer_key(
      "worker.liveness_ms", 4000, 500, 600'000,
      "A worker says a task is still running every quarter of this; a task whose worker is "
      "silent for this long is handed to another worker.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.worker_liveness_ms; }));
    e.push_back(integer_key(
      "worker.task_deliveries_max", 5, 1, 1000,
      "A task handed out this many times (its workers died or vanished during it) is given up "
      "unrun; its step goes again as a new attempt after a growing wait, until limits.step_retry_ms.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.task_deliveries_max; }));
    e.push_back(integer_key(
      "worker.check_after_ms", 1000, 0, hour_ms,
      "A task that waited longer than this, or is handed out again, is checked with its run's "
      "owner before it runs: a step already answered or superseded is dropped unrun.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.worker_check_after_ms; }));
    e.push_back(integer_key(
      "worker.result_delivery_ms", 600'000, 1000, 7 * 24 * hour_ms,
      "How often a worker says in its log that a result could not be handed to its run's owner "
      "(that owner down, the broker restarting). It keeps the task and goes on offering the result "
      "until it is taken: given back, the task would run again. Also how long it asks an owner that "
      "cannot say whether a task handed out again is still wanted before giving that task back unrun.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.result_delivery_ms; }));
    e.push_back(integer_key(
      "worker.conversation_cache_bytes", 32 << 20, 0, std::int64_t{64} << 30,
      "Conversations a worker keeps between steps, so that a step brings only its new messages.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.conversation_cache_bytes; }));
    e.push_back(integer_key(
      "limits.store_batch_max", 512, 1, 100'000,
      "Transitions of concurrent runs written (and synced) together in one batch.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.store_batch_max; }));
    // [log]
    e.push_back(string_key(
      "log.level", "info", "One of trace, debug, info, warn, error, off.",
      [](node_config& c, agent_config*) -> std::string& { return c.log_level; },
      [](const std::string& v) {
        return one_of(v, {"trace", "debug", "info", "warn", "error", "off"});
      }));
    e.push_back(string_key(
      "log.file", "", "Write the log to this file; empty: standard error.",
      [](node_config& c, agent_config*) -> std::string& { return c.log_file; }));
    e.push_back(string_key(
      "log.format", "text", "text (one line each, for people) or json (one JSON object per line, with run_id, step and node "
      "on every line about a run; docs/OPERATIONS.md).",
      [](node_config& c, agent_config*) -> std::string& { return c.log_format; },
      [](const std::string& v) { return one_of(v, {"text", "json"}); }));
    // [metrics]
    e.push_back(string_key(
      "metrics.listen", "", "Address (host:port) of this node's Prometheus /metrics when it has no gateway (a gateway serves "
      "them at its own /metrics); empty: none.",
      [](node_config& c, agent_config*) -> std::string& { return c.metrics_listen; },
      [](const std::string& v) -> std::string {
        if (v.empty()) return {};
        if (auto parsed = split_listen(v); !parsed) return parsed.error().message;
        return {};
      }));
    e.push_back(string_key(
      "metrics.token_file", "", "A file holding the bearer token a scrape of metrics.listen must carry; required when "
      "metrics.listen is not a loopback address.",
      [](node_config& c, agent_config*) -> std::string& { return c.metrics_token_file; }));
    // [telemetry]
    e.push_back(string_key(
      "telemetry.otlp_endpoint", "", "Where traces go (the full OTLP/HTTP traces URL, …/v1/traces); empty: "
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else no traces.",
      [](node_config& c, agent_config*) -> std::string& { return c.otlp_endpoint; }));
    e.push_back(string_key(
      "telemetry.otlp_headers", "", "Headers of each export, \"name=value,name=value\"; empty: OTEL_EXPORTER_OTLP_HEADERS.",
      [](node_config& c, agent_config*) -> std::string& { return c.otlp_headers; }));
    e.push_back(string_key(
      "telemetry.service_name", "", "service.name of the spans; empty: OTEL_SERVICE_NAME, else keel.",
      [](node_config& c, agent_config*) -> std::string& { return c.otel_service_name; }));
    e.push_back(integer_key(
      "telemetry.spans_queued_max", 0, 0, 1'000'000, "Spans waiting to be sent, at most; more are dropped and counted. "
      "0: OTEL_BSP_MAX_QUEUE_SIZE, else 2048.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.spans_queued_max; }));
    // [retention]
    e.push_back(integer_key(
      "retention.max_age_ms", 0, 0, std::int64_t{100} * 365 * 24 * hour_ms,
      "Ended runs (completed, failed, cancelled) are removed from the store and the run log this long after they "
      "ended; 0: kept for good.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.retention_max_age_ms; }));
    e.push_back(integer_key(
      "retention.max_runs", 0, 0, std::int64_t{1} << 40,
      "At most this many ended runs are kept by each orchestrator; the oldest beyond go. 0: no bound.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.retention_max_runs; }));
    e.push_back(boolean_key(
      "retention.keep_conversations", true,
      "A run that completes or is cancelled keeps its conversation (so that it can be forked, rerun and compared) "
      "until retention removes it; false: only its header, snapshot and events are kept.",
      [](node_config& c, agent_config*) -> bool& { return c.retention_keep_conversations; }));
    e.push_back(integer_key(
      "retention.interval_ms", 60'000, 100, 24 * hour_ms,
      "How often an orchestrator removes what retention no longer keeps (at most 1,000 runs each time).",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.retention_interval_ms; }));
    // [gateway]
    e.push_back(string_key(
      "gateway.listen", "127.0.0.1:8080", "Address of the HTTP API and dashboard (host:port).",
      [](node_config& c, agent_config*) -> std::string& { return c.gateway_listen; },
      [](const std::string& v) -> std::string {
        if (auto parsed = split_listen(v); !parsed) return parsed.error().message;
        return {};
      }));
    e.push_back(string_key(
      "gateway.token", "",
      "Bearer token every API request must carry; required when gateway.listen is not a loopback address.",
      [](node_config& c, agent_config*) -> std::string& { return c.gateway_token; }));
    e.push_back(string_key(
      "gateway.token_name", "operator", "The name answers, cancels and retries made with gateway.token are recorded under.",
      [](node_config& c, agent_config*) -> std::string& { return c.gateway_token_name; }, sender_check));
    e.push_back(string_key(
      "gateway.tokens_file", "",
      "Named tokens (\"<name> sha256:<hash>\" lines, made by `keel token`), read again when it changes; empty: "
      "<node.data_dir>/gateway-tokens. With neither this file nor gateway.token, the node makes the file with one "
      "token and writes the dashboard's address with it to <node.data_dir>/dashboard-url.",
      [](node_config& c, agent_config*) -> std::string& { return c.gateway_tokens_file; }));
    e.push_back(string_array_key(
      "gateway.hosts", {},
      "Names the gateway answers to besides localhost and IP addresses (the Host a browser sends); "
      "a request naming any other host is refused, which defeats DNS rebinding.",
      [](node_config& c, agent_config*) -> std::vector<std::string>& { return c.gateway_hosts; }));
    e.push_back(integer_key(
      "gateway.stream_ping_ms", 15'000, 100, 3'600'000,
      "How often a live stream (SSE) gets a comment line, so that idle connections stay open and dead ones are found.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.gateway_stream_ping_ms; }));
    e.push_back(integer_key(
      "gateway.streams_max", 10'000, 1, 1'000'000,
      "Live streams one gateway serves at once; more are refused with 503.",
      [](node_config& c, agent_config*) -> std::int64_t& { return c.gateway_streams_max; }));
    // [agents.<id>]
    e.push_back(string_key(
      "agents.*.provider", "scripted", "Model provider: scripted, anthropic or openai.",
      [](node_config&, agent_config* a) -> std::string& { return a->provider; },
      [](const std::string& v) { return one_of(v, {"scripted", "anthropic", "openai"}); }));
    e.push_back(string_key(
      "agents.*.model", "", "The provider's model name.",
      [](node_config&, agent_config* a) -> std::string& { return a->model; }));
    e.push_back(string_key(
      "agents.*.system_prompt", "", "The system prompt.",
      [](node_config&, agent_config* a) -> std::string& { return a->system_prompt; }));
    e.push_back(string_key(
      "agents.*.script", "", "Scripted provider: the file of turns, relative to this config.",
      [](node_config&, agent_config* a) -> std::string& { return a->script; }));
    e.push_back(string_array_key(
      "agents.*.tools", {"exec", "read", "write", "edit", "glob", "grep"},
      "The tools the agent may call: built-in ones, and <queue>.<tool> for a tool that the tool workers of "
      "<queue> declare (docs/PROTOCOL.md, tool workers).",
      [](node_config&, agent_config* a) -> std::vector<std::string>& { return a->tools; },
      [](const std::string& v) {
        if (auto dot = v.find('.'); dot != std::string::npos) {
          if (!is_valid_name(v.substr(0, dot)) || !is_valid_name(v.substr(dot + 1)))
            return "<queue>.<tool>, each a name of 1 to 64 characters from [A-Za-z0-9_-], got \"" + v + "\"";
          return std::string{};
        }
        return one_of(v, {"exec", "read", "write", "edit", "glob", "grep"});
      }));
    e.push_back(string_array_key(
      "agents.*.sub_agents", {}, "Agents this one may hand a task to, as tool agent__<id> (a child run; docs/TOOLS.md).",
      [](node_config&, agent_config* a) -> std::vector<std::string>& { return a->sub_agents; },
      [](const std::string& v) { return is_valid_name(v) ? std::string{} : "an agent id, got \"" + v + "\""; }));
    e.push_back(string_key(
      "agents.*.description", "", "What the agent does, told to agents that may call it.",
      [](node_config&, agent_config* a) -> std::string& { return a->description; }));
    e.push_back(integer_key(
      "agents.*.max_steps", 30, 1, 10'000, "Stop after this many model steps.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->max_steps; }));
    e.push_back(integer_key(
      "agents.*.max_tokens", 0, 0, 1'000'000'000,
      "Stop when the run has used this many tokens; 0: no limit.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->max_tokens; }));
    e.push_back(float_key(
      "agents.*.budget_usd", 0, 0, 1e9,
      "A run that has cost this much (its model steps and its child runs', by [prices]) fails with budget_exceeded "
      "before its next model call; 0: no limit.",
      [](node_config&, agent_config* a) -> double& { return a->budget_usd; }));
    e.push_back(string_key(
      "agents.*.queue", "", "Worker queue serving this agent; empty: the agent's id.",
      [](node_config&, agent_config* a) -> std::string& { return a->queue; },
      optional_name_check));
    e.push_back(string_key(
      "agents.*.script_log", "", "Scripted provider: append every call to this file.",
      [](node_config&, agent_config* a) -> std::string& { return a->script_log; }));
    e.push_back(string_key(
      "agents.*.base_url", "",
      "anthropic/openai: the service's URL; empty: ANTHROPIC_BASE_URL or OPENAI_BASE_URL, else the "
      "service itself. Point openai at any compatible server (Ollama, vLLM, llama.cpp).",
      [](node_config&, agent_config* a) -> std::string& { return a->base_url; }));
    e.push_back(string_key(
      "agents.*.api_key_file", "",
      "A file holding the API key; empty: ANTHROPIC_API_KEY or OPENAI_API_KEY.",
      [](node_config&, agent_config* a) -> std::string& { return a->api_key_file; }));
    e.push_back(integer_key(
      "agents.*.max_output_tokens", 4096, 1, 1'000'000, "Most tokens one model answer may have.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->max_output_tokens; }));
    e.push_back(float_key(
      "agents.*.temperature", -1.0, -1.0, 2.0, "Sampling temperature; -1: the service's default.",
      [](node_config&, agent_config* a) -> double& { return a->temperature; }));
    e.push_back(boolean_key(
      "agents.*.stream", true, "Stream answers (text is published as it comes).",
      [](node_config&, agent_config* a) -> bool& { return a->stream; }));
    e.push_back(integer_key(
      "agents.*.retries_max", 4, 0, 100,
      "Retries of a model call on 429, 5xx, overload and network errors.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->retries_max; }));
    e.push_back(integer_key(
      "agents.*.retry_base_ms", 500, 1, 60'000,
      "First retry delay; it doubles each time (with jitter), unless the service says retry-after.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->retry_base_ms; }));
    e.push_back(integer_key(
      "agents.*.request_timeout_ms", 600'000, 100, hour_ms, "Longest one model call may take.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->request_timeout_ms; }));
    // [agents.<id>.sandbox]
    e.push_back(string_key(
      "agents.*.sandbox.env", "local",
      "Where commands run: local (on the host, writes confined to the workspace by Landlock) or "
      "bwrap (bubblewrap: unprivileged user namespace, read-only system, only the workspace "
      "writable, no network, own pid namespace).",
      [](node_config&, agent_config* a) -> std::string& { return a->sandbox_env; },
      [](const std::string& v) { return one_of(v, {"local", "bwrap"}); }));
    e.push_back(boolean_key(
      "agents.*.sandbox.network", false,
      "Let commands use the network (bwrap: the host's; local: TCP, refused by Landlock without it).",
      [](node_config&, agent_config* a) -> bool& { return a->network; }));
    e.push_back(integer_key(
      "agents.*.sandbox.cpu_seconds_max", 300, 1, 86'400, "CPU time a command may use.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->cpu_seconds_max; }));
    e.push_back(integer_key(
      "agents.*.sandbox.memory_bytes_max", 8LL << 30, 16 << 20, 1LL << 40,
      "Memory of one command, all its processes together (a memory cgroup), and the address "
      "space each process may map.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->memory_bytes_max; }));
    e.push_back(integer_key(
      "agents.*.sandbox.processes_max", 512, 1, 1'000'000,
      "Processes a command may have at once (a pids cgroup when one is writable).",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->processes_max; }));
    e.push_back(integer_key(
      "agents.*.sandbox.file_bytes_max", 1LL << 30, 1024, 1LL << 40,
      "Largest file a command may write.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->file_bytes_max; }));
    e.push_back(string_key(
      "agents.*.sandbox.workspace", "./workspaces",
      "The workspace root, relative to this config.",
      [](node_config&, agent_config* a) -> std::string& { return a->workspace; }));
    e.push_back(string_key(
      "agents.*.sandbox.scope", "run",
      "run: a directory per run; session: per session id; agent: the root itself, shared.",
      [](node_config&, agent_config* a) -> std::string& { return a->workspace_scope; },
      [](const std::string& v) { return one_of(v, {"run", "session", "agent"}); }));
    e.push_back(string_key(
      "agents.*.sandbox.exec_security", "approval-always",
      "approval-always, allowlist (matching commands run, others ask) or allow-always.",
      [](node_config&, agent_config* a) -> std::string& { return a->exec_security; },
      [](const std::string& v) {
        return one_of(v, {"approval-always", "allowlist", "allow-always"});
      }));
    e.push_back(string_array_key(
      "agents.*.sandbox.allowlist", {},
      "Command patterns with '*' and '?' that run without asking; a command with shell syntax never matches.",
      [](node_config&, agent_config* a) -> std::vector<std::string>& { return a->allowlist; }));
    e.push_back(boolean_key(
      "agents.*.sandbox.file_approval", true, "Writes and edits ask a person first.",
      [](node_config&, agent_config* a) -> bool& { return a->file_approval; }));
    e.push_back(string_key(
      "agents.*.sandbox.path_restriction", "approve",
      "A path outside the workspace: approve (ask a person) or deny (refuse).",
      [](node_config&, agent_config* a) -> std::string& { return a->path_restriction; },
      [](const std::string& v) { return one_of(v, {"approve", "deny"}); }));
    e.push_back(integer_key(
      "agents.*.sandbox.exec_timeout_ms", 300'000, 10, 24 * hour_ms,
      "Longest a command may run; then its process group is killed (exit code 137).",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->exec_timeout_ms; }));
    e.push_back(integer_key(
      "agents.*.sandbox.output_chars_max", 100'000, 100, 100'000'000,
      "Output kept per stream: the first 20% and the last 80%, with a marker between.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->output_chars_max; }));
    e.push_back(integer_key(
      "agents.*.sandbox.written_bytes_max", 4LL << 30, 1 << 20, 1LL << 40,
      "Bytes one command, all its processes together, may write to storage; then it is killed.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->written_bytes_max; }));
    e.push_back(integer_key(
      "agents.*.sandbox.tool_timeout_ms", 30'000, 10, hour_ms,
      "Longest a read, write, edit, glob or grep may take; a walk stops there with what it found.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->tool_timeout_ms; }));
    e.push_back(integer_key(
      "agents.*.sandbox.walk_entries_max", 100'000, 100, 100'000'000,
      "Directory entries one glob or grep may look at.",
      [](node_config&, agent_config* a) -> std::int64_t& { return a->walk_entries_max; }));
    e.push_back(string_array_key(
      "agents.*.sandbox.env_pass", {},
      "Names of the node's environment variables that commands see (nothing else of it is passed).",
      [](node_config&, agent_config* a) -> std::vector<std::string>& { return a->env_pass; }));
    e.push_back(string_key(
      "agents.*.sandbox.run_as", "keel-sandbox",
      "The account commands run as, never the worker's own: a worker started as root takes its uid "
      "and gid for each command (scripts/setup.sh makes keel-sandbox). \"worker\" runs commands as the "
      "worker's own user, which then holds nothing a command cannot take.",
      [](node_config&, agent_config* a) -> std::string& { return a->run_as; },
      [](const std::string& v) -> std::string {
        if (v.empty() || v.size() > 32 || v.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos)
          return "an account name (lower-case letters, digits, '_' and '-') or \"worker\", got \"" + v + "\"";
        return {};
      }));
    add_workflow_keys(e);
    return e;
  }();
  return all;
}

const entry* find_entry(std::string_view path) {
  for (const auto& e : entries())
    if (e.info.path == path) return &e;
  return nullptr;
}

struct loader {
  const std::string& source;
  node_config& config;

  error fail(const toml::node& node, const std::string& key, const std::string& text) const {
    std::ostringstream out;
    out << source;
    if (node.source().begin.line) out << ":" << node.source().begin.line;
    out << ": " << key << ": " << text;
    return make_error(errc::config, out.str());
  }

  // Applies one value; `pattern` is the schema path (agents' ids replaced by '*').
  result<void> apply(const std::string& key, const std::string& pattern, agent_config* agent,
                     const toml::node& value) {
    const entry* e = find_entry(pattern);
    if (!e) return fail(value, key, "unknown key (configs/reference.toml lists every key)");
    std::string problem = e->apply(config, agent, value);
    if (!problem.empty()) return fail(value, key, "expected " + problem);
    return success();
  }

  result<void> walk(const toml::table& table, const std::string& prefix,
                    const std::string& pattern_prefix, agent_config* agent) {
    for (const auto& [raw_key, value] : table) {
      std::string key = prefix + std::string(raw_key.str());
      std::string pattern = pattern_prefix + std::string(raw_key.str());
      if (key == "agents") {
        if (!value.is_table()) return fail(value, key, "expected a table of agents");
        if (auto r = walk_agents(*value.as_table()); !r) return r;
      } else if (key == "schedules" && !agent) {
        if (!value.is_table()) return fail(value, key, "expected a table of schedules");
        if (auto problem = detail::read_schedules(*value.as_table(), config)) return fail(*problem->node, problem->key, problem->text);
      } else if (key == "run_queues" && !agent) {
        if (!value.is_table()) return fail(value, key, "expected a table of run queues");
        if (auto problem = detail::read_queues(*value.as_table(), config)) return fail(*problem->node, problem->key, problem->text);
      } else if (key == "prices" && !agent) {
        if (!value.is_table()) return fail(value, key, "expected a table of prices by \"<provider>/<model>\"");
        if (auto problem = detail::read_prices(*value.as_table(), config)) return fail(*problem->node, problem->key, problem->text);
      } else if (key == "webhooks" && !agent) {
        if (!value.is_table()) return fail(value, key, "expected a table of webhooks");
        if (auto problem = detail::read_webhooks(*value.as_table(), config,
                                                 [this](const std::string& p) { return relative_to_source(p); }))
          return fail(*problem->node, problem->key, problem->text);
      } else if (agent && (pattern == "agents.*.commands" || pattern == "agents.*.mcp")) {
        if (!value.is_table()) return fail(value, key, "expected a table of named tools");
        auto problem = pattern == "agents.*.commands"
                         ? detail::read_commands(*value.as_table(), key, *agent)
                         : detail::read_mcp_servers(*value.as_table(), key, *agent,
                                                    [this](const std::string& p) { return relative_to_source(p); });
        if (problem) return fail(*problem->node, problem->key, problem->text);
      } else if (value.is_table()) {
        if (auto r = walk(*value.as_table(), key + ".", pattern + ".", agent); !r) return r;
      } else if (auto r = apply(key, pattern, agent, value); !r) {
        return r;
      }
    }
    return success();
  }

  result<void> walk_agents(const toml::table& agents) {
    for (const auto& [raw_id, value] : agents) {
      std::string id(raw_id.str());
      std::string key = "agents." + id;
      if (!is_valid_name(id))
        return fail(value, key, "an agent id is 1 to 64 characters from [A-Za-z0-9_-]");
      if (!value.is_table()) return fail(value, key, "expected a table of agent settings");
      agent_config* agent = nullptr;
      for (auto& existing : config.agents)
        if (existing.id == id) agent = &existing;
      if (!agent) {
        agent = &config.agents.emplace_back();
        agent->id = id;
        if (auto r = apply_defaults("agents.*.", agent); !r) return r;
      }
      if (auto r = walk(*value.as_table(), key + ".", "agents.*.", agent); !r) return r;
    }
    return success();
  }

  result<void> apply_defaults(std::string_view pattern_prefix, agent_config* agent) {
    for (const auto& e : entries()) {
      bool agent_key = e.info.path.rfind("agents.*.", 0) == 0;
      if (agent_key != (pattern_prefix == "agents.*.")) continue;
      auto parsed = toml::parse("value = " + e.info.default_toml);
      std::string problem = e.apply(config, agent, *parsed.get("value"));
      assert(problem.empty() && "a schema default must satisfy its own check");
    }
    return success();
  }

  // Paths in a config file are relative to the file's folder; in a string, to the current one.
  std::string relative_to_source(const std::string& path) const {
    if (path.empty()) return path;
    std::filesystem::path p(path);
    if (p.is_absolute()) return p.lexically_normal().string();
    std::filesystem::path base = std::filesystem::path(source).parent_path();
    if (!std::filesystem::exists(source)) base = std::filesystem::current_path();
    return std::filesystem::absolute(base / p).lexically_normal().string();
  }

  result<void> finish() {
    auto whole_file_error = [&](const std::string& key, const std::string& text) {
      return make_error(errc::config, source + ": " + key + ": " + text);
    };
    if (config.roles.empty()) return whole_file_error("node.roles", "expected at least one role");
    if (config.nats_servers.empty())
      return whole_file_error("nats.servers", "expected at least one server URL");
    for (auto& agent : config.agents) {
      if (agent.queue.empty()) agent.queue = agent.id;
      // The model knows every tool by its name alone: two may not share one.
      if (auto clash = detail::check_tool_names(config, agent); !clash.empty())
        return whole_file_error("agents." + agent.id + ".tools", clash);
      agent.api_key_file = relative_to_source(agent.api_key_file);
      agent.workspace = relative_to_source(agent.workspace);
      agent.script = relative_to_source(agent.script);
      agent.script_log = relative_to_source(agent.script_log);
    }
    if (auto problem = detail::check_schedules(config); !problem.empty())
      return make_error(errc::config, source + ": " + problem);
    if (config.has_role(role::gateway) && config.gateway_token.empty()) {
      auto listen = split_listen(config.gateway_listen);
      bool loopback = listen && (listen->first == "127.0.0.1" || listen->first == "::1" || listen->first.rfind("127.", 0) == 0);
      if (!loopback)
        return whole_file_error("gateway.token", "a gateway listening on " + config.gateway_listen +
                                                   " (not a loopback address) needs a token");
    }
    if (!config.metrics_listen.empty() && config.metrics_token_file.empty()) {
      auto listen = split_listen(config.metrics_listen);
      bool loopback = listen && (listen->first == "127.0.0.1" || listen->first == "::1" || listen->first.rfind("127.", 0) == 0);
      if (!loopback)
        return whole_file_error("metrics.token_file", "metrics served on " + config.metrics_listen +
                                                        " (not a loopback address) need a token file");
    }
    config.metrics_token_file = relative_to_source(config.metrics_token_file);
    if (config.disk_reserve_bytes != 0 && config.disk_reserve_bytes < 4 * config.memtable_bytes)
      return whole_file_error("durability.disk_reserve_bytes",
                              std::to_string(config.disk_reserve_bytes) + " is less than four memtables (4 x " +
                                std::to_string(config.memtable_bytes) +
                                "): a flush of the memtables could meet a full disk; raise it, or 0 for no check");
    if (config.has_role(role::orchestrator) && config.data_dir.empty())
      return whole_file_error("node.data_dir", "an orchestrator needs a data directory");
    return success();
  }
};

} // namespace

result<std::pair<std::string, std::uint16_t>> split_listen(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size())
    return make_error(errc::config, "expected host:port, got '" + listen + "'");
  auto host = listen.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  auto port_text = listen.substr(colon + 1);
  if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 5 || std::stoul(port_text) > 65535)
    return make_error(errc::config, "expected a port from 0 to 65535, got '" + port_text + "'");
  return std::make_pair(host, static_cast<std::uint16_t>(std::stoul(port_text)));
}

std::string_view to_string(role r) {
  switch (r) {
    case role::orchestrator: return "orchestrator";
    case role::worker: return "worker";
    case role::gateway: return "gateway";
  }
  return "unknown";
}

bool node_config::has_role(role r) const {
  return std::find(roles.begin(), roles.end(), r) != roles.end();
}

std::size_t node_config::lanes_for() const {
  if (lanes > 0) return static_cast<std::size_t>(lanes);
  return std::clamp<std::size_t>(usable_cpus(), 1, 16);
}

const agent_config* node_config::find_agent(std::string_view id) const {
  for (const auto& a : agents)
    if (a.id == id) return &a;
  return nullptr;
}

const queue_config* node_config::find_run_queue(std::string_view name) const {
  for (const auto& q : run_queues)
    if (q.name == name) return &q;
  return nullptr;
}

const std::vector<key_info>& schema() {
  static const std::vector<key_info> infos = [] {
    std::vector<key_info> out;
    for (const auto& e : entries()) out.push_back(e.info);
    return out;
  }();
  return infos;
}

namespace {
result<toml::table> parse_toml(std::string_view text, const std::string& source_name) {
  try {
    return toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    std::ostringstream out;
    out << source_name << ":" << e.source().begin.line << ": not valid TOML: " << e.description();
    return make_error(errc::config, out.str());
  }
}
} // namespace

result<node_config> load_string(std::string_view text, const std::string& source_name,
                                const std::vector<std::string>& overrides) {
  node_config config;
  config.source = source_name;
  loader l{source_name, config};
  if (auto r = l.apply_defaults("", nullptr); !r) return r.error();
  auto table = parse_toml(text, source_name);
  if (!table) return table.error();
  if (auto r = l.walk(*table, "", "", nullptr); !r) return r.error();
  for (const auto& line : overrides) {
    auto override_table = parse_toml(line, "--set '" + line + "'");
    if (!override_table) return override_table.error();
    loader o{"--set '" + line + "'", config};
    if (auto r = o.walk(*override_table, "", "", nullptr); !r) return r.error();
  }
  if (auto r = l.finish(); !r) return r.error();
  return config;
}

result<node_config> load_file(const std::string& path, const std::vector<std::string>& overrides) {
  // A secret never goes on a command line, which every process of the machine can read.
  for (const auto& o : overrides)
    for (std::string key : {"gateway.token", "telemetry.otlp_headers"})
      if (o.rfind(key, 0) == 0 && o.find_first_not_of(" \t=", key.size()) != std::string::npos &&
          (o.size() == key.size() || o[key.size()] == ' ' || o[key.size()] == '=' || o[key.size()] == '\t'))
        return make_error(errc::config, "--set " + o.substr(0, o.find('=')) +
                                        ": a secret is not given on the command line, where every process can read "
                                        "it; put it in the config file and make that file readable by its owner only "
                                        "(chmod 600)");
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(errc::config, path + ": cannot read the file");
  std::ostringstream content;
  content << in.rdbuf();
  auto loaded = load_string(content.str(), path, overrides);
  if (!loaded) return loaded;
  struct stat st{};
  if ((!loaded->gateway_token.empty() || !loaded->otlp_headers.empty()) && ::stat(path.c_str(), &st) == 0 &&
      (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return make_error(errc::config, path + ": holds " + (loaded->gateway_token.empty() ? "telemetry.otlp_headers" : "gateway.token") +
                                      " but others may read it (mode " + mode + "): chmod 600 " + path);
  }
  return loaded;
}

} // namespace keel::config
