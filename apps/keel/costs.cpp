// `keel costs`: what each agent's runs cost (by the configured prices) and the tokens they used,
// over a window, from every orchestrator (docs/OPERATIONS.md, cost).
#include "apps/keel/commands.hpp"
#include "runtime/error_reply.hpp"

#include "broker/connection.hpp"
#include "runtime/clock.hpp"
#include "runtime/wire.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

namespace keel::cli {

namespace {

int run_costs(const client_flags& flags, double hours, bool json) {
  auto fail = [](const std::string& m) {
    std::cerr << "keel costs: " << m << "\n";
    return 1;
  };
  if (!(hours > 0) || hours > 24 * 3660) return fail("--hours must be more than 0 (and at most ten years)");
  auto c = flags.resolve();
  if (!c) return fail(c.error().message);
  auto nats = connect_command(*c, "costs");
  if (!nats) return fail(nats.error().message);
  broker::subjects subjects{c->prefix, c->ns};
  struct gathered {
    std::mutex mutex;
    std::vector<wire::value> answers;
    std::string failure;
  };
  auto state = std::make_shared<gathered>();
  auto inbox = (*nats)->new_inbox();
  auto sub = (*nats)->subscribe(inbox, "", [state](broker::message&& m) {
    auto v = wire::unpack(m.data);
    std::lock_guard lock{state->mutex};
    if (!v || !v->is_object()) state->failure = "an answer cannot be read";
    else if (text_field(*v, "type") == "error") state->failure = error_message_of(*v, std::string());
    else state->answers.push_back(std::move(*v));
  });
  if (!sub) return fail(sub.error().message);
  auto now = wall_ms();
  wire::value body{{"v", 1}, {"type", "costs"}, {"since_ms", now - static_cast<std::int64_t>(hours * 3'600'000)}, {"until_ms", now + 1}};
  if (auto p = (*nats)->publish(subjects.base() + ".costs", inbox, wire::pack(body)); !p) return fail(p.error().message);
  std::this_thread::sleep_for(std::chrono::milliseconds(std::min<std::int64_t>(flags.timeout_ms, 1000)));
  (void)(*sub)->unsubscribe();
  std::lock_guard lock{state->mutex};
  if (!state->failure.empty()) return fail(state->failure);
  if (state->answers.empty()) return fail("no orchestrator answered");
  std::map<std::string, wire::value> by_agent;
  bool cut = false;
  for (auto& a : state->answers) {
    cut = cut || a.value("cut", false);
    for (auto& row : a["agents"]) {
      auto& t = by_agent[row.value("agent", std::string())];
      if (t.is_null()) t = wire::value{{"agent", row["agent"]}, {"runs", 0}, {"cost_usd", 0.0}, {"input_tokens", 0}, {"output_tokens", 0}};
      t["runs"] = t["runs"].get<std::int64_t>() + row.value("runs", std::int64_t{0});
      t["cost_usd"] = t["cost_usd"].get<double>() + row.value("cost_usd", 0.0);
      t["input_tokens"] = t["input_tokens"].get<std::int64_t>() + row.value("input_tokens", std::int64_t{0});
      t["output_tokens"] = t["output_tokens"].get<std::int64_t>() + row.value("output_tokens", std::int64_t{0});
    }
  }
  if (json) {
    wire::value out = wire::value::array();
    for (auto& [name, row] : by_agent) out.push_back(row);
    std::cout << wire::value{{"agents", out}, {"cut", cut}, {"orchestrators", state->answers.size()}}.dump(2) << "\n";
    return 0;
  }
  std::cout << std::left << std::setw(24) << "AGENT" << std::setw(8) << "RUNS" << std::setw(14) << "COST (USD)" << std::setw(14)
            << "INPUT TOKENS" << "OUTPUT TOKENS\n";
  double total = 0;
  for (auto& [name, row] : by_agent) {
    char cost[32];
    std::snprintf(cost, sizeof cost, "%.4f", row["cost_usd"].get<double>());
    total += row["cost_usd"].get<double>();
    std::cout << std::left << std::setw(24) << name << std::setw(8) << row["runs"].get<std::int64_t>() << std::setw(14) << cost
              << std::setw(14) << row["input_tokens"].get<std::int64_t>() << row["output_tokens"].get<std::int64_t>() << "\n";
  }
  char sum[32];
  std::snprintf(sum, sizeof sum, "%.4f", total);
  std::cout << "total " << sum << " USD over the last " << hours << " h, runs by when they were created"
            << (cut ? " (an orchestrator held more runs than it reads at once: the figures are low)" : "") << "\n";
  return 0;
}

} // namespace

void add_costs_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto hours = std::make_shared<double>(24);
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("costs", "What each agent's runs cost (by [prices]) and the tokens they used");
  cmd->add_option("--hours", *hours, "Runs created in the last this many hours (default 24)");
  cmd->add_flag("--json", *json, "Print JSON");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] { exit_code = run_costs(*flags, *hours, *json); });
}

} // namespace keel::cli
