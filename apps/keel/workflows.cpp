// `keel signal`: an outside event for a run (docs/WORKFLOWS.md). A run waiting for that name goes
// on with the payload; one not waiting for it yet keeps it until it does.
#include "apps/keel/client.hpp"
#include "apps/keel/commands.hpp"
#include "runtime/json_bounded.hpp"

#include <CLI/CLI.hpp>

#include <fstream>
#include <iostream>
#include <sstream>

namespace keel::cli {

using wire::value;

void add_signal(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto run = std::make_shared<std::string>();
  auto name = std::make_shared<std::string>();
  auto payload = std::make_shared<std::string>();
  auto payload_file = std::make_shared<std::string>();
  auto id = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("signal", "Send an event to a run: a run waiting for its name goes on with the "
                                           "payload; one not waiting for it yet keeps it");
  cmd->add_option("run", *run, "Run id")->required();
  cmd->add_option("name", *name, "The event's name (letters, digits, _ . : / -)")->required();
  cmd->add_option("--payload", *payload, "The event's payload: JSON (text that is not JSON is sent as a string)");
  cmd->add_option("--payload-file", *payload_file, "Read the payload (JSON) from this file; - reads standard input");
  cmd->add_option("--id", *id, "The event's id: a repeat with the same id is not taken twice (default: a new one)");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    auto fail = [&](const std::string& message) {
      std::cerr << "keel signal: " << message << "\n";
      exit_code = 1;
    };
    std::string text = *payload;
    if (!payload_file->empty()) {
      std::stringstream read;
      if (*payload_file == "-") {
        read << std::cin.rdbuf();
      } else {
        std::ifstream in(*payload_file, std::ios::binary);
        if (!in) return fail("cannot read " + *payload_file);
        read << in.rdbuf();
      }
      text = read.str();
    }
    value body;
    if (!text.empty()) {
      auto parsed = parse_bounded(text);
      if (!parsed.is_discarded()) body = std::move(parsed);
      else if (!payload_file->empty()) return fail(*payload_file + " is not JSON (or nests deeper than 48 levels)");
      else body = text;
    }
    auto c = flags->resolve();
    if (!c) return fail(c.error().message);
    auto connected = client::connect(*c, "keel signal", flags->timeout_ms);
    if (!connected) return fail(connected.error().message);
    auto r = connected->signal(*run, *name, body, *id);
    if (!r) return fail(r.error().message);
    bool delivered = r->value("delivered", false), duplicate = r->value("duplicate", false);
    std::cout << "Event " << *name << " (id " << r->value("id", std::string{}) << ") "
              << (duplicate ? "was sent before: " : "") << (delivered ? "taken by run " : "kept for run ") << *run
              << (delivered ? "" : " until it waits for it") << "\n";
  });
}

} // namespace keel::cli
