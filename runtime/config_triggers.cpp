// Reading what starts runs without a client (docs/WORKFLOWS.md): [schedules.<name>] (its cron
// parsed, its time zone found in the tz database) and [webhooks.<name>] (one way to authenticate,
// header names HTTP allows); each table checked whole when the config is loaded, its agent known.
#include "runtime/config_tools.hpp"

#include "runtime/cron.hpp"
#include "runtime/ids.hpp"
#include "runtime/time_zone.hpp"

#include <set>

namespace keel::config::detail {

std::optional<table_problem> read_schedules(const toml::table& schedules, node_config& config) {
  for (const auto& [raw, node] : schedules) {
    std::string name(raw.str());
    std::string where = "schedules." + name;
    if (!is_valid_name(name)) return table_problem{&node, where, "a schedule's name is 1 to 64 characters from [A-Za-z0-9_-]"};
    const auto* table = node.as_table();
    if (!table) return table_problem{&node, where, "expected a table (agent, cron, timezone, input, missed)"};
    reader r{*table, where, {}};
    r.only({"agent", "cron", "timezone", "input", "missed", "catch_up_max", "late_ms_max"}, "docs/WORKFLOWS.md");
    schedule_config s;
    s.name = name;
    s.agent = r.str("agent", "", 64);
    s.cron = r.str("cron", "", 256);
    s.timezone = r.str("timezone", "UTC", 128);
    s.input = r.str("input", "", 64 << 10);
    s.missed = r.str("missed", "skip", 16);
    s.catch_up_max = r.integer("catch_up_max", 10, 1, 1000);
    s.late_ms_max = r.integer("late_ms_max", 60'000, 1000, 86'400'000);
    if (r.problem) return r.problem;
    if (!is_valid_name(s.agent)) return table_problem{r.get("agent") ? r.get("agent") : table, where + ".agent", "expected the id of an agent"};
    if (auto parsed = parse_cron(s.cron); !parsed)
      return table_problem{r.get("cron") ? r.get("cron") : table, where + ".cron", parsed.error().message};
    if (auto zone = time_zone::load(s.timezone); !zone) return table_problem{r.get("timezone"), where + ".timezone", zone.error().message};
    if (s.missed != "skip" && s.missed != "catch_up")
      return table_problem{r.get("missed"), where + ".missed", "expected \"skip\" or \"catch_up\", got \"" + s.missed + "\""};
    std::erase_if(config.schedules, [&](const schedule_config& c) { return c.name == name; });  // a later file wins
    config.schedules.push_back(std::move(s));
  }
  return std::nullopt;
}

namespace {
bool header_name(const std::string& h) {
  return !h.empty() && h.size() <= 64 &&
         h.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == std::string::npos;
}
} // namespace

std::optional<table_problem> read_webhooks(const toml::table& hooks, node_config& config, const path_resolver& relative) {
  for (const auto& [raw, node] : hooks) {
    std::string name(raw.str());
    std::string where = "webhooks." + name;
    if (!is_valid_name(name)) return table_problem{&node, where, "a webhook's name is 1 to 64 characters from [A-Za-z0-9_-]"};
    const auto* table = node.as_table();
    if (!table) return table_problem{&node, where, "expected a table (agent, secret_file or token_file, ...)"};
    reader r{*table, where, {}};
    r.only({"agent", "secret_file", "token_file", "signature_header", "idempotency_header", "input"}, "docs/WORKFLOWS.md");
    webhook_config h;
    h.name = name;
    h.agent = r.str("agent", "", 64);
    h.secret_file = r.str("secret_file", "", 4096);
    h.token_file = r.str("token_file", "", 4096);
    h.signature_header = r.str("signature_header", h.signature_header, 64);
    h.idempotency_header = r.str("idempotency_header", h.idempotency_header, 64);
    h.input = r.str("input", h.input, 64 << 10);
    if (r.problem) return r.problem;
    if (!is_valid_name(h.agent)) return table_problem{r.get("agent") ? r.get("agent") : table, where + ".agent", "expected the id of an agent"};
    if (h.secret_file.empty() == h.token_file.empty())
      return table_problem{table, where, "expected one of secret_file (HMAC-SHA256 signatures of the body) or token_file (a bearer token)"};
    for (const char* key : {"signature_header", "idempotency_header"})
      if (!header_name(key[0] == 's' ? h.signature_header : h.idempotency_header))
        return table_problem{r.get(key), where + "." + key, "expected an HTTP header name ([A-Za-z0-9-], at most 64)"};
    h.secret_file = relative(h.secret_file);
    h.token_file = relative(h.token_file);
    std::erase_if(config.webhooks, [&](const webhook_config& c) { return c.name == name; });
    config.webhooks.push_back(std::move(h));
  }
  return std::nullopt;
}

std::optional<table_problem> read_queues(const toml::table& queues, node_config& config) {
  for (const auto& [raw, node] : queues) {
    std::string name(raw.str());
    std::string where = "run_queues." + name;
    if (!is_valid_name(name)) return table_problem{&node, where, "a run queue's name is 1 to 64 characters from [A-Za-z0-9_-]"};
    const auto* table = node.as_table();
    if (!table) return table_problem{&node, where, "expected a table (concurrency, key_concurrency, waiting_max)"};
    reader r{*table, where, {}};
    r.only({"concurrency", "key_concurrency", "waiting_max"}, "docs/WORKFLOWS.md");
    queue_config q;
    q.name = name;
    q.concurrency = r.integer("concurrency", 1, 1, 10'000);
    q.key_concurrency = r.integer("key_concurrency", 0, 0, 10'000);
    q.waiting_max = r.integer("waiting_max", 1000, 1, 5000);
    if (r.problem) return r.problem;
    std::erase_if(config.run_queues, [&](const queue_config& c) { return c.name == name; });
    config.run_queues.push_back(std::move(q));
  }
  return std::nullopt;
}

namespace {
// Whether an agent that `from` may hand tasks to (directly or through others) has run queue `queue`.
bool reaches_queue(const node_config& config, const agent_config& from, const std::string& queue, std::set<std::string>& seen) {
  for (const auto& id : from.sub_agents) {
    if (!seen.insert(id).second) continue;
    const auto* sub = config.find_agent(id);
    if (!sub) continue;
    if (sub->run_queue == queue || reaches_queue(config, *sub, queue, seen)) return true;
  }
  return false;
}
} // namespace

std::string check_schedules(const node_config& config) {
  // A run holding a slot while it waits for a child in line behind it in the same queue would wait
  // for good.
  for (const auto& a : config.agents) {
    std::set<std::string> seen{a.id};
    if (!a.run_queue.empty() && reaches_queue(config, a, a.run_queue, seen))
      return "agents." + a.id + ".run_queue: its sub-agents (or theirs) wait in the same run queue \"" + a.run_queue +
             "\"; a run holding a slot while its child waits for one could wait for good";
  }
  for (const auto& a : config.agents)
    if (!a.run_queue.empty() && !config.find_run_queue(a.run_queue))
      return "agents." + a.id + ".run_queue: \"" + a.run_queue + "\" is not a run queue of this config ([run_queues." + a.run_queue + "])";
  for (const auto& s : config.schedules)
    if (!config.find_agent(s.agent)) return "schedules." + s.name + ".agent: \"" + s.agent + "\" is not an agent of this config";
  for (const auto& h : config.webhooks)
    if (!config.find_agent(h.agent)) return "webhooks." + h.name + ".agent: \"" + h.agent + "\" is not an agent of this config";
  return {};
}

} // namespace keel::config::detail

namespace keel::config {

std::string check_schedule(const schedule_config& s, const node_config& config) {
  if (!is_valid_name(s.name)) return "name: 1 to 64 characters from [A-Za-z0-9_-]";
  if (!config.find_agent(s.agent)) return "agent: \"" + s.agent + "\" is not an agent of the orchestrator's config";
  if (s.cron.size() > 256) return "cron: at most 256 bytes";
  if (auto parsed = parse_cron(s.cron); !parsed) return "cron: " + parsed.error().message;
  if (s.timezone.size() > 128) return "timezone: at most 128 bytes";
  if (auto zone = time_zone::load(s.timezone); !zone) return "timezone: " + zone.error().message;
  if (s.input.size() > (64 << 10)) return "input: at most 64 KiB";
  if (s.missed != "skip" && s.missed != "catch_up") return "missed: expected \"skip\" or \"catch_up\", got \"" + s.missed + "\"";
  if (s.catch_up_max < 1 || s.catch_up_max > 1000) return "catch_up_max: 1 to 1000";
  if (s.late_ms_max < 1000 || s.late_ms_max > 86'400'000) return "late_ms_max: 1000 to 86400000";
  return {};
}

} // namespace keel::config
