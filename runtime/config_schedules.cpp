// Reading [schedules.<name>] (docs/WORKFLOWS.md): each table checked whole when the config is
// loaded: its cron expression parsed, its time zone found in the tz database, its agent known.
#include "runtime/config_tools.hpp"

#include "runtime/cron.hpp"
#include "runtime/ids.hpp"
#include "runtime/time_zone.hpp"

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

std::string check_schedules(const node_config& config) {
  for (const auto& s : config.schedules)
    if (!config.find_agent(s.agent)) return "schedules." + s.name + ".agent: \"" + s.agent + "\" is not an agent of this config";
  return {};
}

} // namespace keel::config::detail
