// `keel nodes`: the live nodes, from their answers to a ping and their heartbeats.
#include "apps/keel/commands.hpp"

#include "broker/connection.hpp"
#include "broker/work_queue.hpp"
#include "runtime/clock.hpp"
#include "runtime/wire.hpp"

#include <CLI/CLI.hpp>

#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace keel::cli {

namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + items[i];
  return out.empty() ? "-" : out;
}

std::string duration_text(std::int64_t ms) {
  auto s = ms / 1000;
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  return std::to_string(s / 3600) + "h";
}

int run_nodes(const client_flags& flags, std::int64_t wait_ms, bool json) {
  auto c = flags.resolve();
  if (!c) {
    std::cerr << "keel nodes: " << c.error().message << "\n";
    return 1;
  }
  auto nats = connect_command(*c, "nodes");
  if (!nats) {
    std::cerr << "keel nodes: " << nats.error().message << "\n";
    return 1;
  }
  broker::subjects subjects{c->prefix, c->ns};
  // Shared with the delivery threads, which may still be in a callback when this returns.
  struct gathered {
    std::mutex mutex;
    std::map<std::string, wire::heartbeat> nodes;
  };
  auto state = std::make_shared<gathered>();
  auto collect = [state](broker::message&& m) {
    auto beat = wire::decode<wire::heartbeat>(m.data);
    if (!beat) return;
    std::lock_guard lock{state->mutex};
    if (beat->state == "stopping") state->nodes.erase(beat->node_id);
    else state->nodes[beat->node_id] = *beat;
  };
  std::string inbox = (*nats)->new_inbox();
  auto replies = (*nats)->subscribe(inbox, "", collect);
  auto beats = (*nats)->subscribe(subjects.heartbeat(), "", collect);
  if (!replies || !beats) {
    std::cerr << "keel nodes: cannot subscribe\n";
    return 1;
  }
  if (auto p = (*nats)->publish(subjects.nodes_ping(), inbox, wire::pack(wire::value{{"v", 1}, {"type", "ping"}})); !p) {
    std::cerr << "keel nodes: " << p.error().message << "\n";
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
  (void)(*replies)->unsubscribe();
  (void)(*beats)->unsubscribe();
  std::map<std::string, wire::heartbeat> nodes;
  {
    std::lock_guard lock{state->mutex};
    nodes = state->nodes;
  }
  // Each queue's backlog, from the broker: tasks waiting for a slot, and tasks workers hold.
  std::map<std::string, broker::jetstream::backlog> backlogs;
  std::set<std::string> queues;
  for (const auto& [id, b] : nodes) queues.insert(b.queues.begin(), b.queues.end());
  if (!queues.empty())
    if (auto js = broker::jetstream::open(*nats, 2000)) {
      for (const auto& q : queues)
        if (auto b = (*js)->consumer_backlog(subjects.tasks_stream(), broker::stream_name("workers_" + q))) backlogs[q] = *b;
    }
  if (json) {
    wire::value out = wire::value::array();
    for (const auto& [id, b] : nodes)
      out.push_back({{"node_id", id}, {"roles", b.roles}, {"agents", b.agents}, {"queues", b.queues},
                     {"host", b.host}, {"pid", b.pid}, {"started_ms", b.started_ms},
                     {"version", b.version}, {"slots", b.slots}, {"slots_busy", b.slots_busy},
                     {"runs_in_memory", b.runs_in_memory}});
    for (auto& n : out) {
      wire::value backlog = wire::value::object();
      for (const auto& q : n["queues"])
        if (auto it = backlogs.find(q.get<std::string>()); it != backlogs.end())
          backlog[it->first] = {{"waiting", it->second.waiting}, {"running", it->second.running}};
      if (!backlog.empty()) n["backlog"] = backlog;
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (nodes.empty()) {
    std::cout << "No live nodes on " << c->nats_url << " (" << c->prefix << "." << c->ns << ").\n";
    return 0;
  }
  std::cout << std::left << std::setw(24) << "NODE" << std::setw(30) << "ROLES" << std::setw(24)
            << "AGENTS" << std::setw(16) << "HOST" << std::setw(9) << "PID" << std::setw(10) << "SLOTS" << "UP\n";
  auto now = wall_ms();
  for (const auto& [id, b] : nodes) {
    std::cout << std::left << std::setw(24) << id << std::setw(30) << join(b.roles) << std::setw(24)
              << join(b.agents) << std::setw(16) << b.host << std::setw(9) << b.pid << std::setw(10)
              << (b.slots > 0 ? std::to_string(b.slots_busy) + "/" + std::to_string(b.slots) : "-")
              << duration_text(now - b.started_ms) << "\n";
  }
  if (!backlogs.empty()) {
    std::cout << "\n" << std::left << std::setw(24) << "QUEUE" << std::setw(10) << "WAITING" << "RUNNING\n";
    for (const auto& [q, b] : backlogs)
      std::cout << std::left << std::setw(24) << q << std::setw(10) << b.waiting << b.running << "\n";
  }
  // The run queues (docs/WORKFLOWS.md), as an orchestrator reads them; keel queues has the detail.
  if (auto reply = (*nats)->request(subjects.base() + ".queues.list",
                                 wire::pack(wire::value{{"v", wire::protocol_version}, {"type", "list_queues"}}), 1000)) {
    auto v = wire::unpack(reply->data);
    if (v && v->is_object() && v->contains("queues") && (*v)["queues"].is_array() && !(*v)["queues"].empty()) {
      std::cout << "\n" << std::left << std::setw(24) << "RUN QUEUE" << std::setw(10) << "GOING" << "IN LINE\n";
      for (const auto& q : (*v)["queues"])
        std::cout << std::left << std::setw(24) << q.value("name", std::string()) << std::setw(10)
                  << (std::to_string(q.value("running", 0)) + "/" + std::to_string(q.value("concurrency", 0))) << q.value("waiting", 0)
                  << "\n";
    }
  }
  return 0;
}

} // namespace

void add_nodes_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto wait_ms = std::make_shared<std::int64_t>(500);
  auto json = std::make_shared<bool>(false);
  auto* nodes = app.add_subcommand("nodes", "List live nodes");
  add_client_flags(*nodes, *flags);
  nodes->add_option("--wait-ms", *wait_ms, "How long to collect answers");
  nodes->add_flag("--json", *json, "Print JSON");
  nodes->callback([=, &exit_code] { exit_code = run_nodes(*flags, *wait_ms, *json); });
}

} // namespace keel::cli
