// `keel agents`: the agents the orchestrators know, with provider, model, tools and sandbox.
#include "apps/keel/commands.hpp"

#include "broker/connection.hpp"
#include "runtime/wire.hpp"

#include <CLI/CLI.hpp>

#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

namespace keel::cli {

namespace {

std::string joined(const wire::value& list) {
  std::string out;
  if (list.is_array())
    for (const auto& item : list)
      if (item.is_string()) out += (out.empty() ? "" : ",") + item.get<std::string>();
  return out.empty() ? "-" : out;
}

int run_agents(const client_flags& flags, std::int64_t wait_ms, bool json) {
  auto c = flags.resolve();
  if (!c) {
    std::cerr << "keel agents: " << c.error().message << "\n";
    return 1;
  }
  auto nats = connect_command(*c, "agents");
  if (!nats) {
    std::cerr << "keel agents: " << nats.error().message << "\n";
    return 1;
  }
  broker::subjects subjects{c->prefix, c->ns};
  // Shared with the delivery thread, which may still be in the callback when this returns.
  struct gathered {
    std::mutex mutex;
    std::map<std::string, wire::value> agents;  // by id: every orchestrator knows the same ones
    std::size_t answers = 0;
  };
  auto state = std::make_shared<gathered>();
  std::string inbox = (*nats)->new_inbox();
  auto replies = (*nats)->subscribe(inbox, "", [state](broker::message&& m) {
    auto v = wire::unpack(m.data);
    if (!v || !v->is_object() || v->value("type", std::string{}) != "agent_list") return;
    std::lock_guard lock{state->mutex};
    ++state->answers;
    for (auto& a : (*v)["agents"])
      if (a.is_object() && a.contains("id") && a["id"].is_string()) state->agents.emplace(a["id"].get<std::string>(), a);
  });
  if (!replies) {
    std::cerr << "keel agents: " << replies.error().message << "\n";
    return 1;
  }
  if (auto p = (*nats)->publish(subjects.agents_list(), inbox, wire::pack(wire::value{{"v", 1}, {"type", "list_agents"}})); !p) {
    std::cerr << "keel agents: " << p.error().message << "\n";
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
  (void)(*replies)->unsubscribe();
  std::lock_guard lock{state->mutex};
  const auto& agents = state->agents;
  const auto answers = state->answers;
  if (answers == 0) {
    std::cerr << "keel agents: no orchestrator answered on " << c->nats_url << " (" << c->prefix << "." << c->ns
              << "); is a node running?\n";
    return 1;
  }
  if (json) {
    wire::value out = wire::value::array();
    for (const auto& [id, a] : agents) out.push_back(a);
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << std::left << std::setw(16) << "AGENT" << std::setw(11) << "PROVIDER" << std::setw(22) << "MODEL"
            << std::setw(10) << "SANDBOX" << std::setw(17) << "EXEC" << "TOOLS\n";
  for (const auto& [id, a] : agents) {
    const auto& sandbox = a.value("sandbox", wire::value::object());
    auto model = a.value("model", std::string{});
    std::cout << std::left << std::setw(16) << id << std::setw(11) << a.value("provider", std::string{"-"})
              << std::setw(22) << (model.empty() ? "-" : model) << std::setw(10) << sandbox.value("env", std::string{"-"})
              << std::setw(17) << sandbox.value("exec_security", std::string{"-"}) << joined(a.value("tools", wire::value()))
              << "\n";
  }
  return 0;
}

} // namespace

void add_agents_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto wait_ms = std::make_shared<std::int64_t>(300);
  auto json = std::make_shared<bool>(false);
  auto* agents = app.add_subcommand("agents", "List the agents, with provider, model, tools and sandbox");
  add_client_flags(*agents, *flags);
  agents->add_option("--wait-ms", *wait_ms, "How long to collect the orchestrators' answers");
  agents->add_flag("--json", *json, "Print JSON");
  agents->callback([=, &exit_code] { exit_code = run_agents(*flags, *wait_ms, *json); });
}

} // namespace keel::cli
