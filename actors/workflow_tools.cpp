#include "actors/workflow_tools.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>

namespace keel::actors {

using wire::value;

bool is_workflow_tool(const config::agent_config& agent, const std::string& name) {
  return std::find(agent.workflow_tools.begin(), agent.workflow_tools.end(), name) != agent.workflow_tools.end();
}

wire::value workflow_tool_definition(const std::string& name, const config::agent_config& agent) {
  if (name == "run_agents") {
    std::string agents;
    for (const auto& id : agent.sub_agents) agents += (agents.empty() ? "" : ", ") + id;
    return value{{"name", "run_agents"},
                 {"description", "Hand tasks to other agents at once, each as a run of its own, and wait for all of "
                                 "them (wait: all) or for the first that succeeds (wait: first; the others are then "
                                 "cancelled). With on_failure: cancel_rest, the first run that fails ends the wait and "
                                 "cancels the others. Returns each run's status and output or error. Agents: " + agents + "."},
                 {"input_schema",
                  {{"type", "object"},
                   {"properties",
                    {{"runs", {{"type", "array"}, {"minItems", 1}, {"maxItems", fan_out_runs_max},
                               {"items", {{"type", "object"},
                                          {"properties", {{"agent", {{"type", "string"}, {"enum", agent.sub_agents}}},
                                                          {"task", {{"type", "string"}}}}},
                                          {"required", {"agent", "task"}}}}}},
                     {"wait", {{"type", "string"}, {"enum", {"all", "first"}}}},
                     {"on_failure", {{"type", "string"}, {"enum", {"continue", "cancel_rest"}}}}}},
                   {"required", {"runs"}}}}};
  }
  if (name == "sleep")
    return value{{"name", "sleep"},
                 {"description", "Wait for a number of seconds, then go on. Nothing runs meanwhile; the wait survives "
                                 "restarts. Returns when it ended."},
                 {"input_schema", {{"type", "object"},
                                   {"properties", {{"seconds", {{"type", "number"}, {"minimum", 0},
                                                                {"description", "How long to wait"}}}}},
                                   {"required", {"seconds"}}}}};
  if (name == "wait_until")
    return value{{"name", "wait_until"},
                 {"description", "Wait until a time, then go on. Nothing runs meanwhile; the wait survives restarts."},
                 {"input_schema", {{"type", "object"},
                                   {"properties", {{"time", {{"type", "string"},
                                                             {"description", "RFC 3339, e.g. 2026-12-24T09:00:00+01:00"}}}}},
                                   {"required", {"time"}}}}};
  return value{{"name", "wait_for_event"},
               {"description", "Wait for an event sent to this run by a person or a system (keel signal, the HTTP "
                               "API), then go on with its payload. An event sent before this call is kept and "
                               "returned at once. Returns timed_out if none came within timeout_seconds."},
               {"input_schema", {{"type", "object"},
                                 {"properties", {{"name", {{"type", "string"}, {"description", "The event's name"}}},
                                                 {"timeout_seconds", {{"type", "number"}, {"minimum", 0},
                                                                      {"description", "Give up after this long (none: the agent's longest wait)"}}}}},
                                 {"required", {"name"}}}}};
}

fan_out_plan plan_fan_out(const config::agent_config& agent, const wire::value& arguments) {
  fan_out_plan plan;
  auto refuse = [&](std::string why) {
    plan.problem = std::move(why);
    plan.runs.clear();
    return plan;
  };
  if (!arguments.is_object() || !arguments.contains("runs") || !arguments["runs"].is_array())
    return refuse("run_agents takes runs: a list of {agent, task}");
  const auto& runs = arguments["runs"];
  if (runs.empty() || runs.size() > fan_out_runs_max)
    return refuse("run_agents takes 1 to " + std::to_string(fan_out_runs_max) + " runs, not " + std::to_string(runs.size()));
  for (const auto& r : runs) {
    if (!r.is_object() || !r.contains("agent") || !r["agent"].is_string() || !r.contains("task") || !r["task"].is_string())
      return refuse("each of runs is {agent, task}, both strings");
    auto id = r["agent"].get<std::string>();
    if (std::find(agent.sub_agents.begin(), agent.sub_agents.end(), id) == agent.sub_agents.end()) {
      std::string known;
      for (const auto& a : agent.sub_agents) known += (known.empty() ? "" : ", ") + a;
      return refuse("agent '" + id + "' is not one this agent may hand tasks to (" + (known.empty() ? "none" : known) + ")");
    }
    auto task = r["task"].get<std::string>();
    if (task.size() > fan_out_task_bytes_max)
      return refuse("a task is at most " + std::to_string(fan_out_task_bytes_max >> 10) + " KiB");
    plan.runs.emplace_back(id, task);
  }
  if (arguments.contains("wait")) {
    if (!arguments["wait"].is_string() || (arguments["wait"] != "all" && arguments["wait"] != "first"))
      return refuse("wait is \"all\" or \"first\"");
    plan.wait = arguments["wait"].get<std::string>();
  }
  if (arguments.contains("on_failure")) {
    if (!arguments["on_failure"].is_string() || (arguments["on_failure"] != "continue" && arguments["on_failure"] != "cancel_rest"))
      return refuse("on_failure is \"continue\" or \"cancel_rest\"");
    plan.cancel_rest = arguments["on_failure"] == "cancel_rest";
  }
  return plan;
}

std::size_t nesting(const wire::value& v) {
  std::size_t deepest = 0;
  if (v.is_object() || v.is_array())
    for (const auto& item : v) deepest = std::max(deepest, nesting(item));
  return 1 + deepest;
}

bool is_event_name(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == ':' || c == '/' || c == '-';
  });
}

namespace {

// A number of seconds from the model: finite, not negative; in ms, or nullopt.
std::optional<std::int64_t> seconds_ms(const value& v) {
  if (!v.is_number()) return std::nullopt;
  double s = v.get<double>();
  if (!std::isfinite(s) || s < 0 || s > 1e11) return std::nullopt;
  return static_cast<std::int64_t>(std::llround(s * 1000));
}

std::string seconds_text(std::int64_t ms) { return std::to_string(ms / 1000) + " s"; }

} // namespace

wait_plan plan_wait(const config::agent_config& agent, const std::string& tool, const value& arguments,
                    std::int64_t now_ms) {
  wait_plan plan;
  auto longest = agent.wait_max_ms > 0 ? agent.wait_max_ms : std::int64_t{30} * 86'400'000;
  auto refuse = [&](std::string why) {
    plan.problem = std::move(why);
    return plan;
  };
  if (!arguments.is_object()) return refuse(tool + " takes a map of arguments");
  if (tool == "sleep" || tool == "wait_until") {
    plan.kind = "sleep";
    if (tool == "sleep") {
      auto ms = arguments.contains("seconds") ? seconds_ms(arguments["seconds"]) : std::nullopt;
      if (!ms) return refuse("sleep needs seconds: a number, 0 or more");
      if (*ms > longest) return refuse("sleep: at most " + seconds_text(longest) + " (agents." + agent.id + ".wait_max_ms)");
      plan.until_ms = now_ms + *ms;
    } else {
      auto given = arguments.contains("time") && arguments["time"].is_string()
                     ? parse_rfc3339(arguments["time"].get<std::string>()) : std::nullopt;
      if (!given) return refuse("wait_until needs time: an RFC 3339 time such as 2026-12-24T09:00:00Z");
      if (*given - now_ms > longest)
        return refuse("wait_until: at most " + seconds_text(longest) + " ahead (agents." + agent.id + ".wait_max_ms)");
      plan.until_ms = std::max(*given, now_ms);
    }
    return plan;
  }
  plan.kind = "event";
  if (!arguments.contains("name") || !arguments["name"].is_string() || !is_event_name(arguments["name"].get<std::string>()))
    return refuse("wait_for_event needs name: 1 to 128 characters of letters, digits and _ . : / -");
  plan.event = arguments["name"].get<std::string>();
  if (plan.event.rfind(join_event_prefix, 0) == 0)
    return refuse(std::string("wait_for_event: names starting with ") + join_event_prefix + " are keel's own");
  auto timeout = longest;
  if (arguments.contains("timeout_seconds") && !arguments["timeout_seconds"].is_null()) {
    auto ms = seconds_ms(arguments["timeout_seconds"]);
    if (!ms) return refuse("wait_for_event: timeout_seconds must be a number, 0 or more");
    if (*ms > longest) return refuse("wait_for_event: timeout_seconds at most " + seconds_text(longest) +
                                     " (agents." + agent.id + ".wait_max_ms)");
    timeout = *ms;
  }
  plan.until_ms = now_ms + timeout;
  return plan;
}

std::string rfc3339(std::int64_t ms) {
  std::time_t seconds = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  std::tm t{};
  gmtime_r(&seconds, &t);
  char out[40];
  std::snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(((ms % 1000) + 1000) % 1000));
  return out;
}

std::optional<std::int64_t> parse_rfc3339(const std::string& text) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM); 't', 'z' and a space for T as RFC 3339 allows.
  auto digits = [&](std::size_t at, std::size_t n) -> std::optional<int> {
    if (at + n > text.size()) return std::nullopt;
    int v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (text[i] < '0' || text[i] > '9') return std::nullopt;
      v = v * 10 + (text[i] - '0');
    }
    return v;
  };
  auto year = digits(0, 4), month = digits(5, 2), day = digits(8, 2), hour = digits(11, 2), minute = digits(14, 2),
       second = digits(17, 2);
  if (!year || !month || !day || !hour || !minute || !second || text.size() < 20) return std::nullopt;
  if (text[4] != '-' || text[7] != '-' || (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || text[13] != ':' ||
      text[16] != ':')
    return std::nullopt;
  if (*month < 1 || *month > 12 || *day < 1 || *day > 31 || *hour > 23 || *minute > 59 || *second > 60)
    return std::nullopt;
  std::size_t at = 19;
  std::int64_t fraction_ms = 0;
  if (at < text.size() && text[at] == '.') {
    std::size_t start = ++at;
    while (at < text.size() && text[at] >= '0' && text[at] <= '9') ++at;
    if (at == start || at - start > 9) return std::nullopt;
    std::string f = text.substr(start, std::min<std::size_t>(3, at - start));
    while (f.size() < 3) f += '0';
    fraction_ms = std::stoi(f);
  }
  std::int64_t offset_minutes = 0;
  if (at < text.size() && (text[at] == 'Z' || text[at] == 'z') && at + 1 == text.size()) {
  } else if (at + 6 == text.size() && (text[at] == '+' || text[at] == '-') && text[at + 3] == ':') {
    auto oh = digits(at + 1, 2), om = digits(at + 4, 2);
    if (!oh || !om || *oh > 23 || *om > 59) return std::nullopt;
    offset_minutes = (*oh * 60 + *om) * (text[at] == '+' ? 1 : -1);
  } else {
    return std::nullopt;
  }
  std::tm t{};
  t.tm_year = *year - 1900;
  t.tm_mon = *month - 1;
  t.tm_mday = *day;
  t.tm_hour = *hour;
  t.tm_min = *minute;
  t.tm_sec = std::min(*second, 59);
  std::time_t seconds = timegm(&t);
  // timegm normalizes 31 February to March: a day the month does not have is refused.
  std::tm back{};
  gmtime_r(&seconds, &back);
  if (back.tm_mday != *day) return std::nullopt;
  return (static_cast<std::int64_t>(seconds) - offset_minutes * 60) * 1000 + fraction_ms;
}

} // namespace keel::actors
