#include "actors/worker.hpp"

#include "actors/messages.hpp"
#include "broker/connection.hpp"
#include "llm/provider.hpp"
#include "runtime/ids.hpp"
#include "runtime/log.hpp"
#include "sandbox/tools.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <deque>
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
  const config::node_config& config;
  std::string node_id;
  broker::subjects subjects;
  std::shared_ptr<broker::connection> nats;
  std::map<std::string, std::unique_ptr<llm::provider>> providers;
  wire::limits limits;
};

sandbox::policy policy_of(const config::agent_config& agent) {
  sandbox::policy p;
  p.exec = agent.exec_security == "allow-always" ? sandbox::exec_security::allow_always
           : agent.exec_security == "allowlist"  ? sandbox::exec_security::allowlist
                                                 : sandbox::exec_security::approval_always;
  p.allowlist = agent.allowlist;
  p.file_approval = agent.file_approval;
  p.outside = agent.path_restriction == "deny" ? sandbox::outside_access::deny
                                               : sandbox::outside_access::approve;
  p.exec_timeout_ms = agent.exec_timeout_ms;
  p.output_chars_max = static_cast<std::size_t>(agent.output_chars_max);
  return p;
}

// The workspace of a run: the root itself (scope agent), one per session, or one per run.
std::string workspace_of(const config::agent_config& agent, const wire::task& t,
                         const std::string& session_id) {
  if (agent.workspace_scope == "agent") return agent.workspace;
  if (agent.workspace_scope == "session" && !session_id.empty())
    return agent.workspace + "/sessions/" + session_id;
  return agent.workspace + "/runs/" + t.run_id;
}

result<value> run_llm(worker_shared& shared, const config::agent_config& agent, const wire::task& t) {
  const value& p = t.payload;
  if (!p.is_object()) return make_error(errc::malformed, "an llm task's payload must be a map");
  llm::completion_request request;
  request.model = p.value("model", agent.model);
  request.system_prompt = p.value("system_prompt", agent.system_prompt);
  auto messages = llm::messages_from_value(p.contains("messages") ? p["messages"] : value());
  if (!messages) return messages.error();
  request.messages = std::move(*messages);
  for (const auto& name : agent.tools) request.tools.push_back(sandbox::tool_definition(name));
  request.task_id = keel::task_id{t.run_id, t.step, t.attempt}.to_string();
  auto completion = shared.providers.at(agent.id)->complete(request);
  if (!completion) return completion.error();
  return llm::to_value(*completion);
}

result<value> run_tool(const config::agent_config& agent, const wire::task& t) {
  const value& p = t.payload;
  if (!p.is_object() || !p.contains("tool") || !p["tool"].is_string())
    return make_error(errc::malformed, "a tool task needs a tool name");
  auto ws = sandbox::workspace::open(workspace_of(agent, t, p.value("session_id", std::string{})));
  if (!ws) return ws.error();
  sandbox::tool_request request;
  request.tool = p["tool"].get<std::string>();
  request.arguments = p.contains("arguments") ? p["arguments"] : value::object();
  request.approved = p.value("approved", false);
  if (p.contains("allow_patterns") && p["allow_patterns"].is_array())
    for (const auto& pattern : p["allow_patterns"])
      if (pattern.is_string()) request.allow_patterns.push_back(pattern.get<std::string>());
  request.task_id = keel::task_id{t.run_id, t.step, t.attempt}.to_string();
  auto outcome = sandbox::run_tool(*ws, policy_of(agent), request);
  const char* status = outcome.kind == sandbox::outcome_kind::done ? "done"
                       : outcome.kind == sandbox::outcome_kind::needs_approval ? "needs_approval"
                                                                              : "refused";
  value out{{"status", status}, {"is_error", outcome.is_error}};
  if (outcome.kind == sandbox::outcome_kind::needs_approval) out["form"] = outcome.form;
  else out["result"] = outcome.result;
  if (!outcome.message.empty()) out["message"] = outcome.message;
  return out;
}

void execute(worker_shared& shared, const wire::task& t) {
  wire::task_result r;
  r.run_id = t.run_id;
  r.step = t.step;
  r.attempt = t.attempt;
  r.worker = shared.node_id;
  const auto* agent = shared.config.find_agent(t.agent);
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
  if (auto sent = shared.nats->publish(t.reply_to, wire::encode(r)); !sent)
    logger()->warn("run {}: result of task {} not sent: {}", t.run_id, t.step, sent.error().message);
}

struct worker_state {
  std::deque<wire::task> waiting;
  std::size_t running = 0;
  static inline const char* name = "keel.worker";
};

// Admits tasks up to worker_tasks_max at once; each runs on its own thread (a tool may run for
// minutes), and the actor hears when it is done.
caf::behavior worker_actor(caf::stateful_actor<worker_state>* self, std::shared_ptr<worker_shared> shared) {
  auto launch = [=](wire::task t) {
    self->state.running += 1;
    caf::actor me = caf::actor_cast<caf::actor>(self);
    std::thread([shared, me, t = std::move(t)] {
      execute(*shared, t);
      caf::anon_send(me, done_atom::value);
    }).detach();
  };
  return {
    [=](task_atom, wire::task& t) {
      if (self->state.running < static_cast<std::size_t>(shared->config.worker_tasks_max)) launch(std::move(t));
      else self->state.waiting.push_back(std::move(t));
    },
    [=](done_atom) {
      self->state.running -= 1;
      if (!self->state.waiting.empty()) {
        auto next = std::move(self->state.waiting.front());
        self->state.waiting.pop_front();
        launch(std::move(next));
      }
    },
  };
}

} // namespace

struct worker::impl {
  std::shared_ptr<worker_shared> shared;
  caf::actor actor;
  std::vector<std::unique_ptr<broker::subscription>> subscriptions;
  bool stopped = false;
};

worker::worker(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
worker::~worker() { stop(); }

result<std::unique_ptr<worker>> worker::start(caf::actor_system& system,
                                              const config::node_config& config,
                                              const std::string& node_id,
                                              std::shared_ptr<broker::connection> nats) {
  auto shared = std::make_shared<worker_shared>(
    worker_shared{config, node_id, broker::subjects{config.prefix, config.ns}, std::move(nats), {}, {}});
  shared->limits.message_bytes_max = static_cast<std::size_t>(config.message_bytes_max);
  for (const auto& agent : config.agents) {
    auto provider = llm::make_provider(agent);
    if (!provider) return provider.error();
    shared->providers[agent.id] = std::move(*provider);
    std::error_code ec;
    std::filesystem::create_directories(agent.workspace, ec);
    if (ec)
      return make_error(errc::config, "agents." + agent.id + ".sandbox.workspace: cannot create " +
                                        agent.workspace + ": " + ec.message());
  }
  auto state = std::make_unique<impl>();
  state->shared = shared;
  state->actor = system.spawn(worker_actor, shared);
  std::vector<std::string> queues;
  for (const auto& agent : config.agents)
    if (std::find(queues.begin(), queues.end(), agent.queue) == queues.end()) queues.push_back(agent.queue);
  for (const auto& queue : queues) {
    auto actor = state->actor;
    auto sub = shared->nats->subscribe(shared->subjects.tasks(queue), "workers",
                                       [shared, actor](broker::message&& m) {
      auto t = wire::decode<wire::task>(m.data, shared->limits);
      if (!t) {
        logger()->warn("a task was dropped: {}", t.error().message);
        return;
      }
      // Say at once that this worker has the task, so the orchestrator waits for its result
      // rather than sending it again.
      wire::task_accepted accepted{t->run_id, t->step, t->attempt, shared->node_id};
      if (auto sent = shared->nats->publish(t->reply_to, wire::encode(accepted)); !sent)
        logger()->warn("run {}: task {} not acknowledged: {}", t->run_id, t->step, sent.error().message);
      caf::anon_send(actor, task_atom::value, std::move(*t));
    });
    if (!sub) return sub.error();
    state->subscriptions.push_back(std::move(*sub));
  }
  return std::unique_ptr<worker>(new worker(std::move(state)));
}

void worker::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  impl_->subscriptions.clear();
  caf::anon_send_exit(impl_->actor, caf::exit_reason::user_shutdown);
}

} // namespace keel::actors
