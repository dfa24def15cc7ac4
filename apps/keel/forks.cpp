// `keel fork`, `keel rerun`, `keel replay` and `keel bulk` (docs/FORKS.md): a new run from a
// recorded one's first steps, a determinism check of a recorded run, and one action on the runs a
// filter chooses, shown first and done once confirmed.
#include "apps/keel/client.hpp"
#include "apps/keel/commands.hpp"

#include "runtime/bulk_actions.hpp"
#include "runtime/ids.hpp"

#include <CLI/CLI.hpp>

#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace keel::cli {

using wire::value;

namespace {

int fail(const std::string& command, const std::string& message) {
  std::cerr << "keel " << command << ": " << message << "\n";
  return 1;
}

result<client> open_client(const client_flags& flags, const std::string& name) {
  auto c = flags.resolve();
  if (!c) return c.error();
  return client::connect(*c, "keel " + name, flags.timeout_ms);
}

// --answer STEP=approve | STEP=reject[:feedback]
result<std::pair<std::string, value>> parse_answer(const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    return make_error(errc::invalid_argument, "--answer is STEP=approve or STEP=reject[:feedback] (for example approve-7=reject:use make clean)");
  auto key = text.substr(0, eq), rest = text.substr(eq + 1);
  auto colon = rest.find(':');
  auto verb = rest.substr(0, colon);
  if (verb != "approve" && verb != "reject")
    return make_error(errc::invalid_argument, "--answer " + key + ": '" + verb + "' is neither approve nor reject");
  value answer{{"approved", verb == "approve"}};
  if (colon != std::string::npos) answer["feedback"] = rest.substr(colon + 1);
  return std::pair{key, answer};
}

struct fork_options {
  std::string run;
  std::int64_t at_step = -1;
  std::string provider, model, system_prompt_file, idempotency_key;
  std::vector<std::string> answers;
};

int fork_run(const client_flags& flags, const fork_options& o, const std::string& command) {
  if (!run_id{o.run}.valid()) return fail(command, "'" + o.run + "' is not a keel run id");
  if (o.at_step < 0) return fail(command, "a step of at least 0 is required");
  value fields{{"at_step", o.at_step}};
  if (!o.provider.empty()) fields["provider"] = o.provider;
  if (!o.model.empty()) fields["model"] = o.model;
  if (!o.idempotency_key.empty()) fields["idempotency_key"] = o.idempotency_key;
  if (!o.system_prompt_file.empty()) {
    std::ifstream in(o.system_prompt_file, std::ios::binary);
    if (!in) return fail(command, "cannot read " + o.system_prompt_file);
    std::ostringstream text;
    text << in.rdbuf();
    fields["system_prompt"] = text.str();
  }
  if (!o.answers.empty()) {
    value answers = value::object();
    for (const auto& a : o.answers) {
      auto parsed = parse_answer(a);
      if (!parsed) return fail(command, parsed.error().message);
      answers[parsed->first] = parsed->second;
    }
    fields["answers"] = answers;
  }
  auto c = open_client(flags, command);
  if (!c) return fail(command, c.error().message);
  auto made = c->fork(o.run, fields);
  if (!made) return fail(command, made.error().message);
  std::cout << made->run_id << "\n";
  // The step it went live after, as the fork holds it (an answer given anew may cut it earlier).
  auto at = std::to_string(o.at_step);
  if (auto shown = c->show(made->run_id); shown && shown->contains("fork")) at = std::to_string((*shown)["fork"].value("at_step", 0));
  std::cerr << (made->created ? "Forked " : "Already forked (same idempotency key): ") << o.run << " at step " << at
            << " as " << made->run_id << " (keel show " << made->run_id << ")\n";
  return 0;
}

void add_fork(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto o = std::make_shared<fork_options>();
  auto* cmd = app.add_subcommand("fork", "A new run from a recorded one: its steps up to N replayed, then live with the changes given");
  cmd->add_option("run", o->run, "Run id")->required();
  cmd->add_option("--at-step", o->at_step, "Model steps taken from the recorded run (0: none)")->required();
  cmd->add_option("--provider", o->provider, "Provider of the live steps");
  cmd->add_option("--model", o->model, "Model of the live steps");
  cmd->add_option("--system-prompt-file", o->system_prompt_file, "System prompt of the live steps, from this file");
  cmd->add_option("--answer", o->answers, "Another answer at an approval: STEP=approve or STEP=reject[:feedback]");
  cmd->add_option("--idempotency-key", o->idempotency_key, "A repeat with this key names the same fork");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] { exit_code = fork_run(*flags, *o, "fork"); });
}

void add_rerun(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto o = std::make_shared<fork_options>();
  auto* cmd = app.add_subcommand("rerun", "Run a recorded run again from a step: a fork with nothing changed");
  cmd->add_option("run", o->run, "Run id")->required();
  cmd->add_option("--from-step", o->at_step, "Model steps kept from the recorded run; the next goes live")->required();
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] { exit_code = fork_run(*flags, *o, "rerun"); });
}

void add_replay(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  flags->timeout_ms = 60'000;
  auto run = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("replay", "Drive a recorded run through the run machine again, with no model and no tools, "
                                           "and check that the same decisions come out");
  cmd->add_option("run", *run, "Run id")->required();
  cmd->add_flag("--json", *json, "Print JSON");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    if (!run_id{*run}.valid()) return void(exit_code = fail("replay", "'" + *run + "' is not a keel run id"));
    auto c = open_client(*flags, "replay");
    if (!c) return void(exit_code = fail("replay", c.error().message));
    auto r = c->replay(*run);
    if (!r) return void(exit_code = fail("replay", r.error().message));
    bool same = r->value("same", false);
    exit_code = same ? 0 : 1;
    if (*json) {
      std::cout << r->dump(2) << "\n";
      return;
    }
    std::cout << "Run " << *run << ": " << (same ? "the same decisions" : "the decisions differ") << " ("
              << r->value("model_steps", 0) << " model steps, " << r->value("tool_calls", 0) << " tool calls, "
              << r->value("approvals", 0) << " approvals given; " << r->value("decisions", 0) << " decisions compared)\n";
    if (r->contains("difference") && (*r)["difference"].is_object()) {
      const auto& d = (*r)["difference"];
      std::cout << "  decision " << d.value("index", 0) + 1 << ":\n    recorded: " << d.value("recorded", std::string{})
                << "\n    replayed: " << d.value("replayed", std::string{}) << "\n";
    }
    if (!r->value("stopped", std::string{}).empty()) std::cout << "  checked in part: " << r->value("stopped", std::string{}) << "\n";
  });
}

struct bulk_options {
  std::string action, status, agent, feedback;
  std::int64_t limit = 1000;
  bool yes = false, preview = false, json = false;
};

int bulk(const client_flags& flags, const bulk_options& o) {
  if (!is_bulk_action(o.action)) return fail("bulk", "'" + o.action + "' is not an action: " + std::string(bulk_actions_text));
  if (!o.status.empty() && !bulk_applies(o.action, o.status))
    return fail("bulk", o.action + " does not apply to " + o.status + " runs");
  if (o.limit < 1 || o.limit > static_cast<std::int64_t>(bulk_runs_max))
    return fail("bulk", "--limit is 1 to " + std::to_string(bulk_runs_max));
  auto c = open_client(flags, "bulk");
  if (!c) return fail("bulk", c.error().message);
  value filter{{"limit", bulk_runs_max}};
  if (!o.status.empty()) filter["status"] = o.status;
  else if (o.action == "retry") filter["status"] = "failed";
  else if (o.action != "cancel") filter["status"] = "suspended";
  if (!o.agent.empty()) filter["agent"] = o.agent;
  std::vector<std::string> missing;
  auto list = c->runs(filter, &missing);
  if (!list) return fail("bulk", list.error().message);
  for (const auto& id : missing)
    std::cerr << "keel bulk: orchestrator " << id << " did not answer in time; its runs are not included\n";
  std::vector<value> chosen;
  for (auto& r : *list)
    if (bulk_applies(o.action, r.value("status", std::string{})) && chosen.size() < static_cast<std::size_t>(o.limit))
      chosen.push_back(std::move(r));
  if (chosen.empty()) {
    std::cout << "No runs to " << o.action << ".\n";
    return 0;
  }
  std::cout << "These " << chosen.size() << " runs would be " << (o.action == "cancel" ? "cancelled" : o.action == "retry" ? "retried" : o.action == "approve" ? "approved" : "rejected") << ":\n";
  for (const auto& r : chosen) {
    std::cout << "  " << std::left << std::setw(32) << r.value("run_id", std::string{}) << std::setw(16) << r.value("agent", std::string{})
              << std::setw(11) << r.value("status", std::string{});
    if (r.contains("waiting") && r["waiting"].is_object()) std::cout << r["waiting"].value("step_key", std::string{});
    std::cout << "\n";
  }
  if (o.preview) return 0;
  if (!o.yes) {
    std::cout << "Go on? [y/N] " << std::flush;
    std::string answer;
    if (!std::getline(std::cin, answer) || (answer != "y" && answer != "Y" && answer != "yes")) {
      std::cout << "Nothing done.\n";
      return 0;
    }
  }
  std::size_t done = 0, failed = 0;
  for (const auto& r : chosen) {
    auto id = r.value("run_id", std::string{});
    keel::error problem;
    bool ok = true;
    if (o.action == "cancel") {
      auto x = c->cancel(id, o.feedback.empty() ? "cancelled in bulk" : o.feedback);
      if (!x) ok = false, problem = x.error();
    } else if (o.action == "retry") {
      auto x = c->retry(id);
      if (!x) ok = false, problem = x.error();
    } else {
      // The step it waits on now (it may have been answered since the preview: then refused).
      auto now = c->show(id);
      std::string key = now && now->contains("waiting") && (*now)["waiting"].is_object()
                          ? (*now)["waiting"].value("step_key", std::string{}) : std::string{};
      std::string shown = r.contains("waiting") && r["waiting"].is_object() ? r["waiting"].value("step_key", std::string{}) : "";
      if (!now) ok = false, problem = now.error();
      else if (key.empty()) ok = false, problem = keel::error{errc::conflict, "it no longer waits for an answer"};
      else if (key != shown)
        ok = false, problem = keel::error{errc::conflict, "it waits on " + key + " now, not on " + shown + " as shown: left alone"};
      else {
        wire::resume_request request;
        request.run_id = id;
        request.step_key = key;
        request.approved = o.action == "approve";
        request.feedback = o.feedback;
        auto x = c->resume(request);
        if (!x) ok = false, problem = x.error();
      }
    }
    if (ok) ++done;
    else ++failed;
    std::cout << "  " << id << ": " << (ok ? "done" : "not done: " + problem.message) << "\n";
  }
  std::cout << done << " done, " << failed << " not done\n";
  return failed ? 1 : 0;
}

void add_bulk(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto o = std::make_shared<bulk_options>();
  auto* cmd = app.add_subcommand("bulk", "One action on the runs a filter chooses: shown first, done once confirmed");
  cmd->add_option("action", o->action, "cancel, retry, approve or reject")->required();
  cmd->add_option("--status", o->status, "Only runs of this status");
  cmd->add_option("--agent", o->agent, "Only this agent's runs");
  cmd->add_option("--feedback", o->feedback, "Feedback with approve or reject; the reason of a cancel");
  cmd->add_option("--limit", o->limit, "At most this many runs (up to 1000)");
  cmd->add_flag("--preview", o->preview, "Only show the runs it would touch");
  cmd->add_flag("--yes", o->yes, "Do it without asking");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] { exit_code = bulk(*flags, *o); });
}

} // namespace

void add_fork_commands(CLI::App& app, int& exit_code) {
  add_fork(app, exit_code);
  add_rerun(app, exit_code);
  add_replay(app, exit_code);
  add_bulk(app, exit_code);
}

} // namespace keel::cli
