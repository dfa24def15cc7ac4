// `keel tools`: the tools that tool workers declared (docs/PROTOCOL.md, tool workers), by queue,
// with who declared them, their approval and timeout; --json prints them whole, schemas included.
#include "apps/keel/commands.hpp"
#include "runtime/error_reply.hpp"

#include "broker/connection.hpp"
#include "runtime/wire.hpp"

#include <CLI/CLI.hpp>

#include <iomanip>
#include <iostream>

namespace keel::cli {

namespace {

int run_tools(const client_flags& flags, bool json) {
  auto fail = [](const std::string& message) {
    std::cerr << "keel tools: " << message << "\n";
    return 1;
  };
  auto c = flags.resolve();
  if (!c) return fail(c.error().message);
  auto nats = connect_command(*c, "tools");
  if (!nats) return fail(nats.error().message);
  broker::subjects subjects{c->prefix, c->ns};
  auto reply = (*nats)->request(subjects.tools_list(), wire::pack(wire::value{{"v", 1}, {"type", "list_tools"}}), 5000);
  if (!reply) return fail(reply.error().message + " (is an orchestrator running?)");
  auto v = wire::unpack(reply->data);
  if (!v || !v->is_object()) return fail("the answer cannot be read");
  if (text_field(*v, "type") == "error") return fail(error_message_of(*v, std::string{"refused"}));
  const auto& queues = (*v)["queues"];
  if (json) {
    std::cout << queues.dump(2) << "\n";
    return 0;
  }
  if (!queues.is_array() || queues.empty()) {
    std::cout << "No tool worker has declared tools.\n";
    return 0;
  }
  std::cout << std::left << std::setw(32) << "TOOL" << std::setw(10) << "APPROVAL" << std::setw(10) << "TIMEOUT"
            << std::setw(16) << "DECLARED BY" << "DESCRIPTION\n";
  for (const auto& q : queues) {
    for (const auto& t : q.value("tools", wire::value::array())) {
      auto description = t.value("description", std::string{});
      if (auto nl = description.find('\n'); nl != std::string::npos) description = description.substr(0, nl);
      if (description.size() > 60) description = description.substr(0, 57) + "...";
      std::cout << std::left << std::setw(32) << q.value("queue", std::string{}) + "." + t.value("name", std::string{})
                << std::setw(10) << t.value("approval", std::string{"-"})
                << std::setw(10) << (std::to_string(t.value("timeout_ms", std::int64_t{0}) / 1000) + " s")
                << std::setw(16) << q.value("by", std::string{"-"}) << description << "\n";
    }
  }
  return 0;
}

} // namespace

void add_tools_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto json = std::make_shared<bool>(false);
  auto* tools = app.add_subcommand("tools", "List the tools that tool workers declared, by queue");
  add_client_flags(*tools, *flags);
  tools->add_flag("--json", *json, "Print them whole, with their schemas, as JSON");
  tools->callback([=, &exit_code] { exit_code = run_tools(*flags, *json); });
}

} // namespace keel::cli
