// Node configuration: one TOML file names the node's roles, its NATS servers, where it keeps its
// data, its limits and the agents it knows. Every key is checked when the file is loaded; the
// schema below is the single source of each key's type and default.
#pragma once

#include "runtime/result.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace keel::config {

enum class role { orchestrator, worker, gateway };
std::string_view to_string(role r);

// [agents.<id>.commands.<name>]: a program of the config's choosing, run in the agent's sandbox
// like exec but without a shell; the model fills the placeholders of its argv from arguments
// checked against a JSON Schema (docs/TOOLS.md).
struct command_tool {
  std::string name;
  std::string description;
  std::vector<std::string> argv;   // "{name}" whole: the argument (an array: its items); inside: its text
  std::string arguments_schema;    // JSON text, compiled and checked when loaded
  std::string approval;            // "always" (ask a person first) or "never"
  std::int64_t timeout_ms = 0;     // 0: the sandbox's exec_timeout_ms
  std::string cwd;                 // relative to the workspace
};

// [agents.<id>.mcp.<name>]: a Model Context Protocol server whose tools the agent may call, as
// <name>__<tool>. stdio: started in the agent's sandbox, one per workspace; or streamable HTTP.
struct mcp_server {
  std::string name;
  std::vector<std::string> command;               // stdio: argv, run in the sandbox
  std::map<std::string, std::string> env;         // stdio: variables the server is given
  std::string url;                                // streamable HTTP endpoint
  std::string token_file;                         // HTTP: a bearer token read from this file
  std::string approval;                           // "always" (default) or "never"
  std::map<std::string, std::string> tool_approval;  // per tool
  std::vector<std::string> tools;                 // only these (empty: every tool it lists)
  std::int64_t timeout_ms = 60'000;               // one call
  std::int64_t startup_timeout_ms = 30'000;       // start and initialize
  std::int64_t idle_ms = 600'000;                 // a stdio server unused this long is stopped
  std::int64_t result_chars_max = 100'000;
};

// What a model's tokens cost (docs/OPERATIONS.md), US dollars per million tokens:
// [prices."<provider>/<model>"].
struct price {
  double input = 0, output = 0, cache_read = 0, cache_write = 0;
};

struct agent_config {
  std::string id;
  std::string provider;       // "scripted" (built in), "anthropic", "openai"
  std::string model;
  std::string system_prompt;
  std::string script;         // scripted provider: the file of turns
  std::vector<std::string> tools;
  std::int64_t max_steps = 0;
  std::int64_t max_tokens = 0;  // 0: no limit
  double budget_usd = 0;        // a run that has cost this much (by [prices]) fails; 0: no limit
  std::string queue;            // the worker queue that serves this agent; defaults to its id
  std::string script_log;       // scripted provider: append every call here (empty: none)

  // Network providers (anthropic, openai)
  std::string base_url;         // empty: ANTHROPIC_BASE_URL / OPENAI_BASE_URL, else the service
  std::string api_key_file;     // empty: ANTHROPIC_API_KEY / OPENAI_API_KEY
  std::int64_t max_output_tokens = 0;
  double temperature = -1;
  bool stream = true;
  std::int64_t retries_max = 0;
  std::int64_t retry_base_ms = 0;
  std::int64_t request_timeout_ms = 0;

  // [agents.<id>.sandbox]
  std::string sandbox_env;            // "local" or "bwrap"
  bool network = false;               // bwrap: share the host's network
  std::int64_t cpu_seconds_max = 0;
  std::int64_t memory_bytes_max = 0;
  std::int64_t processes_max = 0;
  std::int64_t file_bytes_max = 0;
  std::string workspace;              // absolute once loaded
  std::string workspace_scope;        // "run", "session" or "agent"
  std::string exec_security;          // "approval-always", "allowlist", "allow-always"
  std::vector<std::string> allowlist;
  bool file_approval = true;
  std::string path_restriction;       // "approve" or "deny"
  std::int64_t exec_timeout_ms = 0;
  std::int64_t output_chars_max = 0;
  std::int64_t written_bytes_max = 0;
  std::int64_t tool_timeout_ms = 0;
  std::int64_t walk_entries_max = 0;
  std::vector<std::string> env_pass;
  std::string run_as;                 // the account commands run as, or "worker"

  std::vector<command_tool> commands;
  std::vector<mcp_server> mcp;
  std::vector<std::string> sub_agents;  // agents it may call as tools (agent__<id>): child runs
  std::string description;              // told to the agents that may call this one

  // Workflows (docs/WORKFLOWS.md): the waiting tools the model may call (sleep, wait_until,
  // wait_for_event), the longest wait one may ask for, the run's time limit, and what becomes of
  // an approval nobody answers (its answer after approval_timeout_ms; escalated after
  // approval_escalate_after_ms to approval_escalate_to). 0: no limit.
  std::vector<std::string> workflow_tools;
  std::int64_t wait_max_ms = 0;
  std::int64_t run_timeout_ms = 0;
  std::int64_t approval_timeout_ms = 0;
  std::string approval_timeout_answer;  // "reject", "approve" or "fail"
  std::string approval_timeout_feedback;
  std::int64_t approval_escalate_after_ms = 0;
  std::string approval_escalate_to;
  // The run queue its runs wait in before they start ([run_queues.<name>]; empty: none), and how long one
  // step (a model call, a tool call, a sub-agent's child run) may take before it is given up
  // (0: no limit but a declared tool's own timeout_ms).
  std::string run_queue;
  std::int64_t step_timeout_ms = 0;
};

// [run_queues.<name>]: at most `concurrency` runs of the queue's agents at once across the cluster,
// and at most `key_concurrency` of one concurrency key (0: no limit per key); the rest wait in
// order (docs/WORKFLOWS.md).
struct queue_config {
  std::string name;
  std::int64_t concurrency = 1;
  std::int64_t key_concurrency = 0;
  std::int64_t waiting_max = 1000;  // runs in line at once; more wait on their node to get in line
};

// [schedules.<name>]: runs started on a cron schedule in a time zone (docs/WORKFLOWS.md).
struct schedule_config {
  std::string name;
  std::string agent;
  std::string cron;                // checked when loaded
  std::string timezone = "UTC";    // an IANA name, checked when loaded
  std::string input;               // the run's input; {{tick}} becomes the tick's time (RFC 3339)
  std::string missed = "skip";     // ticks no orchestrator saw in time: "skip" or "catch_up"
  std::int64_t catch_up_max = 10;  // catch_up: at most this many missed ticks, the latest
  std::int64_t late_ms_max = 60'000;  // a tick started later than this after its time was missed
};

// [webhooks.<name>]: POST /hooks/<name> on the gateway starts a run of `agent` from the request's
// body, authenticated by an HMAC-SHA256 signature of the body (secret_file) or a bearer token
// (token_file), with an idempotency key from a header (docs/WORKFLOWS.md).
struct webhook_config {
  std::string name;
  std::string agent;
  std::string secret_file;                              // absolute once loaded; one of the two
  std::string token_file;
  std::string signature_header = "X-Keel-Signature-256";  // "sha256=<hex>" of the body
  std::string idempotency_header = "Idempotency-Key";   // required on every request
  std::string input = "{{body}}";                       // the run's input; {{body}}: the body as text
};

struct node_config;
// A schedule made through the API (docs/WORKFLOWS.md): the checks a [schedules.<name>] table gets,
// its agent one of `config`'s. Empty when it is sound; else what is wrong, naming the field.
std::string check_schedule(const schedule_config& s, const node_config& config);

struct node_config {
  std::string source;  // the file this was read from, for messages

  std::string node_name;  // empty: derived at start (see docs/OPERATIONS.md)
  std::vector<role> roles;
  std::string data_dir;

  std::vector<std::string> nats_servers;
  std::string prefix;
  std::string ns;
  std::int64_t connect_timeout_ms = 0;
  std::int64_t reconnect_wait_ms = 0;
  std::int64_t reconnect_attempts_max = 0;
  std::int64_t request_timeout_ms = 0;

  bool fsync = true;
  std::int64_t log_replicas = 0;  // 0: runs are not written to the replicated log
  std::int64_t lease_ms = 5000;
  std::int64_t memtable_bytes = 0;
  std::int64_t block_cache_bytes = 0;
  std::int64_t disk_reserve_bytes = 0;

  std::int64_t message_bytes_max = 0;
  std::int64_t heartbeat_interval_ms = 0;
  std::int64_t shutdown_timeout_ms = 0;
  std::int64_t step_retry_ms = 0;
  std::int64_t retry_backoff_max_ms = 0;
  std::int64_t task_inline_bytes_max = 0;
  std::int64_t task_replicas = 1;
  std::int64_t worker_slots = 0;
  std::int64_t worker_liveness_ms = 0;
  std::int64_t task_deliveries_max = 0;
  std::int64_t worker_check_after_ms = 0;
  std::int64_t result_delivery_ms = 0;
  std::int64_t conversation_cache_bytes = 0;
  std::int64_t store_batch_max = 0;
  // Independent paths of a step through this node; 0: one per CPU the node may use, up to 16 (lanes_for()).
  std::int64_t lanes = 0;

  std::string log_level;
  std::string log_file;
  std::string log_format = "text";

  std::string metrics_listen;      // empty: no listener of its own
  std::string metrics_token_file;
  std::string otlp_endpoint;       // telemetry.*: over the OTEL_* variables
  std::string otlp_headers;
  std::string otel_service_name;
  std::int64_t spans_queued_max = 0;

  // Retention of ended runs (docs/OPERATIONS.md); 0: no bound.
  std::int64_t retention_max_age_ms = 0;
  std::int64_t retention_max_runs = 0;
  bool retention_keep_conversations = true;
  std::int64_t retention_interval_ms = 60'000;

  std::string gateway_listen;
  std::string gateway_token;
  std::string gateway_token_name;
  std::string gateway_tokens_file;  // empty: <data_dir>/gateway-tokens
  std::string nats_credentials_file;
  std::vector<std::string> gateway_hosts;  // names served besides localhost and IP addresses
  std::int64_t gateway_stream_ping_ms = 15'000;
  std::int64_t gateway_streams_max = 10'000;

  std::vector<agent_config> agents;
  std::vector<schedule_config> schedules;
  std::vector<webhook_config> webhooks;
  std::vector<queue_config> run_queues;
  std::map<std::string, price> prices;  // by "<provider>/<model>"
  // The price of a model's tokens; nullptr: none configured (its steps cost nothing here).
  const price* find_price(const std::string& provider, const std::string& model) const;

  bool has_role(role r) const;
  const agent_config* find_agent(std::string_view id) const;
  const queue_config* find_run_queue(std::string_view name) const;
  // node.lanes, with 0 made one per CPU the node may use (runtime/cpus.hpp; at most 16, at least 1).
  std::size_t lanes_for() const;
};

// What the schema says of one key, for the reference file, its test and the docs.
struct key_info {
  std::string path;          // e.g. "nats.servers", or "agents.*.model" for every agent
  std::string type;          // "string", "integer", "boolean", "array of strings"
  std::string default_toml;  // the default as a TOML value
  std::string help;
};
const std::vector<key_info>& schema();

// "host:port" (an IPv4 or IPv6 address, or localhost) as host and port.
result<std::pair<std::string, std::uint16_t>> split_listen(const std::string& listen);

// Loads and validates; an error is one line naming the file, the key and what was expected.
// `overrides` are TOML lines (`key = value`, dotted keys allowed) applied after the file, as
// `keel-node --set` gives them; their errors name "--set".
result<node_config> load_file(const std::string& path,
                              const std::vector<std::string>& overrides = {});
result<node_config> load_string(std::string_view text, const std::string& source_name,
                                const std::vector<std::string>& overrides = {});

} // namespace keel::config
