#include "actors/worker.hpp"
#include "actors/worker_shared.hpp"
#include "mcp/session_pool.hpp"
#include "runtime/backoff.hpp"

#include "actors/conversation_cache.hpp"
#include "actors/task_dedupe.hpp"
#include "runtime/tool_declaration.hpp"
#include "broker/connection.hpp"
#include "broker/work_queue.hpp"
#include "llm/provider.hpp"
#include "actors/task_telemetry.hpp"
#include "replication/epoch_book.hpp"
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"
#include "runtime/log.hpp"
#include "runtime/step_trace.hpp"
#include "runtime/thread_pool.hpp"
#include "sandbox/confinement.hpp"
#include "sandbox/environment.hpp"
#include "sandbox/tools.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace keel::actors {

using wire::value;
namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("actors");
  return l;
}

// The directory that holds one workspace per run or per session: searchable by the command's
// user, not listable (a command cannot find the workspaces of other runs by listing it).
std::string unlisted_directory(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  std::filesystem::permissions(path, std::filesystem::perms::owner_all | std::filesystem::perms::group_exec |
                                       std::filesystem::perms::others_exec,
                               std::filesystem::perm_options::replace, ec);
  return path;
}

// The workspace of a run: the root itself (scope agent), one per session, or one per run.
// Names that become directories are checked here too, whoever sent the task.
result<std::string> workspace_of(const config::agent_config& agent, const wire::task& t,
                                 const std::string& session_id) {
  if (agent.workspace_scope == "agent") return agent.workspace;
  if (agent.workspace_scope == "session" && !session_id.empty()) {
    if (!is_valid_session_id(session_id))
      return make_error(errc::invalid_argument, "the session id is not a valid name; no workspace is made for it");
    return unlisted_directory(agent.workspace + "/sessions") + "/" + session_id;
  }
  if (!is_valid_session_id(t.run_id))  // the same character set, the same bound
    return make_error(errc::invalid_argument, "the run id is not a valid name; no workspace is made for it");
  return unlisted_directory(agent.workspace + "/runs") + "/" + t.run_id;
}

// One id per call, the same across attempts and redeliveries: a command can tell a repeat.
std::string call_id_of(const wire::task& t) { return t.run_id + "/" + std::to_string(t.step); }

// Messages [from, to) of a run, from its owner, in pieces no larger than a NATS message.
result<std::vector<llm::message>> fetch_messages(worker_shared& shared, const wire::task& t, std::uint64_t from,
                                                 std::uint64_t to) {
  std::vector<llm::message> out;
  std::string partial;  // the message being put together from pieces
  std::uint64_t index = from, offset = 0;
  auto deadline = steady_ms() + shared.config().request_timeout_ms * 4;
  while (index < to) {
    value request{{"v", wire::protocol_version}, {"type", "messages_request"}, {"from", index},
                  {"to", to}, {"offset", offset}};
    auto reply = shared.lane_of(t.run_id).request(shared.subjects.run_messages(t.run_id), wire::pack(request),
                                      shared.config().request_timeout_ms);
    result<value> body = reply ? wire::unpack(reply->data, shared.limits) : result<value>(reply.error());
    if (body && body->is_object() && body->value("type", std::string{}) == "error") {
      auto code = errc::internal;
      std::string message = "error";
      if (body->contains("error") && (*body)["error"].is_object()) {
        const value& e = (*body)["error"];
        if (e.contains("code") && e["code"].is_string()) (void)from_string(e["code"].get<std::string>(), code);
        if (e.contains("message") && e["message"].is_string()) message = e["message"].get<std::string>();
      }
      body = make_error(code, message);
    }
    if (!body) {
      // Not written yet (the task can go out before its step's messages reach disk), or the owner is
      // restarting: asked again shortly, within a bound.
      bool again = body.error().code == errc::unavailable || body.error().code == errc::timeout;
      if (!again || steady_ms() > deadline)
        return make_error(body.error().code, "the conversation of run " + t.run_id + " could not be fetched: " +
                                               body.error().message);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (!body->contains("items") || !(*body)["items"].is_array() || (*body)["items"].empty())
      return make_error(errc::malformed, "the owner of run " + t.run_id + " sent no messages for [" +
                                           std::to_string(index) + ", " + std::to_string(to) + ")");
    for (const auto& item : (*body)["items"]) {
      if (!item.is_object() || item.value("index", std::uint64_t{0}) != index ||
          item.value("offset", std::uint64_t{0}) != offset || !item.contains("bytes") || !item["bytes"].is_binary())
        return make_error(errc::malformed, "the owner of run " + t.run_id + " sent messages out of order");
      const auto& bytes = item["bytes"].get_binary();
      auto total = item.value("total", std::uint64_t{0});
      partial.append(bytes.begin(), bytes.end());
      offset += bytes.size();
      if (partial.size() > total || total > (std::uint64_t{1} << 32))
        return make_error(errc::malformed, "a message of run " + t.run_id + " came with a wrong size");
      if (partial.size() < total) continue;
      auto list = llm::messages_from_packed(wire::pack_list({partial}), wire::limits{total + 64, 64, 100'000});
      if (!list) return list.error();
      out.push_back(std::move(list->front()));
      partial.clear();
      offset = 0;
      ++index;
    }
  }
  return out;
}

// A model task's conversation: what the worker kept of the run's (taken out of its cache), what it
// lacks asked of the owner, and the task's new messages. `counted`/`counted_bytes` say how much of
// it the cache had measured, for putting it back (conversation_cache::put).
struct conversation {
  std::vector<llm::message> messages;
  std::size_t counted = 0, counted_bytes = 0;
  bool kept = false;  // the owner sends this run's tasks only what is new: worth keeping
};

result<conversation> conversation_of(worker_shared& shared, wire::task& t) {
  value& p = t.payload;
  auto inline_messages = !t.payload_messages.empty() ? llm::messages_from_packed(t.payload_messages, shared.limits)
                                                     : llm::messages_from_value(p.contains("messages") ? std::move(p["messages"]) : value());
  if (!inline_messages) return inline_messages.error();
  if (!p.contains("conversation")) return conversation{std::move(*inline_messages)};  // the whole conversation came in the task
  const value& c = p["conversation"];
  if (!c.is_object() || !c.value("count", value()).is_number_unsigned() || !c.value("from", value()).is_number_unsigned())
    return make_error(errc::malformed, "a model task's conversation needs count and from");
  auto count = c["count"].get<std::uint64_t>(), from = c["from"].get<std::uint64_t>();
  if (from > count || count - from != inline_messages->size())
    return make_error(errc::malformed, "a model task's conversation does not add up: " + std::to_string(count - from) +
                                         " new messages said, " + std::to_string(inline_messages->size()) + " sent");
  conversation out;
  out.kept = true;
  if (auto held = shared.conversations->take(t.run_id)) {
    out.messages = std::move(held->messages);
    if (out.messages.size() <= from) {
      out.counted = out.messages.size();
      out.counted_bytes = held->bytes;
    } else {
      out.messages.resize(from);  // more than this task builds on: measured again when put back
    }
  }
  // Room for the whole conversation, growing as a vector grows (a step then moves the messages
  // only now and then, not each time).
  if (out.messages.capacity() < count) out.messages.reserve(std::max<std::size_t>(count, 2 * out.messages.capacity()));
  try {
    if (out.messages.size() < from) {
      auto fetched = fetch_messages(shared, t, out.messages.size(), from);
      if (!fetched) {
        // Kept for the run's next step, as it was.
        if (!out.messages.empty()) shared.conversations->put(t.run_id, std::move(out.messages), out.counted, out.counted_bytes);
        return fetched.error();
      }
      for (auto& m : *fetched) out.messages.push_back(std::move(m));
    }
    for (auto& m : *inline_messages) out.messages.push_back(std::move(m));
  } catch (...) {
    // What was taken out goes back, as it was, before the failure goes on to fail the task.
    out.messages.resize(std::min<std::size_t>(out.messages.size(), out.counted));
    if (!out.messages.empty()) shared.conversations->put(t.run_id, std::move(out.messages), out.counted, out.counted_bytes);
    throw;
  }
  return out;
}

// The tools the model is told of: this worker's own for the agent (built-in and command tools,
// from its config), its MCP servers' (listed by the servers, started for the run's workspace if
// need be), and what the task carries whole (tools declared by tool workers, as its run's owner
// holds them). Names in the task are the owner's view of the built-in ones.
std::shared_ptr<const std::vector<value>> tools_of(worker_shared& shared, const config::agent_config& agent,
                                                   const wire::task& t) {
  const value& payload = t.payload;
  const auto& own = shared.tool_lists.at(agent.id);
  bool only_names = true;
  if (payload.contains("tools") && payload["tools"].is_array())
    for (const auto& tool : payload["tools"]) only_names = only_names && tool.is_string();
  if (only_names && agent.mcp.empty()) return own;
  auto out = std::make_shared<std::vector<value>>(*own);
  if (!agent.mcp.empty()) {
    auto root = workspace_of(agent, t, payload.value("session_id", std::string{}));
    std::vector<std::string> problems;
    if (root) {
      auto found = shared.mcp_sessions->model_tools(agent, *root, problems);
      out->insert(out->end(), found.begin(), found.end());
    } else {
      problems.push_back(root.error().message);
    }
    for (const auto& problem : problems) logger()->warn("run {}: agent {}: {}", t.run_id, agent.id, problem);
  }
  if (only_names) return out;
  for (const auto& tool : payload["tools"]) {
    if (tool.is_string()) continue;
    if (tool.is_object() && tool.contains("name") && tool["name"].is_string() && tool.contains("input_schema") &&
        tool["input_schema"].is_object()) {
      out->push_back(value{{"name", tool["name"]}, {"description", tool.value("description", std::string())},
                           {"input_schema", tool["input_schema"]}});
    } else {
      return nullptr;
    }
  }
  return out;
}

result<value> run_llm(worker_shared& shared, const config::agent_config& agent, wire::task& t) {
  value& p = t.payload;
  if (!p.is_object()) return make_error(errc::malformed, "an llm task's payload must be a map");
  llm::completion_request request;
  request.model = p.value("model", agent.model);
  request.system_prompt = p.value("system_prompt", agent.system_prompt);
  auto messages = conversation_of(shared, t);
  if (!messages) return messages.error();
  request.messages = std::move(messages->messages);
  // Lent to the call and kept for the run's next step afterwards, whatever the call's outcome.
  struct keep_after {
    worker_shared& shared;
    const std::string& run_id;
    llm::completion_request& request;
    std::size_t counted, counted_bytes;
    bool kept;
    ~keep_after() {
      if (!kept) return;
      try {
        shared.conversations->put(run_id, std::move(request.messages), counted, counted_bytes);
      } catch (...) {  // not kept: the owner sends it again (a destructor must not throw)
      }
    }
  } keep{shared, t.run_id, request, messages->counted, messages->counted_bytes, messages->kept};
  request.tools = tools_of(shared, agent, t);
  if (!request.tools) return make_error(errc::malformed, "an llm task's tools must be names and {name, description, input_schema} maps");
  request.task_id = call_id_of(t);
  // Text as it streams in, for whoever watches the run (not stored: the answer is).
  std::string deltas = shared.subjects.base() + ".runs." + t.run_id + ".deltas";
  request.on_text_delta = [&shared, &t, deltas](const std::string& text) {
    (void)shared.lane_of(t.run_id).publish(deltas, wire::pack(value{{"v", wire::protocol_version}, {"type", "llm_delta"},
                                                       {"run_id", t.run_id}, {"step", t.step}, {"text", text}}));
  };
  request.on_stream_restart = [&shared, &t, deltas] {
    (void)shared.lane_of(t.run_id).publish(deltas, wire::pack(value{{"v", wire::protocol_version}, {"type", "llm_delta"},
                                                       {"run_id", t.run_id}, {"step", t.step}, {"text", ""},
                                                       {"restart", true}}));
  };
  auto chosen = shared.provider_for(agent, p.value("provider", std::string{}), request.model);
  if (!chosen) return chosen.error();
  auto completion = (*chosen)->complete(request);
  if (!completion) return completion.error();
  return llm::to_value(*completion);
}

result<value> run_tool(worker_shared& shared, const config::agent_config& agent, const wire::task& t) {
  const value& p = t.payload;
  // A declared tool's call is a tool worker's; on an agent's queue it is a misconfiguration, never
  // a built-in call (it was approved as the tool worker's form showed it).
  if (!t.queue.empty())
    return make_error(errc::invalid_argument, "a call of a tool declared on queue " + t.queue +
                                                " reached keel's worker of agent " + agent.id + "; tool workers need a queue of their own");
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
  request.task_id = call_id_of(t);
  std::string mcp_tool;
  const auto* server = mcp::session_pool::server_of(agent, request.tool, mcp_tool);
  auto outcome = server ? shared.mcp_sessions->call(agent, *server, *root, request, mcp_tool)
                        : sandbox::run_tool(*ws, sandbox::policy_from_config(agent), request);
  const char* status = outcome.kind == sandbox::outcome_kind::done ? "done"
                       : outcome.kind == sandbox::outcome_kind::needs_approval ? "needs_approval"
                                                                              : "refused";
  value out{{"status", status}, {"is_error", outcome.is_error}};
  if (outcome.kind == sandbox::outcome_kind::needs_approval) out["form"] = outcome.form;
  else out["result"] = outcome.result;
  if (!outcome.message.empty()) out["message"] = outcome.message;
  return out;
}

wire::task_result failed(const wire::task& t, const std::string& worker, keel::error e) {
  wire::task_result r;
  r.run_id = t.run_id;
  r.step = t.step;
  r.attempt = t.attempt;
  r.worker = worker;
  r.epoch = t.epoch;
  r.ok = false;
  r.failure = std::move(e);
  return r;
}

// Runs the task and returns its result, encoded. A result too large for the broker is itself a
// clear failure, never a message that cannot be sent.
std::string execute(worker_shared& shared, wire::task& t) {
  wire::task_result r;
  r.run_id = t.run_id;
  r.step = t.step;
  r.attempt = t.attempt;
  r.worker = shared.node_id;
  r.epoch = t.epoch;
  const auto* agent = shared.config().find_agent(t.agent);
  result<value> outcome = make_error(errc::not_found, "worker " + shared.node_id +
                                                         " does not serve agent '" + t.agent + "'");
  const auto started_ns = unix_ns();
  if (agent) {
    try {
      outcome = t.kind == wire::task_kind::llm ? run_llm(shared, *agent, t) : run_tool(shared, *agent, t);
    } catch (const nlohmann::json::type_error& e) {
      // What the task holds cannot be encoded (bytes that are not UTF-8, a value of the wrong
      // type): the same task fails the same way every time, so it is not tried again.
      outcome = make_error(errc::malformed, std::string("task failed: its data cannot be encoded: ") + e.what());
    } catch (const std::exception& e) {
      outcome = make_error(errc::internal, std::string("task failed: ") + e.what());
    }
  }
  observe_task(agent, t, outcome, shared.node_id, started_ns, unix_ns());
  if (outcome) {
    r.payload = std::move(*outcome);
    wire::repair_utf8(r.payload);  // a file name or output that is not UTF-8 still decodes
    // A run about to wait for a person, or whose model gave its final answer, will not need its
    // conversation here soon: it is not kept (memory for the runs that are working).
    bool waits = t.kind == wire::task_kind::tool && r.payload.is_object() &&
                 r.payload.value("status", std::string{}) == "needs_approval";
    bool ends = t.kind == wire::task_kind::llm && r.payload.is_object() &&
                (!r.payload.contains("tool_calls") || r.payload["tool_calls"].empty());
    if (waits || ends) shared.conversations->erase(t.run_id);
  } else {
    r.ok = false;
    r.failure = outcome.error();
    logger()->warn("run {}: task {} failed: {}", t.run_id, t.step, outcome.error().message);
  }
  step_trace::mark(step_trace::task_executed);
  auto bytes = wire::encode(r);
  if (bytes.size() > shared.limits.message_bytes_max) {
    auto what = t.kind == wire::task_kind::llm ? "the model's answer" : "the tool's result";
    bytes = wire::encode(failed(t, shared.node_id,
                                make_error(errc::too_large, std::string(what) + " is " + std::to_string(bytes.size()) +
                                                              " bytes, over limits.message_bytes_max (" +
                                                              std::to_string(shared.limits.message_bytes_max) + ")")));
  }
  return bytes;
}

// The worker's slots: a fetch asks the broker for no more tasks than are free.
class slots {
public:
  explicit slots(std::size_t count) : free_(count), count_(count) {}
  // Takes up to `want` free slots, waiting up to wait_ms for one; 0 when stopping or none came.
  std::size_t take(std::size_t want, std::int64_t wait_ms) {
    std::unique_lock lock{mutex_};
    freed_.wait_for(lock, std::chrono::milliseconds(wait_ms), [this] { return stopping_ || free_ > 0; });
    if (stopping_ || free_ == 0) return 0;
    auto n = std::min(want, free_);
    free_ -= n;
    return n;
  }
  void give_back(std::size_t n) {
    {
      std::lock_guard lock{mutex_};
      free_ += n;
    }
    freed_.notify_all();
  }
  void stop() {
    {
      std::lock_guard lock{mutex_};
      stopping_ = true;
    }
    freed_.notify_all();
  }
  std::size_t busy() const {
    std::lock_guard lock{mutex_};
    return count_ - free_;
  }
  std::size_t count() const { return count_; }

private:
  mutable std::mutex mutex_;
  std::condition_variable freed_;
  std::size_t free_;
  std::size_t count_;
  bool stopping_ = false;
};

// Every task the worker holds, with the delivery to acknowledge; "in progress" is said for each
// every quarter of the liveness time, so the broker hands none of them to another worker.
struct held_tasks {
  std::mutex mutex;
  std::unordered_map<std::string, std::shared_ptr<broker::delivery>> tasks;  // by task id
};

// What a task's thread needs, kept alive by each job (a job may outlive a worker that stopped).
struct worker_core : std::enable_shared_from_this<worker_core> {
  std::shared_ptr<worker_shared> shared;
  std::shared_ptr<slots> slot_count;
  std::shared_ptr<held_tasks> held;
  thread_pool* pool = nullptr;  // the worker's threads; they end before it

  // Decodes a delivery and runs its task: here (`here`) or on another thread of the pool.
  void handle(std::shared_ptr<broker::delivery> d, bool here);
  void run_task(std::shared_ptr<broker::delivery> d, wire::task t, std::string id, bool check);
  // One round of taking tasks from a queue, on a pool thread: the next round is handed to another
  // thread before the first task taken runs here, so that no hand-over lies between the broker's
  // delivery and the task.
  void fetch_round(std::shared_ptr<broker::pull_consumer> consumer);
  void finish(const std::shared_ptr<broker::delivery>& d, const std::string& id);
};

} // namespace

struct worker::impl {
  std::shared_ptr<worker_core> core;
  std::unique_ptr<thread_pool> pool;
  std::vector<std::thread> threads;  // the liveness thread
  std::vector<std::shared_ptr<broker::pull_consumer>> consumers;  // one per queue
  std::mutex stop_mutex;
  std::condition_variable stop_signal;
  bool stopped = false;        // stop() was called
  bool liveness_ended = false;  // the tasks held are done or given up: no more "in progress"
};

void worker_core::finish(const std::shared_ptr<broker::delivery>& d, const std::string& id) {
  if (!id.empty()) {
    std::lock_guard lock{held->mutex};
    auto it = held->tasks.find(id);
    // The newest delivery of the task is the one to acknowledge.
    if (it != held->tasks.end()) {
      if (auto r = it->second->ack(); !r) logger()->warn("{}", r.error().message);
      held->tasks.erase(it);
    }
  }
  if (auto r = d->ack(); !r) logger()->warn("{}", r.error().message);
  slot_count->give_back(1);
}

void worker_core::fetch_round(std::shared_ptr<broker::pull_consumer> consumer) {
  if (shared->stopping) return;
  auto again = [core = shared_from_this(), consumer] { core->fetch_round(consumer); };
  auto want = slot_count->take(16, 500);
  if (want == 0) {
    if (!shared->stopping) pool->submit(again);
    return;
  }
  auto got = consumer->fetch(static_cast<int>(want), 500);
  if (!got) {
    slot_count->give_back(want);
    if (got.error().code == errc::cancelled || shared->stopping) return;
    logger()->warn("{}", got.error().message);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    pool->submit(again);
    return;
  }
  if (got->size() < want) slot_count->give_back(want - got->size());
  if (shared->stopping) {  // taken as the worker stops: handed back at once, for another worker
    for (auto& d : *got) (void)d->nak(0);
    slot_count->give_back(got->size());
    return;
  }
  pool->submit(again);
  for (std::size_t i = 0; i < got->size(); ++i)
    handle(std::shared_ptr<broker::delivery>(std::move((*got)[i])), i + 1 == got->size());
}

void worker_core::handle(std::shared_ptr<broker::delivery> d, bool here) {
  step_trace::mark(step_trace::task_received);
  auto t = wire::decode_task_keeping_conversation(d->body().data, shared->limits);
  if (!t) {
    logger()->warn("a task was dropped: {}", t.error().message);
    finish(d, {});
    return;
  }
  auto id = keel::task_id{t->run_id, t->step, t->attempt}.to_string();
  {
    std::lock_guard lock{held->mutex};
    if (auto it = held->tasks.find(id); it != held->tasks.end()) {
      // Handed out again while it runs here (this worker was slow to say so): the same task, kept
      // running once; the newest delivery is the one acknowledged.
      it->second = d;
      slot_count->give_back(1);
      return;
    }
    held->tasks[id] = d;
  }
  step_trace::mark(step_trace::task_decoded);
  // A task of an older owner than one seen runs only on the current owner's word; its result
  // names the newest epoch known (an older owner handed it learns it was taken over).
  auto newest = shared->epochs.saw(keel::run_id{t->run_id}.owner(), t->epoch);
  bool check = d->times_delivered() > 1 || (t->epoch != 0 && t->epoch < newest) ||
               wall_ms() - d->stored_ms() > shared->config().worker_check_after_ms;
  t->epoch = newest;
  if (here) return run_task(d, std::move(*t), id, check);
  pool->submit([core = shared_from_this(), d, t = std::move(*t), id, check]() mutable {
    core->run_task(d, std::move(t), id, check);
  });
}

void worker_core::run_task(std::shared_ptr<broker::delivery> d, wire::task t, std::string id, bool check) {
  auto& s = *shared;
  auto reply_to = t.reply_to;
  std::string bytes;
  if (auto done = s.dedupe.find(id)) {
    bytes = *done;  // finished here before: the same result, not a second run
  } else if (d->times_delivered() > static_cast<std::uint64_t>(s.config().task_deliveries_max)) {
    // Handed out too often: given up unrun, unless its owner says it has no use for it, or cannot
    // say now (another worker's result for it may be being written): then handed back, as it is.
    auto wanted = still_wanted(s, t);
    if (!wanted || !*wanted) {
      if (wanted) logger()->info("run {}: task {} attempt {} is no longer wanted; dropped unrun", t.run_id, t.step, t.attempt);
      else logger()->warn("run {}: task {} handed back: its owner cannot say whether it is wanted: {}", t.run_id, t.step,
                          wanted.error().message);
      if (wanted) return finish(d, id);
      {
        std::lock_guard lock{held->mutex};
        held->tasks.erase(id);
      }
      (void)d->nak(2000);
      slot_count->give_back(1);
      return;
    }
    bytes = wire::encode(failed(t, s.node_id,
                                make_error(errc::exhausted, "the task was handed out " +
                                                              std::to_string(d->times_delivered()) +
                                                              " times and no worker finished it")));
  } else {
    if (check) {
      // Asked until the owner can say (it may be restarting), holding the task meanwhile: a task
      // handed back would count as one more delivery.
      auto wanted = still_wanted(s, t);
      auto deadline = steady_ms() + s.config().result_delivery_ms;
      backoff pause{100, 2000};
      for (auto pause_ms = pause.next_ms(); !wanted && !s.stopping && steady_ms() + pause_ms < deadline;
           pause_ms = pause.next_ms()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
        wanted = still_wanted(s, t);
      }
      if (!wanted) {
        logger()->warn("run {}: task {} handed back: its owner cannot say whether it is wanted: {}", t.run_id, t.step,
                       wanted.error().message);
        {
          std::lock_guard lock{held->mutex};
          held->tasks.erase(id);
        }
        (void)d->nak(1000);
        slot_count->give_back(1);
        return;
      }
      if (!*wanted) {
        logger()->info("run {}: task {} attempt {} is no longer wanted; dropped unrun", t.run_id, t.step, t.attempt);
        finish(d, id);
        return;
      }
    }
    bytes = execute(s, t);
  }
  step_trace::mark(step_trace::result_published);
  auto handed = hand_over(s, reply_to, bytes, t);
  s.dedupe.put(id, bytes);
  if (!handed) {
    // Given back: another delivery (here or elsewhere) will offer the same result again.
    logger()->warn("run {}: {}", t.run_id, handed.error().message);
    {
      std::lock_guard lock{held->mutex};
      held->tasks.erase(id);
    }
    slot_count->give_back(1);
    return;
  }
  finish(d, id);
}

worker::worker(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
worker::~worker() { stop(); }

std::size_t worker::slots_count() const { return impl_->core->slot_count->count(); }
// The tasks it holds now (slots set aside for a fetch that waits for tasks are not busy).
std::size_t worker::slots_busy() const {
  std::lock_guard lock{impl_->core->held->mutex};
  return impl_->core->held->tasks.size();
}

result<std::unique_ptr<worker>> worker::start(caf::actor_system&, const config::node_config& config,
                                              const std::string& node_id,
                                              const std::vector<std::shared_ptr<broker::connection>>& lanes) {
  if (lanes.empty()) return make_error(errc::invalid_argument, "a worker needs a NATS connection");
  auto shared = std::make_shared<worker_shared>();
  shared->config_copy = config;
  shared->node_id = node_id;
  shared->subjects = broker::subjects{config.prefix, config.ns};
  shared->nats = lanes.front();
  shared->lanes = lanes;
  shared->limits.message_bytes_max = static_cast<std::size_t>(config.message_bytes_max);
  shared->conversations = std::make_unique<conversation_cache>(static_cast<std::size_t>(config.conversation_cache_bytes));
  shared->mcp_sessions = std::make_unique<mcp::session_pool>();
  // A write to an MCP server that has died must fail, not end the node (programs started get
  // their signals back as they were: runtime/spawner.cpp).
  ::signal(SIGPIPE, SIG_IGN);
  for (const auto& agent : config.agents) {
    auto provider = llm::make_provider(agent);
    if (!provider) return provider.error();
    shared->providers[agent.id] = std::move(*provider);
    std::vector<value> definitions;
    for (const auto& name : agent.tools)  // declared tools come with each model task
      if (!tools::is_declared(name)) definitions.push_back(sandbox::tool_definition(name));
    for (const auto& command : agent.commands) definitions.push_back(sandbox::tool_definition(command));
    shared->tool_lists[agent.id] = std::make_shared<const std::vector<value>>(std::move(definitions));
    auto run_as = sandbox::command_identity(agent.run_as.empty() ? sandbox::sandbox_account : agent.run_as);
    if (!run_as) return make_error(errc::config, "agents." + agent.id + ".sandbox.run_as: " + run_as.error().message);
    if (agent.sandbox_env == "bwrap")
      if (auto available = sandbox::bwrap_available(*run_as); !available)
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
  if (auto killed = sandbox::sweep_orphaned_calls(); killed > 0)
    logger()->warn("killed {} processes that calls of a worker that died had left running", killed);
  auto js = broker::open_task_queue(shared->nats, shared->subjects, static_cast<std::size_t>(config.message_bytes_max),
                                    config.task_replicas, config.request_timeout_ms,
                                    config.has_role(config::role::orchestrator));  // else an orchestrator makes it
  if (!js) return js.error();
  shared->js = std::move(*js);

  auto state = std::make_unique<impl>();
  state->core = std::make_shared<worker_core>();
  state->core->shared = shared;
  state->core->slot_count = std::make_shared<slots>(static_cast<std::size_t>(config.worker_slots));
  state->core->held = std::make_shared<held_tasks>();
  state->core->pool = nullptr;
  std::vector<std::string> queues;
  for (const auto& agent : config.agents)
    if (std::find(queues.begin(), queues.end(), agent.queue) == queues.end()) queues.push_back(agent.queue);
  // Threads: one per slot, and one per queue for taking tasks.
  state->pool = std::make_unique<thread_pool>(static_cast<std::size_t>(config.worker_slots) + queues.size(),
                                              [](const char* what) { logger()->error("a task thread threw: {}", what); },
                                              "keel task");
  state->core->pool = state->pool.get();
  std::vector<std::unique_ptr<broker::pull_consumer>> consumers;
  for (const auto& queue : queues) {
    broker::consumer_options o;
    o.stream = shared->subjects.tasks_stream();
    o.durable = broker::stream_name("workers_" + queue);
    o.filter_subject = shared->subjects.tasks(queue) + ".>";
    o.ack_wait_ms = config.worker_liveness_ms;
    auto consumer = shared->js->subscribe(o);
    if (!consumer) return consumer.error();
    consumers.push_back(std::move(*consumer));
  }
  auto* self = state.get();
  auto core = state->core;
  // One round of fetching per queue circulates on the pool (which has a thread for it beyond the
  // slots): see fetch_round.
  for (auto& consumer : consumers) {
    auto shared_consumer = std::shared_ptr<broker::pull_consumer>(std::move(consumer));
    state->consumers.push_back(shared_consumer);
    state->pool->submit([core, shared_consumer] { core->fetch_round(shared_consumer); });
  }
  // Liveness: "in progress" for every task held, four times per liveness period.
  state->threads.emplace_back([self, core] {
    auto every = std::chrono::milliseconds(std::max<std::int64_t>(50, core->shared->config().worker_liveness_ms / 4));
    std::unique_lock lock{self->stop_mutex};
    while (!self->stop_signal.wait_for(lock, every, [self] { return self->liveness_ended; })) {
      std::vector<std::shared_ptr<broker::delivery>> now;
      {
        std::lock_guard held_lock{core->held->mutex};
        for (auto& [id, d] : core->held->tasks) now.push_back(d);
      }
      for (auto& d : now)
        if (auto r = d->in_progress(); !r) logger()->debug("{}", r.error().message);
    }
  });
  return std::unique_ptr<worker>(new worker(std::move(state)));
}

void worker::stop() {
  if (!impl_) return;
  {
    std::lock_guard lock{impl_->stop_mutex};
    if (impl_->stopped) return;
    impl_->stopped = true;
  }
  impl_->core->shared->drain_deadline_ms = steady_ms() + impl_->core->shared->config().shutdown_timeout_ms / 2;
  impl_->core->shared->stopping = true;
  impl_->core->slot_count->stop();
  // No more tasks; those held are still acknowledged when they end. Unsubscribed, the consumers
  // do not hold up the connection's drain.
  for (auto& consumer : impl_->consumers) consumer->unsubscribe();
  // The tasks still running finish, still said to be in progress (a task whose worker stopped
  // saying so would be handed to another worker while this one runs it: done twice). Those not
  // done in time go unacknowledged, and the broker hands them to another worker once this one
  // is silent.
  impl_->pool->stop(impl_->core->shared->config().shutdown_timeout_ms / 2);
  {
    std::lock_guard lock{impl_->stop_mutex};
    impl_->liveness_ended = true;
  }
  impl_->stop_signal.notify_all();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

} // namespace keel::actors
