// The run commands: invoke, run (interactive, with approval prompts), resume/approve/reject,
// cancel, events, runs, show.
#include "apps/keel/client.hpp"
#include "apps/keel/commands.hpp"
#include "apps/keel/render.hpp"
#include "runtime/clock.hpp"

#include <CLI/CLI.hpp>

#include <iomanip>
#include <mutex>
#include <optional>
#include <map>
#include <set>
#include <thread>
#include <iostream>
#include <unistd.h>

namespace keel::cli {

using wire::value;

namespace {

// Exit codes: 0 done, 1 failed (or error), 3 the run waits for an answer nobody gave here.
int fail(const std::string& command, const keel::error& e) {
  std::cerr << "keel " << command << ": " << e.message << "\n";
  return 1;
}

result<client> open_client(const client_flags& flags, const std::string& name) {
  auto c = flags.resolve();
  if (!c) return c.error();
  return client::connect(*c, "keel " + name, flags.timeout_ms);
}

value parse_input(const std::string& text) {
  // A task is text; JSON given on purpose (starting with { or [) is passed as it is.
  if (!text.empty() && (text[0] == '{' || text[0] == '[')) {
    auto parsed = value::parse(text, nullptr, false);
    if (!parsed.is_discarded()) return parsed;
  }
  return text;
}

struct invoke_options {
  std::string agent;
  std::string input;
  std::string idempotency_key;
  std::string session_id;
  std::string provider;
  std::string model;
  std::string concurrency_key;
};

void add_invoke_options(CLI::App& cmd, invoke_options& o) {
  cmd.add_option("--idempotency-key", o.idempotency_key, "Repeat-safe key: the same key gives the same run");
  cmd.add_option("--session", o.session_id, "Session id (runs of a session share a workspace)");
  cmd.add_option("--provider", o.provider, "Run on another provider for this run")
    ->check(CLI::IsMember({"scripted", "anthropic", "openai"}));
  cmd.add_option("--model", o.model, "Run on another model for this run");
  cmd.add_option("--concurrency-key", o.concurrency_key,
                 "The run's key in its agent's run queue (at most key_concurrency runs of one key at once)");
}

result<wire::invoke_reply> do_invoke(client& c, const invoke_options& o) {
  wire::invoke_request invoke{o.agent, parse_input(o.input), o.idempotency_key, o.session_id, o.provider, o.model};
  invoke.concurrency_key = o.concurrency_key;
  return c.invoke(invoke);
}

// Asks at a suspension; returns false when no answer can be had (no input left).
// Who answers a step from this terminal: user@host, as the run's events will show it.

bool ask(const value& data, bool yes, wire::resume_request& answer) {
  std::cout << render_approval(data) << std::flush;
  if (yes) {
    std::cout << "y (--yes)\n";
    answer.approved = true;
    return true;
  }
  std::string line;
  while (true) {
    if (!std::getline(std::cin, line)) {
      std::cout << "\n";
      return false;
    }
    if (line == "y" || line == "Y" || line == "yes") {
      answer.approved = true;
      return true;
    }
    // Remembering is offered for commands: the exact command, or (for a simple one) its words.
    const value& context = data["form"].value("context", value::object());
    bool is_exec = data["form"].value("tool", std::string{}) == "exec" && data["form"].value("kind", std::string{}) != "tool";
    if (is_exec && (line == "a" || line == "always")) {
      answer.approved = true;
      answer.always = "exact";
      return true;
    }
    if (is_exec && line == "p" && context.contains("prefix")) {
      answer.approved = true;
      answer.always = "prefix";
      return true;
    }
    if (line == "n" || line == "N" || line == "no") {
      answer.approved = false;
      std::cout << "  Feedback for the agent (optional): " << std::flush;
      if (std::getline(std::cin, line)) answer.feedback = line;
      return true;
    }
    std::cout << "  Please answer y or n: " << std::flush;
  }
}

// Prints a run's events to its end, asking at each suspension (when `interactive`).
// Streamed model text (runs.<run>.deltas), printed as it arrives. `keel run` listens before it
// invokes, so no piece is missed; pieces that come before the run id is known, or before their
// step's llm_step_started event is shown, wait for it: text then always follows what led to it.
// When the recorded answer comes, it is printed only if the stream did not show all of it.
class live_text {
public:
  explicit live_text(client& c) {
    auto sub = c.nats().subscribe(c.subjects().base() + ".runs.*.deltas", "", [this](broker::message&& m) {
      auto v = wire::unpack(m.data);
      if (!v || !v->is_object() || v->value("type", std::string{}) != "llm_delta") return;
      std::lock_guard lock{mutex};
      auto run = v->value("run_id", std::string{});
      auto piece = std::make_pair(v->value("step", std::uint64_t{0}), v->value("text", std::string{}));
      if (v->value("restart", false)) {
        // The model's stream broke off and the step is asked again: what was shown is dropped.
        if (run != run_id_) return;
        held_.erase(piece.first);
        if (streamed.count(piece.first)) {
          std::cout << "\n  (the model's answer broke off; asking again)\n" << std::flush;
          streamed.erase(piece.first);
          open_line = false;
        }
        return;
      }
      if (run_id_.empty()) {
        if (early_.size() < 10'000) early_.emplace_back(run, piece);
      } else if (run == run_id_) {
        take(piece);
      }
    });
    if (sub) subscription_ = std::move(*sub);
  }
  void follow(const std::string& run_id) {
    std::lock_guard lock{mutex};
    run_id_ = run_id;
    for (const auto& [run, piece] : early_)
      if (run == run_id) take(piece);
    early_.clear();
  }
  // The step's llm_step_started event was shown: its text may follow. Call with `mutex` held.
  void started(std::uint64_t step) {
    started_.insert(step);
    if (auto held = held_.find(step); held != held_.end()) {
      print({step, held->second});
      held_.erase(held);
    }
  }

  std::mutex mutex;  // held while anything prints
  std::map<std::uint64_t, std::string> streamed;  // by task step: the text printed live
  bool open_line = false;

private:
  void take(const std::pair<std::uint64_t, std::string>& piece) {
    if (started_.count(piece.first)) print(piece);
    else held_[piece.first] += piece.second;
  }
  void print(const std::pair<std::uint64_t, std::string>& piece) {
    if (!streamed.count(piece.first)) std::cout << "  model> ";
    streamed[piece.first] += piece.second;
    std::cout << piece.second << std::flush;
    open_line = true;
  }
  std::string run_id_;
  std::vector<std::pair<std::string, std::pair<std::uint64_t, std::string>>> early_;
  std::set<std::uint64_t> started_;               // steps whose start was shown
  std::map<std::uint64_t, std::string> held_;     // text of steps not shown as started yet
  std::unique_ptr<broker::subscription> subscription_;
};

int follow(client& c, const std::string& run_id, bool interactive, bool yes, bool json,
           std::int64_t idle_timeout_ms, live_text* live) {
  auto stream = event_stream::open(c, run_id);
  if (!stream) return fail("events", stream.error());
  std::optional<live_text> own;
  if (!live && !json) live = &own.emplace(c);
  if (live) live->follow(run_id);
  std::uint64_t model_task_step = 0;
  auto idle_since = steady_ms();
  while (true) {
    auto next = (*stream)->next(500);
    if (!next) return fail("events", next.error());
    if (!*next) {
      if (idle_timeout_ms > 0 && steady_ms() - idle_since > idle_timeout_ms) return 0;
      continue;
    }
    idle_since = steady_ms();
    const wire::event& e = **next;
    if (json || !live) {
      std::cout << wire::to_value(e).dump() << "\n" << std::flush;
    } else {
      std::lock_guard lock{live->mutex};
      if (e.event_type == "llm_step_started") model_task_step = e.data.value("task_step", std::uint64_t{0});
      auto shown = live->streamed.find(model_task_step);
      bool already_shown = e.event_type == "llm_step_completed" && shown != live->streamed.end() &&
                           shown->second == e.data.value("text", std::string{});
      auto text = already_shown ? std::string{} : render_event(e);
      // An event that prints nothing (a step started) must not break a line of streamed text:
      // with the worker on another NATS server, it may come after the first pieces.
      if (live->open_line && (!text.empty() || e.event_type == "llm_step_completed")) {
        std::cout << "\n";
        live->open_line = false;
      }
      std::cout << text << std::flush;
      if (e.event_type == "llm_step_started") live->started(model_task_step);
    }
    if (e.event_type == "suspend" && interactive) {
      wire::resume_request answer;
      answer.run_id = run_id;
      answer.step_key = e.data.value("step_key", std::string{});
      if (!ask(e.data, yes, answer)) {
        std::cout << "No answer on standard input. The run waits; answer it later with\n"
                  << "  keel approve " << run_id << " " << answer.step_key << "\n"
                  << "  keel reject " << run_id << " " << answer.step_key << " --feedback \"...\"\n";
        return 3;
      }
      auto replied = c.resume(answer);
      if (!replied) return fail("run", replied.error());
    }
    if (is_final_event(e.event_type)) return e.event_type == "run_completed" ? 0 : 1;
  }
}

void add_invoke(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto o = std::make_shared<invoke_options>();
  auto* cmd = app.add_subcommand("invoke", "Start a run and print its id");
  cmd->add_option("agent", o->agent, "Agent id")->required();
  cmd->add_option("input", o->input, "The task (text, or JSON)")->required();
  add_invoke_options(*cmd, *o);
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    auto c = open_client(*flags, "invoke");
    if (!c) return void(exit_code = fail("invoke", c.error()));
    auto reply = do_invoke(*c, *o);
    if (!reply) return void(exit_code = fail("invoke", reply.error()));
    std::cout << reply->run_id << "\n";
  });
}

void add_run(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto o = std::make_shared<invoke_options>();
  auto yes = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("run", "Start a run, follow it, and answer its approval prompts");
  cmd->add_option("agent", o->agent, "Agent id")->required();
  cmd->add_option("input", o->input, "The task (text, or JSON)")->required();
  cmd->add_flag("-y,--yes", *yes, "Approve every request (for scripts)");
  add_invoke_options(*cmd, *o);
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    auto c = open_client(*flags, "run");
    if (!c) return void(exit_code = fail("run", c.error()));
    live_text live(*c);  // listening before the run starts: no streamed piece is missed
    auto reply = do_invoke(*c, *o);
    if (!reply) return void(exit_code = fail("run", reply.error()));
    // Where a browser shows the same run (when `keel dev` or the context names a dashboard).
    if (auto where = flags->resolve(); where && !where->dashboard_url.empty())
      std::cout << "Dashboard: " << where->dashboard_url << "/runs/" << reply->run_id << "\n";
    exit_code = follow(*c, reply->run_id, true, *yes, false, 0, &live);
  });
}

void add_resume(CLI::App& app, int& exit_code) {
  for (const char* name : {"resume", "approve", "reject"}) {
    auto flags = std::make_shared<client_flags>();
    auto r = std::make_shared<wire::resume_request>();
    auto approve = std::make_shared<bool>(false);
    auto reject = std::make_shared<bool>(false);
    std::string verb = name;
    auto* cmd = app.add_subcommand(name, verb == "resume" ? "Answer a waiting step"
                                         : verb == "approve" ? "Approve a waiting step"
                                                             : "Reject a waiting step");
    cmd->add_option("run", r->run_id, "Run id")->required();
    cmd->add_option("step", r->step_key, "Step key (from the suspend event)")->required();
    if (verb == "resume") {
      auto* a = cmd->add_flag("--approve", *approve, "Approve");
      auto* b = cmd->add_flag("--reject", *reject, "Reject");
      a->excludes(b);
    }
    cmd->add_option("--feedback", r->feedback, "Told to the model with a rejection");
    cmd->add_flag("--always", r->always_allow, "Remember this exact command for the rest of the run");
    cmd->add_option("--always-as", r->always,
                    "Remember it: exact (this command byte for byte) or prefix (simple commands "
                    "that start with the same words)")
      ->check(CLI::IsMember({"exact", "prefix"}));
    cmd->add_option("--always-for", r->always_scope, "Remember it for the run or the whole session")
      ->check(CLI::IsMember({"run", "session"}));
    add_client_flags(*cmd, *flags);
    cmd->callback([=, &exit_code] {
      if (verb == "resume" && !*approve && !*reject) {
        std::cerr << "keel resume: say --approve or --reject\n";
        exit_code = 2;
        return;
      }
      r->approved = verb == "approve" || (verb == "resume" && *approve);
      if (r->always.empty() && r->always_allow) r->always = "exact";
      if (r->always.empty() && !r->always_scope.empty()) r->always = "exact";
      auto c = open_client(*flags, verb);
      if (!c) return void(exit_code = fail(verb, c.error()));
      auto reply = c->resume(*r);
      if (!reply) return void(exit_code = fail(verb, reply.error()));
      std::cout << (r->approved ? "Approved" : "Rejected") << " step " << reply->step_key << " of run "
                << reply->run_id << (reply->duplicate ? " (it had been answered already)" : "") << "\n";
    });
  }
}

void add_cancel(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto run = std::make_shared<std::string>();
  auto reason = std::make_shared<std::string>("cancelled from the command line");
  auto* cmd = app.add_subcommand("cancel", "Cancel a run");
  cmd->add_option("run", *run, "Run id")->required();
  cmd->add_option("--reason", *reason, "Why");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    auto c = open_client(*flags, "cancel");
    if (!c) return void(exit_code = fail("cancel", c.error()));
    auto r = c->cancel(*run, *reason);
    if (!r) return void(exit_code = fail("cancel", r.error()));
    std::cout << "Run " << *run << " is " << r->value("status", std::string{}) << "\n";
  });
}

void add_retry(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto run = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("retry", "Go on with a failed run from the step that failed");
  cmd->add_option("run", *run, "Run id")->required();
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    auto c = open_client(*flags, "retry");
    if (!c) return void(exit_code = fail("retry", c.error()));
    auto r = c->retry(*run);
    if (!r) return void(exit_code = fail("retry", r.error()));
    std::cout << "Run " << *run << " is " << r->value("status", std::string{}) << " again\n";
  });
}

void add_wait(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  flags->timeout_ms = 600'000;
  auto run = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("wait", "Wait until a run is suspended or has ended, then show it; the exit "
                                         "code says how it stands (0 completed, 1 failed or cancelled, "
                                         "3 waiting for approval, 4 still running or in line at the timeout, 5 waiting for "
                                         "a time or an event)");
  cmd->add_option("run", *run, "Run id")->required();
  cmd->add_flag("--json", *json, "Print JSON");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    auto c = open_client(*flags, "wait");
    if (!c) return void(exit_code = fail("wait", c.error()));
    // A run in line is not stopped: it starts when its run queue admits it, so the wait goes on.
    auto until = steady_ms() + flags->timeout_ms;
    auto r = c->wait(*run);
    while (r && r->value("status", std::string{}) == "queued" && steady_ms() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      r = c->wait(*run);
    }
    if (r && r->value("status", std::string{}) == "queued") {
      std::cerr << "keel wait: run " << *run << " is still in line in its run queue\n";
      return void(exit_code = 4);
    }
    if (!r && r.error().code == errc::timeout) {
      fail("wait", r.error());
      return void(exit_code = 4);
    }
    if (!r) return void(exit_code = fail("wait", r.error()));
    if (*json) std::cout << r->dump(2) << "\n";
    else std::cout << render_summary(*r);
    auto status = r->value("status", std::string{});
    exit_code = status == "completed" ? 0 : status == "suspended" ? 3 : status == "waiting" ? 5 : 1;
  });
}

void add_events(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto run = std::make_shared<std::string>();
  auto follow_flag = std::make_shared<bool>(false);
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("events", "Print a run's events: its history, then (--follow) live");
  cmd->add_option("run", *run, "Run id")->required();
  cmd->add_flag("-f,--follow", *follow_flag, "Keep printing until the run ends");
  cmd->add_flag("--json", *json, "One JSON event per line");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    auto c = open_client(*flags, "events");
    if (!c) return void(exit_code = fail("events", c.error()));
    if (*follow_flag) {
      int code = follow(*c, *run, false, false, *json, 0, nullptr);
      exit_code = code == 1 ? 0 : code;  // a failed run was still followed to its end
      return;
    }
    auto stream = event_stream::open(*c, *run);
    if (!stream) return void(exit_code = fail("events", stream.error()));
    while (true) {
      auto next = (*stream)->next(0);
      if (!next) return void(exit_code = fail("events", next.error()));
      if (!*next) break;
      if (*json) std::cout << wire::to_value(**next).dump() << "\n";
      else std::cout << render_event(**next);
    }
  });
}

void add_runs(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto status = std::make_shared<std::string>();
  auto agent = std::make_shared<std::string>();
  auto session = std::make_shared<std::string>();
  auto text = std::make_shared<std::string>();
  auto limit = std::make_shared<std::int64_t>(20);
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("runs", "List runs, newest first");
  cmd->add_option("--status", *status, "pending, queued, running, suspended, waiting, completed, failed or cancelled");
  cmd->add_option("--agent", *agent, "Only this agent's runs");
  cmd->add_option("--session", *session, "Only this session's runs");
  cmd->add_option("--text", *text, "Only runs whose input, output or error holds this text (any case)");
  cmd->add_option("--limit", *limit, "How many");
  cmd->add_flag("--json", *json, "Print JSON");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    auto c = open_client(*flags, "runs");
    if (!c) return void(exit_code = fail("runs", c.error()));
    value filter{{"limit", std::max<std::int64_t>(1, *limit)}};
    if (!status->empty()) filter["status"] = *status;
    if (!agent->empty()) filter["agent"] = *agent;
    if (!session->empty()) filter["session_id"] = *session;
    if (!text->empty()) filter["text"] = *text;
    std::vector<std::string> missing;
    auto list = c->runs(filter, &missing);
    if (!list) return void(exit_code = fail("runs", list.error()));
    for (const auto& id : missing)
      std::cerr << "keel runs: orchestrator " << id << " did not answer in time; its runs are not listed\n";
    // Each orchestrator gave its newest; of all of them, the newest.
    if (list->size() > static_cast<std::size_t>(std::max<std::int64_t>(1, *limit)))
      list->resize(static_cast<std::size_t>(std::max<std::int64_t>(1, *limit)));
    if (*json) {
      std::cout << value(*list).dump(2) << "\n";
      return;
    }
    if (list->empty()) {
      std::cout << "No runs.\n";
      return;
    }
    std::cout << std::left << std::setw(32) << "RUN" << std::setw(16) << "AGENT" << std::setw(11)
              << "STATUS" << std::setw(7) << "STEPS" << "WAITING\n";
    for (const auto& r : *list) {
      std::string waiting = r.contains("waiting") ? r["waiting"].value("step_key", std::string{}) : "-";
      std::cout << std::left << std::setw(32) << r.value("run_id", std::string{}) << std::setw(16)
                << r.value("agent", std::string{}) << std::setw(11) << r.value("status", std::string{})
                << std::setw(7) << r.value("steps", 0) << waiting << "\n";
    }
  });
}

void add_show(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<client_flags>();
  auto run = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("show", "Show a run: status, steps, tokens, output, what it waits for");
  cmd->add_option("run", *run, "Run id")->required();
  cmd->add_flag("--json", *json, "Print JSON");
  add_client_flags(*cmd, *flags);
  cmd->callback([=, &exit_code] {
    auto c = open_client(*flags, "show");
    if (!c) return void(exit_code = fail("show", c.error()));
    auto r = c->show(*run);
    if (!r) return void(exit_code = fail("show", r.error()));
    if (*json) std::cout << r->dump(2) << "\n";
    else std::cout << render_summary(*r);
  });
}

} // namespace

void add_run_commands(CLI::App& app, int& exit_code) {
  add_invoke(app, exit_code);
  add_run(app, exit_code);
  add_resume(app, exit_code);
  add_cancel(app, exit_code);
  add_retry(app, exit_code);
  add_signal(app, exit_code);
  add_schedules(app, exit_code);
  add_queues(app, exit_code);
  add_wait(app, exit_code);
  add_events(app, exit_code);
  add_runs(app, exit_code);
  add_show(app, exit_code);
}

} // namespace keel::cli
