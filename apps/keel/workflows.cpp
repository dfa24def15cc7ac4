// Workflows on the command line (docs/WORKFLOWS.md). `keel signal`: an outside event for a run (a
// run waiting for that name goes on with the payload; one not waiting for it yet keeps it).
// `keel schedules`: the schedules, with their last and next ticks; pause and resume one.
// `keel queues`: the run queues, with what runs and what waits in line.
#include "apps/keel/client.hpp"
#include "apps/keel/commands.hpp"
#include "apps/keel/render.hpp"
#include "runtime/json_bounded.hpp"

#include <CLI/CLI.hpp>

#include <ctime>
#include <fstream>
#include <iomanip>
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

void add_schedules(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("schedules", "List the schedules: cron, zone, last and next tick, paused or not");
  cmd->add_flag("--json", *json, "Print JSON");
  add_client_flags(*cmd, *flags);
  auto fail = [&exit_code](const std::string& message) {
    std::cerr << "keel schedules: " << message << "\n";
    exit_code = 1;
  };
  cmd->callback([=] {
    if (!cmd->get_subcommands().empty()) return;
    auto c = flags->resolve();
    if (!c) return fail(c.error().message);
    auto connected = client::connect(*c, "keel schedules", flags->timeout_ms);
    if (!connected) return fail(connected.error().message);
    auto list = connected->schedules();
    if (!list) {
      if (list.error().code == errc::unavailable || list.error().code == errc::timeout)
        return fail("no orchestrator with schedules answered (none has [schedules.*] in its config, or none runs)");
      return fail(list.error().message);
    }
    if (*json) {
      std::cout << list->dump(2) << "\n";
      return;
    }
    std::cout << std::left << std::setw(20) << "NAME" << std::setw(14) << "AGENT" << std::setw(18) << "CRON" << std::setw(18)
              << "ZONE" << std::setw(22) << "LAST TICK" << std::setw(22) << "NEXT TICK" << "STATE\n";
    for (const auto& s : *list) {
      std::string state = s.value("paused", false) ? "paused by " + s.value("paused_by", std::string("?")) : "active";
      if (s.contains("problem")) state += " (" + s.value("problem", std::string()) + ")";
      std::cout << std::left << std::setw(20) << s.value("name", std::string()) << std::setw(14) << s.value("agent", std::string())
                << std::setw(18) << s.value("cron", std::string()) << std::setw(18) << s.value("timezone", std::string())
                << std::setw(22) << rfc3339_text(s.value("last_tick_ms", std::int64_t{0})) << std::setw(22)
                << rfc3339_text(s.value("next_ms", std::int64_t{0})) << state << "\n";
    }
  });
  for (bool pause : {true, false}) {
    auto name = std::make_shared<std::string>();
    auto* sub = cmd->add_subcommand(pause ? "pause" : "resume", pause ? "Pause a schedule: its ticks start nothing until it is resumed"
                                                                     : "Resume a schedule: from its next tick (the pause's ticks never start)");
    sub->add_option("name", *name, "The schedule")->required();
    add_client_flags(*sub, *flags);
    sub->callback([=] {
      auto c = flags->resolve();
      if (!c) return fail(c.error().message);
      auto connected = client::connect(*c, "keel schedules", flags->timeout_ms);
      if (!connected) return fail(connected.error().message);
      auto done = connected->pause_schedule(*name, pause);
      if (!done) return fail(done.error().message);
      std::cout << "Schedule " << *name << " is " << (done->value("paused", false) ? "paused" : "active") << "; next tick "
                << rfc3339_text(done->value("next_ms", std::int64_t{0})) << "\n";
    });
  }
  // Made and removed through the API: every orchestrator drives it (the config's own are changed there).
  struct definition {
    std::string name, agent, cron, timezone = "UTC", input, missed = "skip";
    std::int64_t catch_up_max = 10, late_ms_max = 60'000;
  };
  auto d = std::make_shared<definition>();
  auto* add = cmd->add_subcommand("add", "Make a schedule through the API: every orchestrator drives it, one run per tick");
  add->add_option("name", d->name, "The schedule's name ([A-Za-z0-9_-])")->required();
  add->add_option("--agent", d->agent, "The agent its runs are of")->required();
  add->add_option("--cron", d->cron, "When: minute hour day-of-month month day-of-week, or @daily...")->required();
  add->add_option("--timezone", d->timezone, "An IANA time zone (default UTC)");
  add->add_option("--input", d->input, "The runs' input; {{tick}} becomes the tick's time");
  add->add_option("--missed", d->missed, "Ticks nobody started in time: skip or catch_up")->check(CLI::IsMember({"skip", "catch_up"}));
  add->add_option("--catch-up-max", d->catch_up_max, "catch_up: at most this many missed ticks");
  add->add_option("--late-ms-max", d->late_ms_max, "skip: a tick not started this long after its time is missed");
  add_client_flags(*add, *flags);
  add->callback([=] {
    auto c = flags->resolve();
    if (!c) return fail(c.error().message);
    auto connected = client::connect(*c, "keel schedules", flags->timeout_ms);
    if (!connected) return fail(connected.error().message);
    auto made = connected->define_schedule(value{{"name", d->name}, {"agent", d->agent}, {"cron", d->cron}, {"timezone", d->timezone},
                                                 {"input", d->input}, {"missed", d->missed}, {"catch_up_max", d->catch_up_max},
                                                 {"late_ms_max", d->late_ms_max}});
    if (!made) return fail(made.error().message);
    std::cout << "Schedule " << d->name << (made->value("created", true) ? " made" : " exists already, the same") << "; next tick "
              << rfc3339_text((*made)["schedule"].value("next_ms", std::int64_t{0})) << "\n";
  });
  auto removed_name = std::make_shared<std::string>();
  auto* remove = cmd->add_subcommand("remove", "Remove a schedule made through the API: no tick starts after this");
  remove->add_option("name", *removed_name, "The schedule")->required();
  add_client_flags(*remove, *flags);
  remove->callback([=] {
    auto c = flags->resolve();
    if (!c) return fail(c.error().message);
    auto connected = client::connect(*c, "keel schedules", flags->timeout_ms);
    if (!connected) return fail(connected.error().message);
    if (auto done = connected->remove_schedule(*removed_name); !done) return fail(done.error().message);
    std::cout << "Schedule " << *removed_name << " removed\n";
  });
}

void add_queues(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("queues", "List the run queues: their limits, the runs going and the runs in line");
  cmd->add_flag("--json", *json, "Print JSON");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    auto fail = [&](const std::string& message) {
      std::cerr << "keel queues: " << message << "\n";
      exit_code = 1;
    };
    auto c = flags->resolve();
    if (!c) return fail(c.error().message);
    auto connected = client::connect(*c, "keel queues", flags->timeout_ms);
    if (!connected) return fail(connected.error().message);
    auto list = connected->run_queues();
    if (!list) {
      if (list.error().code == errc::unavailable || list.error().code == errc::timeout)
        return fail("no orchestrator with run queues answered (none has [run_queues.*] in its config, or none runs)");
      return fail(list.error().message);
    }
    if (*json) {
      std::cout << list->dump(2) << "\n";
      return;
    }
    std::cout << std::left << std::setw(20) << "QUEUE" << std::setw(8) << "LIMIT" << std::setw(10) << "PER KEY" << std::setw(9)
              << "RUNNING" << std::setw(9) << "WAITING" << "OLDEST IN LINE\n";
    for (const auto& q : *list) {
      auto per_key = q.value("key_concurrency", std::int64_t{0});
      auto oldest = q.value("oldest_waiting_ms", std::int64_t{0});
      std::cout << std::left << std::setw(20) << q.value("name", std::string()) << std::setw(8) << q.value("concurrency", std::int64_t{0})
                << std::setw(10) << (per_key ? std::to_string(per_key) : std::string("-")) << std::setw(9)
                << q.value("running", std::int64_t{0}) << std::setw(9) << q.value("waiting", std::int64_t{0})
                << (oldest ? rfc3339_text(oldest) : std::string("-"));
      if (q.contains("problem")) std::cout << "  (" << q.value("problem", std::string()) << ")";
      std::cout << "\n";
      if (q.contains("keys") && q["keys"].is_array())
        for (const auto& k : q["keys"])
          std::cout << "  key " << std::left << std::setw(30) << k.value("key", std::string()) << k.value("running", std::int64_t{0})
                    << " running, " << k.value("waiting", std::int64_t{0}) << " waiting\n";
    }
  });
}

} // namespace keel::cli
