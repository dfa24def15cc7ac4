#include "actors/worker.hpp"

#include "actors/messages.hpp"
#include "broker/connection.hpp"
#include "llm/provider.hpp"
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"
#include "runtime/log.hpp"
#include "sandbox/confinement.hpp"
#include "sandbox/tools.hpp"
#include "runtime/step_trace.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <filesystem>
#include <map>
#include <thread>

namespace keel::actors {

using wire::value;

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("actors");
  return l;
}

struct worker_shared {
  const config::node_config* config_ptr = nullptr;
  const config::node_config& config() const { return *config_ptr; }
  std::string node_id;
  broker::subjects subjects;
  std::shared_ptr<broker::connection> nats;
  std::map<std::string, std::unique_ptr<llm::provider>> providers;  // the agents' own, made at start
  std::map<std::string, std::shared_ptr<const std::vector<value>>> tool_lists;  // the agents' tool schemas
  wire::limits limits;
  // Providers a run asked for instead (keel run --provider), made on first use.
  std::mutex overrides_mutex;
  std::map<std::string, std::unique_ptr<llm::provider>> overrides;

  result<llm::provider*> provider_for(const config::agent_config& agent, const std::string& kind,
                                      const std::string& model) {
    if (kind.empty() || kind == agent.provider) return providers.at(agent.id).get();
    std::lock_guard lock{overrides_mutex};
    auto key = agent.id + "/" + kind;
    if (auto it = overrides.find(key); it != overrides.end()) return it->second.get();
    config::agent_config other = agent;
    other.provider = kind;
    if (!model.empty()) other.model = model;  // each request names its model anyway
    auto made = llm::make_provider(other);
    if (!made) return made.error();
    return (overrides[key] = std::move(*made)).get();
  }
};

// The workspace of a run: the root itself (scope agent), one per session, or one per run.
// Names that become directories are checked here too, whoever sent the task.
result<std::string> workspace_of(const config::agent_config& agent, const wire::task& t,
                                 const std::string& session_id) {
  if (agent.workspace_scope == "agent") return agent.workspace;
  if (agent.workspace_scope == "session" && !session_id.empty()) {
    if (!is_valid_session_id(session_id))
      return make_error(errc::invalid_argument, "the session id is not a valid name; no workspace is made for it");
    return agent.workspace + "/sessions/" + session_id;
  }
  if (!is_valid_session_id(t.run_id))  // the same character set, the same bound
    return make_error(errc::invalid_argument, "the run id is not a valid name; no workspace is made for it");
  return agent.workspace + "/runs/" + t.run_id;
}

result<value> run_llm(worker_shared& shared, const config::agent_config& agent, wire::task& t) {
  value& p = t.payload;
  if (!p.is_object()) return make_error(errc::malformed, "an llm task's payload must be a map");
  llm::completion_request request;
  request.model = p.value("model", agent.model);
  request.system_prompt = p.value("system_prompt", agent.system_prompt);
  // The whole conversation: read straight from the packed bytes the task brought (no JSON), or
  // moved out of the payload when it came as JSON.
  auto given = p.find("messages");
  auto messages = !t.payload_messages.empty() ? llm::messages_from_packed(t.payload_messages, shared.limits)
                  : given == p.end()          ? llm::messages_from_value(value())
                                              : llm::messages_from_value(std::move(*given));
  if (!messages) return messages.error();
  request.messages = std::move(*messages);
  request.tools = shared.tool_lists.at(agent.id);
  request.task_id = keel::task_id{t.run_id, t.step, t.attempt}.to_string();
  // Text as it streams in, for whoever watches the run (not stored: the answer is).
  std::string deltas = shared.subjects.base() + ".runs." + t.run_id + ".deltas";
  request.on_text_delta = [&shared, &t, deltas](const std::string& text) {
    (void)shared.nats->publish(deltas, wire::pack(value{{"v", wire::protocol_version}, {"type", "llm_delta"},
                                                       {"run_id", t.run_id}, {"step", t.step}, {"text", text}}));
  };
  auto chosen = shared.provider_for(agent, p.value("provider", std::string{}), request.model);
  if (!chosen) return chosen.error();
  auto completion = (*chosen)->complete(request);
  if (!completion) return completion.error();
  return llm::to_value(*completion);
}

result<value> run_tool(const config::agent_config& agent, const wire::task& t) {
  const value& p = t.payload;
  if (!p.is_object() || !p.contains("tool") || !p["tool"].is_string())
    return make_error(errc::malformed, "a tool task needs a tool name");
  auto root = workspace_of(agent, t, p.value("session_id", std::string{}));
  if (!root) return root.error();
  auto ws = sandbox::workspace::open(*root);
  if (!ws) return ws.error();
  sandbox::tool_request request;
  request.tool = p["tool"].get<std::string>();
  request.arguments = p.contains("arguments") ? p["arguments"] : value::object();
  request.approved = p.value("approved", false);
  if (p.contains("allow_rules")) request.allow_rules = sandbox::allow_rules_from_value(p["allow_rules"]);
  if (p.contains("allow_patterns")) {  // exact commands, as runs recorded them before rules had kinds
    auto exact = sandbox::allow_rules_from_value(p["allow_patterns"]);
    request.allow_rules.insert(request.allow_rules.end(), exact.begin(), exact.end());
  }
  if (p.contains("approved_form") && p["approved_form"].is_object()) request.approved_form = p["approved_form"];
  request.task_id = keel::task_id{t.run_id, t.step, t.attempt}.to_string();
  auto outcome = sandbox::run_tool(*ws, sandbox::policy_from_config(agent), request);
  const char* status = outcome.kind == sandbox::outcome_kind::done ? "done"
                       : outcome.kind == sandbox::outcome_kind::needs_approval ? "needs_approval"
                                                                              : "refused";
  value out{{"status", status}, {"is_error", outcome.is_error}};
  if (outcome.kind == sandbox::outcome_kind::needs_approval) out["form"] = outcome.form;
  else out["result"] = outcome.result;
  if (!outcome.message.empty()) out["message"] = outcome.message;
  return out;
}

void execute(worker_shared& shared, wire::task& t) {
  wire::task_result r;
  r.run_id = t.run_id;
  r.step = t.step;
  r.attempt = t.attempt;
  r.worker = shared.node_id;
  const auto* agent = shared.config().find_agent(t.agent);
  result<value> outcome = make_error(errc::not_found, "worker " + shared.node_id +
                                                         " does not serve agent '" + t.agent + "'");
  if (agent) {
    try {
      outcome = t.kind == wire::task_kind::llm ? run_llm(shared, *agent, t) : run_tool(*agent, t);
    } catch (const std::exception& e) {
      outcome = make_error(errc::internal, std::string("task failed: ") + e.what());
    }
  }
  if (outcome) {
    r.payload = std::move(*outcome);
  } else {
    r.ok = false;
    r.failure = outcome.error();
    logger()->warn("run {}: task {} failed: {}", t.run_id, t.step, outcome.error().message);
  }
  step_trace::mark(step_trace::task_executed);
  if (auto sent = shared.nats->publish(t.reply_to, wire::encode(r)); !sent)
    logger()->warn("run {}: result of task {} not sent: {}", t.run_id, t.step, sent.error().message);
}

// How many task threads a worker may have, across its queues.
struct thread_budget {
  std::mutex mutex;
  std::size_t threads = 0;
  std::size_t threads_max = 1;
  bool take() {
    std::lock_guard lock{mutex};
    if (threads >= threads_max) return false;
    ++threads;
    return true;
  }
  void give_back() {
    std::lock_guard lock{mutex};
    --threads;
  }
};

// Tasks of one queue, run on the threads that receive them: every idle thread of the queue waits
// on its subscription (the NATS client lets several wait at once and wakes one per message), so a
// task goes from the connection's reader to the thread that runs it with nothing in between, and
// no other thread is woken on its way. A thread that takes a task while no other waits starts one
// more (within the budget), so the next task never waits behind a long one while a thread could
// take it. Threads are kept once made, and never joined: a stop must not wait for a running tool.
class task_intake : public std::enable_shared_from_this<task_intake> {
public:
  using runner = std::function<void(broker::message&&)>;
  task_intake(std::shared_ptr<broker::pull_subscription> sub, std::shared_ptr<thread_budget> budget,
              runner run)
    : sub_(std::move(sub)), budget_(std::move(budget)), run_(std::move(run)) {}

  // Starts the first thread; false when the budget has none left.
  bool start() { return add_thread(); }
  void stop() {
    stopping_ = true;
    (void)sub_->unsubscribe();  // wakes every waiting thread
  }

private:
  bool add_thread() {
    if (!budget_->take()) return false;
    std::thread([self = shared_from_this()] { self->loop(); }).detach();
    return true;
  }
  void loop() {
    while (!stopping_) {
      waiting_.fetch_add(1);
      auto next = sub_->next(1000);
      bool alone = waiting_.fetch_sub(1) == 1;
      if (!next) break;  // unsubscribed or the connection closed
      if (!*next) continue;
      if (alone && !stopping_) add_thread();  // none left waiting: one more, if the budget allows
      run_(std::move(**next));
    }
    budget_->give_back();
  }

  std::shared_ptr<broker::pull_subscription> sub_;
  std::shared_ptr<thread_budget> budget_;
  runner run_;
  std::atomic<bool> stopping_ = false;
  std::atomic<std::size_t> waiting_ = 0;  // threads waiting on the subscription
};

// Tasks in progress, by task id, with the acknowledgement each would send.
struct running_tasks {
  struct entry {
    wire::task_accepted accepted;
    std::string reply_to;
    std::int64_t started_ms = 0;
    bool acknowledged = false;
  };
  std::mutex mutex;
  std::unordered_map<std::string, entry> tasks;
};

// A task still running after this is acknowledged; one done sooner needs no acknowledgement,
// since its result says it all.
constexpr std::int64_t accept_after_ms = 100;
constexpr std::chrono::milliseconds sweep_every{50};

// Every 50 ms, acknowledges the tasks running for 100 ms or more. One timer for all tasks: a
// timer per task woke the clock thread twice per step.
caf::behavior acknowledger(caf::event_based_actor* self, std::shared_ptr<worker_shared> shared,
                           std::shared_ptr<running_tasks> running) {
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      std::vector<std::pair<std::string, wire::task_accepted>> due;
      auto now = steady_ms();
      {
        std::lock_guard lock{running->mutex};
        for (auto& [id, e] : running->tasks) {
          if (e.acknowledged || now - e.started_ms < accept_after_ms) continue;
          e.acknowledged = true;
          due.emplace_back(e.reply_to, e.accepted);
        }
      }
      for (const auto& [reply_to, accepted] : due)
        if (auto sent = shared->nats->publish(reply_to, wire::encode(accepted)); !sent)
          logger()->warn("run {}: task {} not acknowledged: {}", accepted.run_id, accepted.step, sent.error().message);
      self->delayed_send(self, sweep_every, tick_atom::value);
    },
  };
}

} // namespace

struct worker::impl {
  std::shared_ptr<worker_shared> shared;
  std::vector<std::shared_ptr<task_intake>> intakes;
  std::shared_ptr<running_tasks> running;
  caf::actor actor;
  bool stopped = false;
};

worker::worker(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
worker::~worker() { stop(); }

result<std::unique_ptr<worker>> worker::start(caf::actor_system& system,
                                              const config::node_config& config,
                                              const std::string& node_id,
                                              std::shared_ptr<broker::connection> nats) {
  auto shared = std::make_shared<worker_shared>();
  shared->config_ptr = &config;
  shared->node_id = node_id;
  shared->subjects = broker::subjects{config.prefix, config.ns};
  shared->nats = std::move(nats);
  shared->limits.message_bytes_max = static_cast<std::size_t>(config.message_bytes_max);
  for (const auto& agent : config.agents) {
    auto provider = llm::make_provider(agent);
    if (!provider) return provider.error();
    shared->providers[agent.id] = std::move(*provider);
    std::vector<value> definitions;
    for (const auto& name : agent.tools) definitions.push_back(sandbox::tool_definition(name));
    shared->tool_lists[agent.id] = std::make_shared<const std::vector<value>>(std::move(definitions));
    if (agent.sandbox_env == "bwrap")
      if (auto available = sandbox::bwrap_available(); !available)
        return make_error(errc::config, "agents." + agent.id + ".sandbox.env: " + available.error().message);
    if (agent.sandbox_env == "local" && sandbox::landlock_abi() < 1)
      logger()->warn("agent {}: this kernel has no Landlock: local commands can write outside the workspace "
                     "(use sandbox.env = \"bwrap\", or a kernel with Landlock)", agent.id);
    if (auto program = sandbox::seccomp_program(); !program)
      return make_error(errc::config, "agents." + agent.id + ".sandbox: " + program.error().message);
    std::error_code ec;
    std::filesystem::create_directories(agent.workspace, ec);
    if (ec)
      return make_error(errc::config, "agents." + agent.id + ".sandbox.workspace: cannot create " +
                                        agent.workspace + ": " + ec.message());
  }
  auto state = std::make_unique<impl>();
  state->shared = shared;
  auto budget = std::make_shared<thread_budget>();
  budget->threads_max = std::max<std::size_t>(1, static_cast<std::size_t>(config.worker_tasks_max));
  state->running = std::make_shared<running_tasks>();
  state->actor = system.spawn(acknowledger, shared, state->running);
  std::vector<std::string> queues;
  for (const auto& agent : config.agents)
    if (std::find(queues.begin(), queues.end(), agent.queue) == queues.end()) queues.push_back(agent.queue);
  for (const auto& queue : queues) {
    auto running = state->running;
    auto sub = shared->nats->subscribe_pull(shared->subjects.tasks(queue), "workers");
    if (!sub) return sub.error();
    auto intake = std::make_shared<task_intake>(std::move(*sub), budget, [shared, running](broker::message&& m) {
      step_trace::mark(step_trace::task_received);
      auto t = wire::decode_task_keeping_conversation(m.data, shared->limits);
      if (!t) {
        logger()->warn("a task was dropped: {}", t.error().message);
        return;
      }
      auto id = keel::task_id{t->run_id, t->step, t->attempt}.to_string();
      {
        std::lock_guard lock{running->mutex};
        running->tasks.emplace(id, running_tasks::entry{{t->run_id, t->step, t->attempt, shared->node_id},
                                                        t->reply_to, steady_ms(), false});
      }
      step_trace::mark(step_trace::task_decoded);
      execute(*shared, *t);
      step_trace::mark(step_trace::result_published);
      std::lock_guard lock{running->mutex};
      running->tasks.erase(id);
    });
    if (!intake->start())
      return make_error(errc::config, "limits.worker_tasks_max (" + std::to_string(budget->threads_max) +
                                        ") is below the number of worker queues (" +
                                        std::to_string(queues.size()) + ")");
    state->intakes.push_back(std::move(intake));
  }
  return std::unique_ptr<worker>(new worker(std::move(state)));
}

void worker::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  for (auto& intake : impl_->intakes) intake->stop();
  caf::anon_send_exit(impl_->actor, caf::exit_reason::user_shutdown);
}

} // namespace keel::actors
